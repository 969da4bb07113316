"""`IncrementalDetokenizer` and `raw_decoder`: streamed text equals the whole decode, and the
direct `tokenizers` call gives exactly what the transformers tokenizer's decode gives."""

from __future__ import annotations

import random

import pytest
from transformers import AutoTokenizer

from pagefleet.workers.engine.detokenizer import IncrementalDetokenizer, raw_decoder
from pagefleet.workers.models.loader import load_tokenizer, resolve_model
from pagefleet.workers.models.sources import (
    DEFAULT_EMBEDDING_MODEL,
    DEFAULT_MODEL,
    embedding_folder,
)

WORDS = ["hello", " world", ",", " naïve", " café", " 東京", "🙂", " ok", ".", "\n", " don't", " ßeta",
         " über", "  ", "1234", " ☃", "—", " i.e."]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(resolve_model(DEFAULT_MODEL))


def _texts(seed: int, count: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(WORDS) for _ in range(rng.randint(1, 40))) for _ in range(count)]


def test_the_default_tokenizer_decodes_through_its_backend(tokenizer) -> None:
    assert raw_decoder(tokenizer) == tokenizer.backend_tokenizer.decode


@pytest.mark.parametrize("skip", [True, False])
def test_raw_decodes_equal_the_tokenizers_own(tokenizer, skip: bool) -> None:
    rng = random.Random(1)
    decode = raw_decoder(tokenizer)
    specials = tokenizer.all_special_ids
    for text in _texts(2, 50):
        ids = tokenizer.encode(text)
        ids.insert(rng.randrange(len(ids) + 1), rng.choice(specials))
        cut = ids[rng.randrange(len(ids)):]  # windows may start inside a multi-byte character
        for window in (ids, cut):
            assert decode(window, skip) == tokenizer.decode(window, skip_special_tokens=skip)


@pytest.mark.parametrize("skip", [True, False])
def test_streamed_text_equals_the_whole_decode(tokenizer, skip: bool) -> None:
    decode = raw_decoder(tokenizer)
    texts = _texts(3, 40)
    for prompt, output in zip(texts, reversed(texts), strict=True):
        prompt_ids = tokenizer.encode(prompt)
        output_ids = [*tokenizer.encode(output), tokenizer.eos_token_id, *tokenizer.encode(output)]
        detokenizer = IncrementalDetokenizer(decode, prompt_ids, skip)
        pieces = [detokenizer.add(token_id) for token_id in output_ids]
        assert "".join(pieces) == tokenizer.decode(output_ids, skip_special_tokens=skip)
        assert all("\ufffd" not in piece for piece in pieces)  # never half a character


def test_a_cleaning_wordpiece_tokenizer_keeps_its_own_decode() -> None:
    """A WordPiece tokenizer (the embedding model's) asked to clean up spaces around
    punctuation: the raw backend would not, so its decode stays the wrapper's."""
    wordpiece = AutoTokenizer.from_pretrained(embedding_folder(DEFAULT_EMBEDDING_MODEL),
                                              clean_up_tokenization_spaces=True)
    ids = wordpiece.encode("well , it is n't a test .", add_special_tokens=False)
    raw = wordpiece.backend_tokenizer.decode(ids, skip_special_tokens=True)
    cleaned = wordpiece.decode(ids, skip_special_tokens=True)
    assert raw != cleaned  # the case this guards exists
    assert raw_decoder(wordpiece)(ids, True) == cleaned


def test_a_tokenizer_without_a_backend_is_called_as_it_is() -> None:
    class Letters:
        def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
            return "".join(chr(ord("a") + i) for i in ids if not (skip_special_tokens and i == 0))

    detokenizer = IncrementalDetokenizer(raw_decoder(Letters()), [1, 2], skip_special_tokens=True)
    assert "".join(detokenizer.add(i) for i in [3, 0, 4]) == "de"

"""Embeddings equal transformers' on the same inputs (cosine >= 0.9999).

Encoder: the packaged all-MiniLM-L6-v2 against transformers' `AutoModel` with
sentence-transformers' recipe (mean over the attention mask, then L2 normalisation), computed
here. Decoder: a tiny random Qwen3 that transformers builds and saves (the bare `Qwen3Model`
layout of Qwen3-Embedding checkpoints: no `model.` prefix, no head), last-token pooling
against transformers' last hidden state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from pagefleet.workers.embed import Embedder
from pagefleet.workers.embed.embedder import InputTooLongError
from pagefleet.workers.engine.config import EngineConfig
from pagefleet.workers.engine.errors import InvalidParameterError
from pagefleet.workers.models.sources import DEFAULT_EMBEDDING_MODEL, embedding_folder

TEXTS = [
    "The cat sat on the mat.",
    "A quick brown fox jumps over the lazy dog near the river bank at dawn.",
    "Embeddings",
    "Paged attention keeps the KV cache in fixed-size blocks, like virtual memory pages.",
]
MIN_COSINE = 0.9999


@pytest.fixture(scope="module")
def minilm() -> Embedder:
    return Embedder.load(EngineConfig(model=DEFAULT_EMBEDDING_MODEL, device="cpu"))


def reference_mean_pooled(texts: list[str]) -> torch.Tensor:
    from transformers import AutoModel, AutoTokenizer

    folder = embedding_folder(DEFAULT_EMBEDDING_MODEL)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    return F.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)


def test_minilm_equals_transformers_mean_pooling(minilm: Embedder) -> None:
    reference = reference_mean_pooled(TEXTS)
    outputs = minilm.embed([minilm.tokenize(t) for t in TEXTS], [None] * len(TEXTS))
    assert minilm.pooling == "mean" and minilm.hidden_size == 384
    for output, want in zip(outputs, reference, strict=True):
        assert output.vector.shape == (384,)
        assert torch.dot(output.vector, want).item() >= MIN_COSINE
        assert output.vector.norm().item() == pytest.approx(1.0, abs=1e-5)
    # Different texts give different vectors (a constant output would pass the check above only if
    # the reference were constant too, which this rules out).
    assert torch.dot(outputs[0].vector, outputs[1].vector).item() < 0.9


def test_padding_does_not_change_a_vector(minilm: Embedder) -> None:
    alone = minilm.embed([minilm.tokenize(TEXTS[2])], [None])[0].vector
    batched = minilm.embed([minilm.tokenize(t) for t in TEXTS], [None] * len(TEXTS))[2].vector
    assert torch.dot(alone, batched).item() >= MIN_COSINE


def test_token_ids_are_embedded_as_given(minilm: Embedder) -> None:
    token_ids = minilm.tokenize(TEXTS[0])
    assert minilm.tokenize(token_ids) == token_ids
    from_text, from_ids = minilm.embed([minilm.tokenize(TEXTS[0]), token_ids], [None, None])
    assert torch.equal(from_text.vector, from_ids.vector)
    assert from_ids.num_prompt_tokens == len(token_ids)


def test_bad_inputs_raise_precise_errors(minilm: Embedder) -> None:
    with pytest.raises(InvalidParameterError, match=r"\[0, 30522\)") as info:
        minilm.tokenize([101, 30522])
    assert info.value.param == "input"
    with pytest.raises(InvalidParameterError, match="empty"):
        minilm.tokenize([])
    with pytest.raises(InputTooLongError, match="maximum context length is 512"):
        minilm.tokenize(list(range(1000, 1513)))
    with pytest.raises(InvalidParameterError, match="between 1 and 384") as info:
        minilm.check_dimensions(385)
    assert info.value.param == "dimensions"


def test_quantization_is_refused_not_ignored() -> None:
    with pytest.raises(ValueError, match="not supported for embedding models"):
        Embedder.load(EngineConfig(model=DEFAULT_EMBEDDING_MODEL, device="cpu", quantization="fp8"))


def test_max_model_len_from_the_config_caps_inputs() -> None:
    short = Embedder.load(EngineConfig(model=DEFAULT_EMBEDDING_MODEL, device="cpu", max_model_len=8))
    assert short.max_model_len == 8
    with pytest.raises(InputTooLongError):
        short.tokenize(TEXTS[1])


# ---- decoder embedding models (Qwen3-Embedding style) -------------------------------------------

QWEN3 = {"vocab_size": 512, "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 48, "rms_norm_eps": 1e-6,
         "rope_theta": 1000000.0, "max_position_embeddings": 256, "initializer_range": 0.2,
         "tie_word_embeddings": True}
INPUTS = [[(13 * i + 7 * j) % 500 + 3 for j in range(2 + 9 * i)] for i in range(4)]


@pytest.fixture(scope="module")
def qwen3(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    from transformers import Qwen3Config, Qwen3Model

    folder = tmp_path_factory.mktemp("qwen3-embedding")
    torch.manual_seed(0)
    model = Qwen3Model(Qwen3Config(**QWEN3)).eval()
    model.save_pretrained(folder)
    return folder, model


def hf_last_token(model: Any, token_ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        hidden = model(input_ids=torch.tensor([token_ids])).last_hidden_state
    return hidden[0, -1]


def test_decoder_last_token_pooling_equals_transformers(qwen3: tuple[Path, Any]) -> None:
    folder, hf = qwen3
    embedder = Embedder.load(EngineConfig(model=str(folder), device="cpu"))
    assert embedder.pooling == "last" and not embedder.encoder and embedder.tokenizer is None
    outputs = embedder.embed(INPUTS, [None] * len(INPUTS))
    vectors = [F.normalize(hf_last_token(hf, ids), dim=-1) for ids in INPUTS]
    for output, want in zip(outputs, vectors, strict=True):
        assert torch.dot(output.vector, want).item() >= MIN_COSINE
    assert torch.dot(outputs[0].vector, outputs[3].vector).item() < 0.99


def test_matryoshka_cut_comes_before_normalisation(qwen3: tuple[Path, Any]) -> None:
    folder, hf = qwen3
    embedder = Embedder.load(EngineConfig(model=str(folder), device="cpu"))
    [output] = embedder.embed([INPUTS[2]], [32])
    want = F.normalize(hf_last_token(hf, INPUTS[2])[:32], dim=-1)
    assert output.vector.shape == (32,)
    assert torch.dot(output.vector, want).item() >= MIN_COSINE


def test_a_decoder_without_tokenizer_refuses_text(qwen3: tuple[Path, Any]) -> None:
    embedder = Embedder.load(EngineConfig(model=str(qwen3[0]), device="cpu"))
    with pytest.raises(InvalidParameterError, match="no tokenizer"):
        embedder.tokenize("hello")

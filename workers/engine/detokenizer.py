"""Incremental detokenisation and stop-string handling for one sequence.

Decoding a window of recent tokens twice (with and without the newest ones) and emitting the
difference gives the right spacing for every tokenizer family, and holding text back while it
ends in U+FFFD means a multi-byte character split across tokens is never emitted broken.

That is two decodes per generated token on the engine's step loop, so they go straight to the
Rust tokenizer when its answer is the transformers wrapper's: through the wrapper they took
3.75 us a token on the CI-class CPU, directly 1.11 us (see `raw_decoder`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_PROMPT_CONTEXT_TOKENS = 6

Decode = Callable[[list[int], bool], str]  # (token ids, skip_special_tokens) -> text


@dataclass(frozen=True, slots=True)
class StopMatch:
    text: str  # the output text, truncated at the stop string (kept when asked to)
    stop: str


def raw_decoder(tokenizer: Any) -> Decode:
    """`tokenizer.decode` with the same text, through the `tokenizers` backend directly where
    the wrapper adds nothing: a fast tokenizer whose decode does not clean up spaces (the
    flag is off, or transformers skips the clean-up for BPE models, which it does in the
    versions that carry the BPE override flag). Anything else keeps the tokenizer's own decode."""
    def wrapped(ids: list[int], skip: bool) -> str:
        return tokenizer.decode(ids, skip_special_tokens=skip)

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or not hasattr(backend, "decode"):
        return wrapped
    cleans_up = bool(getattr(tokenizer, "clean_up_tokenization_spaces", False))
    if cleans_up and hasattr(
            tokenizer, "clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output"):
        forced = tokenizer.clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output
        cleans_up = forced or type(backend.model).__name__ != "BPE"
    return wrapped if cleans_up else backend.decode


class IncrementalDetokenizer:
    def __init__(self, decode: Decode, prompt_token_ids: list[int], skip_special_tokens: bool) -> None:
        """`decode`: the engine's `raw_decoder(tokenizer)`, built once, not per sequence."""
        self.decode = decode
        self.skip_special_tokens = skip_special_tokens
        self._ids = list(prompt_token_ids[-_PROMPT_CONTEXT_TOKENS:])
        self._prefix_offset = 0
        self._read_offset = len(self._ids)

    def add(self, token_id: int) -> str:
        """Append a token; return the text it completes (maybe empty)."""
        self._ids.append(token_id)
        decode, skip = self.decode, self.skip_special_tokens
        prefix_text = decode(self._ids[self._prefix_offset : self._read_offset], skip)
        new_text = decode(self._ids[self._prefix_offset :], skip)
        if len(new_text) <= len(prefix_text) or new_text.endswith("\ufffd"):
            return ""
        self._prefix_offset = self._read_offset
        self._read_offset = len(self._ids)
        # Keep the window short: only the last few tokens matter for spacing.
        if self._prefix_offset > 4 * _PROMPT_CONTEXT_TOKENS:
            del self._ids[: self._prefix_offset]
            self._read_offset -= self._prefix_offset
            self._prefix_offset = 0
        return new_text[len(prefix_text) :]


def find_stop_string(
    text: str, num_new_chars: int, stops: list[str], include_stop: bool
) -> StopMatch | None:
    """Look for a stop string that ends inside the newest `num_new_chars` characters."""
    if not stops or num_new_chars == 0:
        return None
    longest = max(len(stop) for stop in stops)
    search_from = max(0, len(text) - num_new_chars - longest + 1)
    best: tuple[int, str] | None = None
    for stop in stops:
        at = text.find(stop, search_from)
        if at != -1 and (best is None or at < best[0]):
            best = (at, stop)
    if best is None:
        return None
    at, stop = best
    return StopMatch(text[: at + len(stop)] if include_stop else text[:at], stop)


def stop_holdback(stops: list[str]) -> int:
    """Characters to hold back while streaming: they might be the start of a stop string."""
    return max((len(stop) for stop in stops), default=1) - 1

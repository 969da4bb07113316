"""What the engine hands back: streaming deltas, finished outputs (vLLM's shapes), stats."""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from pagefleet.platform.protocol.messages import TokenLogprob


class RequestDelta(msgspec.Struct, array_like=True):
    """New output of one choice since the last delta. `offset` counts that choice's tokens
    emitted before this one; `finished` is set on the last delta of the whole request.

    One is built per sequence per step and, with the engine core in its own process, crosses
    a socket: a msgspec struct (encoded as an array, no field names) builds, encodes and
    decodes in about a third of a slotted dataclass's time, in a sixth of the bytes."""

    request_id: str
    index: int
    offset: int
    token_ids: list[int]
    text: str
    logprobs: list[TokenLogprob] | None
    finish_reason: str | None
    num_prompt_tokens: int
    num_cached_tokens: int = 0
    stop_reason: str | int | None = None
    finished: bool = False
    # On the first delta of choice 0 only: the prompt's ids, and its logprobs if asked for
    # (entry 0 only names the first token: nothing predicts it).
    prompt_token_ids: list[int] | None = None
    prompt_logprobs: list[TokenLogprob] | None = None


@dataclass(slots=True)
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    finish_reason: str | None
    stop_reason: str | int | None = None
    logprobs: list[TokenLogprob] | None = None


@dataclass(slots=True)
class RequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    finished: bool = False
    num_cached_tokens: int = 0
    prompt_logprobs: list[TokenLogprob | None] | None = None  # vLLM's: None for the first token


@dataclass(frozen=True, slots=True)
class EngineStats:
    num_running: int
    num_waiting: int
    kv_cache_usage: float
    prefix_cache_hit_rate: float
    prompt_tokens_total: int
    generation_tokens_total: int
    num_preemptions_total: int
    max_num_seqs: int
    num_kv_blocks: int
    num_swapped_out_total: int = 0  # preemptions that swapped KV out instead of recomputing
    is_sleeping: bool = False


@dataclass(slots=True)
class EngineCounters:
    """Monotonic counters the engine loop updates (owned by one engine, never shared)."""

    prompt_tokens: int = 0
    generation_tokens: int = 0

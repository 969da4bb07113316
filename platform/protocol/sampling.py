"""Sampling parameters: the one definition shared by the engine, the gateway and the wire.

It lives in the protocol package (no torch) so the gateway can validate a request before it
queues it, and the worker decodes exactly the struct the gateway encoded. The engine re-exports
it as `pagefleet.workers.SamplingParams`, with vLLM's names and defaults.
"""

from __future__ import annotations

from typing import Literal

import msgspec

_MAX_LOGPROBS = 20
_MAX_LOGIT_BIAS = 100.0

StructuredKind = Literal["json_object", "json_schema", "regex", "choice", "grammar"]


class StructuredOutput(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A grammar the output must follow, compiled by the worker (the gateway has no tokenizer).

    `spec` is the JSON schema as canonical JSON text (json_schema), the regular expression
    (regex), the JSON list of choices (choice) or the EBNF grammar (grammar); empty for
    json_object. Text, not a dict, so it is a stable key for the worker's grammar cache.
    """

    kind: StructuredKind
    spec: str = ""


class SamplingParams(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """How to pick each next token and when to stop; invalid values raise `ValueError`."""

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 or -1: all tokens
    min_p: float = 0.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    seed: int | None = None
    stop: list[str] | str | None = None
    stop_token_ids: list[int] | None = None
    include_stop_str_in_output: bool = False
    ignore_eos: bool = False
    max_tokens: int | None = 16  # None: up to the model's context length
    min_tokens: int = 0
    logprobs: int | None = None  # top-k alternatives returned with each sampled token
    skip_special_tokens: bool = True
    logit_bias: dict[int, float] | None = None  # token id -> added to its logit, in [-100, 100]
    structured_output: StructuredOutput | None = None
    prompt_logprobs: int | None = None  # logprobs of the prompt's tokens, with top-k alternatives
    truncate_prompt_tokens: int | None = None  # keep the prompt's last k tokens (-1: the context)

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        elif self.stop is None:
            self.stop = []
        if self.stop_token_ids is None:
            self.stop_token_ids = []
        if self.top_k == -1:
            self.top_k = 0
        self._validate()

    def _validate(self) -> None:
        checks: list[tuple[bool, str]] = [
            (self.n >= 1, f"n must be at least 1, got {self.n}"),
            (self.temperature >= 0.0, f"temperature must be non-negative, got {self.temperature}"),
            (0.0 < self.top_p <= 1.0, f"top_p must be in (0, 1], got {self.top_p}"),
            (self.top_k >= 0, f"top_k must be -1 (disable) or at least 1, got {self.top_k}"),
            (0.0 <= self.min_p <= 1.0, f"min_p must be in [0, 1], got {self.min_p}"),
            (-2.0 <= self.presence_penalty <= 2.0,
             f"presence_penalty must be in [-2, 2], got {self.presence_penalty}"),
            (-2.0 <= self.frequency_penalty <= 2.0,
             f"frequency_penalty must be in [-2, 2], got {self.frequency_penalty}"),
            (0.0 < self.repetition_penalty <= 2.0,
             f"repetition_penalty must be in (0, 2], got {self.repetition_penalty}"),
            (self.max_tokens is None or self.max_tokens >= 1,
             f"max_tokens must be at least 1, got {self.max_tokens}"),
            (self.min_tokens >= 0, f"min_tokens must be non-negative, got {self.min_tokens}"),
            (self.max_tokens is None or self.min_tokens <= self.max_tokens,
             f"min_tokens must be at most max_tokens={self.max_tokens}, got {self.min_tokens}"),
            (self.logprobs is None or 0 <= self.logprobs <= _MAX_LOGPROBS,
             f"logprobs must be in [0, {_MAX_LOGPROBS}], got {self.logprobs}"),
            (all(isinstance(s, str) and s for s in self.stop),
             "stop must be a non-empty string or a list of non-empty strings"),
            (all(isinstance(t, int) and t >= 0 for t in self.stop_token_ids),
             "stop_token_ids must be non-negative integers"),
            (self.seed is None or -(2**63) <= self.seed < 2**64,
             f"seed must be a 64-bit integer, got {self.seed}"),
            (self.prompt_logprobs is None or 0 <= self.prompt_logprobs <= _MAX_LOGPROBS,
             f"prompt_logprobs must be in [0, {_MAX_LOGPROBS}], got {self.prompt_logprobs}"),
            (self.truncate_prompt_tokens is None or self.truncate_prompt_tokens == -1
             or self.truncate_prompt_tokens >= 1,
             f"truncate_prompt_tokens must be -1 or at least 1, got {self.truncate_prompt_tokens}"),
            (all(isinstance(t, int) and t >= 0 for t in self.logit_bias or {}),
             "logit_bias keys must be non-negative token ids"),
            (all(-_MAX_LOGIT_BIAS <= v <= _MAX_LOGIT_BIAS for v in (self.logit_bias or {}).values()),
             f"logit_bias values must be in [-{_MAX_LOGIT_BIAS:g}, {_MAX_LOGIT_BIAS:g}]"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @property
    def greedy(self) -> bool:
        """Temperature 0 means argmax; the sampler skips every random step for it."""
        return self.temperature < 1e-5

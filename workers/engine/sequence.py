"""One sequence of tokens being generated: a prompt plus one choice's output.

A request with `n` choices becomes `n` sequences sharing `request_id` and the prompt;
`choice_index` tells them apart. One count, `num_computed_tokens`, catching up with `num_tokens`
covers prefill, chunked prefill, prefix-cache hits and recompute after preemption.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING

from pagefleet.platform.protocol.sampling import SamplingParams

if TYPE_CHECKING:
    from pagefleet.workers.engine.structured import GrammarState

# An output token chosen on the device whose value the host has not read yet (asynchronous
# scheduling): it counts towards lengths and blocks, and the runner reads it on the device.
PENDING_TOKEN = -1


class SequenceStatus(Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(slots=True, eq=False)
class Sequence:
    request_id: str
    choice_index: int
    prompt_token_ids: list[int]
    params: SamplingParams
    max_tokens: int  # resolved: params.max_tokens or what the context leaves
    output_token_ids: list[int] = field(default_factory=list)
    num_computed_tokens: int = 0
    status: SequenceStatus = SequenceStatus.WAITING
    finish_reason: str | None = None
    stop_reason: str | int | None = None
    num_cached_prompt_tokens: int = 0  # prompt tokens served from the prefix cache (first admission)
    grammar: GrammarState | None = None  # structured output: where the output is in its grammar
    seq_id: tuple[str, int] = field(init=False)  # (request_id, choice_index), read every step

    def __post_init__(self) -> None:
        self.seq_id = (self.request_id, self.choice_index)

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_token_ids) + len(self.output_token_ids)

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.output_token_ids)

    def token_id_at(self, position: int) -> int:
        num_prompt = len(self.prompt_token_ids)
        if position < num_prompt:
            return self.prompt_token_ids[position]
        return self.output_token_ids[position - num_prompt]

    def token_ids_slice(self, start: int, end: int) -> list[int]:
        num_prompt = len(self.prompt_token_ids)
        if end <= num_prompt:
            return self.prompt_token_ids[start:end]
        if start >= num_prompt:
            return self.output_token_ids[start - num_prompt : end - num_prompt]
        return self.prompt_token_ids[start:] + self.output_token_ids[: end - num_prompt]

    @property
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED

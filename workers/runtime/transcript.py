"""What one request has produced so far, per choice: the runtime's view of its result stream.

The same object is fed by events replayed from `pf:r:{id}` (after a claim) and by new deltas
from the engine, so a resumed request knows which tokens to hand the engine as `resume=` and
reports usage and job results over the whole generation, not just its own part.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from pagefleet.platform.protocol import (
    DeltaEvent,
    ErrorEvent,
    FinalEvent,
    ResultEvent,
    TokenLogprob,
    Usage,
)

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Choice:
    token_ids: list[int] = field(default_factory=list)
    # The text in pieces, joined when read: `+=` on a str attribute copies the whole text
    # for every delta, O(n^2) over a long generation.
    text_pieces: list[str] = field(default_factory=list)
    logprobs: list[TokenLogprob] | None = None
    finish_reason: str | None = None

    @property
    def text(self) -> str:
        return "".join(self.text_pieces)


class Transcript:
    """Choices of one request, plus its terminal event once written."""

    def __init__(self, n: int) -> None:
        self.choices = [Choice() for _ in range(n)]
        self.terminal: FinalEvent | ErrorEvent | None = None
        self.num_prompt_tokens = 0
        self.prompt_token_ids: list[int] | None = None  # when the request asked for them
        self.prompt_logprobs: list[TokenLogprob] | None = None

    def add(self, event: ResultEvent) -> bool:
        """Record `event`; False if it repeats tokens already recorded (and is ignored)."""
        if not isinstance(event, DeltaEvent):
            self.terminal = event
            return True
        if not 0 <= event.index < len(self.choices):
            raise ValueError(f"delta for choice {event.index} of a request with {len(self.choices)}")
        choice = self.choices[event.index]
        if event.offset != len(choice.token_ids) or choice.finish_reason is not None:
            log.debug("ignoring delta at offset %d of choice %d (have %d tokens)",
                        event.offset, event.index, len(choice.token_ids))
            return False
        choice.token_ids.extend(event.token_ids)
        if event.text:
            choice.text_pieces.append(event.text)
        if event.logprobs is not None:
            if choice.logprobs is None:
                choice.logprobs = []
            choice.logprobs.extend(event.logprobs)
        choice.finish_reason = event.finish_reason
        if event.prompt_token_ids is not None:
            self.prompt_token_ids = event.prompt_token_ids
        if event.prompt_logprobs is not None:
            self.prompt_logprobs = event.prompt_logprobs
        return True

    @property
    def done(self) -> bool:
        return self.terminal is not None

    @property
    def all_finished(self) -> bool:
        return all(c.finish_reason is not None for c in self.choices)

    def resume_tokens(self) -> dict[int, list[int]] | None:
        """Tokens already streamed per choice, for `AsyncEngine.add_request(resume=...)`."""
        resume = {i: list(c.token_ids) for i, c in enumerate(self.choices)
                  if c.token_ids or c.finish_reason is not None}
        return resume or None

    @property
    def num_completion_tokens(self) -> int:
        return sum(len(c.token_ids) for c in self.choices)

    def final_event(self) -> FinalEvent:
        completion = self.num_completion_tokens
        return FinalEvent(
            finish_reasons=[c.finish_reason or "abort" for c in self.choices],
            usage=Usage(prompt_tokens=self.num_prompt_tokens, completion_tokens=completion,
                        total_tokens=self.num_prompt_tokens + completion))

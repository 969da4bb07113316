"""Folding consecutive deltas of one choice into one: the rule both ends of a result stream use.

A worker's flusher folds what it queued while Redis was slow into one XADD; the gateway folds
what a request's buffer holds when its stream is read into one SSE chunk. One rule, so a
client sees the same text, token ids and logprobs however its tokens were grouped.
"""

from __future__ import annotations

import msgspec

from pagefleet.platform.protocol.messages import DeltaEvent, ResultEvent


def merge_delta(events: list[ResultEvent], delta: DeltaEvent) -> None:
    """Append `delta`, folding it into the previous delta of its choice when they are adjacent.

    Adjacent: no other event than deltas of other choices between them, the previous one not
    finished, and its tokens ending where `delta`'s begin (a repeat, whose offset is behind,
    stays its own event so a reader can recognise and drop it). Builds a new struct instead of
    mutating: the caller may still hold the queued one.
    """
    for position in range(len(events) - 1, -1, -1):
        previous = events[position]
        if not isinstance(previous, DeltaEvent):
            break
        if previous.index != delta.index:
            continue
        if previous.finish_reason is None and previous.offset + len(previous.token_ids) == delta.offset:
            logprobs = None
            if previous.logprobs is not None or delta.logprobs is not None:
                logprobs = (previous.logprobs or []) + (delta.logprobs or [])
            events[position] = msgspec.structs.replace(
                previous, token_ids=previous.token_ids + delta.token_ids,
                text=previous.text + delta.text, logprobs=logprobs,
                finish_reason=delta.finish_reason)
            return
        break
    events.append(delta)

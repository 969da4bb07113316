"""Fold a batch of a request's result events into as few as the stream needs (pure, no I/O).

Under load a request's buffer holds several events when its stream takes the next: each would
cost a chunk to build, encode and send, and the client a chunk to parse. Folding adjacent
deltas of one choice first makes that one chunk per choice per batch; a request whose client
keeps up gets batches of one event, so its chunks are exactly what they were.
"""

from __future__ import annotations

from collections.abc import Sequence

from pagefleet.platform.gateway.delivery import SourcedEvent
from pagefleet.platform.protocol import DeltaEvent, ResultEvent
from pagefleet.platform.protocol.deltas import merge_delta


def coalesce(batch: Sequence[SourcedEvent]) -> list[SourcedEvent]:
    """`merge_delta` applied to each source's events, the sources' events interleaved as they
    came (a merged delta stands where its first part stood).

    Sources are separate result streams, so an event of one never separates two deltas of
    another. Replays must be dropped before this (`ResultAccumulator.record_deltas`): a repeat
    followed by new tokens would fold into one delta that starts behind, and be dropped whole.
    """
    if len(batch) < 2:  # a request that keeps up
        return list(batch)
    per_source: dict[int, list[ResultEvent]] = {}
    slots: list[tuple[int, int]] = []  # (source, position in its list), in arrival order
    for item in batch:
        events = per_source.setdefault(item.source, [])
        num_before = len(events)
        if isinstance(item.event, DeltaEvent):
            merge_delta(events, item.event)
        else:
            events.append(item.event)
        if len(events) > num_before:
            slots.append((item.source, num_before))
    return [SourcedEvent(source, per_source[source][position]) for source, position in slots]

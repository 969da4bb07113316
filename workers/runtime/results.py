"""Writing result events: every request's events go through one flusher that batches them.

Deltas are appended without waiting; the flusher drains everything queued since its last
round trip into one pipeline, merging consecutive deltas of the same choice into one XADD.
So a worker streaming many requests sends one pipeline per engine step, not one command per
token, and a slow Redis round trip turns into bigger batches instead of a backlog of writes.
A final or error event resolves a future once it is in Redis, so the caller acks only then.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from pagefleet.platform.protocol import DeltaEvent, ResultEvent, decode_event, encode, keys

log = logging.getLogger(__name__)
_MAX_ATTEMPTS = 5


@dataclass(slots=True)
class _Pending:
    request_id: str
    event: ResultEvent
    done: asyncio.Future[None] | None = None
    ack: tuple[str, str] | None = None  # (stream, entry id) to XACK + XDEL right after the event


@dataclass(slots=True)
class _Batch:
    events: dict[str, list[ResultEvent]] = field(default_factory=dict)
    acks: list[tuple[str, str]] = field(default_factory=list)
    futures: list[asyncio.Future[None]] = field(default_factory=list)


def merge_delta(events: list[ResultEvent], delta: DeltaEvent) -> None:
    """Append `delta`, folding it into the previous delta of its choice when they are adjacent.

    Builds a new struct instead of mutating: the executor may still hold the queued one.
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


class ResultWriter:
    """The single writer of `pf:r:{id}` streams for one worker process."""

    def __init__(self, redis: aioredis.Redis, retention_s: int) -> None:
        self.redis = redis
        self.retention_s = retention_s
        self._queue: list[_Pending] = []
        self._wake = asyncio.Event()
        self._closing = False

    def emit(self, request_id: str, delta: DeltaEvent) -> None:
        self._queue.append(_Pending(request_id, delta))
        self._wake.set()

    async def finish(self, request_id: str, event: ResultEvent,
                     ack: tuple[str, str] | None = None) -> None:
        """Queue the last event of a request (and optionally its ack); return once written."""
        done = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(request_id, event, done, ack))
        self._wake.set()
        await done

    async def run(self) -> None:
        """Flush until `close()`; each iteration writes everything queued meanwhile."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._queue:
                batch, self._queue = self._queue, []
                await self._flush(batch)
            if self._closing and not self._queue:
                return

    async def close(self) -> None:
        self._closing = True
        self._wake.set()

    async def _flush(self, pending: list[_Pending]) -> None:
        batch = _Batch()
        for item in pending:
            events = batch.events.setdefault(item.request_id, [])
            if isinstance(item.event, DeltaEvent):
                merge_delta(events, item.event)
            else:
                events.append(item.event)
            if item.ack is not None:
                batch.acks.append(item.ack)
            if item.done is not None:
                batch.futures.append(item.done)
        for attempt in range(1, _MAX_ATTEMPTS + 1):
            try:
                await self._write(batch)
                break
            except RedisError as exc:
                if attempt == _MAX_ATTEMPTS:
                    log.error("dropping %d result events after %d attempts: %s",
                              len(pending), attempt, exc)
                    for future in batch.futures:
                        if not future.done():
                            future.set_exception(exc)
                    return
                await asyncio.sleep(0.05 * 2**attempt)  # back-off before retrying the same batch
        for future in batch.futures:
            if not future.done():
                future.set_result(None)

    async def _write(self, batch: _Batch) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for request_id, events in batch.events.items():
                stream = keys.result_stream(request_id)
                for event in events:
                    pipe.xadd(stream, {keys.ENTRY_EVENT: encode(event)})
                pipe.expire(stream, self.retention_s)
            for stream, entry_id in batch.acks:
                pipe.xack(stream, keys.CONSUMER_GROUP, entry_id)
                pipe.xdel(stream, entry_id)
            await pipe.execute()


async def read_results(redis: aioredis.Redis, request_id: str) -> list[ResultEvent]:
    """Every event already written for a request, in order (what a resuming worker builds on)."""
    entries = await redis.xrange(keys.result_stream(request_id))
    events = []
    for _entry_id, fields in entries:
        raw = fields.get(keys.ENTRY_EVENT.encode())
        if raw is not None:
            events.append(decode_event(raw))
    return events

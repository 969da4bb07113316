"""Writing result events: every request's events go through one flusher that batches them.

Deltas are appended without waiting; the flusher drains everything queued since its last
round trip into one command (a script that runs every XADD in Redis), merging consecutive
deltas of the same choice into one entry. So a worker streaming many requests sends one
command per engine step, not one per request and token, and a slow Redis round trip turns
into bigger batches instead of a backlog of writes.
A final or error event resolves a future once it is in Redis, so the caller acks only then.

While Redis is unreachable nothing is dropped: the failed batch goes back to the head of the
queue and is retried with capped, jittered back-off, folded together with whatever arrives
meanwhile, so clients still see each token once and in order after the outage. The buffer is
bounded by what the active requests generate (at most `max_num_seqs` x `max_model_len`
tokens), because the puller admits nothing new while Redis is down.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from pagefleet.platform.protocol import DeltaEvent, ResultEvent, decode_event, encode, keys
from pagefleet.platform.protocol.deltas import merge_delta
from pagefleet.platform.protocol.resilience import TRANSIENT_ERRORS, Backoff, RedisOutages

log = logging.getLogger(__name__)


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


_WRITE_SCRIPT = """
local field, retention, group = ARGV[1], ARGV[2], ARGV[3]
local num_results, a = tonumber(ARGV[4]), 5
for i = 1, num_results do
  local count = tonumber(ARGV[a])
  for j = a + 1, a + count do
    redis.call('XADD', KEYS[i], '*', field, ARGV[j])
  end
  a = a + count + 1
  redis.call('EXPIRE', KEYS[i], retention)
end
for i = num_results + 1, #KEYS do
  redis.call('XACK', KEYS[i], group, ARGV[a])
  redis.call('XDEL', KEYS[i], ARGV[a])
  a = a + 1
end
return #KEYS
"""
"""One flush in one command. As a pipeline it was an XADD per request and event plus an EXPIRE
per stream: at 64 streams and millisecond engine steps, packing and parsing those commands took
more of the worker's GIL than the engine's own scheduling. Same effects in the same order;
a failure part-way leaves the same partial writes a pipeline would, and the retry is the same."""


class ResultWriter:
    """The single writer of `pf:r:{id}` streams for one worker process."""

    def __init__(self, redis: aioredis.Redis, retention_s: int, outages: RedisOutages,
                 backoff: Backoff = Backoff()) -> None:
        self.redis = redis
        self.retention_s = retention_s
        self.outages = outages
        self.backoff = backoff
        self._script = redis.register_script(_WRITE_SCRIPT)  # reloaded by redis-py if Redis restarted
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
                await self._flush_until_written(batch)
            if self._closing and not self._queue:
                return

    async def close(self) -> None:
        self._closing = True
        self._wake.set()

    async def _flush_until_written(self, pending: list[_Pending]) -> None:
        """Retry the same batch, unchanged, until it is written. Never merged with later events:
        part of a failed pipeline may be in Redis already, and an exact repeat of a delta is
        recognised downstream (its offset is behind) while a merged one would hide new tokens."""
        attempt = 0
        while not await self._flush(pending):
            await asyncio.sleep(self.backoff.delay(attempt))
            attempt += 1

    async def _flush(self, pending: list[_Pending]) -> bool:
        """Write `pending` in one pipeline; False (nothing resolved) if Redis is unreachable."""
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
        try:
            await self._write(batch)
        except TRANSIENT_ERRORS as exc:
            self.outages.failed("writing results", exc)
            return False
        except RedisError as exc:  # a command Redis refuses will not succeed on a retry
            log.error("dropping %d result events: %s", len(pending), exc)
            for future in batch.futures:
                if not future.done():
                    future.set_exception(exc)
            return True
        self.outages.recovered()
        for future in batch.futures:
            if not future.done():
                future.set_result(None)
        return True

    async def _write(self, batch: _Batch) -> None:
        """The whole batch as one script call (`_WRITE_SCRIPT`): keys are the result streams,
        then the acked request streams; arguments the events, counted per result stream."""
        streams = [keys.result_stream(request_id) for request_id in batch.events]
        args: list[str | bytes | int] = [keys.ENTRY_EVENT, self.retention_s, keys.CONSUMER_GROUP,
                                         len(streams)]
        for events in batch.events.values():
            args.append(len(events))
            args.extend(encode(event) for event in events)
        args.extend(entry_id for _stream, entry_id in batch.acks)
        await self._script(keys=streams + [stream for stream, _entry_id in batch.acks], args=args)


async def read_results(redis: aioredis.Redis, request_id: str) -> list[ResultEvent]:
    """Every event already written for a request, in order (what a resuming worker builds on)."""
    entries = await redis.xrange(keys.result_stream(request_id))
    events = []
    for _entry_id, fields in entries:
        raw = fields.get(keys.ENTRY_EVENT.encode())
        if raw is not None:
            events.append(decode_event(raw))
    return events

"""Everything the gateway does with Redis besides reading results: queue requests, cancel
them, measure a model's backlog and its ready workers. Route handlers never touch Redis keys.

Results are read by `delivery.ResultHub`, on its own connections, so the commands here never
wait behind thousands of blocked reads.

The admission check reads a queue's backlog at most every `backlog_max_age_s` per (model,
priority), one read shared by all requests arriving meanwhile, plus what this gateway queued
since: under a burst of thousands of requests the pool carries the enqueues, not a backlog
read per request, and the bound stays as exact as a read taken a few milliseconds earlier.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from pagefleet.platform.protocol import RequestEnvelope, encode, fresh_heartbeats, keys
from pagefleet.platform.protocol.backlog import queue_backlog


@dataclass(slots=True)
class _BacklogReading:
    value: int
    at: float  # time.monotonic() of the read
    queued_since: int = 0  # entries this gateway added after the read


class Broker:
    """The gateway's view of Redis; one per app, created in the lifespan."""

    def __init__(self, redis: aioredis.Redis, cancel_retention_s: float,
                 backlog_max_age_s: float = 0.0) -> None:
        self.redis = redis
        self._cancel_retention_ms = int(cancel_retention_s * 1000)
        self._backlog_max_age_s = backlog_max_age_s
        self._backlogs: dict[tuple[str, int], _BacklogReading] = {}
        self._backlog_reads: dict[tuple[str, int], asyncio.Future[int]] = {}

    async def enqueue(self, envelopes: Sequence[RequestEnvelope], priority: int) -> None:
        """Queue the envelopes on their model's stream, creating the consumer group if needed."""
        pipe = self.redis.pipeline(transaction=False)
        for envelope in envelopes:
            stream = keys.request_stream(envelope.model, priority)
            pipe.xgroup_create(stream, keys.CONSUMER_GROUP, id="0", mkstream=True)
            pipe.xadd(stream, {keys.ENTRY_REQUEST_ID: envelope.request_id,
                               keys.ENTRY_ENVELOPE: encode(envelope)})
        for result in await pipe.execute(raise_on_error=False):
            if isinstance(result, ResponseError) and "BUSYGROUP" not in str(result):
                raise result
        for envelope in envelopes:
            reading = self._backlogs.get((envelope.model, priority))
            if reading is not None:
                reading.queued_since += 1

    async def cancel(self, model: str, request_ids: Sequence[str]) -> None:
        """Flag the requests (a worker that pulls one later skips it) and tell the workers."""
        pipe = self.redis.pipeline(transaction=False)
        for request_id in request_ids:
            pipe.set(keys.cancel_flag(request_id), 1, px=self._cancel_retention_ms)
            pipe.publish(keys.cancel_channel(model), request_id)
        await pipe.execute()

    async def backlog(self, model: str, priority: int) -> int:
        """Undelivered entries of one model's queue at one priority (`protocol.backlog`), as of
        a read at most `backlog_max_age_s` old plus what this gateway queued since."""
        key = (model, priority)
        reading = self._backlogs.get(key)
        if reading is not None and time.monotonic() - reading.at <= self._backlog_max_age_s:
            return reading.value + reading.queued_since
        pending = self._backlog_reads.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._read_backlog(key))
            self._backlog_reads[key] = pending
            pending.add_done_callback(lambda _: self._backlog_reads.pop(key, None))
        return await asyncio.shield(pending)

    async def _read_backlog(self, key: tuple[str, int]) -> int:
        value = await queue_backlog(self.redis, *key)
        self._backlogs[key] = _BacklogReading(value, time.monotonic())
        return value

    async def total_backlog(self, model: str) -> int:
        """Undelivered entries over all of a model's priorities."""
        return sum([await self.backlog(model, priority) for priority in keys.PRIORITIES])

    async def ready_workers(self, model: str, max_age_s: float) -> int:
        """Workers of `model` whose last heartbeat says ready and is recent."""
        beats = await self.redis.hvals(keys.heartbeat_hash(model))
        return sum(beat.state == "ready" for beat in fresh_heartbeats(beats, time.time(), max_age_s))

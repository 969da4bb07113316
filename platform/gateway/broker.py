"""Everything the gateway does with Redis besides reading results: queue requests, cancel
them, measure a model's backlog and its ready workers. Route handlers never touch Redis keys.

Results are read by `delivery.ResultHub`, on its own connections, so the commands here never
wait behind thousands of blocked reads.

The admission check reads a queue's backlog at most every `backlog_max_age_s` per (model,
priority), one read shared by all requests arriving meanwhile, plus what this gateway queued
since: under a burst of thousands of requests the pool carries the enqueues, not a backlog
read per request, and the bound stays as exact as a read taken a few milliseconds earlier.

An enqueue to a model that needs workers now (work was already waiting, or no worker is ready)
is announced on `keys.WAKE_CHANNEL`, so the controller scales it at once instead of at its next
tick; at most one announcement per model every `WAKE_MIN_INTERVAL_S` (the controller reads the
whole queue when it wakes, so one wake covers every request queued before it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from pagefleet.platform.protocol import RequestEnvelope, encode, fresh_heartbeats, keys
from pagefleet.platform.protocol.backlog import queue_backlog

log = logging.getLogger(__name__)
WAKE_MIN_INTERVAL_S = 0.1


@dataclass(slots=True)
class _Reading:
    """A count read from Redis (a backlog, or a model's ready workers)."""

    value: int
    at: float  # time.monotonic() of the read
    queued_since: int = 0  # backlogs: entries this gateway added after the read


class Broker:
    """The gateway's view of Redis; one per app, created in the lifespan."""

    def __init__(self, redis: aioredis.Redis, cancel_retention_s: float,
                 backlog_max_age_s: float = 0.0) -> None:
        self.redis = redis
        self._cancel_retention_ms = int(cancel_retention_s * 1000)
        self._backlog_max_age_s = backlog_max_age_s
        self._backlogs: dict[tuple[str, int], _Reading] = {}
        self._backlog_reads: dict[tuple[str, int], asyncio.Future[int]] = {}
        self._ready: dict[str, _Reading] = {}  # model -> its ready workers
        self._woken_at: dict[str, float] = {}

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

    async def wake_if_needed(self, model: str, backlog_before: int, heartbeat_max_age_s: float) -> bool:
        """Announce `model` on the wake channel if work was waiting before this enqueue
        (saturated) or it has no ready worker (at zero or still starting); True if announced."""
        now = time.monotonic()
        if now - self._woken_at.get(model, -WAKE_MIN_INTERVAL_S) < WAKE_MIN_INTERVAL_S:
            return False
        if backlog_before == 0 and await self._ready_workers_cached(model, heartbeat_max_age_s) > 0:
            return False
        self._woken_at[model] = now
        try:
            await self.redis.publish(keys.WAKE_CHANNEL, model)
        except (RedisError, OSError) as exc:  # queued already: the controller's tick finds it
            log.debug("wake of %s not sent: %s", model, exc)
            return False
        return True

    async def _ready_workers_cached(self, model: str, max_age_s: float) -> int:
        reading = self._ready.get(model)
        if reading is None or not self._fresh(reading):
            reading = _Reading(await self.ready_workers(model, max_age_s), time.monotonic())
            self._ready[model] = reading
        return reading.value

    def _fresh(self, reading: _Reading) -> bool:
        """Whether a reading may still stand in for Redis (at most `backlog_max_age_s` old)."""
        return time.monotonic() - reading.at <= self._backlog_max_age_s

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
        if reading is not None and self._fresh(reading):
            return reading.value + reading.queued_since
        pending = self._backlog_reads.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._read_backlog(key))
            self._backlog_reads[key] = pending
            pending.add_done_callback(lambda _: self._backlog_reads.pop(key, None))
        return await asyncio.shield(pending)

    async def _read_backlog(self, key: tuple[str, int]) -> int:
        value = await queue_backlog(self.redis, *key)
        self._backlogs[key] = _Reading(value, time.monotonic())
        return value

    async def total_backlog(self, model: str) -> int:
        """Undelivered entries over all of a model's priorities."""
        return sum([await self.backlog(model, priority) for priority in keys.PRIORITIES])

    async def ready_workers(self, model: str, max_age_s: float) -> int:
        """Workers of `model` whose last heartbeat says ready and is recent."""
        beats = await self.redis.hvals(keys.heartbeat_hash(model))
        return sum(beat.state == "ready" for beat in fresh_heartbeats(beats, time.time(), max_age_s))

"""Liveness: `HSET pf:w:{model} <worker_id> Heartbeat` every interval.

Other workers treat a consumer whose heartbeat is older than `dead_after_s` as dead and claim
its pending entries; the controller reads the same hash for ready replicas and capacity.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from pagefleet.platform.protocol import Heartbeat, encode, fresh_heartbeats, keys
from pagefleet.platform.protocol.resilience import TRANSIENT_ERRORS, RedisOutages

log = logging.getLogger(__name__)


class HeartbeatWriter:
    def __init__(self, redis: aioredis.Redis, model: str, worker_id: str, interval_s: float,
                 snapshot: Callable[[], Heartbeat], outages: RedisOutages) -> None:
        self.redis = redis
        self.outages = outages
        self.key = keys.heartbeat_hash(model)
        self.worker_id = worker_id
        self.interval_s = interval_s
        self.snapshot = snapshot

    async def beat(self) -> None:
        await self.redis.hset(self.key, self.worker_id, encode(self.snapshot()))

    async def run(self) -> None:
        """Beat until cancelled; a failed write is retried on the next tick, not fatal."""
        while True:
            try:
                await self.beat()
                self.outages.recovered()
            except TRANSIENT_ERRORS as exc:
                self.outages.failed("heartbeat", exc)
            except RedisError as exc:
                log.warning("heartbeat failed: %s", exc)
            await asyncio.sleep(self.interval_s)  # the heartbeat period itself

    async def remove(self) -> None:
        await self.redis.hdel(self.key, self.worker_id)


async def live_workers(redis: aioredis.Redis, model: str, dead_after_s: float) -> set[str]:
    """Ids of workers whose last heartbeat is at most `dead_after_s` old (the protocol's rule)."""
    beats = await redis.hvals(keys.heartbeat_hash(model))
    return {beat.worker_id for beat in fresh_heartbeats(beats, time.time(), dead_after_s)}

"""Taking over the work of dead workers.

A consumer of the model's group that holds pending entries but has no fresh heartbeat is dead:
its entries are claimed (as many as this worker can admit) and resumed from their result
streams, so clients see each token once. Dead consumers left with nothing pending are removed
from the group, and their stale heartbeats from the hash.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from pagefleet.platform.protocol import keys
from pagefleet.platform.protocol.resilience import TRANSIENT_ERRORS, RedisOutages
from pagefleet.workers.runtime.config import WorkerSettings
from pagefleet.workers.runtime.executor import Executor
from pagefleet.workers.runtime.heartbeat import live_workers
from pagefleet.workers.runtime.puller import Puller
from pagefleet.workers.runtime.streams import RequestQueues

log = logging.getLogger(__name__)


class Recovery:
    def __init__(self, redis: aioredis.Redis, queues: RequestQueues, executor: Executor,
                 puller: Puller, settings: WorkerSettings, stop: asyncio.Event,
                 outages: RedisOutages) -> None:
        self.redis = redis
        self.outages = outages
        self.queues = queues
        self.executor = executor
        self.puller = puller
        self.settings = settings
        self.stop = stop

    async def run(self) -> None:
        while not self.stop.is_set():
            try:
                await self.claim_once()
                self.outages.recovered()
            except TRANSIENT_ERRORS as exc:  # retried on the next round, like any claim
                self.outages.failed("claiming", exc)
            except RedisError as exc:
                log.warning("claiming failed: %s", exc)
            except Exception:  # never let the claimer die silently: the next round retries
                log.exception("claiming failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), self.settings.claim_interval_s)

    async def claim_once(self) -> int:
        """Claim what dead consumers hold, up to free capacity; returns how many were claimed."""
        alive = await live_workers(self.redis, self.settings.model, self.settings.dead_after_s)
        alive.add(self.settings.worker_id)
        claimed = 0
        dead_everywhere: dict[str, bool] = {}  # dead consumer -> holds nothing on any stream
        for stream in self.queues.streams:
            for consumer, num_pending in (await self.queues.pending_by_consumer(stream)).items():
                if consumer in alive:
                    continue
                if num_pending == 0:
                    await self.queues.forget_consumer(stream, consumer)
                    dead_everywhere.setdefault(consumer, True)
                    continue
                free = self.puller.free_slots()
                entries = []
                if free > 0 and not self.stop.is_set():
                    entries = await self.queues.claim(
                        stream, consumer, free, self.settings.claim_min_idle_ms)
                if entries:
                    log.info("claimed %d entries of dead worker %s on %s", len(entries), consumer, stream)
                    await self.executor.start(entries, claimed=True)
                    claimed += len(entries)
                dead_everywhere[consumer] = False
        gone = [c for c, empty in dead_everywhere.items() if empty]
        if gone:
            await self.redis.hdel(keys.heartbeat_hash(self.settings.model), *gone)
        return claimed

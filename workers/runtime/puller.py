"""Admission control: pull exactly as many entries as the engine can take now.

Free slots are `max_num_seqs` minus the sequences running or waiting (the larger of the
engine's count and the runtime's own, which also covers entries pulled but not yet handed to
the engine), and zero while the KV cache is above the high-water mark; batch entries fill at
most `batch_share` of `max_num_seqs`, so urgent work finds a slot at once. Everything else
stays in Redis, visible to other workers and to the controller's backlog signal.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from redis.exceptions import RedisError

from pagefleet.platform.protocol import keys
from pagefleet.platform.protocol.resilience import TRANSIENT_ERRORS, Backoff, RedisOutages
from pagefleet.workers.runtime.config import WorkerSettings
from pagefleet.workers.runtime.engine_port import EngineClient
from pagefleet.workers.runtime.executor import Executor
from pagefleet.workers.runtime.streams import RequestQueues

log = logging.getLogger(__name__)
_RETRY_S = 1.0
_FULL_RECHECK_S = 0.25  # KV usage can drop without a request ending (preemption, frees)
_URGENT = (keys.PRIORITY_INTERACTIVE, keys.PRIORITY_JOB)


async def wait_first(stop: asyncio.Event, *awaitables: Any, timeout: float | None = None) -> None:
    """Wait for the first of `awaitables`, `stop` or the timeout; cancel the rest, and raise
    what an awaitable that ended first raised."""
    tasks = [asyncio.ensure_future(a) for a in (*awaitables, stop.wait())]
    try:
        await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise task.exception()


def batch_room(engine: EngineClient, executor: Executor, settings: WorkerSettings) -> int:
    """Batch sequences this worker may still start (`WorkerSettings.batch_share`)."""
    cap = max(1, int(settings.batch_share * engine.stats().max_num_seqs))
    in_use = sum(r.n for r in executor.active.values()
                 if keys.stream_priority(r.entry.stream) == keys.PRIORITY_BATCH)
    return max(0, cap - in_use)


def free_slots(engine: EngineClient, executor: Executor, settings: WorkerSettings) -> int:
    stats = engine.stats()
    if stats.kv_cache_usage >= settings.kv_high_water:
        return 0
    in_use = max(executor.num_active_seqs, stats.num_running + stats.num_waiting)
    return max(0, stats.max_num_seqs - in_use)


class Puller:
    def __init__(self, engine: EngineClient, queues: RequestQueues, executor: Executor,
                 settings: WorkerSettings, stop: asyncio.Event, outages: RedisOutages,
                 backoff: Backoff = Backoff()) -> None:
        self.engine = engine
        self.outages = outages
        self.backoff = backoff
        self.queues = queues
        self.executor = executor
        self.settings = settings
        self.stop = stop

    def free_slots(self) -> int:
        return free_slots(self.engine, self.executor, self.settings)

    async def run(self) -> None:
        """Pull until `stop` is set (drain): admitted entries start at once."""
        attempt = 0
        while not self.stop.is_set():
            try:
                await self._pull_once()
                self.outages.recovered()
                attempt = 0
                continue
            except TRANSIENT_ERRORS as exc:  # Redis restarting or unreachable: keep the work we hold
                self.outages.failed("pulling", exc)
                delay = self.backoff.delay(attempt)
                attempt += 1
            except RedisError as exc:
                log.warning("pulling failed: %s", exc)
                delay = _RETRY_S
            except Exception:  # never let the puller die silently: log it and pull again
                log.exception("pulling failed")
                delay = _RETRY_S
            await wait_first(self.stop, asyncio.sleep(delay))

    async def _pull_once(self) -> None:
        self.executor.changed.clear()
        free = self.free_slots()
        if free <= 0:
            await wait_first(self.stop, self.executor.changed.wait(), timeout=_FULL_RECHECK_S)
            return
        room = batch_room(self.engine, self.executor, self.settings)
        entries = await self.queues.read_available(free, max_batch=room)
        if entries:
            await self.executor.start(entries)
            return
        if room <= 0:
            # Batch entries may be waiting that this worker may not take yet: wake for more
            # urgent arrivals or when a request ends, not for those entries (that would spin).
            await wait_first(self.stop, self.executor.changed.wait(),
                             self.queues.wait_for_new(self.settings.idle_block_ms, _URGENT))
            return
        await wait_first(self.stop, self.queues.wait_for_new(self.settings.idle_block_ms))

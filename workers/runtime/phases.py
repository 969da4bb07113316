"""A worker's cold-start phases: one structured log line each, and the model's phase stream.

The log line is for operators (`phase {"phase": "weights_loaded", ...}` in the worker's log);
the stream (`keys.phase_stream`) is for `pagefleet bench coldstart` and the tests, which read
the same timestamps. Each phase is marked once per worker lifetime, the first time it is
reached. Publishing is best effort: a phase that cannot be written now is written with the
next flush; publishing runs in the background (`publish_soon`), so a cold start is never slowed
or failed by its own bookkeeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Iterable

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from pagefleet.platform.protocol import keys
from pagefleet.platform.protocol.phases import (
    PHASE_EVENT_FIELD,
    SPAWNED_AT_ENV,
    Phase,
    PhaseEvent,
    PhaseLog,
)

log = logging.getLogger(__name__)


def spawned_at_from_env() -> float:
    """The spawn time the backend passed, else now: a worker started by hand or by Kubernetes
    counts from its own start."""
    raw = os.environ.get(SPAWNED_AT_ENV)
    try:
        return float(raw) if raw else time.time()
    except ValueError:
        return time.time()


class PhaseRecorder:
    def __init__(self, model: str, worker_id: str, spawned_at: float, cpu_at_spawn: float = 0.0) -> None:
        """`cpu_at_spawn`: this process's CPU time when it was spawned (0 for a fresh process; a
        spare's CPU time when it was told to start, so its preloading is not counted)."""
        self.model = model
        self.worker_id = worker_id
        self.spawned_at = spawned_at
        self.cpu_at_spawn = cpu_at_spawn
        self.log = PhaseLog()
        self._unpublished: list[PhaseEvent] = []
        self._publishing: asyncio.Task[None] | None = None
        self.mark("spawned", spawned_at, cpu_at_spawn)

    def mark(self, name: str, at: float | None = None, cpu_s: float | None = None) -> None:
        """Record `name` if this worker has not reached it before."""
        if self.reached(name):
            return
        phase = self.log.mark(name, at)
        cpu = phase.cpu_s if cpu_s is None else cpu_s
        event = PhaseEvent(worker_id=self.worker_id, model=self.model, phase=phase.name,
                           at=phase.at, since_spawn_s=round(phase.at - self.spawned_at, 4),
                           cpu_since_spawn_s=round(max(0.0, cpu - self.cpu_at_spawn), 4))
        self._unpublished.append(event)
        log.info("phase %s", json.dumps(msgspec.to_builtins(event)))

    def extend(self, phases: Iterable[Phase]) -> None:
        """Take over phases something else recorded (the engine's readiness phases)."""
        for phase in phases:
            self.mark(phase.name, phase.at, phase.cpu_s)

    def reached(self, name: str) -> bool:
        return any(phase.name == name for phase in self.log.phases)

    def publish_soon(self, redis: aioredis.Redis) -> None:
        """Publish what is marked in the background, after any earlier publish (the stream keeps
        the phases in order): serving never waits on this bookkeeping, even in a Redis outage."""
        previous = self._publishing

        async def publish() -> None:
            if previous is not None:
                await previous
            await self.flush(redis)

        self._publishing = asyncio.get_running_loop().create_task(publish())

    async def published(self, timeout_s: float) -> None:
        """Wait (at most `timeout_s`) for the background publishing, before Redis is closed."""
        if self._publishing is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._publishing), timeout_s)

    async def flush(self, redis: aioredis.Redis) -> None:
        if not self._unpublished:
            return
        events, self._unpublished = self._unpublished, []
        try:
            async with redis.pipeline(transaction=False) as pipe:
                for event in events:
                    pipe.xadd(keys.phase_stream(self.model), {PHASE_EVENT_FIELD: msgspec.json.encode(event)},
                              maxlen=keys.PHASE_STREAM_MAXLEN, approximate=True)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            self._unpublished = events + self._unpublished
            log.debug("phases not published yet: %s", exc)

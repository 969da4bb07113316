"""The local backend end to end: real Redis, real worker processes, the real reconcile loop.

Workers here are `tests/support/stub_worker.py` (the Redis protocol without a model), so these
tests are fast and check the controller, not the engine. `test_local_backend_real_worker.py`
runs the same path with `pagefleet worker`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import redis
import redis.asyncio as aioredis

from pagefleet.platform.controller.backends.local import LocalBackend
from pagefleet.platform.controller.loop import Controller
from pagefleet.platform.controller.settings import LocalSettings
from pagefleet.platform.protocol import keys
from pagefleet.platform.registry import parse_registry

STUB = str(Path(__file__).resolve().parents[2] / "support" / "stub_worker.py")
MODEL = "m1"
SCALING = {"min_replicas": 0, "max_replicas": 2, "target_in_flight": 1, "scale_to_zero_after_s": 2,
           "scale_up_window_s": 0, "scale_down_window_s": 1}


def _backend(redis_url: str, *stub_args: str) -> LocalBackend:
    command = (sys.executable, STUB, "--model", "{model}", "--redis-url", "{redis_url}", *stub_args)
    return LocalBackend(LocalSettings(worker_command=command, drain_timeout_s=10), "unused.yaml", redis_url)


def _enqueue(client: redis.Redis, *request_ids: str) -> None:
    for request_id in request_ids:
        client.xadd(keys.request_stream(MODEL, 0), {keys.ENTRY_REQUEST_ID: request_id, keys.ENTRY_ENVELOPE: b"x"})


def _done(client: redis.Redis, *request_ids: str) -> bool:
    return all(client.exists(keys.result_stream(r)) for r in request_ids)


def _pending(client: redis.Redis) -> int:
    try:
        return client.xpending(keys.request_stream(MODEL, 0), keys.CONSUMER_GROUP)["pending"]
    except redis.ResponseError:  # no group yet: no worker has started
        return 0


async def _drive(controller: Controller, until: Callable[[], bool], timeout_s: float = 20.0) -> None:
    """Tick like the real loop (every 0.2 s here) until `until()` holds; fail after the deadline."""
    deadline = time.monotonic() + timeout_s
    while not until():
        assert time.monotonic() < deadline, "condition not reached before the deadline"
        await controller.tick()
        await asyncio.sleep(0.2)


def _run(redis_url: str, backend: LocalBackend, scenario: Callable[[Controller], object]) -> None:
    registry = parse_registry({"models": {MODEL: {"scaling": SCALING}}})

    async def main() -> None:
        controller = Controller(registry, backend, aioredis.Redis.from_url(redis_url))
        try:
            await scenario(controller)
        finally:
            await controller.aclose()
            backend.close()

    asyncio.run(main())


def test_first_request_cold_starts_a_worker_and_idle_returns_to_zero(
    redis_url: str, redis_client: redis.Redis
) -> None:
    backend = _backend(redis_url, "--start-delay", "0.5")
    pids: list[int] = []

    async def scenario(controller: Controller) -> None:
        await controller.tick()
        assert backend.current_replicas(MODEL) == 0 and backend.alive(MODEL) == 0
        _enqueue(redis_client, "r1")
        decisions = await controller.tick()
        assert decisions[MODEL].desired_replicas == 1, "activation within one tick"
        pids.extend(backend.worker_pids(MODEL))
        await _drive(controller, lambda: _done(redis_client, "r1"))
        await _drive(controller, lambda: backend.current_replicas(MODEL) == 0)
        await _drive(controller, lambda: not redis_client.hlen(keys.heartbeat_hash(MODEL)))

    _run(redis_url, backend, scenario)
    assert len(pids) == 1
    assert backend.restarts(MODEL) == 0, "the drained worker exited on SIGTERM, no restart"


def test_burst_scales_to_two_and_every_request_finishes(redis_url: str, redis_client: redis.Redis) -> None:
    backend = _backend(redis_url, "--service", "0.5")
    request_ids = [f"b{i}" for i in range(6)]
    peak = []

    async def scenario(controller: Controller) -> None:
        _enqueue(redis_client, *request_ids)
        await _drive(controller, lambda: backend.alive(MODEL) == 2)
        peak.append(backend.current_replicas(MODEL))
        await _drive(controller, lambda: _done(redis_client, *request_ids))

    _run(redis_url, backend, scenario)
    assert peak == [2]
    workers = {redis_client.xrange(keys.result_stream(r))[0][1][b"worker"] for r in request_ids}
    assert len(workers) == 2, "both workers served part of the burst"


def test_killed_worker_is_replaced_and_its_request_finishes(redis_url: str, redis_client: redis.Redis) -> None:
    backend = _backend(redis_url, "--service", "1.5", "--claim-idle-ms", "1000")
    killed: list[int] = []

    async def scenario(controller: Controller) -> None:
        _enqueue(redis_client, "k1")
        await _drive(controller, lambda: _pending(redis_client) == 1)
        killed.extend(backend.worker_pids(MODEL))
        os.kill(killed[0], signal.SIGKILL)
        await _drive(controller, lambda: backend.restarts(MODEL) == 1 and backend.alive(MODEL) == 1)
        assert backend.worker_pids(MODEL) != killed
        await _drive(controller, lambda: _done(redis_client, "k1"))

    _run(redis_url, backend, scenario)
    assert len(killed) == 1

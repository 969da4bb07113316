"""The event-driven path: the gateway's enqueue to a model at zero wakes the controller, which
scales it before its next periodic tick; the 1 s tick stays as the fallback.

Ordering comes from the controller's own decision log (each decision says what triggered it
and how many periodic ticks had run), never from wall time: the tick interval here is 60 s, so
a scale-up made after only the first tick can only have come from the wake.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import redis
import redis.asyncio as aioredis

from pagefleet.platform.controller.loop import Controller
from pagefleet.platform.gateway.broker import Broker
from pagefleet.platform.protocol import RequestEnvelope, SamplingParams, keys
from pagefleet.platform.registry import load_registry
from tests.integration.controller.test_controller_loop import RecordingBackend, _write

T = TypeVar("T")


def _envelope(model: str) -> RequestEnvelope:
    return RequestEnvelope(request_id=f"req-{time.monotonic_ns()}", model=model, kind="completion",
                           params=SamplingParams(max_tokens=4), prompt="hi", created_at=time.time())


async def _until(condition: Callable[[], Awaitable[T]], what: str, timeout_s: float = 30.0) -> T:
    deadline = time.monotonic() + timeout_s
    while not (value := await condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)  # polling a condition with a deadline
    return value


def test_an_enqueue_at_zero_scales_the_model_before_the_next_tick(
        tmp_path: Path, redis_url: str, redis_client: redis.Redis) -> None:
    path = tmp_path / "registry.yaml"
    _write(path, ["cold", "other"], 1_000)
    backend = RecordingBackend()

    async def scenario() -> list[dict[bytes, bytes]]:
        client = aioredis.Redis.from_url(redis_url)
        controller = Controller(load_registry(path), backend, aioredis.Redis.from_url(redis_url))
        stop = asyncio.Event()
        running = asyncio.create_task(controller.run(stop, interval_s=60.0))
        try:
            # The first tick has run (both models at zero) and the wake listener is subscribed.
            await _until(lambda: client.hexists(keys.DESIRED_REPLICAS, "other"), "the first tick")
            await _until(lambda: _subscribers(client), "the wake listener")
            assert backend.replicas == {"cold": 0, "other": 0}
            broker = Broker(client, cancel_retention_s=60.0)
            await broker.enqueue([_envelope("cold")], keys.PRIORITY_INTERACTIVE)
            assert await broker.wake_if_needed("cold", 0, heartbeat_max_age_s=5.0)
            await _until(lambda: _up_events(client), "the scale-up decision")
            return await _up_events(client)
        finally:
            stop.set()
            await running
            await controller.aclose()
            await client.aclose()

    events = asyncio.run(scenario())
    assert len(events) == 1 and events[0][b"model"] == b"cold"
    assert events[0][b"trigger"] == b"wake" and events[0][b"tick"] == b"1"
    assert backend.replicas == {"cold": 1, "other": 0}


def test_a_wake_for_an_unknown_model_changes_nothing(
        tmp_path: Path, redis_url: str, redis_client: redis.Redis) -> None:
    path = tmp_path / "registry.yaml"
    _write(path, ["known"], 1_000)
    backend = RecordingBackend()

    async def scenario() -> None:
        controller = Controller(load_registry(path), backend, aioredis.Redis.from_url(redis_url))
        try:
            await controller.tick()
            assert await controller.wake("unknown") is None
            decision = await controller.wake("known")
            assert decision is not None and decision.desired_replicas == 0
        finally:
            await controller.aclose()

    asyncio.run(scenario())
    assert redis_client.xlen(keys.SCALING_EVENTS) == 0


async def _subscribers(client: aioredis.Redis) -> bool:
    return dict(await client.pubsub_numsub(keys.WAKE_CHANNEL)).get(keys.WAKE_CHANNEL.encode(), 0) >= 1


async def _up_events(client: aioredis.Redis) -> list[dict[bytes, bytes]]:
    return [fields for _id, fields in await client.xrange(keys.SCALING_EVENTS)
            if fields[b"direction"] == b"up"]


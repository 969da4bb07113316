"""The controller publishes each model's desired replicas and its scaling decisions (with their
reasons) to Redis, in a capped stream that the console reads newest first."""

from __future__ import annotations

import asyncio
from pathlib import Path

import redis
import redis.asyncio as aioredis

from pagefleet.platform.controller.loop import Controller
from pagefleet.platform.protocol import keys
from pagefleet.platform.registry import load_registry
from tests.integration.controller.test_controller_loop import RecordingBackend, _queue, _write


def test_a_scale_up_is_streamed_with_its_reason_and_holds_are_not(
        tmp_path: Path, redis_url: str, redis_client: redis.Redis) -> None:
    path = tmp_path / "registry.yaml"
    _write(path, ["a", "b"], 1_000)
    _queue(redis_client, "b")
    backend = RecordingBackend()

    async def scenario() -> None:
        controller = Controller(load_registry(path), backend, aioredis.Redis.from_url(redis_url))
        try:
            await controller.tick()
            await controller.tick()  # b already has its replica: a hold, not a second event
        finally:
            await controller.aclose()

    asyncio.run(scenario())
    assert redis_client.hgetall(keys.DESIRED_REPLICAS) == {b"a": b"0", b"b": b"1"}
    events = redis_client.xrevrange(keys.SCALING_EVENTS)
    assert len(events) == 1
    fields = events[0][1]
    assert fields[b"model"] == b"b" and fields[b"direction"] == b"up"
    assert (fields[b"from"], fields[b"to"]) == (b"0", b"1")
    assert fields[b"reason"].decode().strip() and float(fields[b"at"]) > 0


def test_publishing_survives_an_unreachable_redis(tmp_path: Path) -> None:
    from pagefleet.platform.controller.decisions import publish_decision
    from pagefleet.platform.controller.policy import Decision, PolicyState
    from tests.support.redis_server import free_port

    async def scenario() -> None:
        client = aioredis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0")
        try:
            await publish_decision(client, "a", 0, Decision(1, "up", "demand", PolicyState()), 1.0)
        finally:
            await client.aclose()

    asyncio.run(scenario())  # no exception: scaling never waits on the console's record

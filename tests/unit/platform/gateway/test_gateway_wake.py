"""When the gateway wakes the controller: an enqueue to a model with no ready worker (at zero)
or with work already waiting (saturated) is announced on the wake channel, at most once per
model every `WAKE_MIN_INTERVAL_S`; a model with a ready worker and an empty queue is not."""

from __future__ import annotations

import asyncio
import time

import fakeredis
import fakeredis.aioredis
import pytest

from pagefleet.platform.gateway import broker as broker_module
from pagefleet.platform.gateway.broker import Broker
from pagefleet.platform.protocol import Heartbeat, encode, keys


def _wakes(monkeypatch: pytest.MonkeyPatch, steps: list[tuple[str, int, bool]],
           clock: list[float]) -> list[bool]:
    """Run `(model, backlog_before, add_ready_worker_first)` steps; the monotonic clock advances
    by `clock[i]` before step i."""
    server = fakeredis.FakeServer()
    now = [1000.0]
    monkeypatch.setattr(broker_module.time, "monotonic", lambda: now[0])

    async def scenario() -> list[bool]:
        client = fakeredis.aioredis.FakeRedis(server=server)
        broker = Broker(client, cancel_retention_s=60.0, backlog_max_age_s=0.0)
        results = []
        for (model, backlog, ready), advance in zip(steps, clock, strict=True):
            now[0] += advance
            if ready:
                beat = Heartbeat(worker_id="w1", model=model, state="ready", timestamp=time.time())
                await client.hset(keys.heartbeat_hash(model), "w1", encode(beat))
            results.append(await broker.wake_if_needed(model, backlog, heartbeat_max_age_s=5.0))
        return results

    return asyncio.run(scenario())


def test_a_model_at_zero_is_woken_once_per_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    step = broker_module.WAKE_MIN_INTERVAL_S
    assert _wakes(monkeypatch, [("m", 0, False), ("m", 1, False), ("m", 1, False), ("n", 0, False)],
                  [0.0, step / 2, step, 0.0]) == [True, False, True, True]


def test_a_ready_worker_with_an_empty_queue_needs_no_wake(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _wakes(monkeypatch, [("m", 0, True)], [0.0]) == [False]


def test_a_saturated_model_is_woken_even_with_ready_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _wakes(monkeypatch, [("m", 3, True)], [0.0]) == [True]


def test_the_wake_names_the_model_on_the_channel() -> None:
    server = fakeredis.FakeServer()

    async def scenario() -> object:
        client = fakeredis.aioredis.FakeRedis(server=server)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(keys.WAKE_CHANNEL)
        await Broker(client, cancel_retention_s=60.0).wake_if_needed("m", 0, heartbeat_max_age_s=5.0)
        messages = [await pubsub.get_message(timeout=0.2) for _ in range(5)]  # the first may be None
        await pubsub.aclose()
        return [m["data"] for m in messages if m is not None]

    assert asyncio.run(scenario()) == [b"m"]

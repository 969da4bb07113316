"""Reading scaling signals from a real Redis: backlog, in-flight, arrivals and heartbeats."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis
import redis.asyncio as aioredis

from pagefleet.platform.controller.policy import Signals
from pagefleet.platform.controller.signals import SignalsUnavailable, read_signals
from pagefleet.platform.protocol import Heartbeat, encode, keys
from tests.support.redis_server import free_port

MODEL = "m1"


def _read(url: str, now: float | None = None) -> Signals:
    async def go() -> Signals:
        client = aioredis.Redis.from_url(url)
        try:
            return await read_signals(client, MODEL, time.time() if now is None else now, stale_after_s=5.0)
        finally:
            await client.aclose()

    return asyncio.run(go())


def _enqueue(client: redis.Redis, priority: int, count: int) -> list[bytes]:
    stream = keys.request_stream(MODEL, priority)
    return [client.xadd(stream, {keys.ENTRY_REQUEST_ID: f"r{i}", keys.ENTRY_ENVELOPE: b"x"})
            for i in range(count)]


def test_nothing_queued_reads_as_zero(redis_url: str, redis_client: redis.Redis) -> None:
    signals = _read(redis_url)
    assert (signals.backlog, signals.in_flight, signals.arrivals_total) == (0, 0, 0)
    assert signals.workers.ready == 0


def test_stream_without_group_is_all_backlog(redis_url: str, redis_client: redis.Redis) -> None:
    _enqueue(redis_client, 0, 3)
    _enqueue(redis_client, 2, 1)
    signals = _read(redis_url)
    assert signals.backlog == 4 and signals.batch_backlog == 1
    assert signals.arrivals_total == 4


def test_delivered_entries_are_in_flight_until_acked(redis_url: str, redis_client: redis.Redis) -> None:
    stream = keys.request_stream(MODEL, 0)
    _enqueue(redis_client, 0, 5)
    redis_client.xgroup_create(stream, keys.CONSUMER_GROUP, id="0")
    taken = redis_client.xreadgroup(keys.CONSUMER_GROUP, "w1", {stream: ">"}, count=2)[0][1]
    signals = _read(redis_url)
    assert (signals.backlog, signals.in_flight) == (3, 2)
    redis_client.xack(stream, keys.CONSUMER_GROUP, taken[0][0])
    assert _read(redis_url).in_flight == 1


def test_backlog_is_counted_when_redis_cannot_report_lag(redis_url: str, redis_client: redis.Redis) -> None:
    stream = keys.request_stream(MODEL, 1)
    ids = _enqueue(redis_client, 1, 6)
    redis_client.xgroup_create(stream, keys.CONSUMER_GROUP, id="0")
    redis_client.xreadgroup(keys.CONSUMER_GROUP, "w1", {stream: ">"}, count=1)
    redis_client.xdel(stream, ids[3])  # a tombstone after the last delivered id: lag is unknown
    assert redis_client.xinfo_groups(stream)[0]["lag"] is None
    assert _read(redis_url).backlog == 4


def test_heartbeats_by_state_and_stale_ones_dropped(redis_url: str, redis_client: redis.Redis) -> None:
    now = time.time()
    beats = {
        "a": Heartbeat(worker_id="a", model=MODEL, state="ready", running=3, kv_usage=0.5, capacity=8, timestamp=now),
        "b": Heartbeat(worker_id="b", model=MODEL, state="ready", running=1, kv_usage=0.1, capacity=8, timestamp=now - 1),
        "c": Heartbeat(worker_id="c", model=MODEL, state="starting", timestamp=now),
        "d": Heartbeat(worker_id="d", model=MODEL, state="draining", running=2, timestamp=now),
        "e": Heartbeat(worker_id="e", model=MODEL, state="ready", running=9, timestamp=now - 60),
    }
    redis_client.hset(keys.heartbeat_hash(MODEL), mapping={k: encode(v) for k, v in beats.items()})
    redis_client.hset(keys.heartbeat_hash(MODEL), "garbage", b"\xff\x00")
    workers = _read(redis_url, now).workers
    assert (workers.starting, workers.ready, workers.draining) == (1, 2, 1)
    assert workers.running == 6
    assert workers.kv_usage == pytest.approx(0.3)


def test_unreachable_redis_is_reported_not_zero() -> None:
    with pytest.raises(SignalsUnavailable):
        _read(f"redis://127.0.0.1:{free_port()}/0")

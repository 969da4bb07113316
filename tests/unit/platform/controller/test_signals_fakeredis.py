"""Controller signals and the shared backlog definition on fakeredis (no server, no blocking):
the batch (priority 2) part is reported apart, and the async reading (controller, gateway)
and the sync one (batch runner) agree. The real-server counterpart is
tests/integration/controller/test_signals.py."""

from __future__ import annotations

import asyncio

import fakeredis
import fakeredis.aioredis

from pagefleet.platform.controller.signals import read_signals
from pagefleet.platform.protocol import keys
from pagefleet.platform.protocol.backlog import queue_backlog, queue_backlog_sync

MODEL = "m"


def _fill(client: fakeredis.FakeRedis) -> None:
    """Interactive: 2 queued. Jobs: 1 queued, 1 delivered. Batch: 3 queued, 2 delivered."""
    for priority, count, taken in ((0, 2, 0), (1, 2, 1), (2, 5, 2)):
        stream = keys.request_stream(MODEL, priority)
        for i in range(count):
            client.xadd(stream, {keys.ENTRY_REQUEST_ID: f"r{i}", keys.ENTRY_ENVELOPE: b"x"})
        if taken:
            client.xgroup_create(stream, keys.CONSUMER_GROUP, id="0")
            client.xreadgroup(keys.CONSUMER_GROUP, "w1", {stream: ">"}, count=taken)


def test_batch_work_is_reported_apart_and_is_not_urgent() -> None:
    server = fakeredis.FakeServer()
    _fill(fakeredis.FakeRedis(server=server))
    signals = asyncio.run(read_signals(fakeredis.aioredis.FakeRedis(server=server), MODEL, now=0.0))
    assert (signals.backlog, signals.in_flight, signals.arrivals_total) == (6, 3, 9)
    assert (signals.batch_backlog, signals.batch_in_flight) == (3, 2)
    assert signals.urgent_demand == 4  # 2 interactive + 1 job queued, 1 job running


def test_sync_and_async_backlog_agree() -> None:
    server = fakeredis.FakeServer()
    sync = fakeredis.FakeRedis(server=server)
    _fill(sync)
    client = fakeredis.aioredis.FakeRedis(server=server)
    for priority, expected in ((0, 2), (1, 1), (2, 3)):
        assert queue_backlog_sync(sync, MODEL, priority) == expected
        assert asyncio.run(queue_backlog(client, MODEL, priority)) == expected
    assert queue_backlog_sync(sync, "no-such-model", 2) == 0

"""Back-off bounds, outage logging once per outage, and supervised tasks that come back."""

from __future__ import annotations

import asyncio
import logging

import pytest
from redis.exceptions import BusyLoadingError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError

from pagefleet.platform.protocol.resilience import (
    Backoff,
    RedisOutages,
    retry_transient,
    supervise,
)

log = logging.getLogger("test-resilience")
FAST = Backoff(base_s=0.001, cap_s=0.002)


def test_backoff_grows_to_its_cap_with_jitter() -> None:
    backoff = Backoff(base_s=0.1, cap_s=2.0)
    for attempt, ceiling in [(0, 0.1), (1, 0.2), (3, 0.8), (5, 2.0), (500, 2.0)]:
        delays = {backoff.delay(attempt) for _ in range(50)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(delays) > 1  # jittered
    with pytest.raises(ValueError):
        Backoff(base_s=1.0, cap_s=0.5)


def test_outage_and_recovery_are_logged_and_counted_once(caplog: pytest.LogCaptureFixture) -> None:
    counted = []
    outages = RedisOutages(log, lambda: counted.append(1))
    with caplog.at_level(logging.INFO, logger=log.name):
        for task in ("pulling", "heartbeat", "pulling"):
            outages.failed(task, RedisConnectionError("refused"))
        outages.recovered()
        outages.recovered()
    messages = [r.getMessage() for r in caplog.records]
    assert sum("unreachable" in m for m in messages) == 1
    assert sum("reachable again" in m for m in messages) == 1
    assert counted == [1] and not outages.down


def test_retry_transient_waits_out_an_outage_but_not_a_refusal() -> None:
    outages = RedisOutages(log)
    replies: list[Exception | str] = [RedisConnectionError("down"), BusyLoadingError("loading"), "ok"]

    async def op() -> str:
        reply = replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply

    async def refused() -> None:
        raise ResponseError("WRONGTYPE")

    async def scenario() -> None:
        assert await retry_transient(op, outages, "op", FAST) == "ok"
        assert outages.num_outages == 1 and not outages.down
        with pytest.raises(ResponseError):
            await retry_transient(refused, outages, "refused", FAST)

    asyncio.run(scenario())


def test_supervise_restarts_a_task_after_any_failure_until_it_returns() -> None:
    outages = RedisOutages(log)
    failures: list[Exception] = [RedisConnectionError("reset"), RuntimeError("bug")]
    runs = []

    async def body() -> None:
        runs.append(1)
        if failures:
            raise failures.pop(0)

    asyncio.run(supervise(body, outages, "task", backoff=FAST))
    assert len(runs) == 3 and outages.num_outages == 1


def test_supervise_stops_when_asked() -> None:
    async def scenario() -> None:
        stop = asyncio.Event()

        async def body() -> None:
            stop.set()
            raise RedisConnectionError("down")

        await asyncio.wait_for(supervise(body, RedisOutages(log), "task", stop, Backoff(1.0, 10.0)), 5)

    asyncio.run(scenario())

"""Redis outages as a normal event: one client factory, one back-off, one outage log.

Every long-lived Redis task of a worker or the controller runs under `supervise`, and every
Redis step a request cannot skip runs under `retry_transient`; both wait with capped,
jittered exponential back-off and never give up on a transient error (a connection refused,
reset or timed out, or `LOADING` while Redis replays its AOF). `RedisOutages` logs the first
failure of an outage and the recovery once each, however many tasks notice them, and counts
outages for a metric. Torch-free, so the gateway and controller can import it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

T = TypeVar("T")

# BusyLoadingError (Redis replaying its AOF) is a ConnectionError.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (RedisConnectionError, RedisTimeoutError)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential back-off with equal jitter: attempt k waits in [d/2, d], d = min(cap, base * 2^k).

    Jitter spreads the reconnects of many workers after a Redis restart, so they do not all
    knock at once.
    """

    base_s: float = 0.05
    cap_s: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.base_s <= self.cap_s:
            raise ValueError(f"need 0 < base_s <= cap_s, got {self.base_s}, {self.cap_s}")

    def delay(self, attempt: int) -> float:
        ceiling = min(self.cap_s, self.base_s * 2 ** min(attempt, 30))
        return ceiling / 2 + random.uniform(0, ceiling / 2)


def reconnecting(retries: int = 3, health_check_interval: float = 10.0) -> dict[str, Any]:
    """Pool options that drop dead connections: PING after `health_check_interval` s idle, and
    every command retried on a fresh connection (`retries` times, with jittered back-off) when
    its pooled one turns out to be stale after a Redis restart. Every Redis client uses these."""
    return {"health_check_interval": health_check_interval,
            "retry": Retry(ExponentialWithJitterBackoff(cap=1.0, base=0.05), retries,
                           supported_errors=TRANSIENT_ERRORS),
            "retry_on_error": list(TRANSIENT_ERRORS)}


def connect(url: str, socket_timeout: float | None = 30.0) -> aioredis.Redis:
    """A client with `reconnecting` pool options (workers, controller)."""
    return aioredis.Redis.from_url(url, socket_timeout=socket_timeout, socket_connect_timeout=5.0,
                                   **reconnecting())


class RedisOutages:
    """One process's view of whether Redis is reachable; logs each transition once."""

    def __init__(self, log: logging.Logger, on_outage: Callable[[], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.log = log
        self.on_outage = on_outage
        self.clock = clock
        self.down_since: float | None = None
        self.num_outages = 0

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def failed(self, task: str, exc: BaseException) -> None:
        if self.down_since is not None:
            self.log.debug("%s: redis still unreachable: %s", task, exc)
            return
        self.down_since = self.clock()
        self.num_outages += 1
        if self.on_outage is not None:
            self.on_outage()
        self.log.warning("redis unreachable (%s: %s); retrying with back-off", task, exc)

    def recovered(self) -> None:
        if self.down_since is None:
            return
        self.log.warning("redis reachable again after %.1f s", self.clock() - self.down_since)
        self.down_since = None


async def retry_transient(op: Callable[[], Awaitable[T]], outages: RedisOutages, what: str,
                          backoff: Backoff = Backoff()) -> T:
    """Run `op` until it does not fail transiently; other errors propagate at once."""
    attempt = 0
    while True:
        try:
            result = await op()
        except TRANSIENT_ERRORS as exc:
            outages.failed(what, exc)
            await asyncio.sleep(backoff.delay(attempt))
            attempt += 1
            continue
        outages.recovered()
        return result


async def supervise(body: Callable[[], Awaitable[None]], outages: RedisOutages, what: str,
                    stop: asyncio.Event | None = None, backoff: Backoff = Backoff()) -> None:
    """Run the long-lived task `body` until it returns (or `stop` is set), restarting it after
    any failure: a transient Redis error counts as an outage, anything else is logged with its
    traceback. Either way the task comes back; it never dies silently."""
    attempt = 0
    while stop is None or not stop.is_set():
        try:
            await body()
            return
        except TRANSIENT_ERRORS as exc:
            if not outages.down:
                attempt = 0  # a new outage starts its back-off afresh
            outages.failed(what, exc)
        except Exception:
            outages.log.exception("%s failed; restarting it", what)
        delay = backoff.delay(attempt)
        attempt += 1
        if stop is None:
            await asyncio.sleep(delay)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)

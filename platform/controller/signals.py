"""Reading one model's scaling signals from Redis: queues, pending work, arrivals, heartbeats.

Backlog is what no worker has taken yet: the consumer group's `lag` (Redis 7), or, where Redis
cannot tell (entries deleted from the middle of the stream), a count of the entries after the
group's last delivered id. In-flight is the group's pending count. A stream without a group
has had no worker yet, so all of it is backlog. Heartbeats older than `stale_after_s` are from
dead workers and are ignored.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from pagefleet.platform.controller.policy import Signals, WorkerCounts
from pagefleet.platform.protocol import Heartbeat, fresh_heartbeats, keys

log = logging.getLogger(__name__)
_COUNT_LIMIT = 100_000  # fallback counting stops here; beyond it the answer is "a lot" anyway


class SignalsUnavailable(Exception):
    """Redis could not be read; the policy holds the current replicas."""


async def read_signals(
    client: aioredis.Redis, model: str, now: float, stale_after_s: float = 5.0
) -> Signals:
    """One observation of `model`; raises `SignalsUnavailable` when Redis fails."""
    try:
        backlog_by_priority: list[int] = []
        in_flight = 0
        arrivals_total = 0
        for priority in keys.PRIORITIES:
            stream = await _read_stream(client, keys.request_stream(model, priority))
            backlog_by_priority.append(stream.backlog)
            in_flight += stream.pending
            arrivals_total += stream.entries_added
        raw_heartbeats = await client.hgetall(keys.heartbeat_hash(model))
    except RedisError as exc:
        raise SignalsUnavailable(f"reading signals of {model!r}: {exc}") from exc
    heartbeats = fresh_heartbeats(raw_heartbeats.values(), now, stale_after_s)
    return Signals(at=now, backlog=sum(backlog_by_priority), in_flight=in_flight,
                   arrivals_total=arrivals_total, workers=count_workers(heartbeats),
                   backlog_by_priority=tuple(backlog_by_priority))


class _StreamReading(msgspec.Struct, frozen=True):
    backlog: int = 0
    pending: int = 0
    entries_added: int = 0


async def _read_stream(client: aioredis.Redis, key: str) -> _StreamReading:
    try:
        info = await client.xinfo_stream(key)
    except ResponseError as exc:
        if "no such key" in str(exc).lower():
            return _StreamReading()
        raise
    entries_added = int(info.get("entries-added", info.get("length", 0)))
    group = next((g for g in await client.xinfo_groups(key)
                  if _text(g.get("name")) == keys.CONSUMER_GROUP), None)
    if group is None:
        return _StreamReading(backlog=int(info.get("length", 0)), entries_added=entries_added)
    lag = group.get("lag")
    if lag is None:
        after = "(" + _text(group.get("last-delivered-id", "0-0"))
        lag = len(await client.xrange(key, min=after, max="+", count=_COUNT_LIMIT))
    return _StreamReading(backlog=int(lag), pending=int(group.get("pending", 0)),
                          entries_added=entries_added)


def count_workers(heartbeats: list[Heartbeat]) -> WorkerCounts:
    """Summarise live workers by state; KV usage is the mean over ready workers."""
    ready = [h for h in heartbeats if h.state == "ready"]
    return WorkerCounts(
        starting=sum(1 for h in heartbeats if h.state == "starting"),
        ready=len(ready),
        draining=sum(1 for h in heartbeats if h.state == "draining"),
        running=sum(h.running for h in heartbeats),
        waiting=sum(h.waiting for h in heartbeats),
        kv_usage=sum(h.kv_usage for h in ready) / len(ready) if ready else 0.0,
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)

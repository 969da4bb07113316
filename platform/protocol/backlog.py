"""The one definition of a queue's backlog, read by the gateway's 429 check and the controller.

Backlog is what no worker has taken yet: the consumer group's `lag` (Redis 7). Redis reports
`lag` as unknown (None) after entries were deleted from the middle of the stream (workers XDEL
what they ack), and then the exact answer is the number of entries after the group's last
delivered id, counted up to `count_limit` (beyond it the answer is "a lot" anyway). A stream
without the group has had no worker yet, so all of it is backlog. `xlen - pending` is not a
backlog: acked-and-kept entries would count as waiting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from pagefleet.platform.protocol import keys

COUNT_LIMIT = 100_000


@dataclass(frozen=True, slots=True)
class QueueReading:
    """One priority stream of one model: undelivered entries, entries pulled but not acked,
    and entries ever added (for arrival rates)."""

    backlog: int = 0
    pending: int = 0
    entries_added: int = 0


async def read_queue(client: aioredis.Redis, stream: str,
                     count_limit: int = COUNT_LIMIT) -> QueueReading:
    """Read one request stream (backlog, pending, entries added); a missing stream is empty."""
    try:
        info = await client.xinfo_stream(stream)
    except ResponseError as exc:
        if "no such key" in str(exc).lower():
            return QueueReading()
        raise
    length = int(info.get("length", 0))
    entries_added = int(info.get("entries-added", length))
    group = await _group(client, stream)
    return QueueReading(backlog=await _backlog(client, stream, group, length, count_limit),
                        pending=int(group.get("pending", 0)) if group else 0,
                        entries_added=entries_added)


async def queue_backlog(client: aioredis.Redis, model: str, priority: int,
                        count_limit: int = COUNT_LIMIT) -> int:
    """Undelivered entries of one model at one priority: the admission check's one round trip
    (XINFO GROUPS) in the common case."""
    stream = keys.request_stream(model, priority)
    try:
        group = await _group(client, stream)
    except ResponseError as exc:
        if "no such key" in str(exc).lower():
            return 0
        raise
    return await _backlog(client, stream, group, None, count_limit)


def queue_backlog_sync(client: redis.Redis, model: str, priority: int,
                       count_limit: int = COUNT_LIMIT) -> int:
    """`queue_backlog` for synchronous callers (the batch runner in a Celery worker)."""
    stream = keys.request_stream(model, priority)
    try:
        group = _workers_group(client.xinfo_groups(stream))
    except ResponseError as exc:
        if "no such key" in str(exc).lower():
            return 0
        raise
    if group is None:
        return int(client.xlen(stream))
    lag = group.get("lag")
    if lag is None:
        lag = len(client.xrange(stream, min=_after_delivered(group), max="+", count=count_limit))
    return int(lag)


async def _group(client: aioredis.Redis, stream: str) -> dict | None:
    return _workers_group(await client.xinfo_groups(stream))


def _workers_group(groups: list[dict]) -> dict | None:
    return next((g for g in groups if _text(g.get("name")) == keys.CONSUMER_GROUP), None)


def _after_delivered(group: dict) -> str:
    """XRANGE's exclusive start just after what the group has delivered."""
    return "(" + _text(group.get("last-delivered-id", "0-0"))


async def _backlog(client: aioredis.Redis, stream: str, group: dict | None, length: int | None,
                   count_limit: int) -> int:
    if group is None:  # no worker has read this stream yet: all of it waits
        return length if length is not None else int(await client.xlen(stream))
    lag = group.get("lag")
    if lag is None:
        lag = len(await client.xrange(stream, min=_after_delivered(group), max="+", count=count_limit))
    return int(lag)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)

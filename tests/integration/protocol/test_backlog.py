"""The one backlog formula (protocol.backlog) on a real Redis: what no worker has taken yet.

The gateway once counted `xlen - pending`, which calls entries acked but kept "waiting", and
the controller counted otherwise; both now call these functions.
"""

from __future__ import annotations

import asyncio

import redis
import redis.asyncio as aioredis

from pagefleet.platform.protocol import keys
from pagefleet.platform.protocol.backlog import queue_backlog, read_queue

MODEL = "backlog-model"


async def backlogs(url: str) -> tuple[int, int]:
    client = aioredis.Redis.from_url(url)
    try:
        stream = keys.request_stream(MODEL, 0)
        return await queue_backlog(client, MODEL, 0), (await read_queue(client, stream)).backlog
    finally:
        await client.aclose()


def test_backlog_counts_undelivered_entries_only(redis_client: redis.Redis, redis_url: str) -> None:
    stream = keys.request_stream(MODEL, 0)
    assert asyncio.run(backlogs(redis_url)) == (0, 0)  # no stream yet
    ids = [redis_client.xadd(stream, {"id": f"r{k}"}) for k in range(5)]
    assert asyncio.run(backlogs(redis_url)) == (5, 5)  # no group yet: everything waits
    redis_client.xgroup_create(stream, keys.CONSUMER_GROUP, id="0")
    redis_client.xreadgroup(keys.CONSUMER_GROUP, "w1", {stream: ">"}, count=3)
    redis_client.xack(stream, keys.CONSUMER_GROUP, ids[0], ids[1])  # acked, kept in the stream
    assert asyncio.run(backlogs(redis_url)) == (2, 2)  # xlen - pending would say 4


def test_backlog_without_lag_counts_after_the_last_delivered_id(redis_client: redis.Redis,
                                                                redis_url: str) -> None:
    stream = keys.request_stream(MODEL, 0)
    ids = [redis_client.xadd(stream, {"id": f"r{k}"}) for k in range(6)]
    redis_client.xgroup_create(stream, keys.CONSUMER_GROUP, id="0")
    redis_client.xreadgroup(keys.CONSUMER_GROUP, "w1", {stream: ">"}, count=2)
    redis_client.xdel(stream, ids[3])  # a deletion past the group's position: lag is unknown
    group = redis_client.xinfo_groups(stream)[0]
    assert group["lag"] is None
    assert asyncio.run(backlogs(redis_url)) == (3, 3)

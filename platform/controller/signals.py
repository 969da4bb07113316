"""Reading one model's scaling signals from Redis: queues, pending work, arrivals, heartbeats.

Backlog and in-flight per priority come from `protocol.backlog.read_queue`, the definition the
gateway's admission check uses too, so admission and scaling never disagree. The batch
(priority 2) part is reported apart: the policy never panics for it. Heartbeats older
than `stale_after_s` are from dead workers and are ignored.
"""

from __future__ import annotations

import logging

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from pagefleet.platform.controller.policy import Signals, WorkerCounts
from pagefleet.platform.protocol import Heartbeat, fresh_heartbeats, keys
from pagefleet.platform.protocol.backlog import read_queue

log = logging.getLogger(__name__)


class SignalsUnavailable(Exception):
    """Redis could not be read; the policy holds the current replicas."""


async def read_signals(
    client: aioredis.Redis, model: str, now: float, stale_after_s: float = 5.0
) -> Signals:
    """One observation of `model`; raises `SignalsUnavailable` when Redis fails."""
    try:
        queues = {priority: await read_queue(client, keys.request_stream(model, priority))
                  for priority in keys.PRIORITIES}
        raw_heartbeats = await client.hgetall(keys.heartbeat_hash(model))
    except RedisError as exc:
        raise SignalsUnavailable(f"reading signals of {model!r}: {exc}") from exc
    heartbeats = fresh_heartbeats(raw_heartbeats.values(), now, stale_after_s)
    batch = queues[keys.PRIORITY_BATCH]
    return Signals(at=now, backlog=sum(q.backlog for q in queues.values()),
                   in_flight=sum(q.pending for q in queues.values()),
                   arrivals_total=sum(q.entries_added for q in queues.values()),
                   workers=count_workers(heartbeats),
                   batch_backlog=batch.backlog, batch_in_flight=batch.pending)


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

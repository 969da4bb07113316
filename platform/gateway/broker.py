"""Everything the gateway does with Redis besides reading results: queue requests, cancel
them, measure a model's backlog and its ready workers. Route handlers never touch Redis keys.

Results are read by `delivery.ResultHub`, on its own connections, so the commands here never
wait behind thousands of blocked reads.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from pagefleet.platform.protocol import RequestEnvelope, encode, fresh_heartbeats, keys
from pagefleet.platform.protocol.backlog import queue_backlog


class Broker:
    """The gateway's view of Redis; one per app, created in the lifespan."""

    def __init__(self, redis: aioredis.Redis, cancel_retention_s: float) -> None:
        self.redis = redis
        self._cancel_retention_ms = int(cancel_retention_s * 1000)

    async def enqueue(self, envelopes: Sequence[RequestEnvelope], priority: int) -> None:
        """Queue the envelopes on their model's stream, creating the consumer group if needed."""
        pipe = self.redis.pipeline(transaction=False)
        for envelope in envelopes:
            stream = keys.request_stream(envelope.model, priority)
            pipe.xgroup_create(stream, keys.CONSUMER_GROUP, id="0", mkstream=True)
            pipe.xadd(stream, {keys.ENTRY_REQUEST_ID: envelope.request_id,
                               keys.ENTRY_ENVELOPE: encode(envelope)})
        for result in await pipe.execute(raise_on_error=False):
            if isinstance(result, ResponseError) and "BUSYGROUP" not in str(result):
                raise result

    async def cancel(self, model: str, request_ids: Sequence[str]) -> None:
        """Flag the requests (a worker that pulls one later skips it) and tell the workers."""
        pipe = self.redis.pipeline(transaction=False)
        for request_id in request_ids:
            pipe.set(keys.cancel_flag(request_id), 1, px=self._cancel_retention_ms)
            pipe.publish(keys.cancel_channel(model), request_id)
        await pipe.execute()

    async def backlog(self, model: str, priority: int) -> int:
        """Undelivered entries of one model's queue at one priority (`protocol.backlog`)."""
        return await queue_backlog(self.redis, model, priority)

    async def total_backlog(self, model: str) -> int:
        """Undelivered entries over all of a model's priorities."""
        return sum([await self.backlog(model, priority) for priority in keys.PRIORITIES])

    async def ready_workers(self, model: str, max_age_s: float) -> int:
        """Workers of `model` whose last heartbeat says ready and is recent."""
        beats = await self.redis.hvals(keys.heartbeat_hash(model))
        return sum(beat.state == "ready" for beat in fresh_heartbeats(beats, time.time(), max_age_s))

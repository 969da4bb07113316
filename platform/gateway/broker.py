"""Everything the gateway does with Redis streams: queue requests, read their results, cancel
them, and measure a model's backlog. Route handlers never touch Redis keys directly.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from pagefleet.platform.protocol import (
    ErrorEvent,
    FinalEvent,
    RequestEnvelope,
    ResultEvent,
    decode_event,
    encode,
    fresh_heartbeats,
    keys,
)

_MAX_BLOCK_MS = 5_000  # re-check the deadline at least this often while a request is queued
_MIN_BLOCK_MS = 1


class DeadlineExceeded(Exception):
    """No terminal event arrived before the request's deadline."""


@dataclass(frozen=True, slots=True)
class SourcedEvent:
    """A result event and which of the request's sub-requests (prompts) it belongs to."""

    source: int
    event: ResultEvent


class Broker:
    """The gateway's view of Redis; one per app, created in the lifespan."""

    def __init__(self, redis: aioredis.Redis, cancel_retention_s: float) -> None:
        self.redis = redis
        self._cancel_retention_ms = int(cancel_retention_s * 1000)
        # A blocking XREAD must return before the client's socket timeout fires (redis-py 8
        # defaults it to 5 s), or a quiet queue would look like a dead Redis.
        socket_timeout = redis.connection_pool.connection_kwargs.get("socket_timeout")
        self._max_block_ms = _MAX_BLOCK_MS if socket_timeout is None else max(
            _MIN_BLOCK_MS, min(_MAX_BLOCK_MS, int(socket_timeout * 1000 / 2)))

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

    async def backlog(self, model: str) -> int:
        """Undelivered entries over all of a model's priorities (what no worker has pulled)."""
        total = 0
        for priority in keys.PRIORITIES:
            stream = keys.request_stream(model, priority)
            try:
                groups = await self.redis.xinfo_groups(stream)
            except ResponseError:  # no such stream yet
                continue
            group = next((g for g in groups if _text(g["name"]) == keys.CONSUMER_GROUP), None)
            if group is None:
                total += await self.redis.xlen(stream)
            elif group.get("lag") is not None:
                total += int(group["lag"])
            else:  # lag is unknown after deletions; entries minus pending is an upper bound
                total += max(0, await self.redis.xlen(stream) - int(group["pending"]))
        return total

    async def ready_workers(self, model: str, max_age_s: float) -> int:
        """Workers of `model` whose last heartbeat says ready and is recent."""
        beats = await self.redis.hvals(keys.heartbeat_hash(model))
        return sum(beat.state == "ready" for beat in fresh_heartbeats(beats, time.time(), max_age_s))

    async def events(self, request_ids: Sequence[str], deadline: float) -> AsyncIterator[SourcedEvent]:
        """Result events of several requests as they arrive, until each has a final or error.

        One XREAD over all the result streams, so a list prompt of k strings costs one
        blocked connection, not k. Raises `DeadlineExceeded` when the deadline passes first.
        """
        streams = {keys.result_stream(rid): index for index, rid in enumerate(request_ids)}
        last_ids = dict.fromkeys(streams, "0")
        while last_ids:
            remaining_ms = int((deadline - time.time()) * 1000)
            if remaining_ms <= 0:
                raise DeadlineExceeded
            reply = await self.redis.xread(last_ids, block=max(1, min(remaining_ms, self._max_block_ms)))
            for stream_name, entries in reply or []:
                stream = _text(stream_name)
                for entry_id, fields in entries:
                    last_ids[stream] = entry_id
                    event = decode_event(fields[keys.ENTRY_EVENT.encode()])
                    yield SourcedEvent(streams[stream], event)
                    if isinstance(event, FinalEvent | ErrorEvent):
                        del last_ids[stream]
                        break


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value

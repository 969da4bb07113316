"""Batches: records in Redis, the work done by Celery steps (`platform/batch`).

The gateway creates the record and queues the first step; it moves the status itself only to
`cancelling` (under WATCH, like the steps' own transitions), and queues a step so the cancel
is acted on at once. Another owner's batch reads as 404.
"""

from __future__ import annotations

import re
import time
import uuid

import anyio.to_thread
import msgspec
import redis.asyncio as aioredis
from celery import Celery
from redis.exceptions import WatchError

from pagefleet.platform.batch import records as rec
from pagefleet.platform.batch.celery_app import send_step
from pagefleet.platform.batch.records import BatchRecord
from pagefleet.platform.batch.settings import BatchSettings
from pagefleet.platform.gateway.batches.schemas import BatchCreate, BatchObject
from pagefleet.platform.gateway.errors import OpenAIError, bad_request
from pagefleet.platform.gateway.files.service import FileService
from pagefleet.platform.gateway.paging import page_start

ENDPOINTS = ("/v1/chat/completions", "/v1/completions")
_WINDOW = re.compile(r"^([1-9][0-9]*)([smh])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600}


def batch_not_found(batch_id: str) -> OpenAIError:
    return OpenAIError(404, f"No batch found with id '{batch_id}'.", param="batch_id",
                       code="batch_not_found")


def window_seconds(window: str, max_s: float) -> int:
    """OpenAI takes `24h`; shorter windows (`30m`, `10s`) are accepted for tests and demos."""
    match = _WINDOW.match(window)
    if match is None or int(match.group(1)) * _UNIT_S[match.group(2)] > max_s:
        raise bad_request(f"completion_window must be a duration like '24h' of at most "
                          f"{int(max_s)} s, got {window!r}", param="completion_window")
    return int(match.group(1)) * _UNIT_S[match.group(2)]


class BatchService:
    def __init__(self, redis: aioredis.Redis, files: FileService, celery: Celery,
                 settings: BatchSettings) -> None:
        self.redis = redis
        self.files = files
        self.celery = celery
        self.settings = settings

    async def create(self, create: BatchCreate, owner: str) -> BatchObject:
        if create.endpoint not in ENDPOINTS:
            raise bad_request(f"endpoint must be one of {list(ENDPOINTS)}, got {create.endpoint!r}",
                              param="endpoint")
        window = window_seconds(create.completion_window, self.settings.max_completion_window_s)
        if create.metadata is not None and len(create.metadata) > 16:
            raise bad_request("metadata holds at most 16 pairs", param="metadata")
        input_file = await self.files.get(create.input_file_id, owner)
        if input_file.purpose != "batch":
            raise bad_request("the input file's purpose must be 'batch'", param="input_file_id")
        now = int(time.time())
        record = BatchRecord(id=f"batch_{uuid.uuid4().hex}", owner=owner,
                             endpoint=create.endpoint,  # type: ignore[arg-type]
                             input_file_id=create.input_file_id,
                             completion_window=create.completion_window, created_at=now,
                             expires_at=now + window, metadata=create.metadata)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(rec.batch_key(record.id), rec.RECORD, rec.encode(record))
        pipe.zadd(rec.owner_batches(owner), {record.id: now})
        pipe.sadd(rec.ACTIVE_BATCHES, record.id)
        await pipe.execute()
        await anyio.to_thread.run_sync(send_step, self.celery, record.id)
        return BatchObject.of(record, {})

    async def _read(self, batch_id: str, owner: str) -> tuple[BatchRecord, dict[bytes, bytes]]:
        fields = await self.redis.hgetall(rec.batch_key(batch_id))
        raw = fields.get(rec.RECORD.encode())
        if raw is None:
            raise batch_not_found(batch_id)
        record = rec.decode_batch(raw)
        if record.owner != owner:
            raise batch_not_found(batch_id)
        return record, fields

    async def get(self, batch_id: str, owner: str) -> BatchObject:
        return BatchObject.of(*await self._read(batch_id, owner))

    async def cancel(self, batch_id: str, owner: str) -> BatchObject:
        key = rec.batch_key(batch_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    record, _ = await self._read(batch_id, owner)
                    if record.status not in ("validating", "in_progress") or record.final_status:
                        break
                    record = msgspec.structs.replace(record, status="cancelling",
                                                     cancelling_at=int(time.time()))
                    pipe.multi()
                    pipe.hset(key, rec.RECORD, rec.encode(record))
                    await pipe.execute()
                    await anyio.to_thread.run_sync(send_step, self.celery, batch_id)
                    break
                except WatchError:
                    continue
        return await self.get(batch_id, owner)

    async def list(self, owner: str, limit: int, after: str | None) -> list[BatchObject]:
        """Newest first, `limit + 1` at most (the extra one tells `has_more`)."""
        index = rec.owner_batches(owner)
        start = await page_start(self.redis, index, after, batch_not_found)
        ids = await self.redis.zrevrange(index, start, start + limit)
        objects = []
        for batch_id in ids:
            try:
                objects.append(await self.get(batch_id.decode(), owner))
            except OpenAIError:
                continue
        return objects

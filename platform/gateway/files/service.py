"""Files: bytes in a `FileStorage`, metadata in Redis, each file visible to its owner only
(another key's file reads as 404, so ids cannot be probed)."""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Iterator
from typing import BinaryIO

import anyio.to_thread
import redis.asyncio as aioredis

from pagefleet.platform.batch import records as rec
from pagefleet.platform.batch.records import FileRecord
from pagefleet.platform.batch.storage import FileStorage, FileTooLarge, read_chunks
from pagefleet.platform.gateway.errors import OpenAIError, bad_request
from pagefleet.platform.gateway.paging import page_start

UPLOAD_PURPOSES = ("batch", "batch_output")


def file_not_found(file_id: str) -> OpenAIError:
    return OpenAIError(404, f"No such File object: {file_id}", param="id", code="file_not_found")


class FileService:
    def __init__(self, redis: aioredis.Redis, storage: FileStorage, max_file_bytes: int,
                 retention_s: float) -> None:
        self.redis = redis
        self.storage = storage
        self.max_file_bytes = max_file_bytes
        self.retention_s = retention_s

    async def create(self, owner: str, filename: str, purpose: str, content: BinaryIO) -> FileRecord:
        if purpose not in UPLOAD_PURPOSES:
            raise bad_request(f"purpose must be one of {list(UPLOAD_PURPOSES)}, got {purpose!r}",
                              param="purpose")
        file_id = f"file-{uuid.uuid4().hex}"
        try:
            size = await anyio.to_thread.run_sync(
                self.storage.write, file_id, read_chunks(content), self.max_file_bytes)
        except FileTooLarge as exc:
            raise OpenAIError(413, f"The file is too large: the limit is {exc.limit} bytes.",
                              param="file", code="file_too_large") from None
        now = int(time.time())
        record = FileRecord(id=file_id, owner=owner, bytes=size, created_at=now,
                            filename=filename or "upload.jsonl", purpose=purpose,  # type: ignore[arg-type]
                            expires_at=now + math.ceil(self.retention_s))
        pipe = self.redis.pipeline(transaction=True)
        rec.index_file(pipe, record)
        await pipe.execute()
        return record

    async def get(self, file_id: str, owner: str) -> FileRecord:
        raw = await self.redis.get(rec.file_key(file_id))
        if raw is None:
            raise file_not_found(file_id)
        record = rec.decode_file(raw)
        if record.owner != owner:
            raise file_not_found(file_id)
        return record

    async def content(self, file_id: str, owner: str) -> Iterator[bytes]:
        await self.get(file_id, owner)
        try:
            stream = await anyio.to_thread.run_sync(self.storage.open, file_id)
        except FileNotFoundError:
            raise file_not_found(file_id) from None
        return _closing_chunks(stream)

    async def delete(self, file_id: str, owner: str) -> None:
        record = await self.get(file_id, owner)
        pipe = self.redis.pipeline(transaction=True)
        rec.unindex_file(pipe, record)
        await pipe.execute()
        await anyio.to_thread.run_sync(self.storage.delete, file_id)

    async def list(self, owner: str, purpose: str | None, limit: int, after: str | None) -> list[FileRecord]:
        """Newest first; `after` is the id of the last file of the previous page."""
        index = rec.owner_files(owner)
        start = await page_start(self.redis, index, after, file_not_found)
        records: list[FileRecord] = []
        while len(records) <= limit:
            ids = await self.redis.zrevrange(index, start, start + 2 * limit)
            if not ids:
                break
            start += len(ids)
            raws = await self.redis.mget([rec.file_key(i.decode()) for i in ids])
            for raw in raws:
                if raw is not None:
                    record = rec.decode_file(raw)
                    if purpose is None or record.purpose == purpose:
                        records.append(record)
        return records[: limit + 1]


def _closing_chunks(stream: BinaryIO) -> Iterator[bytes]:
    with stream:
        yield from read_chunks(stream)

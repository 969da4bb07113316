"""OpenAI's batch objects (/v1/batches)."""

from __future__ import annotations

from typing import Literal

import msgspec

from pagefleet.platform.batch import records as rec
from pagefleet.platform.batch.records import BatchRecord, BatchTimestamps, LineError


class BatchCreate(msgspec.Struct, kw_only=True):
    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict[str, str] | None = None


class RequestCounts(msgspec.Struct):
    total: int
    completed: int
    failed: int


class BatchErrors(msgspec.Struct):
    data: list[LineError]
    object: Literal["list"] = "list"


class BatchObject(BatchTimestamps, kw_only=True):
    id: str
    endpoint: str
    input_file_id: str
    completion_window: str
    status: str
    created_at: int
    expires_at: int
    request_counts: RequestCounts
    errors: BatchErrors | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    metadata: dict[str, str] | None = None
    object: Literal["batch"] = "batch"

    @classmethod
    def of(cls, record: BatchRecord, counters: dict[bytes, bytes]) -> BatchObject:
        def count(name: str) -> int:
            return int(counters.get(name.encode(), 0))

        return cls(
            id=record.id, endpoint=record.endpoint, input_file_id=record.input_file_id,
            completion_window=record.completion_window, status=record.status,
            created_at=record.created_at, expires_at=record.expires_at,
            request_counts=RequestCounts(count(rec.TOTAL), count(rec.COMPLETED), count(rec.FAILED)),
            errors=BatchErrors(record.errors) if record.errors else None,
            output_file_id=record.output_file_id, error_file_id=record.error_file_id,
            metadata=record.metadata, **record.timestamps(),
        )


class BatchList(msgspec.Struct, kw_only=True):
    data: list[BatchObject]
    has_more: bool
    first_id: str | None = None
    last_id: str | None = None
    object: Literal["list"] = "list"

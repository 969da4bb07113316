"""Files and batches as stored in Redis, their key names, and the OpenAI status machine.

A batch is one hash: `record` (the encoded `BatchRecord`, changed only under WATCH by whoever
moves the status) next to counters the Celery step updates atomically with its other writes
(`next_offset`, `next_line`, `total`, `completed`, `failed`). Readers merge both.
"""

from __future__ import annotations

from typing import Literal

import msgspec

FilePurpose = Literal["batch", "batch_output"]
BatchStatus = Literal["validating", "failed", "in_progress", "finalizing", "completed",
                      "expired", "cancelling", "cancelled"]
BatchEndpoint = Literal["/v1/chat/completions", "/v1/completions"]

ACTIVE: frozenset[str] = frozenset({"validating", "in_progress", "finalizing", "cancelling"})
TERMINAL: frozenset[str] = frozenset({"failed", "completed", "expired", "cancelled"})

# Fields of the batch hash next to `record`.
RECORD = "record"
NEXT_OFFSET, NEXT_LINE, TOTAL, COMPLETED, FAILED = (
    "next_offset", "next_line", "total", "completed", "failed")


class FileRecord(msgspec.Struct, kw_only=True):
    id: str
    owner: str
    bytes: int
    created_at: int
    filename: str
    purpose: FilePurpose
    expires_at: int | None = None  # None: kept until deleted (a file stored before retention)


class LineError(msgspec.Struct, kw_only=True):
    """One entry of a batch's `errors.data`, as OpenAI lists validation failures."""

    code: str
    message: str
    line: int | None = None
    param: str | None = None


class BatchTimestamps(msgspec.Struct, kw_only=True):
    """When a batch entered each later status (unix seconds; None until it does): one list the
    stored record and OpenAI's batch object both take, so they cannot drift apart."""

    in_progress_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None

    def timestamps(self) -> dict[str, int | None]:
        return {name: getattr(self, name) for name in BatchTimestamps.__struct_fields__}


class BatchRecord(BatchTimestamps, kw_only=True):
    id: str
    owner: str
    endpoint: BatchEndpoint
    input_file_id: str
    completion_window: str
    status: BatchStatus = "validating"
    created_at: int
    expires_at: int
    metadata: dict[str, str] | None = None
    errors: list[LineError] | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    final_status: BatchStatus | None = None  # what `finalizing` / `cancelling` ends in


_encoder = msgspec.msgpack.Encoder()
_file_decoder = msgspec.msgpack.Decoder(FileRecord)
_batch_decoder = msgspec.msgpack.Decoder(BatchRecord)


def encode(record: msgspec.Struct) -> bytes:
    return _encoder.encode(record)


def decode_file(data: bytes) -> FileRecord:
    return _file_decoder.decode(data)


def decode_batch(data: bytes) -> BatchRecord:
    return _batch_decoder.decode(data)


def file_key(file_id: str) -> str:
    return f"pf:file:{file_id}"


def owner_files(owner: str) -> str:
    """Sorted set (score: created_at) of an API key's file ids."""
    return f"pf:files:{owner}"


def batch_key(batch_id: str) -> str:
    return f"pf:batch:{batch_id}"


def owner_batches(owner: str) -> str:
    """Sorted set (score: created_at) of an API key's batch ids."""
    return f"pf:batches:{owner}"


FILES_EXPIRY = "pf:files-expiry"
"""Sorted set (score: expires_at) of every file id: what the retention sweep reads."""

FILES_SWEEP_LOCK = "pf:files-expiry:lock"
"""Held for one sweep period by the sweep that runs in it, so the chain stays single."""


def index_file(pipe, record: FileRecord) -> None:
    """Queue the writes that make a stored file visible: its record, its owner's index and the
    retention index. One place, so an uploaded file and a batch's output file cannot differ."""
    pipe.set(file_key(record.id), encode(record))
    pipe.zadd(owner_files(record.owner), {record.id: record.created_at})
    if record.expires_at is not None:
        pipe.zadd(FILES_EXPIRY, {record.id: record.expires_at})


def unindex_file(pipe, record: FileRecord) -> None:
    """The inverse of `index_file` (the bytes are the storage's to delete)."""
    pipe.delete(file_key(record.id))
    pipe.zrem(owner_files(record.owner), record.id)
    pipe.zrem(FILES_EXPIRY, record.id)


ACTIVE_BATCHES = "pf:batches-active"
"""Set of batch ids not yet terminal: what a starting batch worker re-queues."""


def batch_lease(batch_id: str) -> str:
    return f"pf:batch:{batch_id}:lease"


def batch_in_flight(batch_id: str) -> str:
    """Hash of line number -> byte offset of the line, for lines queued and not yet collected."""
    return f"pf:batch:{batch_id}:inflight"


def batch_output(batch_id: str) -> str:
    """List of output lines (JSON) collected so far, in order of completion."""
    return f"pf:batch:{batch_id}:out"


def batch_errors(batch_id: str) -> str:
    """List of error-file lines (JSON) collected so far."""
    return f"pf:batch:{batch_id}:err"


def batch_duplicates(batch_id: str) -> str:
    """Set of line numbers whose custom_id repeats an earlier line's (found while validating)."""
    return f"pf:batch:{batch_id}:dups"


def output_file_id(batch_id: str) -> str:
    """Deterministic, so a finalize step that runs twice writes the same file."""
    return f"file-{batch_id.removeprefix('batch_')}-output"


def error_file_id(batch_id: str) -> str:
    return f"file-{batch_id.removeprefix('batch_')}-errors"


def request_id(batch_id: str, line: int) -> str:
    """The response id of line `line` (its envelopes' ids derive from it)."""
    return f"{batch_id}-{line}"

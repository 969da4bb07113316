"""OpenAI's file objects (/v1/files)."""

from __future__ import annotations

from typing import Literal

import msgspec

from pagefleet.platform.batch.records import FileRecord


class FileObject(msgspec.Struct, kw_only=True):
    id: str
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: Literal["processed"] = "processed"
    expires_at: int | None = None
    status_details: str | None = None
    object: Literal["file"] = "file"

    @classmethod
    def of(cls, record: FileRecord) -> FileObject:
        return cls(id=record.id, bytes=record.bytes, created_at=record.created_at,
                   filename=record.filename, purpose=record.purpose,
                   expires_at=record.expires_at)


class FileList(msgspec.Struct, kw_only=True):
    data: list[FileObject]
    has_more: bool
    first_id: str | None = None
    last_id: str | None = None
    object: Literal["list"] = "list"


class FileDeleted(msgspec.Struct, kw_only=True):
    id: str
    deleted: bool = True
    object: Literal["file"] = "file"

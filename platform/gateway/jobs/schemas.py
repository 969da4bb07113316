"""Bodies of the async jobs API (/v1/jobs)."""

from __future__ import annotations

from typing import Literal

import msgspec

from pagefleet.platform.protocol import JobRecord
from pagefleet.platform.protocol.messages import JobStatus

Endpoint = Literal["/v1/chat/completions", "/v1/completions"]


class JobCreate(msgspec.Struct, kw_only=True):
    """`body` is what the endpoint would take synchronously (without `stream`)."""

    endpoint: Endpoint
    body: dict
    webhook: str | None = None


class JobView(msgspec.Struct, kw_only=True):
    id: str
    endpoint: Endpoint
    status: JobStatus
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    webhook: str | None = None
    result: dict | None = None
    error: dict | None = None
    object: Literal["job"] = "job"

    @classmethod
    def of(cls, record: JobRecord) -> JobView:
        return cls(id=record.id, endpoint=record.endpoint, status=record.status,
                   created_at=record.created_at, started_at=record.started_at,
                   finished_at=record.finished_at, webhook=record.webhook, result=record.result,
                   error=record.error)


class JobList(msgspec.Struct):
    data: list[JobView]
    object: Literal["list"] = "list"

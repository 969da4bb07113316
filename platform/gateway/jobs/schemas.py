"""Bodies of the async jobs API (/v1/jobs). A job's own view (`JobView`) is the protocol's,
because the worker sends the same body to the job's webhook."""

from __future__ import annotations

from typing import Literal

import msgspec

from pagefleet.platform.protocol.messages import JobEndpoint, JobView


class JobCreate(msgspec.Struct, kw_only=True):
    """`body` is what the endpoint would take synchronously (without `stream`)."""

    endpoint: JobEndpoint
    body: dict
    webhook: str | None = None


class JobList(msgspec.Struct):
    data: list[JobView]
    object: Literal["list"] = "list"

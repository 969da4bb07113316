"""/v1/jobs: submit (202), poll, cancel and list the caller's own async jobs."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter

from pagefleet.platform.gateway.errors import error_specs
from pagefleet.platform.gateway.jobs.schemas import JobCreate, JobList
from pagefleet.platform.gateway.jobs.service import JobService
from pagefleet.platform.protocol.messages import JobView

_NOT_FOUND = error_specs({404: "No such job for this API key"})


class JobsRoutes(Controller):
    path = "/v1/jobs"
    tags = ("jobs",)

    @post("/", status_code=202, responses=error_specs({
        400: "Invalid job", 404: "Unknown model", 429: "The model's queue is full"}))
    async def submit(self, data: JSONBody[JobCreate], jobs: NamedDependency[JobService], owner: NamedDependency[str]) -> JobView:
        return JobView.of(await jobs.submit(data, owner))

    @get("/{job_id:str}", responses=_NOT_FOUND)
    async def poll(self, job_id: FromPath[str], jobs: NamedDependency[JobService], owner: NamedDependency[str]) -> JobView:
        return JobView.of(await jobs.get(job_id, owner))

    @delete("/{job_id:str}", status_code=200, responses=_NOT_FOUND)
    async def cancel(self, job_id: FromPath[str], jobs: NamedDependency[JobService], owner: NamedDependency[str]) -> JobView:
        return JobView.of(await jobs.cancel(job_id, owner))

    @get("/")
    async def list_jobs(self, jobs: NamedDependency[JobService], owner: NamedDependency[str],
                        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100) -> JobList:
        return JobList(data=[JobView.of(r) for r in await jobs.list(owner, limit)])

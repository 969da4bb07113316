"""/v1/batches: create, retrieve, list, cancel."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from pagefleet.platform.gateway.batches.schemas import BatchCreate, BatchList, BatchObject
from pagefleet.platform.gateway.batches.service import BatchService
from pagefleet.platform.gateway.errors import error_specs

_NOT_FOUND = error_specs({404: "No such batch for this API key"})


class BatchesController(Controller):
    path = "/v1/batches"
    tags = ("batches",)

    @post("/", status_code=200, responses=error_specs({400: "Invalid batch",
                                                               404: "Unknown input file"}))
    async def create(self, data: JSONBody[BatchCreate], batches: NamedDependency[BatchService],
                     owner: NamedDependency[str]) -> BatchObject:
        return await batches.create(data, owner)

    @get("/{batch_id:str}", responses=_NOT_FOUND)
    async def retrieve(self, batch_id: FromPath[str], batches: NamedDependency[BatchService],
                       owner: NamedDependency[str]) -> BatchObject:
        return await batches.get(batch_id, owner)

    @post("/{batch_id:str}/cancel", status_code=200, responses=_NOT_FOUND)
    async def cancel(self, batch_id: FromPath[str], batches: NamedDependency[BatchService],
                     owner: NamedDependency[str]) -> BatchObject:
        return await batches.cancel(batch_id, owner)

    @get("/")
    async def list_batches(self, batches: NamedDependency[BatchService], owner: NamedDependency[str],
                           after: FromQuery[str | None] = None,
                           limit: Annotated[int, QueryParameter(ge=1, le=100)] = 20) -> BatchList:
        objects = await batches.list(owner, limit, after)
        page = objects[:limit]
        return BatchList(data=page, has_more=len(objects) > limit,
                         first_id=page[0].id if page else None, last_id=page[-1].id if page else None)

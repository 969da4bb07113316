"""/v1/responses: create (whole or streamed as `response.*` events), retrieve and delete."""

from __future__ import annotations

from litestar import Controller, Request, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from litestar.response import Stream

from pagefleet.platform.gateway.completions.service import SSE_HEADERS
from pagefleet.platform.gateway.errors import error_specs
from pagefleet.platform.gateway.responses.schemas import (
    DeletedResponse,
    ResponseCreate,
    ResponseObject,
)
from pagefleet.platform.gateway.responses.service import ResponsesService

_NOT_FOUND = error_specs({404: "No such response for this API key"})


class ResponsesRoutes(Controller):
    path = "/v1/responses"
    tags = ("openai",)

    @post("/", status_code=200, responses=error_specs({
        400: "Invalid request", 404: "Unknown model or previous response",
        429: "The model's queue is full"}))
    async def create(self, data: JSONBody[ResponseCreate], responses: NamedDependency[ResponsesService],
                     owner: NamedDependency[str], request: Request) -> ResponseObject | Stream:
        if data.stream:
            return Stream(await responses.stream(data, owner), media_type="text/event-stream",
                          headers=SSE_HEADERS)
        return await responses.create(data, owner, request.receive)

    @get("/{response_id:str}", responses=_NOT_FOUND)
    async def retrieve(self, response_id: FromPath[str], responses: NamedDependency[ResponsesService],
                       owner: NamedDependency[str]) -> ResponseObject:
        return await responses.retrieve(response_id, owner)

    @delete("/{response_id:str}", status_code=200, responses=_NOT_FOUND)
    async def delete(self, response_id: FromPath[str], responses: NamedDependency[ResponsesService],
                     owner: NamedDependency[str]) -> DeletedResponse:
        await responses.delete(response_id, owner)
        return DeletedResponse(id=response_id)

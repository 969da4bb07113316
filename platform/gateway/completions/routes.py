"""POST /v1/completions and /v1/chat/completions: validate, prepare, hand to the service."""

from __future__ import annotations

from litestar import Controller, Request, Response, post
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import JSONBody
from litestar.response import Stream

from pagefleet.platform.gateway.completions.params import prepare_chat, prepare_completion
from pagefleet.platform.gateway.completions.schemas import ChatCompletionRequest, CompletionRequest
from pagefleet.platform.gateway.completions.service import CompletionService
from pagefleet.platform.gateway.errors import error_specs
from pagefleet.platform.protocol.openai import ChatCompletion, Completion

ERROR_RESPONSES = error_specs({  # /v1/embeddings shows the same statuses
    400: "Malformed JSON, schema violation, bad parameter or context length exceeded",
    401: "Missing or invalid API key",
    404: "Unknown model",
    413: "Request body too large",
    429: "The model's queue is full (see Retry-After)",
    504: "Deadline exceeded",
})


class CompletionsRoutes(Controller):
    path = "/v1"
    tags = ("openai",)

    @post("/chat/completions", status_code=200,
          responses={200: ResponseSpec(ChatCompletion, description="A chat completion, or SSE "
                                       "chunks when stream is true"), **ERROR_RESPONSES})
    async def chat(self, data: JSONBody[ChatCompletionRequest], completions: NamedDependency[CompletionService],
                   owner: NamedDependency[str], request: Request) -> Response | Stream:
        prepared = prepare_chat(data, completions.context("chatcmpl", owner),
                                completions.tool_parser(data.model))
        return await completions.run(prepared, request.receive)

    @post("/completions", status_code=200,
          responses={200: ResponseSpec(Completion, description="A completion, or SSE chunks "
                                       "when stream is true"), **ERROR_RESPONSES})
    async def completions(self, data: JSONBody[CompletionRequest], completions: NamedDependency[CompletionService],
                          owner: NamedDependency[str], request: Request) -> Response | Stream:
        prepared = prepare_completion(data, completions.context("cmpl", owner))
        return await completions.run(prepared, request.receive)


"""POST /v1/embeddings: validate, prepare one envelope per input, answer through the same
service as completions (admission, queueing, deadline, cancel on disconnect)."""

from __future__ import annotations

from litestar import Controller, Request, Response, post
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import JSONBody

from pagefleet.platform.gateway.completions.routes import ERROR_RESPONSES
from pagefleet.platform.gateway.completions.service import CompletionService
from pagefleet.platform.gateway.embeddings.params import prepare_embedding
from pagefleet.platform.gateway.embeddings.schemas import EmbeddingRequest
from pagefleet.platform.gateway.errors import model_not_found
from pagefleet.platform.gateway.settings import GatewaySettings
from pagefleet.platform.protocol.embeddings import EmbeddingList
from pagefleet.platform.registry import Registry


class EmbeddingsRoutes(Controller):
    path = "/v1"
    tags = ("openai",)

    @post("/embeddings", status_code=200,
          responses={200: ResponseSpec(EmbeddingList, description="One embedding per input"),
                     **ERROR_RESPONSES})
    async def embeddings(self, data: JSONBody[EmbeddingRequest], completions: NamedDependency[CompletionService],
                         registry: NamedDependency[Registry], settings: NamedDependency[GatewaySettings],
                         owner: NamedDependency[str], request: Request) -> Response:
        if data.model not in registry.models:
            raise model_not_found(data.model)
        prepared = prepare_embedding(data, registry.models[data.model], completions.context("embd", owner),
                                     settings.max_embedding_inputs)
        return await completions.run(prepared, request.receive)

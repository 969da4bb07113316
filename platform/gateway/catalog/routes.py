"""GET /v1/models: the registry's models, each with whether a worker is ready to serve it.

`ready: false` is normal for a model scaled to zero; its first request starts a worker.
"""

from __future__ import annotations

import msgspec
from litestar import Controller, get
from litestar.di import NamedDependency

from pagefleet.platform.gateway.broker import Broker
from pagefleet.platform.gateway.settings import GatewaySettings
from pagefleet.platform.registry import Registry


class ModelCard(msgspec.Struct):
    id: str
    created: int
    owned_by: str
    max_model_len: int | None
    ready: bool
    ready_workers: int
    object: str = "model"


class ModelList(msgspec.Struct):
    data: list[ModelCard]
    object: str = "list"


class CatalogRoutes(Controller):
    path = "/v1/models"
    tags = ("openai",)

    @get("/")
    async def list_models(self, registry: NamedDependency[Registry], broker: NamedDependency[Broker],
                          settings: NamedDependency[GatewaySettings], started_at: NamedDependency[int]) -> ModelList:
        cards = []
        for name in registry.names():
            ready = await broker.ready_workers(name, settings.heartbeat_timeout_s)
            cards.append(ModelCard(id=name, created=started_at, owned_by="pagefleet",
                                   max_model_len=registry.models[name].engine.max_model_len,
                                   ready=ready > 0, ready_workers=ready))
        return ModelList(data=cards)

"""GET /v1/models and /v1/models/{id}: the registry's models, each with whether a worker is ready to serve it.

`ready: false` is normal for a model scaled to zero; its first request starts a worker.
"""

from __future__ import annotations

import msgspec
from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import FromPath

from pagefleet.platform.gateway.broker import Broker
from pagefleet.platform.gateway.errors import model_not_found
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
        return ModelList(data=[await _card(name, registry, broker, settings, started_at)
                               for name in registry.names()])

    @get("/{model_id:path}")
    async def retrieve_model(self, model_id: FromPath[str], registry: NamedDependency[Registry],
                             broker: NamedDependency[Broker], settings: NamedDependency[GatewaySettings],
                             started_at: NamedDependency[int]) -> ModelCard:
        """One model; ids may hold slashes (`org/name`), hence the path parameter."""
        name = model_id.lstrip("/")
        if name not in registry.models:
            raise model_not_found(name)
        return await _card(name, registry, broker, settings, started_at)


async def _card(name: str, registry: Registry, broker: Broker, settings: GatewaySettings,
                started_at: int) -> ModelCard:
    ready = await broker.ready_workers(name, settings.heartbeat_timeout_s)
    return ModelCard(id=name, created=started_at, owned_by="pagefleet",
                     max_model_len=registry.models[name].engine.max_model_len,
                     ready=ready > 0, ready_workers=ready)

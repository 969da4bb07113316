"""`create_app(settings)`: the Litestar application of the OpenAI-compatible gateway.

The registry is read once here; the Redis clients, the broker, the result hub and the
services are built in the lifespan (so an app can be created without Redis running) and
injected with `Provide`. Request bodies pass `input_guard` (content type, JSON depth) before
Litestar parses them.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig

from pagefleet.platform.gateway.auth import OPENAPI_PATH, api_key_guard, provide_owner
from pagefleet.platform.gateway.batches.lifespan import STATE_NAMES as BATCH_STATE
from pagefleet.platform.gateway.batches.lifespan import batch_lifespan, batch_router
from pagefleet.platform.gateway.broker import Broker
from pagefleet.platform.gateway.catalog.routes import CatalogRoutes
from pagefleet.platform.gateway.completions.routes import CompletionsRoutes
from pagefleet.platform.gateway.completions.service import CompletionService
from pagefleet.platform.gateway.console.routes import console_handlers
from pagefleet.platform.gateway.delivery import ResultHub
from pagefleet.platform.gateway.embeddings.routes import EmbeddingsRoutes
from pagefleet.platform.gateway.errors import exception_handlers
from pagefleet.platform.gateway.input_guard import check_body
from pagefleet.platform.gateway.jobs.routes import JobsRoutes
from pagefleet.platform.gateway.jobs.service import JobService
from pagefleet.platform.gateway.metrics import GatewayMetrics, MetricsMiddleware
from pagefleet.platform.gateway.redis_clients import command_client, reader_client
from pagefleet.platform.gateway.settings import GatewaySettings
from pagefleet.platform.gateway.system.routes import SystemRoutes
from pagefleet.platform.registry import load_registry


@asynccontextmanager
async def _redis_lifespan(app: Litestar) -> AsyncIterator[None]:
    state = app.state
    settings: GatewaySettings = state.settings
    client = command_client(settings)
    broker = Broker(client, settings.cancel_retention_s, settings.backlog_max_age_s)
    hub = ResultHub.connect(lambda: reader_client(settings), client, settings.result_readers,
                            settings.result_buffer_events)
    max_model_lens = {name: spec.engine.max_model_len for name, spec in state.registry.models.items()}
    embedding_models = frozenset(name for name, spec in state.registry.models.items() if spec.task == "embed")
    completions = CompletionService(broker, hub, settings, max_model_lens, state.metrics, embedding_models)
    state.broker = broker
    state.hub = hub
    state.completions = completions
    state.jobs = JobService(broker, completions, settings.job_retention_s,
                            settings.webhook_allow_private)
    hub.start()
    try:
        yield
    finally:
        await hub.close()
        await client.aclose()


def _from_state(name: str) -> Provide:
    def provide(state: State) -> object:
        return state[name]

    return Provide(provide, sync_to_thread=False)


def create_app(settings: GatewaySettings) -> Litestar:
    registry = load_registry(settings.registry_path)
    metrics = GatewayMetrics()
    state = State({"settings": settings, "registry": registry, "metrics": metrics,
                   "started_at": int(time.time())})
    dependencies = {name: _from_state(name) for name in
                    ("settings", "registry", "metrics", "started_at", "broker", "hub",
                     "completions", "jobs", *BATCH_STATE)}
    dependencies["owner"] = Provide(provide_owner, sync_to_thread=False)
    return Litestar(
        route_handlers=[CompletionsRoutes, EmbeddingsRoutes, CatalogRoutes, JobsRoutes, SystemRoutes,
                        batch_router(settings), *console_handlers()],
        state=state,
        lifespan=[_redis_lifespan, batch_lifespan],
        dependencies=dependencies,
        guards=[api_key_guard],
        before_request=check_body,
        exception_handlers=exception_handlers(),
        middleware=[DefineMiddleware(MetricsMiddleware, metrics=metrics)],
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(title="pagefleet gateway", version="0.1.0", path=OPENAPI_PATH,
                                     description="OpenAI-compatible API and async jobs"),
    )

"""GET /health (Redis reachable) and GET /metrics (Prometheus text); both need no API key."""

from __future__ import annotations

import msgspec
from litestar import Controller, Response, get
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from redis.exceptions import RedisError

from pagefleet.platform.gateway.broker import Broker
from pagefleet.platform.gateway.errors import ErrorBody, ErrorResponse, error_response
from pagefleet.platform.gateway.metrics import GatewayMetrics
from pagefleet.platform.registry import Registry

_PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


class Health(msgspec.Struct):
    status: str


class SystemRoutes(Controller):
    tags = ("system",)

    @get("/health", opt={"public": True}, responses={503: ResponseSpec(ErrorResponse, description="Redis unreachable")})
    async def health(self, broker: NamedDependency[Broker]) -> Response:
        try:
            await broker.redis.ping()
        except (RedisError, OSError) as exc:
            return error_response(503, ErrorBody(message=f"redis unreachable: {exc}",
                                                 type="server_error"))
        return Response(Health(status="ok"))

    @get("/metrics", opt={"public": True}, media_type=_PROMETHEUS_TEXT)
    async def metrics(self, broker: NamedDependency[Broker], metrics: NamedDependency[GatewayMetrics], registry: NamedDependency[Registry]) -> Response:
        """Backlog gauges are read from Redis at scrape time, so they are never stale."""
        for model in registry.names():
            try:
                metrics.backlog.labels(model=model).set(await broker.backlog(model))
            except (RedisError, OSError):
                metrics.backlog.labels(model=model).set(float("nan"))
        return Response(metrics.render(), media_type=_PROMETHEUS_TEXT)

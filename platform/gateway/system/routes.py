"""GET /health (liveness), GET /health/ready (readiness), GET /version and GET /metrics
(Prometheus text); none needs an API key.

`/health` says the process serves HTTP and Redis answers. `/health/ready` is what a load
balancer should route by: 503 while Redis is unreachable (pinged, and the result readers
connected) or while this gateway holds `max_in_flight` requests, so traffic moves to another
replica instead of collecting 429s here.
"""

from __future__ import annotations

import importlib.metadata

import msgspec
from litestar import Controller, Response, get
from litestar.di import NamedDependency
from redis.exceptions import RedisError

from pagefleet.platform.gateway.broker import Broker
from pagefleet.platform.gateway.delivery import ResultHub
from pagefleet.platform.gateway.errors import ErrorBody, error_response, error_specs
from pagefleet.platform.gateway.metrics import GatewayMetrics
from pagefleet.platform.gateway.settings import GatewaySettings
from pagefleet.platform.registry import Registry

_PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


class Health(msgspec.Struct):
    status: str


class Readiness(msgspec.Struct):
    status: str
    in_flight: int
    max_in_flight: int


class Version(msgspec.Struct):
    version: str


class SystemRoutes(Controller):
    tags = ("system",)

    @get("/health", opt={"public": True}, responses=error_specs({503: "Redis unreachable"}))
    async def health(self, broker: NamedDependency[Broker]) -> Response:
        try:
            await broker.redis.ping()
        except (RedisError, OSError) as exc:
            return error_response(503, ErrorBody(message=f"redis unreachable: {exc}",
                                                 type="server_error"))
        return Response(Health(status="ok"))

    @get("/health/ready", opt={"public": True},
         responses=error_specs({503: "Saturated or Redis unreachable"}))
    async def ready(self, broker: NamedDependency[Broker], hub: NamedDependency[ResultHub],
                    settings: NamedDependency[GatewaySettings]) -> Response:
        in_flight = hub.in_flight
        if in_flight >= settings.max_in_flight:
            return error_response(503, ErrorBody(
                message=f"saturated: {in_flight} requests in flight (limit {settings.max_in_flight})",
                type="server_error", code="gateway_busy"), {"Retry-After": str(settings.retry_after_s)})
        try:
            await broker.redis.ping()
        except (RedisError, OSError) as exc:
            return error_response(503, ErrorBody(message=f"redis unreachable: {exc}",
                                                 type="server_error", code="queue_unavailable"))
        if not hub.healthy:
            return error_response(503, ErrorBody(message="result readers reconnecting to redis",
                                                 type="server_error", code="queue_unavailable"))
        return Response(Readiness(status="ready", in_flight=in_flight,
                                  max_in_flight=settings.max_in_flight))

    @get("/version", opt={"public": True})
    async def version(self) -> Version:
        """The installed package's version, as vLLM's `/version` answers."""
        return Version(version=_package_version())

    @get("/metrics", opt={"public": True}, media_type=_PROMETHEUS_TEXT)
    async def metrics(self, broker: NamedDependency[Broker], metrics: NamedDependency[GatewayMetrics], registry: NamedDependency[Registry]) -> Response:
        """Backlog gauges are read from Redis at scrape time, so they are never stale."""
        for model in registry.names():
            try:
                metrics.backlog.labels(model=model).set(await broker.total_backlog(model))
            except (RedisError, OSError):
                metrics.backlog.labels(model=model).set(float("nan"))
        return Response(metrics.render(), media_type=_PROMETHEUS_TEXT)


def _package_version() -> str:
    try:
        return importlib.metadata.version("pagefleet")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"

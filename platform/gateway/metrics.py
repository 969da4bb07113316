"""Prometheus metrics of one gateway app, in its own CollectorRegistry.

A registry per app (not prometheus_client's global one) lets tests build many apps in one
process and keeps /metrics free of anything the app did not register.

Several gateway processes on one port (`pagefleet gateway --workers N`) run with
`PROMETHEUS_MULTIPROC_DIR` set: prometheus_client then keeps every value in a per-process file
there, and `render` sums the folder's files, so a scrape answered by any process counts the
requests of all of them.
"""

from __future__ import annotations

import os
import time

from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class GatewayMetrics:
    def __init__(self) -> None:
        # prometheus_client chose its value class from this variable when it was imported.
        self.multiprocess_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "pagefleet:gateway_requests", "HTTP requests by route, method and status",
            ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram(
            "pagefleet:gateway_request_latency_seconds",
            "Time from request to the last byte of the response (whole stream for SSE)",
            ["route", "method"], buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.ttft = Histogram(
            "pagefleet:gateway_time_to_first_token_seconds",
            "Streaming requests: time from admission to the first token sent", ["model"],
            buckets=_LATENCY_BUCKETS, registry=self.registry)
        # Set from Redis by whichever process answers the scrape, just before it renders.
        self.backlog = Gauge(
            "pagefleet:gateway_queue_backlog", "Entries no worker has pulled yet, by model",
            ["model"], registry=self.registry, multiprocess_mode="mostrecent")

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route=route, method=method, status=str(status)).inc()
        self.latency.labels(route=route, method=method).observe(seconds)

    def observe_ttft(self, model: str, seconds: float) -> None:
        self.ttft.labels(model=model).observe(seconds)

    def render(self) -> bytes:
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        every_process = CollectorRegistry()
        MultiProcessCollector(every_process, path=self.multiprocess_dir)
        return generate_latest(every_process)


class MetricsMiddleware:
    """Counts every HTTP response by route template and status; times it to the last byte."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("path_template") or "unmatched"
            self.metrics.observe_request(route, scope["method"], status,
                                         time.perf_counter() - started)

"""Prometheus metrics of one worker (DESIGN.md section 6) and its `/metrics` + `/health` server.

Engine gauges and token counters are read from `engine.stats()` at scrape time by a custom
collector, so they can never drift from the engine; request latencies are histograms observed
by the executor. Everything lives in a per-worker `CollectorRegistry` (no global registry).
The HTTP server is a few lines of asyncio: two GET routes do not justify a web framework.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)
_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0)
_TPOT_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5)


class EngineStatsCollector(Collector):
    """Turns `engine.stats()` into gauges and counters at scrape time."""

    def __init__(self, model: str, stats: Callable[[], Any]) -> None:
        self.model = model
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self.stats()
        if stats is None:  # engine still loading
            return
        gauges = {
            "num_requests_running": ("Requests running on the engine", stats.num_running),
            "num_requests_waiting": ("Requests waiting in the engine", stats.num_waiting),
            "kv_cache_usage_perc": ("Fraction of KV cache blocks in use", stats.kv_cache_usage),
            "prefix_cache_hit_rate": ("Prefix cache hit rate", stats.prefix_cache_hit_rate),
        }
        for name, (doc, value) in gauges.items():
            gauge = GaugeMetricFamily(f"pagefleet:{name}", doc, labels=["model"])
            gauge.add_metric([self.model], float(value))
            yield gauge
        counters = {
            "prompt_tokens": ("Prefill tokens processed", stats.prompt_tokens_total),
            "generation_tokens": ("Tokens generated", stats.generation_tokens_total),
        }
        for name, (doc, value) in counters.items():
            counter = CounterMetricFamily(f"pagefleet:{name}", doc, labels=["model"])
            counter.add_metric([self.model], float(value))
            yield counter


class RuntimeMetrics:
    """Request latency histograms, labelled by model, in this worker's own registry."""

    def __init__(self, model: str, stats: Callable[[], Any]) -> None:
        self.model = model
        self.registry = CollectorRegistry()
        self.registry.register(EngineStatsCollector(model, stats))

        def histogram(name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(f"pagefleet:{name}", doc, ["model"], registry=self.registry,
                             buckets=buckets).labels(model)

        self.queue_time = histogram("queue_time_seconds", "Time from enqueue to pull", _LATENCY_BUCKETS)
        self.ttft = histogram("time_to_first_token_seconds", "Time from enqueue to first token",
                              _LATENCY_BUCKETS)
        self.tpot = histogram("time_per_output_token_seconds", "Mean time between output tokens",
                              _TPOT_BUCKETS)
        self.e2e = histogram("e2e_request_latency_seconds", "Time from enqueue to final event",
                             _LATENCY_BUCKETS)
        self.redis_outages = Counter(
            "pagefleet:redis_outages", "Times this worker lost Redis (each outage counted once)",
            ["model"], registry=self.registry).labels(model)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class HealthServer:
    """`GET /metrics` (Prometheus text) and `GET /health` (200 when ready, else 503, JSON body)."""

    def __init__(self, metrics: RuntimeMetrics, health: Callable[[], dict]) -> None:
        self.metrics = metrics
        self.health = health
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        self._server = await asyncio.start_server(self._handle, host, port)
        return self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await reader.readline()
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass  # headers are not needed
            parts = request_line.decode("latin-1").split()
            path = parts[1].split("?")[0] if len(parts) >= 2 else ""
            if len(parts) < 2 or parts[0] not in ("GET", "HEAD"):
                status, body, ctype = "405 Method Not Allowed", b"", "text/plain"
            elif path == "/metrics":
                status, body, ctype = "200 OK", self.metrics.render(), "text/plain; version=0.0.4"
            elif path == "/health":
                health = self.health()
                status = "200 OK" if health.get("state") == "ready" else "503 Service Unavailable"
                body, ctype = json.dumps(health).encode(), "application/json"
            else:
                status, body, ctype = "404 Not Found", b"", "text/plain"
            head = (f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                    "Connection: close\r\n\r\n").encode()
            writer.write(head + (body if parts and parts[0] != "HEAD" else b""))
            await writer.drain()
        except (ConnectionError, UnicodeDecodeError) as exc:
            log.debug("metrics connection failed: %s", exc)
        finally:
            writer.close()

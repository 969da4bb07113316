"""The controller's Prometheus metrics, on a registry of its own (no process-wide globals)."""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge

from pagefleet.platform.controller.policy import Decision, Signals


class ControllerMetrics:
    """Per-model gauges of the decision and its inputs, and a counter of scale events."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.desired_replicas = Gauge("pagefleet:desired_replicas", "Replicas the controller asks for",
                                      ["model"], registry=self.registry)
        self.ready_replicas = Gauge("pagefleet:ready_replicas", "Workers with a fresh ready heartbeat",
                                    ["model"], registry=self.registry)
        self.queue_backlog = Gauge("pagefleet:queue_backlog", "Queued requests no worker has taken",
                                   ["model"], registry=self.registry)
        self.in_flight = Gauge("pagefleet:queue_in_flight", "Requests taken by a worker, not yet acked",
                               ["model"], registry=self.registry)
        self.scale_events = Counter("pagefleet:scale_events", "Replica changes, by direction",
                                    ["model", "direction"], registry=self.registry)
        self.permanent_failures = Counter(
            "pagefleet:controller_permanent_failures",
            "Backend failures that retrying cannot fix (403, 422...), each counted once", ["model"],
            registry=self.registry)
        self.is_leader = Gauge("pagefleet:controller_is_leader", "1 while this replica acts",
                               registry=self.registry)
        self.redis_outages = Counter("pagefleet:redis_outages",
                                     "Times the controller lost Redis (each outage counted once)",
                                     registry=self.registry)

    def observe(self, model: str, signals: Signals | None, decision: Decision) -> None:
        self.desired_replicas.labels(model=model).set(decision.desired_replicas)
        if signals is not None:
            self.ready_replicas.labels(model=model).set(signals.workers.ready)
            self.queue_backlog.labels(model=model).set(signals.backlog)
            self.in_flight.labels(model=model).set(signals.in_flight)
        if decision.direction != "hold":
            self.scale_events.labels(model=model, direction=decision.direction).inc()

    def forget(self, model: str) -> None:
        """Drop the series of a model removed from the registry."""
        for gauge in (self.desired_replicas, self.ready_replicas, self.queue_backlog, self.in_flight):
            with contextlib.suppress(KeyError):
                gauge.remove(model)
        with contextlib.suppress(KeyError):
            self.permanent_failures.remove(model)
        for direction in ("up", "down"):
            with contextlib.suppress(KeyError):
                self.scale_events.remove(model, direction)

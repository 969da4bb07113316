"""Controller metrics: per-model series on the controller's own registry, with vLLM-style names."""

from __future__ import annotations

from prometheus_client import generate_latest

from pagefleet.platform.controller.metrics import ControllerMetrics
from pagefleet.platform.controller.policy import Decision, PolicyState, Signals, WorkerCounts


def _decision(replicas: int, direction: str) -> Decision:
    return Decision(replicas, direction, "test", PolicyState())  # type: ignore[arg-type]


def test_observe_sets_gauges_and_counts_scale_events() -> None:
    metrics = ControllerMetrics()
    signals = Signals(at=0, backlog=7, in_flight=2, arrivals_total=9, workers=WorkerCounts(ready=1))
    metrics.observe("m1", signals, _decision(2, "up"))
    metrics.observe("m1", None, _decision(2, "hold"))
    text = generate_latest(metrics.registry).decode()
    assert 'pagefleet:desired_replicas{model="m1"} 2.0' in text
    assert 'pagefleet:ready_replicas{model="m1"} 1.0' in text
    assert 'pagefleet:queue_backlog{model="m1"} 7.0' in text
    assert 'pagefleet:scale_events_total{direction="up",model="m1"} 1.0' in text
    metrics.forget("m1")
    assert 'model="m1"' not in generate_latest(metrics.registry).decode()


def test_two_controllers_do_not_share_series() -> None:
    first, second = ControllerMetrics(), ControllerMetrics()
    first.observe("m1", None, _decision(1, "up"))
    assert 'model="m1"' not in generate_latest(second.registry).decode()

"""Cold-start phases: one vocabulary, checked names, order by `PHASE_ORDER` (phases that did
not apply may be missing), and the bench's timeline built relative to the request."""

from __future__ import annotations

import pytest

from pagefleet.platform.bench.coldstart import ColdStart, format_medians, platform_timeline
from pagefleet.platform.protocol.phases import PhaseEvent, PhaseLog, in_order


def test_marks_are_checked_and_kept_in_order() -> None:
    log = PhaseLog()
    log.mark("spawned", 10.0)
    log.mark("weights_loaded", 11.5)
    assert [(p.name, p.at) for p in log.phases] == [("spawned", 10.0), ("weights_loaded", 11.5)]
    with pytest.raises(ValueError, match="unknown phase 'weights'"):
        log.mark("weights")


def test_order_skips_phases_that_did_not_apply() -> None:
    assert in_order(["spawned", "weights_loaded", "kv_allocated", "first_token"])
    assert in_order(["weights_loaded", "memory_profiled", "kv_allocated", "graphs_captured"])
    assert not in_order(["kv_allocated", "weights_loaded"])
    assert not in_order(["first_token", "first_pull"])


def _event(phase: str, at: float) -> PhaseEvent:
    return PhaseEvent(worker_id="w", model="m", phase=phase, at=at, since_spawn_s=at - 100.2)


def test_the_platform_timeline_is_relative_to_the_request_and_in_phase_order() -> None:
    phases = [_event("first_token", 101.9), _event("spawned", 100.2), _event("engine_ready", 101.5)]
    points = platform_timeline(sent_at=100.0, first_token_at=102.0, wake_at=100.1, decision_at=100.15,
                               phases=phases)
    assert [p.name for p in points] == ["request_sent", "enqueued_wake", "controller_decision",
                                        "spawned", "engine_ready", "first_token", "first_token_client"]
    assert [round(p.at_s, 3) for p in points] == [0.0, 0.1, 0.15, 0.2, 1.5, 1.9, 2.0]
    without_wake = platform_timeline(100.0, 102.0, None, None, [])
    assert [p.name for p in without_wake] == ["request_sent", "first_token_client"]


def test_medians_are_per_point() -> None:
    runs = [ColdStart("platform", t, platform_timeline(0.0, t, None, None, [])) for t in (3.0, 1.0, 2.0)]
    text = format_medians(runs)
    assert "first_token_client        2.000" in text and "median 2.000 s, min 1.000 s, max 3.000 s" in text

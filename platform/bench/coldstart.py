"""The cold-start timeline: what `pagefleet bench coldstart` prints and writes as JSON.

Every point is a wall-clock time on this machine, shown relative to the moment the request
was sent: the bench's own (request sent, first token at the client), the gateway's wake (seen
by the bench on `keys.WAKE_CHANNEL`), the controller's scale-up decision (its decision stream)
and the worker's phases (`protocol.phases`, from the model's phase stream). A point that did
not happen (no wake when it is off, no graphs on a CPU) is left out.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from pagefleet.platform.protocol.phases import PHASE_ORDER, PhaseEvent

PROMPT_IDS = list(range(100, 108))  # 8 prompt tokens, valid in any vocabulary the engine runs
OUTPUT_LEN = 8


@dataclass(frozen=True, slots=True)
class TimelinePoint:
    name: str
    at_s: float  # seconds after the request was sent (or the process started, in-process)
    worker_cpu_s: float | None = None  # CPU seconds the worker had used since its spawn


@dataclass(frozen=True, slots=True)
class ColdStart:
    """One measured cold start; `first_token_s` is what a client waits for its first token."""

    mode: str  # "platform" or "in-process"
    first_token_s: float
    points: list[TimelinePoint]
    trigger: str | None = None  # what made the controller scale: "wake" or "tick"
    notes: dict[str, str] = field(default_factory=dict)


def platform_timeline(sent_at: float, first_token_at: float, wake_at: float | None,
                      decision_at: float | None, phases: list[PhaseEvent]) -> list[TimelinePoint]:
    """The points of one platform cold start, in the order they are meant to happen."""
    points = [TimelinePoint("request_sent", 0.0)]
    if wake_at is not None:
        points.append(TimelinePoint("enqueued_wake", wake_at - sent_at))
    if decision_at is not None:
        points.append(TimelinePoint("controller_decision", decision_at - sent_at))
    by_name = {event.phase: event for event in phases}
    points += [TimelinePoint(name, by_name[name].at - sent_at, by_name[name].cpu_since_spawn_s)
               for name in PHASE_ORDER if name in by_name]
    points.append(TimelinePoint("first_token_client", first_token_at - sent_at))
    return points


def format_cold_start(title: str, run: ColdStart) -> str:
    lines = [f"==== {title} ====", f"{'phase':<22} {'at (s)':>8} {'step (s)':>9} {'worker cpu (s)':>15}"]
    previous = 0.0
    for point in run.points:
        cpu = "" if point.worker_cpu_s is None else f"{point.worker_cpu_s:15.3f}"
        lines.append(f"{point.name:<22} {point.at_s:8.3f} {point.at_s - previous:9.3f} {cpu}".rstrip())
        previous = point.at_s
    lines.append(f"first token after {run.first_token_s:.3f} s"
                 + (f" (scaled by {run.trigger})" if run.trigger else ""))
    lines += [f"{key}: {value}" for key, value in run.notes.items()]
    return "\n".join(lines)


def median_point_s(runs: list[ColdStart], name: str) -> float | None:
    values = [p.at_s for run in runs for p in run.points if p.name == name]
    return statistics.median(values) if values else None


def format_medians(runs: list[ColdStart]) -> str:
    names = list(dict.fromkeys(p.name for run in runs for p in run.points))
    lines = [f"==== median of {len(runs)} runs ====", f"{'phase':<22} {'at (s)':>8} {'worker cpu (s)':>15}"]
    for name in names:
        cpus = [p.worker_cpu_s for run in runs for p in run.points
                if p.name == name and p.worker_cpu_s is not None]
        cpu = f"{statistics.median(cpus):15.3f}" if cpus else ""
        lines.append(f"{name:<22} {median_point_s(runs, name):8.3f} {cpu}".rstrip())
    firsts = sorted(run.first_token_s for run in runs)
    lines.append(f"first token: median {statistics.median(firsts):.3f} s, min {firsts[0]:.3f} s, "
                 f"max {firsts[-1]:.3f} s")
    return "\n".join(lines)

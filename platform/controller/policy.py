"""The scaling decision: a pure function of the model's policy, its signals and its history.

Kept free of I/O so every rule can be tested with a scripted trace. The rules, in order:

1. No signals (Redis unreadable): hold. Missing data is never a reason to scale to zero, and it
   restarts the idle timer so an outage cannot look like idleness afterwards.
2. Demand is what waits plus what runs (`backlog + in_flight`); the recommendation is
   `ceil(demand / target_in_flight)`, at least one while the model was active within
   `scale_to_zero_after_s`. Replicas that are still starting count as capacity (they are in
   `current`), so a cold start does not pile on more replicas while the backlog waits.
3. Scale-up: from zero on the first queued request within the same tick; in panic (demand at
   least `panic_threshold` times what the current replicas are meant to carry) at once;
   otherwise to the lowest recommendation of the last `scale_up_window_s` so a one-tick spike
   does not start a GPU pod. At most `max_scale_up_step` replicas are added per tick.
   Batch work (priority 2) counts in demand, so it scales a model like any other, but it is
   offline work with a 24 h window: it never makes a panic (only interactive and job demand
   does), and when it is all there is it wakes a model from zero only once it has waited
   `batch_wake_after_s` (default 0: at once).
4. Scale-down: to the highest recommendation of the last `scale_down_window_s` (no flapping),
   never while a worker is still loading its model (a Deployment removes unready pods first),
   and to zero only after `scale_to_zero_after_s` without any activity.
5. Clamp to `[min_replicas, max_replicas]`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Literal

from pagefleet.platform.registry import ScalingPolicy

Direction = Literal["up", "down", "hold"]


@dataclass(frozen=True, slots=True)
class WorkerCounts:
    """Live workers of one model by heartbeat state (stale heartbeats already dropped)."""

    starting: int = 0
    ready: int = 0
    draining: int = 0
    running: int = 0
    waiting: int = 0
    kv_usage: float = 0.0  # mean over ready workers, in [0, 1]


@dataclass(frozen=True, slots=True)
class Signals:
    """One observation of a model's queues and workers, read at time `at`.

    `arrivals_total` is the streams' monotonic `entries-added` counter: comparing it between ticks
    reveals requests that arrived and finished between two observations. `batch_backlog` and
    `batch_in_flight` are the priority-2 (batch) parts of `backlog` and `in_flight`.
    """

    at: float
    backlog: int
    in_flight: int
    arrivals_total: int
    workers: WorkerCounts = field(default_factory=WorkerCounts)
    batch_backlog: int = 0
    batch_in_flight: int = 0

    @property
    def demand(self) -> int:
        return self.backlog + self.in_flight

    @property
    def urgent_demand(self) -> int:
        """Demand that someone waits on now (interactive requests and jobs): what may panic."""
        return self.demand - self.batch_backlog - self.batch_in_flight


@dataclass(frozen=True, slots=True)
class Recommendation:
    at: float
    replicas: int


@dataclass(frozen=True, slots=True)
class PolicyState:
    """What the policy remembers between ticks; replaced, never mutated."""

    recommendations: tuple[Recommendation, ...] = ()
    observing_since: float | None = None
    last_active_at: float | None = None
    arrivals_total: int | None = None
    batch_only_since: float | None = None  # when demand became batch work alone


@dataclass(frozen=True, slots=True)
class Decision:
    desired_replicas: int
    direction: Direction
    reason: str
    state: PolicyState


def decide(
    policy: ScalingPolicy,
    current: int,
    signals: Signals | None,
    state: PolicyState,
    now: float,
) -> Decision:
    """Desired replicas for one model given `current` (replicas asked of the backend so far)."""
    if signals is None:
        desired = _clamp(policy, current)
        return Decision(desired, _direction(current, desired),
                        "hold: signals unavailable (never scale on missing data)",
                        replace(state, last_active_at=now))
    state = _observe(state, signals, now)
    # A restarted controller has no history: it waits out the windows before scaling down.
    active_at = state.last_active_at if state.last_active_at is not None else state.observing_since
    idle_s = now - active_at
    # Keep one replica warm while recently active; never wake a model for that alone.
    warm_floor = 1 if current > 0 and idle_s < policy.scale_to_zero_after_s else 0
    raw = max(math.ceil(signals.demand / policy.target_in_flight), warm_floor)
    horizon = now - max(policy.scale_up_window_s, policy.scale_down_window_s)
    kept = (r for r in state.recommendations if r.at >= horizon)
    recommendations = (*kept, Recommendation(now, raw))
    state = replace(state, recommendations=recommendations)

    if raw > current:
        desired, reason = _scale_up(policy, current, signals, raw, recommendations, state, now)
    elif raw < current:
        observed_s = now - state.observing_since
        desired, reason = _scale_down(policy, current, signals, raw, recommendations,
                                      observed_s, idle_s)
    else:
        desired, reason = current, f"steady: demand {signals.demand} fits {current} replica(s)"
    clamped = _clamp(policy, desired)
    if clamped != desired:
        reason += f"; clamped to [{policy.min_replicas}, {policy.max_replicas}]"
    return Decision(clamped, _direction(current, clamped), reason, state)


def _observe(state: PolicyState, signals: Signals, now: float) -> PolicyState:
    arrived = 0
    if state.arrivals_total is not None and signals.arrivals_total >= state.arrivals_total:
        arrived = signals.arrivals_total - state.arrivals_total
    busy = signals.workers.running + signals.workers.waiting
    active = signals.demand > 0 or arrived > 0 or busy > 0
    since = state.observing_since if state.observing_since is not None else now
    batch_only = signals.demand > 0 and signals.urgent_demand == 0
    batch_since = (state.batch_only_since if state.batch_only_since is not None else now) \
        if batch_only else None
    return replace(state, observing_since=since, last_active_at=now if active else state.last_active_at,
                   arrivals_total=signals.arrivals_total, batch_only_since=batch_since)


def _scale_up(
    policy: ScalingPolicy,
    current: int,
    signals: Signals,
    raw: int,
    recommendations: tuple[Recommendation, ...],
    state: PolicyState,
    now: float,
) -> tuple[int, str]:
    if current == 0 and state.batch_only_since is not None:
        waited = now - state.batch_only_since
        if waited < policy.batch_wake_after_s:
            return 0, (f"hold at zero: batch-only backlog {signals.batch_backlog} has waited "
                       f"{waited:g}s of {policy.batch_wake_after_s:g}s")
        target, why = raw, f"activate from zero: batch demand {signals.demand}"
    elif current == 0:
        target, why = raw, f"activate from zero: demand {signals.demand}"
    elif signals.urgent_demand >= policy.panic_threshold * current * policy.target_in_flight:
        target, why = raw, (f"panic: demand {signals.urgent_demand} (batch work aside) >= "
                            f"{policy.panic_threshold:g} x capacity of {current} replica(s)")
    else:
        window = [r.replicas for r in recommendations if r.at >= now - policy.scale_up_window_s]
        target = max(current, min(window))
        if target == current:
            return current, f"hold: demand {signals.demand} wants {raw}, waiting out the scale-up window"
        why = f"scale up: demand {signals.demand} sustained over {policy.scale_up_window_s:g}s"
    stepped = min(target, current + policy.max_scale_up_step)
    if stepped < target:
        why += f" (step limited to +{policy.max_scale_up_step})"
    return stepped, why


def _scale_down(
    policy: ScalingPolicy,
    current: int,
    signals: Signals,
    raw: int,
    recommendations: tuple[Recommendation, ...],
    observed_s: float,
    idle_s: float,
) -> tuple[int, str]:
    if signals.workers.starting > 0:
        return current, f"hold: {signals.workers.starting} worker(s) still loading, never killed"
    if raw == 0:
        return 0, f"scale to zero: idle for {idle_s:g}s (>= {policy.scale_to_zero_after_s:g}s)"
    if observed_s < policy.scale_down_window_s:
        return current, f"hold: observed for {observed_s:g}s, less than the scale-down window"
    now = recommendations[-1].at
    window = [r.replicas for r in recommendations if r.at >= now - policy.scale_down_window_s]
    target = min(current, max(window))
    if target == current:
        return current, f"hold: demand {signals.demand} wants {raw}, stabilising scale-down"
    return target, f"scale down: demand {signals.demand} stayed low for {policy.scale_down_window_s:g}s"


def _clamp(policy: ScalingPolicy, replicas: int) -> int:
    return max(policy.min_replicas, min(policy.max_replicas, replicas))


def _direction(current: int, desired: int) -> Direction:
    if desired > current:
        return "up"
    return "down" if desired < current else "hold"

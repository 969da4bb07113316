"""The scaling policy against scripted traces of a simulated model (one tick = one second).

The simulation is deliberately simple: requests arrive per tick, each ready replica runs up to
`target_in_flight` of them for `service_ticks`, a new replica is ready `cold_ticks` after the
policy asks for it, and removed replicas are never ones still starting (the policy's promise,
checked here too). Each test asserts the replica timeline, not the reasons' wording.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from pagefleet.platform.controller.policy import (
    Decision,
    PolicyState,
    Signals,
    WorkerCounts,
    decide,
)
from pagefleet.platform.registry import ScalingPolicy

POLICY = ScalingPolicy(min_replicas=0, max_replicas=6, target_in_flight=4, scale_to_zero_after_s=30,
                       scale_up_window_s=2, scale_down_window_s=10, max_scale_up_step=2,
                       panic_threshold=2.0)


@dataclass
class Simulation:
    policy: ScalingPolicy = POLICY
    cold_ticks: int = 5
    service_ticks: int = 3
    started_at: list[int] = field(default_factory=list)  # one entry per replica
    queue: int = 0
    running: list[int] = field(default_factory=list)  # remaining ticks of each running request
    arrivals_total: int = 0
    state: PolicyState = field(default_factory=PolicyState)
    timeline: list[int] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)

    def ready(self, tick: int) -> int:
        return sum(1 for s in self.started_at if tick - s >= self.cold_ticks)

    def starting(self, tick: int) -> int:
        return len(self.started_at) - self.ready(tick)

    def step(self, tick: int, arrivals: int, readable: bool = True) -> int:
        self.running = [r - 1 for r in self.running if r > 1]
        self.queue += arrivals
        self.arrivals_total += arrivals
        admit = min(self.queue, self.ready(tick) * self.policy.target_in_flight - len(self.running))
        if admit > 0:
            self.queue -= admit
            self.running += [self.service_ticks] * admit
        workers = WorkerCounts(starting=self.starting(tick), ready=self.ready(tick),
                               running=len(self.running))
        signals = (Signals(at=tick, backlog=self.queue, in_flight=len(self.running),
                           arrivals_total=self.arrivals_total, workers=workers)
                   if readable else None)
        current = len(self.started_at)
        decision = decide(self.policy, current, signals, self.state, now=float(tick))
        self.state = decision.state
        self.decisions.append(decision)
        if decision.desired_replicas > current:
            self.started_at += [tick] * (decision.desired_replicas - current)
        elif decision.desired_replicas < current:
            assert self.starting(tick) == 0, f"tick {tick}: scaled down while a worker was loading"
            del self.started_at[decision.desired_replicas:]
            self.queue += max(0, len(self.running) - decision.desired_replicas * self.policy.target_in_flight)
            self.running = self.running[: decision.desired_replicas * self.policy.target_in_flight]
        self.timeline.append(len(self.started_at))
        return self.timeline[-1]

    def run(self, ticks: int, arrivals: Callable[[int], int]) -> list[int]:
        for tick in range(ticks):
            self.step(tick, arrivals(tick))
        return self.timeline


def quickest_reversal(timeline: list[int]) -> float:
    """Fewest ticks between a change and the next change in the other direction."""
    changes = [(t, timeline[t] - timeline[t - 1]) for t in range(1, len(timeline))
               if timeline[t] != timeline[t - 1]]
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(changes) if (a[1] > 0) != (b[1] > 0)]
    return min(gaps, default=math.inf)


def reversals(timeline: list[int]) -> int:
    """How often the replica count changes direction (up then down or down then up)."""
    moves = [b - a for a, b in itertools.pairwise(timeline) if b != a]
    return sum(1 for a, b in itertools.pairwise(moves) if (a > 0) != (b > 0))


def test_idle_model_stays_at_zero() -> None:
    sim = Simulation()
    assert sim.run(120, lambda t: 0) == [0] * 120
    assert all(d.direction == "hold" for d in sim.decisions)


def test_single_request_activates_within_one_tick_and_returns_to_zero_after_idle() -> None:
    sim = Simulation()
    timeline = sim.run(100, lambda t: 1 if t == 10 else 0)
    assert timeline[9] == 0 and timeline[10] == 1, "activation on the tick the request is seen"
    assert max(timeline) == 1
    last_active = max(i for i, d in enumerate(sim.decisions) if d.state.last_active_at == i)
    zero_at = timeline.index(0, 11)
    assert zero_at == last_active + POLICY.scale_to_zero_after_s
    assert all(r == 1 for r in timeline[10:zero_at]) and all(r == 0 for r in timeline[zero_at:])


def test_step_reaches_need_without_overshoot_while_workers_start() -> None:
    sim = Simulation(cold_ticks=20, service_ticks=1000)  # long cold start, requests never finish
    timeline = sim.run(60, lambda t: 12 if t == 5 else 0)  # needs ceil(12 / 4) = 3 replicas
    assert timeline[5] >= 1
    assert max(timeline) == 3, timeline
    assert timeline[-1] == 3 and reversals(timeline) == 0


def test_burst_panics_up_to_max_in_steps_then_settles_without_flapping() -> None:
    sim = Simulation()
    timeline = sim.run(200, lambda t: 200 if t == 5 else 0)
    assert timeline[5] == 2 and timeline[6] == 4 and timeline[7] == 6, "panic ignores the window"
    assert max(timeline) == POLICY.max_replicas
    assert reversals(timeline) <= 1 and timeline[-1] == 0


def test_short_spike_within_capacity_waits_out_the_scale_up_window() -> None:
    sim = Simulation(service_ticks=1)
    sim.run(20, lambda t: 2 if t == 3 else 0)  # one replica from zero
    # two ticks of a little more than one replica's target: below panic, shorter than the window
    timeline = sim.run(25, lambda t: 5 if t in (20, 21) else 0)
    assert max(timeline[20:]) == 1, timeline[18:]


def test_slow_ramp_scales_monotonically() -> None:
    sim = Simulation()
    timeline = sim.run(90, lambda t: t // 10)  # 0, 0, ..., 1 per tick, 2 per tick, ...
    assert reversals(timeline) == 0
    assert timeline == sorted(timeline) and timeline[-1] >= 4


def test_diurnal_wave_tracks_demand_without_flapping() -> None:
    period = 240
    sim = Simulation()

    def wave(t: int) -> int:
        return round(3 + 3 * math.sin(2 * math.pi * t / period))

    timeline = sim.run(2 * period, wave)
    assert quickest_reversal(timeline) > POLICY.scale_down_window_s, "no flapping"
    assert reversals(timeline) <= 8
    crest, trough = period // 4, 3 * period // 4
    assert min(timeline[crest - 10: crest + 10]) >= 4, "tracks the crest"
    assert 0 in timeline[trough - 10: trough + 20], "zero in the idle trough"
    assert timeline[period + crest] >= 4, "back up for the second crest"


def test_missing_signals_hold_and_restart_the_idle_timer() -> None:
    sim = Simulation()
    sim.run(12, lambda t: 1 if t == 2 else 0)
    assert sim.timeline[-1] == 1
    for tick in range(12, 60):
        sim.step(tick, 0, readable=False)
    assert sim.timeline[-1] == 1, "never scale to zero on missing data"
    for tick in range(60, 120):
        sim.step(tick, 0)
    zero_at = sim.timeline.index(0, 60)
    assert zero_at >= 59 + POLICY.scale_to_zero_after_s


def test_scale_down_never_while_a_worker_is_loading() -> None:
    state = PolicyState()
    signals = Signals(at=0, backlog=0, in_flight=0, arrivals_total=0,
                      workers=WorkerCounts(starting=1, ready=2))
    decision = decide(POLICY, 3, signals, state, now=0.0)
    for t in range(1, 100):
        decision = decide(POLICY, 3, Signals(at=t, backlog=0, in_flight=0, arrivals_total=0,
                                             workers=signals.workers), decision.state, now=float(t))
        assert decision.desired_replicas == 3
    assert "loading" in decision.reason


def test_restarted_controller_waits_before_scaling_down() -> None:
    idle = Signals(at=0, backlog=0, in_flight=0, arrivals_total=7, workers=WorkerCounts(ready=2))
    decision = decide(POLICY, 2, idle, PolicyState(), now=1000.0)
    assert decision.desired_replicas == 2


def test_min_and_max_clamp() -> None:
    policy = ScalingPolicy(min_replicas=1, max_replicas=2, target_in_flight=1)
    busy = Signals(at=0, backlog=50, in_flight=0, arrivals_total=50)
    assert decide(policy, 0, busy, PolicyState(), now=0.0).desired_replicas == 2
    quiet = Signals(at=0, backlog=0, in_flight=0, arrivals_total=0)
    decision = decide(policy, 0, quiet, PolicyState(), now=0.0)
    assert decision.desired_replicas == 1 and decision.direction == "up"
    assert decide(policy, 1, None, PolicyState(), now=0.0).desired_replicas == 1


def test_arrivals_of_short_requests_count_as_activity() -> None:
    policy = ScalingPolicy(max_replicas=2, scale_to_zero_after_s=5, scale_down_window_s=0)
    state = PolicyState()
    total = 0
    for t in range(20):
        total += 3  # three requests per tick, each done before the next observation
        decision = decide(policy, 1, Signals(at=t, backlog=0, in_flight=0, arrivals_total=total),
                          state, now=float(t))
        state = decision.state
        assert decision.desired_replicas == 1
    assert state.last_active_at == 19.0  # nothing was ever queued or running, yet it was active


BATCH_POLICY = ScalingPolicy(min_replicas=0, max_replicas=6, target_in_flight=4,
                             scale_up_window_s=2, scale_down_window_s=10, max_scale_up_step=6,
                             panic_threshold=2.0, batch_wake_after_s=30)


def _batch(at: float, batch_backlog: int, urgent_backlog: int = 0, batch_in_flight: int = 0,
           ready: int = 0) -> Signals:
    return Signals(at=at, backlog=batch_backlog + urgent_backlog,
                   in_flight=batch_in_flight, arrivals_total=0,
                   workers=WorkerCounts(ready=ready),
                   batch_backlog=batch_backlog, batch_in_flight=batch_in_flight)


@pytest.mark.parametrize(("case", "policy", "current", "trace", "expected"), [
    # (time, batch backlog, urgent backlog, batch in flight) per tick -> replicas asked per tick
    ("batch-only wakes from zero at once by default", POLICY, 0,
     [(0, 3, 0, 0)], [1]),
    ("batch-only waits batch_wake_after_s at zero", BATCH_POLICY, 0,
     [(0, 3, 0, 0), (10, 3, 0, 0), (29, 3, 0, 0), (30, 3, 0, 0)], [0, 0, 0, 1]),
    ("an interactive request wakes at once despite the batch wait", BATCH_POLICY, 0,
     [(0, 3, 0, 0), (1, 3, 1, 0)], [0, 1]),
    ("the batch wait restarts when the batch backlog drained", BATCH_POLICY, 0,
     [(0, 3, 0, 0), (20, 0, 0, 0), (21, 3, 0, 0), (40, 3, 0, 0), (51, 3, 0, 0)], [0, 0, 0, 0, 1]),
    ("a batch backlog far above capacity does not panic", BATCH_POLICY, 1,
     [(0, 0, 0, 4), (1, 400, 0, 4), (2, 400, 0, 4)], [1, 1, 1]),
    ("a batch backlog sustained over the window scales up", BATCH_POLICY, 1,
     [(0, 0, 0, 4), (1, 40, 0, 4), (2, 40, 0, 4), (3, 40, 0, 4)], [1, 1, 1, 6]),
    ("the same backlog of interactive work panics", BATCH_POLICY, 1,
     [(0, 0, 0, 0), (1, 0, 400, 0)], [1, 6]),
    ("batch in flight beside urgent work does not count towards panic", BATCH_POLICY, 1,
     [(0, 0, 0, 0), (1, 0, 5, 40)], [1, 1]),
])
def test_batch_backlog_scales_without_panic(case: str, policy: ScalingPolicy, current: int,
                                            trace: list[tuple[int, int, int, int]],
                                            expected: list[int]) -> None:
    state = PolicyState()
    asked = []
    for at, batch_backlog, urgent, batch_in_flight in trace:
        signals = _batch(at, batch_backlog, urgent, batch_in_flight, ready=current)
        decision = decide(policy, current, signals, state, now=float(at))
        state = decision.state
        current = decision.desired_replicas
        asked.append(current)
    assert asked == expected, case


def test_batch_work_keeps_a_model_active() -> None:
    policy = ScalingPolicy(max_replicas=2, scale_to_zero_after_s=5, scale_down_window_s=0)
    state = PolicyState()
    for t in range(20):
        decision = decide(policy, 1, _batch(t, 2, ready=1), state, now=float(t))
        state = decision.state
        assert decision.desired_replicas == 1

"""The reconcile loop: every tick, for every model, read signals, decide, apply, record.

Handlers only translate (kopf's habit): the decision is `policy.decide`, the I/O is in
`signals` and the backend. Blocking backend calls (the Kubernetes client, process control) run
in a worker thread so a slow API server never delays reading Redis. The registry file is
re-read when it changes (a ConfigMap update), and an invalid new version is logged and ignored.
A Redis outage is an ordinary state: the policy holds replicas, the outage and its end are
logged once each, and a tick that fails for any other reason is logged and retried, so the
loop never dies.

A temporary backend failure is logged and retried next tick. A permanent one (kopf's
distinction: a 403 or 422 fails the same way every time) is reported once (an error line, the
`controller_permanent_failures` metric, `Backend.report_failure`) and the same write is not
sent again until the model's spec or desired replicas change or `permanent_retry_s` passes.

Besides the tick, a wake from the gateway (`controller.wake`) reconciles one model at once, so
a model at zero starts a worker milliseconds after the request that needs it is queued. Ticks
and wakes take one lock, so a model's reconciles never overlap; each published decision says
which one made it (`trigger`) and how many ticks had run (`tick`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import redis.asyncio as aioredis

from pagefleet.platform.controller.backends.base import (
    Backend,
    BackendError,
    PermanentBackendError,
)
from pagefleet.platform.controller.decisions import publish_decision
from pagefleet.platform.controller.metrics import ControllerMetrics
from pagefleet.platform.controller.policy import Decision, PolicyState, Signals, decide
from pagefleet.platform.controller.signals import SignalsUnavailable, read_signals
from pagefleet.platform.controller.wake import listen_for_wakes
from pagefleet.platform.protocol.resilience import RedisOutages, supervise
from pagefleet.platform.registry import ModelSpec, Registry, RegistryError, load_registry

log = logging.getLogger(__name__)


class Elector(Protocol):
    def try_acquire_or_renew(self) -> bool: ...

    def release(self) -> None: ...


@dataclass(frozen=True, slots=True)
class _PermanentFailure:
    """The last permanent failure of one model, and what was being sent when it happened."""

    message: str
    spec: ModelSpec
    desired_replicas: int | None  # None: it failed before a decision (reading the replicas)
    at: float


class Controller:
    def __init__(
        self,
        registry: Registry,
        backend: Backend,
        redis_client: aioredis.Redis,
        metrics: ControllerMetrics | None = None,
        elector: Elector | None = None,
        heartbeat_stale_s: float = 5.0,
        registry_path: str | None = None,
        clock: Callable[[], float] = time.time,
        permanent_retry_s: float = 300.0,
    ) -> None:
        self.registry = registry
        self.backend = backend
        self.metrics = metrics if metrics is not None else ControllerMetrics()
        self._redis = redis_client
        self._elector = elector
        self._stale_s = heartbeat_stale_s
        self._registry_path = registry_path
        self._registry_mtime = _mtime(registry_path)
        self._clock = clock
        self._permanent_retry_s = permanent_retry_s
        self._failures: dict[str, _PermanentFailure] = {}
        self._states: dict[str, PolicyState] = {}
        self._pruned_for: frozenset[str] | None = None
        self.is_leader = elector is None
        self.outages = RedisOutages(log, self.metrics.redis_outages.inc)
        self.num_ticks = 0
        self._lock = asyncio.Lock()  # one reconcile at a time: ticks and wakes share the states

    async def tick(self) -> dict[str, Decision]:
        """One reconcile pass over every model; returns the decisions made (none if not leader)."""
        if self._elector is not None:
            leader = await asyncio.to_thread(self._elector.try_acquire_or_renew)
            if leader != self.is_leader:
                log.info("leadership %s", "acquired" if leader else "lost")
                self._states.clear()  # a new leader starts its windows afresh
                self._pruned_for = None
            self.is_leader = leader
        self.metrics.is_leader.set(1 if self.is_leader else 0)
        if not self.is_leader:
            return {}
        async with self._lock:
            self.num_ticks += 1
            self._maybe_reload_registry()
            await self._prune()
            decisions = {}
            for spec in self.registry.models.values():
                decision = await self._reconcile_guarded(spec, "tick")
                if decision is not None:
                    decisions[spec.name] = decision
            return decisions

    async def wake(self, model: str) -> Decision | None:
        """Reconcile `model` now (the gateway queued work it cannot serve yet); None when this
        controller is not the leader or does not know the model."""
        if not self.is_leader or model not in self.registry.models:
            return None
        async with self._lock:
            return await self._reconcile_guarded(self.registry.get(model), "wake")

    async def _reconcile_guarded(self, spec: ModelSpec, trigger: str) -> Decision | None:
        try:
            return await self._reconcile(spec, trigger)
        except BackendError as exc:
            log.warning("model %s: %s; retrying next tick", spec.name, exc)
        except PermanentBackendError as exc:
            await self._report_permanent(spec, exc, None)
        return None

    async def run(self, stop: asyncio.Event, interval_s: float = 1.0) -> None:
        """Tick every `interval_s` and reconcile woken models at once until `stop` is set; then
        release leadership."""
        wakes = asyncio.create_task(supervise(
            lambda: listen_for_wakes(self._redis, self.wake, stop), self.outages,
            "the wake listener", stop))
        try:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    await self.tick()
                except Exception:  # the next tick retries; the loop itself must outlive errors
                    log.exception("reconcile tick failed")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), max(0.0, interval_s - (time.monotonic() - started)))
        finally:
            wakes.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await wakes
            if self._elector is not None and self.is_leader:
                await asyncio.to_thread(self._elector.release)

    async def aclose(self) -> None:
        """Close the Redis connection; the backend is closed by whoever built it."""
        await self._redis.aclose()

    async def _reconcile(self, spec: ModelSpec, trigger: str) -> Decision:
        model = spec.name
        now = self._clock()
        signals: Signals | None
        try:
            signals = await read_signals(self._redis, model, now, self._stale_s)
            self.outages.recovered()
        except SignalsUnavailable as exc:
            self.outages.failed(f"model {model}", exc)
            signals = None
        current = await asyncio.to_thread(self.backend.current_replicas, model)
        decision = decide(spec.scaling, current or 0, signals, self._states.get(model, PolicyState()), now)
        self._states[model] = decision.state
        level = logging.INFO if decision.direction != "hold" else logging.DEBUG
        log.log(level, "model %s: %s -> %d replicas (%s; %s)", model, current,
                decision.desired_replicas, decision.reason, trigger)
        if self._holding_back(spec, decision.desired_replicas, now):
            log.debug("model %s: not repeating a write that failed permanently", model)
        else:
            try:
                await asyncio.to_thread(self.backend.apply, spec, decision.desired_replicas, current)
            except PermanentBackendError as exc:
                await self._report_permanent(spec, exc, decision.desired_replicas)
            else:
                self._failures.pop(model, None)
        self.metrics.observe(model, signals, decision)
        await publish_decision(self._redis, model, current, decision, now, trigger, self.num_ticks)
        return decision

    def _holding_back(self, spec: ModelSpec, desired_replicas: int, now: float) -> bool:
        failure = self._failures.get(spec.name)
        return (failure is not None and failure.spec == spec
                and failure.desired_replicas == desired_replicas
                and now - failure.at < self._permanent_retry_s)

    async def _report_permanent(self, spec: ModelSpec, error: PermanentBackendError,
                                desired_replicas: int | None) -> None:
        previous = self._failures.get(spec.name)
        self._failures[spec.name] = _PermanentFailure(str(error), spec, desired_replicas, self._clock())
        if previous is not None and previous.message == str(error):
            log.debug("model %s: %s (already reported)", spec.name, error)
            return
        log.error("model %s: %s; not retried until its spec or desired replicas change "
                  "(or in %g s)", spec.name, error, self._permanent_retry_s)
        self.metrics.permanent_failures.labels(model=spec.name).inc()
        await asyncio.to_thread(self.backend.report_failure, spec, error)

    async def _prune(self) -> None:
        names = frozenset(self.registry.models)
        if names == self._pruned_for:
            return
        try:
            removed = await asyncio.to_thread(self.backend.remove_except, set(names))
        except BackendError as exc:
            log.warning("pruning dropped models: %s; retrying next tick", exc)
            return
        except PermanentBackendError as exc:
            log.error("pruning dropped models: %s; not retried until the registry changes", exc)
            self._pruned_for = names
            return
        for model in removed:
            self._states.pop(model, None)
            self._failures.pop(model, None)
            self.metrics.forget(model)
        self._pruned_for = names

    def _maybe_reload_registry(self) -> None:
        mtime = _mtime(self._registry_path)
        if self._registry_path is None or mtime == self._registry_mtime:
            return
        self._registry_mtime = mtime
        try:
            registry = load_registry(self._registry_path)
        except RegistryError as exc:
            log.error("keeping the previous registry: %s", exc)
            return
        log.info("registry reloaded: %s", ", ".join(registry.names()))
        self.registry = registry
        for gone in set(self._states) - set(registry.models):
            self._states.pop(gone)


def _mtime(path: str | None) -> float | None:
    if path is None:
        return None
    try:
        return os.stat(path).st_mtime
    except OSError:
        return None

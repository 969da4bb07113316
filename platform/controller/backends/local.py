"""Worker processes on this machine, for `pagefleet up` and tests.

Scale-down sends SIGTERM so a worker drains (finishes what it holds, acks, exits) and kills it
only after `drain_timeout_s`. A worker that exits without being asked to is replaced; one that
keeps crashing soon after starting is restarted with a doubling back-off so a broken model does
not spin the machine.

With `spare_workers`, each model keeps pre-imported spare processes (`workers.runtime.spare`)
and a scale-up starts one of them with a line on its stdin instead of spawning a bare
interpreter. A used spare is replaced only once no worker of the model is still loading
(`_HEALTHY_AFTER_S`), so the replacement's imports never compete with a cold start for the CPU.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from pagefleet.platform.controller.backends.base import PermanentBackendError
from pagefleet.platform.controller.settings import LocalSettings
from pagefleet.platform.processes.children import start_child
from pagefleet.platform.protocol.phases import SPARE_ENV, SPAWNED_AT_ENV
from pagefleet.platform.registry import ModelSpec

log = logging.getLogger(__name__)
_HEALTHY_AFTER_S = 10.0  # a worker that lived this long resets the crash back-off


@dataclass(slots=True)
class _Worker:
    worker_id: str
    process: subprocess.Popen
    started_at: float
    stop_sent_at: float | None = None


@dataclass(slots=True)
class _Group:
    target: int = 0
    active: list[_Worker] = field(default_factory=list)
    draining: list[_Worker] = field(default_factory=list)
    spares: list[_Worker] = field(default_factory=list)
    backoff_s: float = 0.0
    next_start_at: float = 0.0
    num_restarts: int = 0


class LocalBackend:
    """One group of worker processes per model; `apply` converges the group on its target."""

    def __init__(self, settings: LocalSettings, registry_path: str, redis_url: str,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._settings = settings
        self._registry_path = registry_path
        self._redis_url = redis_url
        self._clock = clock
        self._groups: dict[str, _Group] = {}

    def current_replicas(self, model: str) -> int | None:
        group = self._groups.get(model)
        return None if group is None else group.target

    def alive(self, model: str) -> int:
        """Running, not draining, worker processes of `model` (for tests and `pagefleet up`)."""
        group = self._groups.get(model)
        return 0 if group is None else sum(1 for w in group.active if w.process.poll() is None)

    def worker_pids(self, model: str) -> list[int]:
        group = self._groups.get(model)
        return [] if group is None else [w.process.pid for w in group.active]

    def spare_pids(self, model: str) -> list[int]:
        group = self._groups.get(model)
        return [] if group is None else [w.process.pid for w in group.spares]

    def restarts(self, model: str) -> int:
        group = self._groups.get(model)
        return 0 if group is None else group.num_restarts

    def apply(self, spec: ModelSpec, replicas: int, current: int | None) -> None:
        group = self._groups.setdefault(spec.name, _Group())
        group.target = replicas
        now = self._clock()
        self._reap(spec.name, group, now)
        while len(group.active) > replicas:
            self._stop(spec.name, group.active.pop(), now)  # newest first
        while len(group.active) < replicas and now >= group.next_start_at:
            group.active.append(self._start(spec.name, group, now))
        if spec.task == "generate":  # a spare preloads the generation engine, not an encoder
            self._keep_spares(spec.name, group, now)

    def remove_except(self, models: set[str]) -> list[str]:
        removed = sorted(name for name in self._groups if name not in models)
        now = self._clock()
        for name in removed:
            group = self._groups[name]
            group.target = 0
            while group.active:
                self._stop(name, group.active.pop(), now)
            self._drop_spares(name, group, now)
            self._reap(name, group, now)
            if not group.draining:
                del self._groups[name]
        return removed

    def close(self) -> None:
        """SIGTERM every worker, wait up to the drain timeout, then kill what is left."""
        now = self._clock()
        for name, group in self._groups.items():
            while group.active:
                self._stop(name, group.active.pop(), now)
            self._drop_spares(name, group, now)
        deadline = time.monotonic() + self._settings.drain_timeout_s
        for group in self._groups.values():
            for worker in group.draining:
                try:
                    worker.process.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    worker.process.kill()
                    worker.process.wait()
        self._groups.clear()

    def report_failure(self, spec: ModelSpec, error: PermanentBackendError) -> None:
        """Local processes have no event stream; the controller's log line is the report."""

    def _start(self, model: str, group: _Group, now: float) -> _Worker:
        while group.spares:
            spare = group.spares.pop(0)
            if self._hand_start(spare):
                log.info("started worker %s of %s (pid %d) from a spare", spare.worker_id, model,
                         spare.process.pid)
                return _Worker(spare.worker_id, spare.process, now)
            self._stop(model, spare, now)
        worker = self._spawn(model, now, {SPAWNED_AT_ENV: f"{time.time():.6f}"}, subprocess.DEVNULL)
        log.info("started worker %s of %s (pid %d)", worker.worker_id, model, worker.process.pid)
        return worker

    def _spawn(self, model: str, now: float, extra_env: dict[str, str], stdin: int) -> _Worker:
        worker_id = f"local-{model}-{uuid.uuid4().hex[:8]}"
        fields = {"model": model, "registry": self._registry_path, "redis_url": self._redis_url,
                  "worker_id": worker_id}
        command = [part.format(**fields) for part in self._settings.worker_command]
        env = {**os.environ, "PAGEFLEET_WORKER_ID": worker_id, **extra_env}
        # From the executor thread that runs `apply`: it lives until the loop's executor shuts
        # down, after `close` has drained every worker, so the parent-death signal fires only
        # when the controller is gone.
        process = start_child(command, env=env, stdin=stdin, text=True)
        return _Worker(worker_id, process, now)

    @staticmethod
    def _hand_start(spare: _Worker) -> bool:
        """Tell a spare to become a worker; False if it is gone (it died while waiting)."""
        if spare.process.poll() is not None or spare.process.stdin is None:
            return False
        try:
            spare.process.stdin.write(json.dumps({"spawned_at": time.time()}) + "\n")
            spare.process.stdin.close()
        except (BrokenPipeError, OSError):
            return False
        return True

    def _keep_spares(self, model: str, group: _Group, now: float) -> None:
        for spare in [s for s in group.spares if s.process.poll() is not None]:
            group.spares.remove(spare)
            group.next_start_at = max(group.next_start_at, now + max(1.0, group.backoff_s))
            log.warning("spare worker %s of %s exited with %s", spare.worker_id, model,
                        spare.process.returncode)
        loading = any(now - w.started_at < _HEALTHY_AFTER_S for w in group.active)
        while len(group.spares) < self._settings.spare_workers and not loading and now >= group.next_start_at:
            spare = self._spawn(model, now, {SPARE_ENV: "1"}, subprocess.PIPE)
            log.info("spare worker %s of %s waiting (pid %d)", spare.worker_id, model, spare.process.pid)
            group.spares.append(spare)

    def _drop_spares(self, model: str, group: _Group, now: float) -> None:
        while group.spares:
            self._stop(model, group.spares.pop(), now)

    def _stop(self, model: str, worker: _Worker, now: float) -> None:
        if worker.process.poll() is None:
            worker.process.send_signal(signal.SIGTERM)
            log.info("draining worker %s of %s (pid %d)", worker.worker_id, model, worker.process.pid)
        worker.stop_sent_at = now
        self._groups[model].draining.append(worker)

    def _reap(self, model: str, group: _Group, now: float) -> None:
        for worker in list(group.draining):
            if worker.process.poll() is not None:
                group.draining.remove(worker)
            elif worker.stop_sent_at is not None and now - worker.stop_sent_at > self._settings.drain_timeout_s:
                log.warning("worker %s of %s did not drain in time; killing it", worker.worker_id, model)
                worker.process.kill()
        for worker in [w for w in group.active if w.process.poll() is not None]:
            group.active.remove(worker)
            group.num_restarts += 1
            lived_s = now - worker.started_at
            if lived_s >= _HEALTHY_AFTER_S:
                group.backoff_s = 0.0
            else:
                group.backoff_s = min(self._settings.max_restart_backoff_s, max(1.0, 2 * group.backoff_s))
            group.next_start_at = now + group.backoff_s
            log.warning("worker %s of %s exited with %s after %.1fs; restarting in %.1fs",
                        worker.worker_id, model, worker.process.returncode, lived_s, group.backoff_s)

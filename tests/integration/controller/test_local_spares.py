"""The local backend's spare workers, with a stub command (tests/support/spare_stub.py): a
scale-up hands the waiting spare its start line (with the spawn time) instead of spawning, the
used spare is not replaced while the new worker is still loading, a dead spare is replaced by a
plain spawn, and closing the backend stops spares too."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

from pagefleet.platform.controller.backends.local import LocalBackend
from pagefleet.platform.controller.settings import LocalSettings
from pagefleet.platform.registry import parse_registry
from tests.e2e.test_up_supervision import _alive
from tests.support.waiting import wait_for

STUB = str(Path(__file__).resolve().parents[2] / "support" / "spare_stub.py")
SPEC = parse_registry({"models": {"m": {}}}).get("m")


def _backend(folder: Path) -> LocalBackend:
    command = (sys.executable, STUB, "{worker_id}", str(folder))
    return LocalBackend(LocalSettings(worker_command=command, drain_timeout_s=10, spare_workers=1),
                        "unused.yaml", "redis://127.0.0.1:1/0")


def _waiting_spare(backend: LocalBackend, folder: Path) -> int:
    """At zero replicas the backend starts one spare; its pid once it waits for its start."""
    backend.apply(SPEC, 0, None)
    [spare_pid] = backend.spare_pids("m")
    wait_for(lambda: list(folder.glob("*.spare")), "the spare to wait", 30)
    return spare_pid


def test_a_scale_up_starts_the_waiting_spare(tmp_path: Path) -> None:
    backend = _backend(tmp_path)
    try:
        spare_pid = _waiting_spare(backend, tmp_path)
        before = time.time()
        backend.apply(SPEC, 1, 0)
        assert backend.worker_pids("m") == [spare_pid]
        started = wait_for(lambda: list(tmp_path.glob("*.started")), "the start line", 30)
        assert json.loads(started[0].read_text())["spawned_at"] >= before
        backend.apply(SPEC, 1, 1)
        assert backend.spare_pids("m") == [], "no new spare while the worker is loading"
    finally:
        backend.close()
    assert not _alive(spare_pid)


def test_a_dead_spare_is_replaced_by_a_plain_spawn(tmp_path: Path) -> None:
    backend = _backend(tmp_path)
    try:
        spare_pid = _waiting_spare(backend, tmp_path)
        os.kill(spare_pid, signal.SIGKILL)
        wait_for(lambda: not _alive(spare_pid), "the spare to die", 30)
        backend.apply(SPEC, 1, 0)
        [worker_pid] = backend.worker_pids("m")
        assert worker_pid != spare_pid
        started = wait_for(lambda: list(tmp_path.glob("*.started")), "the plain worker", 30)
        assert float(started[0].read_text()) > 0  # the backend passed its spawn time
    finally:
        backend.close()
    assert backend.spare_pids("m") == []


def test_closing_stops_a_spare_that_was_never_used(tmp_path: Path) -> None:
    backend = _backend(tmp_path)
    spare_pid = _waiting_spare(backend, tmp_path)
    backend.close()
    assert not _alive(spare_pid)


"""`pagefleet up` as a supervisor: kill -9 of `up` leaves no process behind, the private Redis
keeps its data across a restart of `up`, and a taken port is refused before anything starts."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import redis
import yaml

from pagefleet.platform.processes.ports import free_port
from tests.integration.runtime.processes import SOURCE
from tests.support.up_exit import wait_for_exit

MODEL = "up-supervised"


def _registry(tmp_path: Path) -> Path:
    path = tmp_path / "registry.yaml"
    path.write_text(yaml.safe_dump({"models": {MODEL: {
        "source": SOURCE, "engine": {"max_model_len": 128, "max_num_seqs": 2},
        "scaling": {"min_replicas": 0, "max_replicas": 1, "scale_to_zero_after_s": 60}}}}))
    return path


def _children(pid: int) -> set[int]:
    """Every process whose parent is `pid` (from /proc; Linux only, like the platform)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited


def _start_up(tmp_path: Path, port: int, data_dir: Path, log_name: str) -> tuple[subprocess.Popen, Path]:
    log_path = tmp_path / log_name
    with open(log_path, "wb") as log:
        up = subprocess.Popen([sys.executable, "-m", "pagefleet.platform.cli", "up", "--port", str(port),
                               "--registry", str(_registry(tmp_path)), "--data-dir", str(data_dir)],
                              stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while "Ctrl-C stops everything" not in log_path.read_text():
        assert up.poll() is None, log_path.read_text()
        assert time.monotonic() < deadline, log_path.read_text()
        time.sleep(0.1)  # polling for the banner with a deadline
    return up, log_path


def _redis_url(log_path: Path) -> str:
    return re.search(r"redis://127\.0\.0\.1:\d+/0", log_path.read_text()).group(0)


def test_kill_9_of_up_leaves_nothing_and_redis_keeps_its_data(tmp_path: Path) -> None:
    port, data_dir = free_port(), tmp_path / "data"
    up, log_path = _start_up(tmp_path, port, data_dir, "up1.log")
    children = _children(up.pid)
    if len(children) != 4:  # redis-server, gateway, controller, batch worker
        up.send_signal(signal.SIGINT)  # stop it cleanly: a failed test leaves nothing running
        wait_for_exit(up, log_path)
        raise AssertionError(f"up has {len(children)} children, not 4:\n{log_path.read_text()}")
    client = redis.Redis.from_url(_redis_url(log_path))
    client.set("pf:test:survivor", "kept")
    client.close()

    up.send_signal(signal.SIGKILL)
    up.wait(timeout=10)
    deadline = time.monotonic() + 60
    try:
        while any(_alive(pid) for pid in children):
            assert time.monotonic() < deadline, f"still running after kill -9 of up: {children}"
            time.sleep(0.1)  # polling for the children's exit with a deadline
    finally:
        for pid in filter(_alive, children):  # leave no orphan behind even when the test fails
            os.kill(pid, signal.SIGKILL)

    up, log_path = _start_up(tmp_path, port, data_dir, "up2.log")  # same port: it was freed
    try:
        client = redis.Redis.from_url(_redis_url(log_path))
        assert client.get("pf:test:survivor") == b"kept"
        client.close()
        up.send_signal(signal.SIGINT)
        assert wait_for_exit(up, log_path) == 0, log_path.read_text()
    finally:
        if up.poll() is None:
            up.kill()


def test_a_taken_port_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "pagefleet.platform.cli", "up", "--port", str(port),
             "--registry", str(_registry(tmp_path)), "--data-dir", str(tmp_path / "data")],
            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert f"port {port} on 127.0.0.1 is taken" in result.stderr
    assert "pagefleet is up" not in result.stdout and "Traceback" not in result.stderr
    assert not (tmp_path / "data").exists()  # checked before the private Redis was set up

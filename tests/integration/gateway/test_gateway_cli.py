"""`pagefleet gateway` as `pagefleet up` runs it: a separate process, configured by flags."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pagefleet.platform.bench.cpu import child_pids
from tests.integration.gateway.conftest import MODEL
from tests.support.redis_server import free_port
from tests.support.scripted_engine import InProcessWorker


def pid_alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _start_gateway(port: int, redis_url: str, registry_path: str, *extra: str,
                   env: dict[str, str] | None = None) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "pagefleet.platform.cli", "gateway",
                             "--port", str(port), "--redis-url", redis_url, "--registry", registry_path,
                             "--api-key", "sk-cli", "--log-level", "warning", *extra], env=env)
    deadline = time.monotonic() + 60
    while True:  # polling a condition with a deadline
        assert proc.poll() is None, "the gateway exited"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the gateway did not come up"
        time.sleep(0.05)


def test_cli_serves_the_api(redis_url: str, registry_path: str, worker: InProcessWorker) -> None:
    port = free_port()
    proc = _start_gateway(port, redis_url, registry_path)
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-cli", max_retries=0)
        result = client.completions.create(model=MODEL, prompt="cli works", max_tokens=2)
        assert result.choices[0].text == " cli works"
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="wrong",
                          max_retries=0).models.list()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_several_gateway_processes_serve_one_port(redis_url: str, registry_path: str,
                                                   worker: InProcessWorker, tmp_path: Path) -> None:
    """`--workers 2`: each process got the flags (the key is enforced), requests on separate
    connections are answered whichever process accepts them, and /metrics counts all of them."""
    port = free_port()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    proc = _start_gateway(port, redis_url, registry_path, "--workers", "2", env=env)
    base_url = f"http://127.0.0.1:{port}/v1"

    def complete(number: int) -> str:
        with openai.OpenAI(base_url=base_url, api_key="sk-cli", max_retries=0) as client:
            stream = client.completions.create(model=MODEL, prompt=f"call {number}", max_tokens=2,
                                               stream=True)
            return "".join(chunk.choices[0].text for chunk in stream if chunk.choices)

    try:
        with ThreadPoolExecutor(8) as pool:
            texts = list(pool.map(complete, range(24)))
        assert texts == [f" call {number}" for number in range(24)]
        for _ in range(4):  # on fresh connections, so either process may refuse them
            with pytest.raises(openai.AuthenticationError):
                openai.OpenAI(base_url=base_url, api_key="wrong", max_retries=0).models.list()
        scraped = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        counts = {s.labels["status"]: s.value for family in text_string_to_metric_families(scraped)
                  for s in family.samples if s.name == "pagefleet:gateway_requests_total"
                  and s.labels["route"] == "/v1/completions"}
        assert counts == {"200": 24}
        assert list(tmp_path.glob("counter_*.db"))  # the counters went through the shared folder
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert proc.returncode == 0


def test_gateway_processes_stop_with_a_killed_supervisor(redis_url: str, registry_path: str,
                                                         tmp_path: Path) -> None:
    """SIGKILL gives uvicorn's supervisor no chance to stop its processes: they stop
    themselves rather than keep serving the port with nobody in charge."""
    port = free_port()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    proc = _start_gateway(port, redis_url, registry_path, "--workers", "2", env=env)
    try:
        servers = [pid for pid in child_pids(proc.pid) if pid_alive(pid)]
        assert len(servers) >= 2  # the two gateway processes (and multiprocessing's tracker)
        proc.kill()
        proc.wait(timeout=30)
        deadline = time.monotonic() + 30
        while any(pid_alive(pid) for pid in servers):  # polling a condition with a deadline
            assert time.monotonic() < deadline, "gateway processes outlived their supervisor"
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def test_several_processes_fail_once_on_a_bad_registry(redis_url: str, tmp_path: Path) -> None:
    """A setting every process would fail on stops the gateway at once (uvicorn's supervisor
    would otherwise restart processes that die building their app, forever)."""
    done = subprocess.run([sys.executable, "-m", "pagefleet.platform.cli", "gateway", "--port",
                           str(free_port()), "--redis-url", redis_url, "--registry",
                           str(tmp_path / "missing.yaml"), "--workers", "2"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "cannot read the registry" in done.stderr

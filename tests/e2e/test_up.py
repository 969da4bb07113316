"""`pagefleet up`: Redis, the gateway and the autoscaler come up with no worker; the first request
cold-starts one, the idle time takes it away again, and SIGINT takes everything down."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import openai
import redis
import yaml

from pagefleet.platform.protocol import keys
from pagefleet.platform.protocol.phases import PHASE_EVENT_FIELD, decode_phase_event, in_order
from tests.integration.runtime.processes import SOURCE
from tests.support.redis_server import free_port
from tests.support.up_exit import wait_for_exit

MODEL = "up-smollm2"
IDLE_S = 3  # scale_to_zero_after_s: long enough to be a real wait, short for CI


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_until(condition: Callable[[], bool], log_path: Path, up: subprocess.Popen, what: str,
                timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert up.poll() is None, f"`pagefleet up` exited while waiting for {what}:\n{log_path.read_text()}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{log_path.read_text()}"
        time.sleep(0.1)  # polling a condition with a deadline


def test_up_scales_from_zero_serves_the_openai_client_and_back_to_zero(tmp_path: Path) -> None:
    registry = tmp_path / "registry.yaml"
    registry.write_text(yaml.safe_dump({"models": {MODEL: {
        "source": SOURCE, "engine": {"max_model_len": 128, "max_num_seqs": 2},
        "scaling": {"min_replicas": 0, "max_replicas": 1, "scale_to_zero_after_s": IDLE_S}}}}))
    port = free_port()
    log_path = tmp_path / "up.log"
    with open(log_path, "wb") as log:
        up = subprocess.Popen([sys.executable, "-m", "pagefleet.platform.cli", "up", "--port", str(port),
                               "--registry", str(registry), "--data-dir", str(tmp_path / "data")], stdout=log, stderr=subprocess.STDOUT,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    client = None
    try:
        _wait_until(lambda: "Ctrl-C stops everything" in log_path.read_text(), log_path, up, "the banner")
        banner = log_path.read_text()
        assert f"http://127.0.0.1:{port}/v1" in banner and "scales from zero" in banner
        redis_url = re.search(r"redis://127\.0\.0\.1:\d+/0", banner).group(0)
        client = redis.Redis.from_url(redis_url)
        heartbeats = keys.heartbeat_hash(MODEL)
        # Nothing is queued, so the controller has no reason to start a worker before a request.
        assert client.hlen(heartbeats) == 0 and "started worker" not in log_path.read_text()

        api = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none",
                            max_retries=0, timeout=300)
        response = api.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4)
        assert response.choices[0].message.content
        assert response.usage.completion_tokens > 0
        started = re.findall(r"started worker \S+ of up-smollm2 \(pid (\d+)\)", log_path.read_text())
        assert len(started) == 1, log_path.read_text()  # the request cold-started exactly one worker
        _assert_phases_in_order(client, log_path)

        # After IDLE_S without work the controller drains the worker: it deletes its heartbeat
        # on the way out and the controller reaps the process.
        worker_pid = int(started[0])
        _wait_until(lambda: "scale to zero" in log_path.read_text(), log_path, up, "scale to zero")
        _wait_until(lambda: client.hlen(heartbeats) == 0 and not _pid_exists(worker_pid),
                    log_path, up, "the worker to exit")

        up.send_signal(signal.SIGINT)
        assert wait_for_exit(up, log_path) == 0, log_path.read_text()
    finally:
        if up.poll() is None:
            up.kill()
        if client is not None:
            client.close()
    output = log_path.read_text()
    assert "draining worker" in output  # scale-down drains, it does not kill
    assert "did not drain in time" not in output and "Traceback" not in output, output
    assert not _port_open(port) and not _port_open(int(redis_url.rsplit(":", 1)[1].split("/")[0]))


_CPU_PHASES = ["spawned", "imports_done", "tokenizer_loaded", "weights_loaded", "kv_allocated",
               "engine_ready", "first_pull", "first_token"]


def _assert_phases_in_order(client: redis.Redis, log_path: Path) -> None:
    """The cold-started worker published every CPU phase once, in order and in time order, and
    logged the same phases (one structured line each) in the same order."""
    events = [decode_phase_event(fields[PHASE_EVENT_FIELD.encode()])
              for _id, fields in client.xrange(keys.phase_stream(MODEL))]
    assert [e.phase for e in events] == _CPU_PHASES, events
    assert [e.at for e in events] == sorted(e.at for e in events)
    logged = re.findall(r'phase (\{"worker_id".*\})', log_path.read_text())
    assert [json.loads(line)["phase"] for line in logged] == _CPU_PHASES
    assert in_order([json.loads(line)["phase"] for line in logged])

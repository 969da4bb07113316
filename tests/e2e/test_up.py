"""`pagefleet up`: one command brings Redis, the gateway and a worker up; SIGINT takes them down."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import openai

from tests.integration.runtime.processes import write_registry
from tests.support.redis_server import free_port


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_up_serves_the_openai_client_and_shuts_down_cleanly(tmp_path: Path) -> None:
    registry = write_registry(tmp_path / "registry.yaml", {"up-smollm2": {"max_model_len": 128,
                                                                        "max_num_seqs": 2}})
    port = free_port()
    log_path = tmp_path / "up.log"
    with open(log_path, "wb") as log:
        up = subprocess.Popen([sys.executable, "-m", "pagefleet.platform.cli", "up", "--port", str(port),
                               "--registry", str(registry)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while "pagefleet is up" not in log_path.read_text():
            assert up.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)  # polling the banner with a deadline
        banner = log_path.read_text()
        redis_port = int(re.search(r"redis://127\.0\.0\.1:(\d+)", banner).group(1))
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", timeout=300)
        response = client.chat.completions.create(
            model="up-smollm2", messages=[{"role": "user", "content": "Hi"}], max_tokens=4)
        assert response.choices[0].message.content
        up.send_signal(signal.SIGINT)
        assert up.wait(timeout=120) == 0, log_path.read_text()
    finally:
        if up.poll() is None:
            up.kill()
    output = log_path.read_text()
    assert "draining" in output  # the worker was asked to drain, not killed
    assert not _port_open(port) and not _port_open(redis_port)

"""`pagefleet gateway` as `pagefleet up` runs it: a separate process, configured by flags."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import openai
import pytest

from tests.integration.gateway.conftest import MODEL
from tests.support.redis_server import free_port
from tests.support.scripted_engine import InProcessWorker


def test_cli_serves_the_api(redis_url: str, registry_path: str, worker: InProcessWorker) -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "pagefleet.platform.cli", "gateway",
                             "--port", str(port), "--redis-url", redis_url, "--registry", registry_path,
                             "--api-key", "sk-cli", "--log-level", "warning"])
    try:
        deadline = time.monotonic() + 60
        while True:  # polling a condition with a deadline
            assert proc.poll() is None, "the gateway exited"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the gateway did not come up"
            time.sleep(0.05)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-cli", max_retries=0)
        result = client.completions.create(model=MODEL, prompt="cli works", max_tokens=2)
        assert result.choices[0].text == " cli works"
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="wrong",
                          max_retries=0).models.list()
    finally:
        proc.terminate()
        proc.wait(timeout=30)

"""The whole serving path on this machine: real redis-server, the gateway (uvicorn in a
thread) and two real `pagefleet worker` processes on the embedded model, shared by the e2e
package (model loads are the expensive part on CI's two cores)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import openai
import pytest
import redis
import uvicorn

from pagefleet.platform.gateway import GatewaySettings, create_app
from tests.integration.runtime.processes import WorkerProcess, write_registry
from tests.support.redis_server import free_port

MODEL = "e2e-smollm2"
MAX_MODEL_LEN = 512  # room for a tool-calling system prompt (about 300 tokens)
MAX_NUM_SEQS = 8


@dataclass
class Stack:
    base_url: str  # ends in /v1
    root_url: str
    redis: redis.Redis
    workers: list[WorkerProcess]

    def client(self, **kwargs) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base_url, api_key="none", max_retries=0, **kwargs)

    def async_client(self, **kwargs) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=self.base_url, api_key="none", max_retries=0, **kwargs)

    def live_workers(self) -> list[WorkerProcess]:
        return [w for w in self.workers if w.proc.poll() is None]


def _serve_gateway(settings: GatewaySettings) -> tuple[uvicorn.Server, threading.Thread, int]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port,
                                           log_level="warning", timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the gateway did not start")
        time.sleep(0.01)  # polling a condition with a deadline
    return server, thread, port


@pytest.fixture(scope="package")
def stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("e2e")
    registry = write_registry(root / "registry.yaml", {
        MODEL: {"max_model_len": MAX_MODEL_LEN, "max_num_seqs": MAX_NUM_SEQS}})
    client = redis.Redis.from_url(redis_url)
    workers = [WorkerProcess(MODEL, registry, redis_url, root / f"worker{i}.log",
                             metrics_port=free_port()).start() for i in range(2)]
    server = thread = None
    try:
        for worker in workers:
            worker.wait_ready(client)
        server, thread, port = _serve_gateway(GatewaySettings(
            redis_url=redis_url, registry_path=str(registry), request_timeout_s=300))
        yield Stack(f"http://127.0.0.1:{port}/v1", f"http://127.0.0.1:{port}", client, workers)
    finally:
        if server is not None:
            server.should_exit = True
            thread.join(timeout=30)
        for worker in workers:
            worker.kill()
        client.close()


def worker_logs(stack: Stack) -> str:
    return "\n".join(f"--- {w.worker_id}\n{w.log()}" for w in stack.workers)

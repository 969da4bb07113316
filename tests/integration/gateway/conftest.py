"""A live gateway (uvicorn in a thread, real Redis) and the real worker runtime on a scripted
engine (tests/support/scripted_engine.py: output follows from the prompt) for gateway tests.

Three apps: `gateway` (two API keys, model `fake-echo` served by the worker), `tight`
(open, short deadline, tiny backlog caps and retention, model `idle-model` with no worker) and
`open_gateway` (no keys, for schemathesis).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest
import redis
import uvicorn
import yaml

from pagefleet.platform.gateway import GatewaySettings, create_app
from tests.support.redis_server import free_port
from tests.support.scripted_engine import InProcessWorker, ScriptedEngine

MODEL = "fake-echo"
IDLE_MODEL = "idle-model"
KEY_A, KEY_B = "sk-test-a", "sk-test-b"
MAX_MODEL_LEN = 64


@dataclass(frozen=True, slots=True)
class LiveGateway:
    base_url: str  # ends in /v1, as the openai client wants it
    root_url: str
    settings: GatewaySettings

    def client(self, api_key: str = KEY_A, **kwargs) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base_url, api_key=api_key, max_retries=0, **kwargs)

    def async_client(self, api_key: str = KEY_A, **kwargs) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=self.base_url, api_key=api_key, max_retries=0, **kwargs)


@contextmanager
def serve(settings: GatewaySettings, backlog: int = 2048) -> Iterator[LiveGateway]:
    """Serve `create_app(settings)` with uvicorn on a free port until the block ends;
    `backlog` is the listen queue (a load test opens thousands of connections at once)."""
    port = free_port()
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning",
                            lifespan="on", timeout_graceful_shutdown=5, backlog=backlog)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:  # polling a condition with a deadline
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the gateway did not start")
        time.sleep(0.01)
    root = f"http://127.0.0.1:{port}"
    try:
        yield LiveGateway(base_url=f"{root}/v1", root_url=root, settings=settings)
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def write_registry(path: Path, *models: str) -> str:
    path.write_text(yaml.safe_dump({"models": {
        name: {"source": name, "engine": {"max_model_len": MAX_MODEL_LEN}} for name in models}}))
    return str(path)


@pytest.fixture(scope="session")
def registry_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    return write_registry(tmp_path_factory.mktemp("registry") / "registry.yaml", MODEL, IDLE_MODEL)


@pytest.fixture(scope="session")
def worker(redis_url: str) -> Iterator[InProcessWorker]:
    engine = ScriptedEngine(max_model_len=MAX_MODEL_LEN)
    live = InProcessWorker(redis_url, MODEL, engine, retention_s=300).start()
    yield live
    live.stop()


@pytest.fixture(scope="session")
def gateway(redis_url: str, registry_path: str, worker: InProcessWorker) -> Iterator[LiveGateway]:
    settings = GatewaySettings(redis_url=redis_url, registry_path=registry_path,
                               api_keys=(KEY_A, KEY_B), request_timeout_s=60,
                               max_body_bytes=64 * 1024)
    with serve(settings) as live:
        yield live


@pytest.fixture(scope="session")
def tight(redis_url: str, registry_path: str) -> Iterator[LiveGateway]:
    settings = GatewaySettings(redis_url=redis_url, registry_path=registry_path,
                               request_timeout_s=0.5, max_backlog=2, max_job_backlog=3, retry_after_s=7,
                               backlog_max_age_s=0,
                               job_retention_s=1.0, webhook_allow_private=True)
    with serve(settings) as live:
        yield live


@pytest.fixture(scope="session")
def open_gateway(redis_url: str, registry_path: str, worker: InProcessWorker) -> Iterator[LiveGateway]:
    settings = GatewaySettings(redis_url=redis_url, registry_path=registry_path,
                               request_timeout_s=30, max_choices=8)
    with serve(settings) as live:
        yield live


@pytest.fixture
def redis_raw(redis_url: str) -> Iterator[redis.Redis]:
    """A client on the shared server that, unlike `redis_client`, does not flush it (the
    session's gateway and fake worker keep state there)."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def idle_queue_empty(redis_raw: redis.Redis) -> None:
    """Tests on `idle-model` count its backlog; start each from an empty queue."""
    redis_raw.delete(*(f"pf:q:{IDLE_MODEL}:{p}" for p in (0, 1, 2)))

"""One real worker process per module, on its own model name, against this package's Redis."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.integration.runtime.processes import WorkerProcess, write_registry
from tests.support.redis_server import free_port, redis_server

MODEL = "rt-main"
MAX_NUM_SEQS = 4
MAX_MODEL_LEN = 128
WEBHOOK_SECRET = "test-webhook-secret"


@pytest.fixture(scope="package")
def redis_url() -> Iterator[str]:
    """This package's own redis-server. The webhook schedule (`pf:webhooks`) is shared by all
    workers on one Redis, and the workers other test packages leave running refuse loopback
    targets: on the session's Redis they could lease, and drop, these tests' deliveries."""
    with redis_server() as url:
        yield url


@pytest.fixture(scope="module")
def client(redis_url: str) -> Iterator[redis.Redis]:
    """A client that never flushes: module workers keep their groups and heartbeats."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("registry") / "registry.yaml"
    engine = {"max_model_len": MAX_MODEL_LEN, "max_num_seqs": MAX_NUM_SEQS}
    return write_registry(path, {MODEL: engine, "rt-drain": {**engine, "max_num_seqs": 2}})


@pytest.fixture(scope="module")
def worker(redis_url: str, registry: Path, client: redis.Redis,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    log = tmp_path_factory.mktemp("logs") / "worker.log"
    # The test's webhook receiver listens on loopback, which workers refuse unless allowed.
    env = {"PAGEFLEET_WEBHOOK_ALLOW_PRIVATE": "1", "PAGEFLEET_WEBHOOK_SECRET": WEBHOOK_SECRET}
    process = WorkerProcess(MODEL, registry, redis_url, log, metrics_port=free_port(), env=env).start()
    try:
        process.wait_ready(client)
        yield process
    finally:
        process.kill()

"""`bench serve --overhead` waits for its warm worker with real Redis and real child processes:
it returns on a `ready` heartbeat and gives up as soon as the worker process dies, so a model
that cannot load does not hold a lent GPU for the whole ready timeout."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import redis

from pagefleet.platform.cli.bench_serve import wait_for_ready_worker
from pagefleet.platform.protocol import Heartbeat, encode, keys

MODEL = "bench-wait-model"


def _sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def test_returns_once_a_heartbeat_says_ready(redis_client: redis.Redis, redis_url: str) -> None:
    beat = Heartbeat(worker_id="w1", model=MODEL, state="ready", timestamp=time.time())
    redis_client.hset(keys.heartbeat_hash(MODEL), "w1", encode(beat))
    worker = _sleeper()
    try:
        wait_for_ready_worker(redis_url, MODEL, worker, timeout_s=30.0)
        assert worker.poll() is None
    finally:
        worker.kill()
        worker.wait()


def test_a_starting_worker_is_not_ready(redis_client: redis.Redis, redis_url: str) -> None:
    beat = Heartbeat(worker_id="w1", model=MODEL, state="starting", timestamp=time.time())
    redis_client.hset(keys.heartbeat_hash(MODEL), "w1", encode(beat))
    worker = _sleeper()
    try:
        with pytest.raises(SystemExit, match="became ready in 1 s"):
            wait_for_ready_worker(redis_url, MODEL, worker, timeout_s=1.0)
    finally:
        worker.kill()
        worker.wait()


def test_gives_up_when_the_worker_exits(redis_client: redis.Redis, redis_url: str) -> None:
    worker = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    started = time.monotonic()
    with pytest.raises(SystemExit, match="exited with status 3 before it was ready"):
        wait_for_ready_worker(redis_url, MODEL, worker, timeout_s=600.0)
    assert time.monotonic() - started < 60.0  # not the 600 s ready timeout

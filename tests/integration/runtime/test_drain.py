"""SIGTERM drains: admitted requests finish, nothing else is taken, the worker leaves cleanly."""

from __future__ import annotations

import time
from pathlib import Path

import redis

from pagefleet.platform.protocol import keys
from tests.integration.runtime.processes import (
    WorkerProcess,
    assert_well_formed,
    enqueue,
    envelope,
    read_until_done,
)

MODEL = "rt-drain"  # max_num_seqs 2 in the module registry


def test_sigterm_finishes_admitted_work_and_leaves_the_rest_queued(
        redis_url: str, registry: Path, client: redis.Redis, tmp_path: Path) -> None:
    worker = WorkerProcess(MODEL, registry, redis_url, tmp_path / "worker.log").start()
    try:
        worker.wait_ready(client)
        envs = [envelope(MODEL, prompt=f"Story {i}:", max_tokens=16, ignore_eos=True) for i in range(5)]
        for env in envs:
            enqueue(client, env)
        deadline = time.monotonic() + 120
        while sum(client.exists(keys.result_stream(e.request_id)) for e in envs) < 2:
            assert time.monotonic() < deadline, worker.log()
            time.sleep(0.05)  # polling until two requests stream
        assert worker.terminate() == 0, worker.log()
    finally:
        worker.kill()
    started = [e for e in envs if client.exists(keys.result_stream(e.request_id))]
    assert len(started) >= 2
    for env in started:
        final = assert_well_formed(read_until_done(client, env.request_id, timeout_s=1))
        assert final.finish_reasons == ["length"]  # finished, not aborted
    [group] = client.xinfo_groups(keys.request_stream(MODEL, 0))
    assert group["pending"] == 0
    assert group["lag"] == len(envs) - len(started)  # the rest waits for another worker
    assert not client.hexists(keys.heartbeat_hash(MODEL), worker.worker_id)
    consumers = client.xinfo_consumers(keys.request_stream(MODEL, 0), keys.CONSUMER_GROUP)
    assert worker.worker_id not in {c["name"].decode() for c in consumers}

"""Chaos: kill -9 Redis (AOF on) while a real worker streams requests and runs jobs, start it
again on the same port and data directory, and check that nothing is lost.

Run with `pytest -m chaos tests/integration/runtime/test_redis_outage.py -s` (about 30 s on a
2-core machine; `-s` prints the recovery time recorded in docs/benchmarks.md).
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx
import pytest
import redis

from pagefleet.platform.protocol import (
    DeltaEvent,
    ErrorEvent,
    FinalEvent,
    JobRecord,
    ResultEvent,
    decode_job,
    encode,
    keys,
)
from tests.integration.runtime.processes import (
    WorkerProcess,
    enqueue,
    envelope,
    read_until_done,
    write_registry,
)
from tests.support.redis_server import RestartableRedis, free_port
from tests.support.waiting import wait_for

pytestmark = pytest.mark.chaos
MODEL = "rt-chaos"
CHAT = [{"role": "user", "content": "Tell me a story."}]




def _client_view(events: list[ResultEvent]) -> tuple[int, FinalEvent]:
    """What a client sees, reading like the gateway: repeated deltas (a retried pipeline) are
    dropped by offset, and a gap would be a lost token. Returns (tokens seen, final)."""
    num_tokens = 0
    for event in events:
        if isinstance(event, DeltaEvent):
            if event.offset < num_tokens:
                continue
            assert event.offset == num_tokens, f"tokens lost: offset {event.offset} after {num_tokens}"
            num_tokens += len(event.token_ids)
        else:
            assert isinstance(event, FinalEvent), event
            return num_tokens, event
    raise AssertionError(f"no final event: {events}")


def _job(client: redis.Redis, job_id: str) -> None:
    record = JobRecord(id=job_id, owner=None, endpoint="/v1/chat/completions",
                       body={"model": MODEL, "messages": CHAT}, created_at=time.time())
    client.hset(keys.job_hash(job_id), "record", encode(record))
    client.expire(keys.job_hash(job_id), 600)


def _status(client: redis.Redis, job_id: str) -> str | None:
    raw = client.hget(keys.job_hash(job_id), "record")
    return None if raw is None else decode_job(raw).status


def _outages(worker: WorkerProcess) -> float:
    text = httpx.get(f"http://127.0.0.1:{worker.metrics_port}/metrics").text
    [line] = [x for x in text.splitlines() if x.startswith("pagefleet:redis_outages_total{")]
    return float(line.rsplit(" ", 1)[1])


def test_redis_kill_and_restart_loses_nothing(tmp_path: Path) -> None:
    server = RestartableRedis(str(tmp_path))
    server.start()
    client = redis.Redis.from_url(server.url)
    registry = write_registry(tmp_path / "registry.yaml",
                              {MODEL: {"max_model_len": 256, "max_num_seqs": 4}})
    worker = WorkerProcess(MODEL, registry, server.url, tmp_path / "worker.log",
                           metrics_port=free_port())
    try:
        worker.start().wait_ready(client)
        job_ids = [f"job-{uuid.uuid4().hex}" for _ in range(6)]
        jobs = []
        for job_id in job_ids:
            _job(client, job_id)
            jobs.append(envelope(MODEL, messages=CHAT, job_id=job_id, max_tokens=24, ignore_eos=True))
        streams = [envelope(MODEL, prompt=f"Chapter {i}:", max_tokens=40, ignore_eos=True)
                   for i in range(2)]
        for env in streams:
            enqueue(client, env)
        for env in jobs:
            enqueue(client, env, keys.PRIORITY_JOB)
        wait_for(lambda: sum(client.exists(keys.result_stream(e.request_id)) for e in streams) == 2,
                  "both streams to start")

        server.kill()
        log = tmp_path / "worker.log"
        wait_for(lambda: "redis unreachable" in log.read_text(), "the worker to notice the outage")
        server.start()
        restarted = time.monotonic()
        client = redis.Redis.from_url(server.url)
        lengths = {e.request_id: client.xlen(keys.result_stream(e.request_id)) for e in streams + jobs}
        wait_for(lambda: any(client.xlen(keys.result_stream(rid)) > n for rid, n in lengths.items()),
                  "results to flow again")
        recovery_s = time.monotonic() - restarted
        # The cancel listener subscribed again (the channel lost its subscriber with the restart).
        wait_for(lambda: dict(client.pubsub_numsub(keys.cancel_channel(MODEL)))
                  .get(keys.cancel_channel(MODEL).encode()) == 1, "the cancel listener to resubscribe")

        for env in streams:
            num_tokens, final = _client_view(read_until_done(client, env.request_id))
            assert final.finish_reasons == ["length"] and num_tokens == 40
        for env in jobs:
            num_tokens, final = _client_view(read_until_done(client, env.request_id))
            assert num_tokens == 24
        statuses = {j: wait_for(lambda j=j: (s := _status(client, j)) in ("succeeded", "failed") and s,
                                 "the job to end") for j in job_ids}
        lost = sum(1 for s in statuses.values() if s != "succeeded")
        print(f"\nredis restart: results flowing again {recovery_s:.2f} s after it answered PING; "
              f"jobs lost: {lost} of {len(job_ids)}")
        assert lost == 0, statuses

        # A cancel published after the restart, with no flag to fall back on, still stops work.
        env = envelope(MODEL, prompt="Once upon a time", max_tokens=200, ignore_eos=True)
        enqueue(client, env)
        wait_for(lambda: client.xlen(keys.result_stream(env.request_id)) > 0, "the first delta")
        client.publish(keys.cancel_channel(MODEL), env.request_id)
        events = read_until_done(client, env.request_id)
        num_tokens, final = _client_view(events)
        assert not any(isinstance(e, ErrorEvent) for e in events)
        assert final.finish_reasons == ["abort"] and num_tokens < 200

        assert _outages(worker) >= 1
        assert "redis reachable again" in log.read_text()
        assert worker.terminate() == 0, worker.log()
        for priority in keys.PRIORITIES:
            consumers = client.xinfo_consumers(keys.request_stream(MODEL, priority), keys.CONSUMER_GROUP)
            assert worker.worker_id not in {c["name"].decode() for c in consumers}
        assert not client.hexists(keys.heartbeat_hash(MODEL), worker.worker_id)
    finally:
        worker.kill()
        client.close()
        server.stop()

"""The batch runner against a real redis-server (no Celery, no model worker): how far it feeds.

A step is called directly; a "worker" here is an XREADGROUP on the model's batch stream, so the
test controls exactly what has been delivered.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import redis

from pagefleet.platform.batch import records as rec
from pagefleet.platform.batch.records import BatchRecord
from pagefleet.platform.batch.runner import BatchRunner
from pagefleet.platform.batch.settings import BatchSettings
from pagefleet.platform.batch.storage import LocalFileStorage
from pagefleet.platform.protocol import keys
from pagefleet.platform.protocol.backlog import queue_backlog_sync

MODEL = "m1"
STREAM = keys.request_stream(MODEL, keys.PRIORITY_BATCH)


def _batch(client: redis.Redis, storage: LocalFileStorage, batch_id: str, lines: int,
           prompts: int = 1) -> None:
    prompt = ["hi"] * prompts if prompts > 1 else "hi"
    body = b"".join(json.dumps({"custom_id": f"c{i}", "method": "POST", "url": "/v1/completions",
                                "body": {"model": MODEL, "prompt": prompt, "max_tokens": 2}}
                               ).encode() + b"\n" for i in range(lines))
    storage.write(f"file-{batch_id}", [body], max_bytes=1 << 20)
    now = int(time.time())
    record = BatchRecord(id=batch_id, owner="anon", endpoint="/v1/completions",
                         input_file_id=f"file-{batch_id}", completion_window="24h",
                         created_at=now, expires_at=now + 3600)
    client.hset(rec.batch_key(batch_id), rec.RECORD, rec.encode(record))
    client.sadd(rec.ACTIVE_BATCHES, batch_id)


@pytest.fixture
def runner_for(redis_client: redis.Redis, tmp_path: Path):
    storage = LocalFileStorage(str(tmp_path))

    def make(max_backlog: int, max_in_flight: int = 64) -> BatchRunner:
        settings = BatchSettings(files_dir=str(tmp_path), max_in_flight=max_in_flight,
                                 max_backlog=max_backlog, step_s=0.05, lease_s=1.0,
                                 visibility_timeout_s=2.0)
        return BatchRunner(redis_client, storage, settings, frozenset({MODEL}))

    return storage, make


def _take(client: redis.Redis, count: int) -> int:
    reply = client.xreadgroup(keys.CONSUMER_GROUP, "w1", {STREAM: ">"}, count=count)
    return len(reply[0][1]) if reply else 0


def _step_until_in_flight(runner: BatchRunner, client: redis.Redis, batch_id: str) -> None:
    """Validate (first step), then one feeding step."""
    runner.step(batch_id)
    if rec.decode_batch(client.hget(rec.batch_key(batch_id), rec.RECORD)).status == "validating":
        runner.step(batch_id)


def test_runner_stops_feeding_at_the_models_batch_backlog_bound(redis_client, runner_for) -> None:
    storage, make = runner_for
    runner = make(max_backlog=3)
    _batch(redis_client, storage, "batch_a", lines=10)
    _step_until_in_flight(runner, redis_client, "batch_a")
    assert queue_backlog_sync(redis_client, MODEL, keys.PRIORITY_BATCH) == 3
    assert redis_client.hlen(rec.batch_in_flight("batch_a")) == 3

    assert _take(redis_client, 2) == 2  # a worker pulls two: room for two more
    runner.step("batch_a")
    assert queue_backlog_sync(redis_client, MODEL, keys.PRIORITY_BATCH) == 3
    assert redis_client.hlen(rec.batch_in_flight("batch_a")) == 5
    assert int(redis_client.hget(rec.batch_key("batch_a"), rec.NEXT_LINE)) == 5, \
        "the held-back line is read again later, not skipped"


def test_the_bound_counts_every_batch_of_the_model(redis_client, runner_for) -> None:
    storage, make = runner_for
    runner = make(max_backlog=4)
    _batch(redis_client, storage, "batch_a", lines=3)
    _batch(redis_client, storage, "batch_b", lines=3)
    _step_until_in_flight(runner, redis_client, "batch_a")
    _step_until_in_flight(runner, redis_client, "batch_b")
    assert queue_backlog_sync(redis_client, MODEL, keys.PRIORITY_BATCH) == 4
    assert redis_client.hlen(rec.batch_in_flight("batch_b")) == 1


def test_a_line_larger_than_the_bound_still_runs_on_an_empty_queue(redis_client, runner_for) -> None:
    storage, make = runner_for
    runner = make(max_backlog=1)
    _batch(redis_client, storage, "batch_a", lines=2, prompts=3)  # three envelopes per line
    _step_until_in_flight(runner, redis_client, "batch_a")
    assert redis_client.hlen(rec.batch_in_flight("batch_a")) == 1
    assert queue_backlog_sync(redis_client, MODEL, keys.PRIORITY_BATCH) == 3

"""The gateway's batch and job bookkeeping on fakeredis (no server, no blocking): what creating
writes (record, owner index, active set, queue entry), the owner check, cancel's status moves
and listing. Celery's broker is its in-memory transport: the test reads the queued step from it.
The real-server counterparts are tests/e2e/test_batches.py and tests/integration/gateway/test_jobs.py."""

from __future__ import annotations

import asyncio
import io
import time
from pathlib import Path

import fakeredis
import fakeredis.aioredis
import msgspec
import pytest

from pagefleet.platform.batch import records as rec
from pagefleet.platform.batch.celery_app import QUEUE, STEP_TASK, create_celery
from pagefleet.platform.batch.settings import BatchSettings
from pagefleet.platform.batch.storage import LocalFileStorage
from pagefleet.platform.gateway.batches.schemas import BatchCreate
from pagefleet.platform.gateway.batches.service import BatchService
from pagefleet.platform.gateway.broker import Broker
from pagefleet.platform.gateway.completions.service import CompletionService
from pagefleet.platform.gateway.errors import OpenAIError
from pagefleet.platform.gateway.files.service import FileService
from pagefleet.platform.gateway.jobs.schemas import JobCreate
from pagefleet.platform.gateway.jobs.service import JobService
from pagefleet.platform.gateway.metrics import GatewayMetrics
from pagefleet.platform.gateway.settings import GatewaySettings
from pagefleet.platform.protocol import decode_envelope, keys

MODEL = "m"
SETTINGS = BatchSettings()


@pytest.fixture
def redis() -> fakeredis.aioredis.FakeRedis:
    return fakeredis.aioredis.FakeRedis(server=fakeredis.FakeServer())


@pytest.fixture
def services(redis, tmp_path: Path):
    celery = create_celery("memory://", SETTINGS)
    files = FileService(redis, LocalFileStorage(str(tmp_path)), 10_000, SETTINGS.file_retention_s)
    yield files, BatchService(redis, files, celery, SETTINGS), celery
    celery.close()


def _queued_steps(celery) -> list[str]:
    """Batch ids of the step tasks waiting in the in-memory broker (consumed by reading)."""
    batch_ids = []
    with celery.connection_for_read() as connection:
        queue = connection.SimpleQueue(QUEUE)
        while True:
            try:
                message = queue.get(block=False)
            except queue.Empty:
                break
            assert message.headers["task"] == STEP_TASK
            batch_ids.append(message.decode()[0][0])
            message.ack()
        queue.close()
    return batch_ids


def _create(files: FileService, batches: BatchService, owner: str, **overrides):
    async def go():
        upload = await files.create(owner, "in.jsonl", overrides.pop("purpose", "batch"),
                                    io.BytesIO(b"{}\n"))
        create = BatchCreate(input_file_id=upload.id, endpoint="/v1/completions",
                             completion_window="24h", metadata={"k": "v"})
        return await batches.create(msgspec.structs.replace(create, **overrides), owner)
    return asyncio.run(go())


def test_create_writes_the_record_indexes_and_queues_a_step(redis, services) -> None:
    files, batches, celery = services
    before = int(time.time())
    batch = _create(files, batches, "alice")
    assert batch.status == "validating" and batch.metadata == {"k": "v"}
    assert batch.request_counts.total == 0
    assert batch.expires_at - batch.created_at == 86_400 and batch.created_at >= before

    async def stored():
        raw = await redis.hget(rec.batch_key(batch.id), rec.RECORD)
        return (rec.decode_batch(raw), await redis.zscore(rec.owner_batches("alice"), batch.id),
                await redis.sismember(rec.ACTIVE_BATCHES, batch.id))
    record, score, active = asyncio.run(stored())
    assert (record.owner, record.input_file_id, record.status) == ("alice", batch.input_file_id, "validating")
    assert score == batch.created_at and active
    assert _queued_steps(celery) == [batch.id]


@pytest.mark.parametrize(("overrides", "param"), [
    ({"endpoint": "/v1/embeddings"}, "endpoint"),
    ({"completion_window": "2d"}, "completion_window"),
    ({"completion_window": "25h"}, "completion_window"),
    ({"metadata": {str(i): "v" for i in range(17)}}, "metadata"),
    ({"purpose": "batch_output"}, "input_file_id"),
])
def test_bad_batches_are_400_and_leave_nothing(redis, services, overrides, param) -> None:
    files, batches, celery = services
    with pytest.raises(OpenAIError) as caught:
        _create(files, batches, "alice", **overrides)
    assert (caught.value.status, caught.value.body.param) == (400, param)
    assert asyncio.run(redis.keys("pf:batch*")) == []
    assert _queued_steps(celery) == []


def test_another_owner_gets_404_and_cancel_moves_to_cancelling_once(redis, services) -> None:
    files, batches, celery = services
    batch = _create(files, batches, "alice")
    _queued_steps(celery)
    for call in (batches.get, batches.cancel):
        with pytest.raises(OpenAIError) as caught:
            asyncio.run(call(batch.id, "bob"))
        assert caught.value.status == 404
    with pytest.raises(OpenAIError):  # nor may bob start a batch on alice's file
        asyncio.run(batches.create(BatchCreate(input_file_id=batch.input_file_id,
                                               endpoint="/v1/completions",
                                               completion_window="24h"), "bob"))
    cancelling = asyncio.run(batches.cancel(batch.id, "alice"))
    assert cancelling.status == "cancelling" and cancelling.cancelling_at
    assert _queued_steps(celery) == [batch.id]  # so the cancel is acted on at once
    again = asyncio.run(batches.cancel(batch.id, "alice"))
    assert again.status == "cancelling" and again.cancelling_at == cancelling.cancelling_at
    assert _queued_steps(celery) == []


def test_counters_next_to_the_record_are_merged_and_lists_page(redis, services) -> None:
    files, batches, _ = services
    made = [_create(files, batches, "alice") for _ in range(3)]
    for i, batch in enumerate(made):
        asyncio.run(redis.zadd(rec.owner_batches("alice"), {batch.id: i}))
    asyncio.run(redis.hset(rec.batch_key(made[0].id),
                           mapping={rec.TOTAL: 5, rec.COMPLETED: 3, rec.FAILED: 1}))
    counts = asyncio.run(batches.get(made[0].id, "alice")).request_counts
    assert (counts.total, counts.completed, counts.failed) == (5, 3, 1)
    newest_first = [b.id for b in reversed(made)]
    assert [b.id for b in asyncio.run(batches.list("alice", 2, None))] == newest_first
    assert [b.id for b in asyncio.run(batches.list("alice", 5, made[2].id))] == newest_first[1:]
    assert asyncio.run(batches.list("bob", 5, None)) == []


# ---- jobs ------------------------------------------------------------------------------------

RETENTION_S = 60.0


@pytest.fixture
def jobs(redis) -> JobService:
    settings = GatewaySettings(max_job_backlog=2)
    broker = Broker(redis, cancel_retention_s=60)
    completions = CompletionService(broker, None, settings, {MODEL: 64}, GatewayMetrics())  # type: ignore[arg-type]
    return JobService(broker, completions, RETENTION_S)


def _job(content: str = "hi", model: str = MODEL) -> JobCreate:
    return JobCreate(endpoint="/v1/chat/completions", body={
        "model": model, "messages": [{"role": "user", "content": content}], "max_tokens": 2})


def test_a_job_is_recorded_with_retention_and_queued_at_the_job_priority(redis, jobs) -> None:
    record = asyncio.run(jobs.submit(_job(), "alice"))
    assert record.status == "queued" and record.owner == "alice"
    stream = keys.request_stream(MODEL, keys.PRIORITY_JOB)

    async def stored():
        return (await redis.pttl(keys.job_hash(record.id)), await redis.pttl(keys.owner_jobs("alice")),
                await redis.xrange(stream))
    job_ttl, index_ttl, entries = asyncio.run(stored())
    assert 0 < job_ttl <= RETENTION_S * 1000 and 0 < index_ttl <= RETENTION_S * 1000
    [(_, fields)] = entries
    envelope = decode_envelope(fields[keys.ENTRY_ENVELOPE.encode()])
    assert (envelope.job_id, envelope.owner, envelope.deadline) == (record.id, "alice", None)
    assert asyncio.run(redis.xlen(keys.request_stream(MODEL, keys.PRIORITY_INTERACTIVE))) == 0


def test_a_refused_job_leaves_no_record(redis, jobs) -> None:
    for _ in range(2):
        asyncio.run(jobs.submit(_job(), "alice"))
    with pytest.raises(OpenAIError) as caught:  # the job queue is at its bound of 2
        asyncio.run(jobs.submit(_job(), "alice"))
    assert caught.value.status == 429
    assert len(asyncio.run(jobs.list("alice", 10))) == 2
    with pytest.raises(OpenAIError) as caught:
        asyncio.run(jobs.submit(_job(model="nope"), "alice"))
    assert caught.value.status == 404
    assert len(asyncio.run(jobs.list("alice", 10))) == 2


def test_cancel_flags_the_request_and_lists_drop_expired_records(redis, jobs) -> None:
    first = asyncio.run(jobs.submit(_job("one"), "alice"))
    second = asyncio.run(jobs.submit(_job("two"), "alice"))
    with pytest.raises(OpenAIError):
        asyncio.run(jobs.cancel(first.id, "bob"))
    cancelled = asyncio.run(jobs.cancel(first.id, "alice"))
    assert cancelled.status == "cancelled" and cancelled.finished_at
    assert asyncio.run(redis.exists(keys.cancel_flag(first.id)))  # chat: the job id is the request id
    assert asyncio.run(jobs.cancel(first.id, "alice")).finished_at == cancelled.finished_at

    asyncio.run(redis.delete(keys.job_hash(first.id)))  # as if its retention ran out
    assert [j.id for j in asyncio.run(jobs.list("alice", 10))] == [second.id]
    assert asyncio.run(redis.zrange(keys.owner_jobs("alice"), 0, -1)) == [second.id.encode()]
    assert asyncio.run(jobs.list("bob", 10)) == []

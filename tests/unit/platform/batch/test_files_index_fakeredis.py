"""The files index and file retention on fakeredis (no server, no blocking): what an upload
writes (record, owner index, retention index), listing and deleting, and the sweep that
deletes expired files with their content but keeps a running batch's input. The Celery chain
that runs the sweep is tested against real processes in tests/integration/batch/."""

from __future__ import annotations

import asyncio
import io
import time
from pathlib import Path

import fakeredis
import fakeredis.aioredis
import pytest

from pagefleet.platform.batch import records as rec
from pagefleet.platform.batch.records import BatchRecord
from pagefleet.platform.batch.retention import expire_files
from pagefleet.platform.batch.storage import LocalFileStorage
from pagefleet.platform.gateway.errors import OpenAIError
from pagefleet.platform.gateway.files.service import FileService

RETENTION_S = 100.0


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def storage(tmp_path: Path) -> LocalFileStorage:
    return LocalFileStorage(str(tmp_path / "files"))


def _service(server: fakeredis.FakeServer, storage: LocalFileStorage) -> FileService:
    return FileService(fakeredis.aioredis.FakeRedis(server=server), storage, max_file_bytes=1000,
                       retention_s=RETENTION_S)


def test_an_upload_is_indexed_for_its_owner_and_for_retention(server, storage) -> None:
    files = _service(server, storage)
    before = int(time.time())
    record = asyncio.run(files.create("alice", "in.jsonl", "batch", io.BytesIO(b"{}\n")))
    sync = fakeredis.FakeRedis(server=server)
    assert rec.decode_file(sync.get(rec.file_key(record.id))) == record
    assert record.bytes == 3 and record.owner == "alice"
    assert before + RETENTION_S <= record.expires_at <= int(time.time()) + RETENTION_S
    assert sync.zscore(rec.owner_files("alice"), record.id) == record.created_at
    assert sync.zscore(rec.FILES_EXPIRY, record.id) == record.expires_at
    with storage.open(record.id) as stream:
        assert stream.read() == b"{}\n"


def test_listing_is_newest_first_per_owner_with_purpose_and_paging(server, storage) -> None:
    files = _service(server, storage)

    async def go() -> None:
        made = [await files.create("alice", f"{i}.jsonl", purpose, io.BytesIO(b"x"))
                for i, purpose in enumerate(["batch", "batch_output", "batch"])]
        await files.create("bob", "b.jsonl", "batch", io.BytesIO(b"y"))
        sync = fakeredis.FakeRedis(server=server)
        for i, record in enumerate(made):  # distinct creation times, so the order is defined
            sync.zadd(rec.owner_files("alice"), {record.id: i})
        newest_first = [r.id for r in reversed(made)]
        assert [r.id for r in await files.list("alice", None, 10, None)] == newest_first
        assert [r.id for r in await files.list("alice", "batch", 10, None)] == [made[2].id, made[0].id]
        page = await files.list("alice", None, 1, None)
        assert [r.id for r in page] == newest_first[:2]  # one more than asked: has_more
        assert [r.id for r in await files.list("alice", None, 5, page[0].id)] == newest_first[1:]
        with pytest.raises(OpenAIError) as caught:
            await files.list("alice", None, 5, "file-unknown")
        assert caught.value.status == 404

    asyncio.run(go())


def test_another_owner_gets_404_and_delete_removes_everything(server, storage) -> None:
    files = _service(server, storage)
    record = asyncio.run(files.create("alice", "in.jsonl", "batch", io.BytesIO(b"data")))
    for call in (files.get, files.delete):
        with pytest.raises(OpenAIError) as caught:
            asyncio.run(call(record.id, "bob"))
        assert caught.value.status == 404
    asyncio.run(files.delete(record.id, "alice"))
    sync = fakeredis.FakeRedis(server=server)
    assert sync.get(rec.file_key(record.id)) is None
    assert sync.zcard(rec.owner_files("alice")) == 0 and sync.zcard(rec.FILES_EXPIRY) == 0
    with pytest.raises(FileNotFoundError):
        storage.open(record.id)


def test_a_bad_purpose_is_400_and_a_large_file_413_leaving_nothing(server, storage) -> None:
    files = _service(server, storage)
    for purpose, content, status in (("fine-tune", b"x", 400), ("batch", b"x" * 1001, 413)):
        with pytest.raises(OpenAIError) as caught:
            asyncio.run(files.create("alice", "f", purpose, io.BytesIO(content)))
        assert caught.value.status == status
    assert fakeredis.FakeRedis(server=server).keys("pf:*") == []
    assert list(storage.root.iterdir()) == []  # the 413 upload left no partial file


def _running_batch(client: fakeredis.FakeRedis, input_file_id: str) -> None:
    now = int(time.time())
    record = BatchRecord(id="batch_1", owner="alice", endpoint="/v1/completions",
                         input_file_id=input_file_id, completion_window="24h", created_at=now,
                         expires_at=now + 3600, status="in_progress")
    client.hset(rec.batch_key(record.id), rec.RECORD, rec.encode(record))
    client.sadd(rec.ACTIVE_BATCHES, record.id)


def test_the_sweep_deletes_due_files_and_keeps_the_rest(server, storage) -> None:
    files = _service(server, storage)
    old, in_use, fresh = (asyncio.run(files.create("alice", n, "batch", io.BytesIO(n.encode())))
                          for n in ("old", "in-use", "fresh"))
    client = fakeredis.FakeRedis(server=server)
    client.zadd(rec.FILES_EXPIRY, {old.id: 10, in_use.id: 10})  # long overdue
    _running_batch(client, in_use.id)
    client.zadd(rec.FILES_EXPIRY, {"file-gone": 5})  # content and record deleted already

    assert expire_files(client, storage, now=time.time()) == ["file-gone", old.id]
    assert client.get(rec.file_key(old.id)) is None
    assert client.zscore(rec.owner_files("alice"), old.id) is None
    with pytest.raises(FileNotFoundError):
        storage.open(old.id)
    remaining = {f.decode() for f in client.zrange(rec.FILES_EXPIRY, 0, -1)}
    assert remaining == {in_use.id, fresh.id}
    for kept in (in_use, fresh):
        with storage.open(kept.id) as stream:
            assert stream.read()

    client.srem(rec.ACTIVE_BATCHES, "batch_1")  # the batch ended: its input goes next time
    assert expire_files(client, storage, now=time.time()) == [in_use.id]
    assert expire_files(client, storage, now=fresh.expires_at) == [fresh.id]
    assert client.keys("pf:file*") == []

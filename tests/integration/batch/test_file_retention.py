"""File retention end to end: a gateway and a real `pagefleet batch-worker` (Celery) process on
a real redis-server, both with a one-second retention. The worker's sweep chain deletes an
uploaded file, record and content, after its `expires_at`, and keeps running (a file uploaded
after the first sweep is deleted too)."""

from __future__ import annotations

import io
import time
from pathlib import Path

import openai
import pytest

from pagefleet.platform.batch.settings import BatchSettings
from pagefleet.platform.gateway import GatewaySettings
from pagefleet.platform.registry import default_registry_path
from tests.integration.gateway.conftest import KEY_A, serve
from tests.support.batch_worker import CeleryWorker
from tests.support.waiting import wait_for

RETENTION_S, SWEEP_S = 1.0, 0.3


def _gone(client: openai.OpenAI, file_id: str) -> bool:
    try:
        client.files.retrieve(file_id)
    except openai.NotFoundError:
        return True
    return False


def test_files_are_deleted_after_the_retention_time(redis_url: str, tmp_path: Path) -> None:
    files_dir = tmp_path / "files"
    batch = BatchSettings(files_dir=str(files_dir), file_retention_s=RETENTION_S, file_sweep_s=SWEEP_S)
    settings = GatewaySettings(redis_url=redis_url, api_keys=(KEY_A,), batch=batch)
    worker = CeleryWorker(redis_url, default_registry_path(), files_dir, tmp_path / "celery.log",
                          ("--file-retention", str(RETENTION_S), "--file-sweep", str(SWEEP_S)))
    with serve(settings) as gateway:
        client = gateway.client()
        first = client.files.create(file=("a.jsonl", io.BytesIO(b"{}\n")), purpose="batch")
        assert first.expires_at == first.created_at + RETENTION_S
        assert (files_dir / first.id).exists()  # no worker yet: nothing deletes it
        worker.start()
        try:
            wait_for(lambda: _gone(client, first.id), f"the deletion of {first.id}\n{worker.log()}", 60)
            assert not (files_dir / first.id).exists()
            assert first.id not in [f.id for f in client.files.list()]

            second = client.files.create(file=("b.jsonl", io.BytesIO(b"{}\n")), purpose="batch")
            assert client.files.content(second.id).content == b"{}\n"
            wait_for(lambda: _gone(client, second.id), f"the deletion of {second.id}\n{worker.log()}", 60)
            assert time.time() >= second.expires_at
            assert not (files_dir / second.id).exists()
        finally:
            worker.kill()


@pytest.mark.parametrize("retention", [0.0, -1.0])
def test_a_retention_that_is_not_positive_is_refused(retention: float) -> None:
    with pytest.raises(ValueError, match="file_retention_s"):
        BatchSettings(file_retention_s=retention)

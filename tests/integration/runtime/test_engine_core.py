"""A worker whose engine loop runs in its own process (`engine_process: true`), against a real
redis-server: the same answers and contract as the in-thread worker, and a core that dies
takes its worker down (exit 1) with its request left for another worker to resume."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
import yaml

from pagefleet.platform.bench.cpu import child_pids
from pagefleet.platform.protocol import DeltaEvent, ErrorEvent, keys
from tests.integration.runtime.conftest import MAX_MODEL_LEN, MAX_NUM_SEQS, MODEL
from tests.integration.runtime.processes import (
    SOURCE,
    WorkerProcess,
    assert_well_formed,
    choice_texts,
    enqueue,
    envelope,
    read_until_done,
)
from tests.support.redis_server import free_port
from tests.support.waiting import wait_for

CORE_MODEL = "rt-core"
DYING_MODEL = "rt-core-dies"
CHAT = [{"role": "user", "content": "Name three colours."}]


@pytest.fixture(scope="module")
def core_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("core-registry") / "registry.yaml"
    model = {"source": SOURCE, "engine_process": True,
             "engine": {"max_model_len": MAX_MODEL_LEN, "max_num_seqs": MAX_NUM_SEQS}}
    path.write_text(yaml.safe_dump({"models": {CORE_MODEL: model, DYING_MODEL: model}}))
    return path


def _start(model: str, registry: Path, redis_url: str, client: redis.Redis, logs: Path,
           metrics: bool = False) -> WorkerProcess:
    log = logs / f"{model}-{os.urandom(3).hex()}.log"
    process = WorkerProcess(model, registry, redis_url, log,
                            metrics_port=free_port() if metrics else None).start()
    try:
        process.wait_ready(client)
    except BaseException:
        process.kill()
        raise
    return process


@pytest.fixture(scope="module")
def core_worker(redis_url: str, core_registry: Path, client: redis.Redis,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    process = _start(CORE_MODEL, core_registry, redis_url, client,
                     tmp_path_factory.mktemp("core-logs"), metrics=True)
    yield process
    process.kill()


def _kv_usage(worker: WorkerProcess) -> tuple[float, float]:
    text = httpx.get(f"http://127.0.0.1:{worker.metrics_port}/metrics").text
    values = {line.split("{", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.startswith("pagefleet:") and "{" in line}
    return values["pagefleet:kv_cache_usage_perc"], values["pagefleet:num_requests_running"]


def test_the_worker_has_an_engine_core_child(core_worker: WorkerProcess) -> None:
    assert len(child_pids(core_worker.proc.pid)) == 1


def test_answers_equal_the_in_thread_workers(worker, core_worker, client: redis.Redis) -> None:
    threaded = read_until_done(client, enqueue(client, envelope(MODEL, messages=CHAT, n=2, max_tokens=8)))
    cored = read_until_done(client, enqueue(client, envelope(CORE_MODEL, messages=CHAT, n=2, max_tokens=8)))
    assert_well_formed(cored, n=2)
    assert choice_texts(cored, n=2) == choice_texts(threaded, n=2)
    assert cored[-1].usage == threaded[-1].usage


def test_a_prompt_over_the_context_is_refused_by_the_core_as_a_400(core_worker, client) -> None:
    [error] = read_until_done(client, enqueue(client, envelope(CORE_MODEL, messages=CHAT, max_tokens=500)))
    assert isinstance(error, ErrorEvent)
    assert (error.status, error.code, error.param) == (400, "context_length_exceeded", "messages")


def test_cancel_frees_the_cores_blocks(core_worker, client: redis.Redis) -> None:
    request_id = enqueue(client, envelope(CORE_MODEL, prompt="Once upon a time", max_tokens=100,
                                          ignore_eos=True))
    wait_for(lambda: client.xlen(keys.result_stream(request_id)) > 0, "the first delta")
    assert _kv_usage(core_worker)[0] > 0  # the core's stats reach the worker's metrics
    client.set(keys.cancel_flag(request_id), 1, ex=60)
    client.publish(keys.cancel_channel(CORE_MODEL), request_id)
    final = assert_well_formed(read_until_done(client, request_id))
    assert final.finish_reasons == ["abort"] and final.usage.completion_tokens < 100
    wait_for(lambda: _kv_usage(core_worker) == (0.0, 0.0), "the blocks to be freed")


@pytest.mark.timeout(600)
def test_a_dying_core_stops_its_worker_and_the_request_resumes_elsewhere(
        redis_url: str, core_registry: Path, client: redis.Redis, tmp_path: Path) -> None:
    victim = _start(DYING_MODEL, core_registry, redis_url, client, tmp_path)
    try:
        request_id = enqueue(client, envelope(DYING_MODEL, prompt="Once upon a time",
                                              max_tokens=40, ignore_eos=True))
        wait_for(lambda: client.xlen(keys.result_stream(request_id)) > 0, "the first delta")
        [core] = child_pids(victim.proc.pid)
        os.kill(core, signal.SIGKILL)
        assert victim.proc.wait(timeout=120) == 1
    finally:
        victim.kill()
    stream = keys.request_stream(DYING_MODEL, keys.PRIORITY_INTERACTIVE)
    assert client.xpending(stream, keys.CONSUMER_GROUP)["pending"] == 1  # not answered, not acked
    rescuer = _start(DYING_MODEL, core_registry, redis_url, client, tmp_path)
    try:
        events = read_until_done(client, request_id)
    finally:
        rescuer.kill()
    final = assert_well_formed(events)
    assert final.finish_reasons == ["length"] and final.usage.completion_tokens == 40
    assert sum(len(e.token_ids) for e in events if isinstance(e, DeltaEvent)) == 40

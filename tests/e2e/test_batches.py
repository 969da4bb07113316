"""The OpenAI Batch API end to end with the official SDK: real redis-server, real
`pagefleet worker` processes (the package's stack), a gateway with two API keys and a real
`pagefleet batch-worker` (Celery) process."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import openai
import pytest

from pagefleet.platform.batch.settings import BatchSettings
from pagefleet.platform.bench.batch import BatchBenchSettings
from pagefleet.platform.cli.bench_batch import format_report, measure
from pagefleet.platform.gateway import GatewaySettings
from pagefleet.platform.protocol import keys
from tests.e2e.conftest import MODEL, Stack, _serve_gateway, worker_logs
from tests.integration.runtime.processes import WorkerProcess
from tests.support.batch_worker import CeleryWorker
from tests.support.redis_server import free_port

KEY_A, KEY_B = "key-a", "key-b"
BATCH_TIMEOUT_S = 240.0
# Short steps and visibility timeout so a killed Celery worker's step is handed out quickly.
SETTINGS = BatchSettings(max_in_flight=4, step_s=1.0, lease_s=2.0, visibility_timeout_s=4.0)
WORKER_FLAGS = ("--max-in-flight", str(SETTINGS.max_in_flight), "--step", str(SETTINGS.step_s),
                "--lease", str(SETTINGS.lease_s),
                "--visibility-timeout", str(SETTINGS.visibility_timeout_s))


@dataclass
class BatchStack:
    stack: Stack
    base_url: str
    worker: CeleryWorker

    def client(self, key: str = KEY_A) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base_url, api_key=key, max_retries=0)


@pytest.fixture(scope="module")
def batches(stack: Stack, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BatchStack]:
    root = tmp_path_factory.mktemp("batches")
    files_dir = root / "files"
    registry = stack.workers[0].registry
    settings = GatewaySettings(redis_url=redis_url, registry_path=str(registry),
                               api_keys=(KEY_A, KEY_B),
                               batch=BatchSettings(files_dir=str(files_dir), max_file_bytes=200_000,
                                                   max_in_flight=SETTINGS.max_in_flight,
                                                   step_s=SETTINGS.step_s, lease_s=SETTINGS.lease_s,
                                                   visibility_timeout_s=SETTINGS.visibility_timeout_s))
    server, thread, port = _serve_gateway(settings)
    worker = CeleryWorker(redis_url, registry, files_dir, root / "celery.log", WORKER_FLAGS).start()
    try:
        yield BatchStack(stack, f"http://127.0.0.1:{port}/v1", worker)
    finally:
        worker.kill()
        server.should_exit = True
        thread.join(timeout=30)


def _line(custom_id: str, content: str, max_tokens: int = 8, model: str = MODEL,
          url: str = "/v1/chat/completions") -> str:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": url, "body": {
        "model": model, "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens, "temperature": 0}})


def _upload(client: openai.OpenAI, lines: list[str]) -> str:
    data = ("\n".join(lines) + "\n").encode()
    return client.files.create(file=("input.jsonl", io.BytesIO(data)), purpose="batch").id


def _start_batch(client: openai.OpenAI, lines: list[str], window: str = "24h"):
    return client.batches.create(input_file_id=_upload(client, lines),
                                 endpoint="/v1/chat/completions", completion_window=window)


def _wait(check: Callable[[], object], what: str, worker: CeleryWorker,
          timeout_s: float = BATCH_TIMEOUT_S) -> object:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.2)  # polling the batch's status with a deadline
    raise TimeoutError(f"{what} not reached:\n{worker.log()}")


def _until_status(client: openai.OpenAI, batch_id: str, statuses: set[str], worker: CeleryWorker):
    def check():
        batch = client.batches.retrieve(batch_id)
        return batch if batch.status in statuses else None

    return _wait(check, f"{batch_id} in {statuses}", worker)


def _jsonl(client: openai.OpenAI, file_id: str | None) -> list[dict]:
    if file_id is None:
        return []
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines()]


def test_batch_completes_like_the_sync_endpoint_and_bad_lines_go_to_the_error_file(batches):
    client = batches.client()
    questions = [f"What is {i} times {i}?" for i in range(3)]
    lines = [_line(f"q{i}", q) for i, q in enumerate(questions)]
    lines += ["{not json", _line("unknown", "hi", model="no-such-model"),
              _line("wrong-url", "hi", url="/v1/embeddings"), _line("q0", "duplicate")]
    file_id = _upload(client, lines)
    batch = client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                                  completion_window="24h", metadata={"run": "e2e"})
    assert batch.status == "validating" and batch.metadata == {"run": "e2e"}
    done = _until_status(client, batch.id, {"completed", "failed"}, batches.worker)
    assert done.status == "completed", done
    assert done.request_counts.total == 7
    assert (done.request_counts.completed, done.request_counts.failed) == (3, 4)
    assert done.in_progress_at and done.finalizing_at and done.completed_at

    outputs = _jsonl(client, done.output_file_id)
    assert sorted(o["custom_id"] for o in outputs) == ["q0", "q1", "q2"]
    sync = batches.stack.client()
    for output in outputs:
        question = questions[int(output["custom_id"][1:])]
        expected = sync.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": question}], max_tokens=8,
            temperature=0)
        assert output["response"]["status_code"] == 200 and output["error"] is None
        body = output["response"]["body"]
        assert body["object"] == "chat.completion"
        assert body["choices"][0]["message"]["content"] == expected.choices[0].message.content

    errors = {e["error"]["code"] for e in _jsonl(client, done.error_file_id)}
    assert errors == {"invalid_json", "model_not_found", "invalid_url", "duplicate_custom_id"}
    output_file = client.files.retrieve(done.output_file_id)
    assert output_file.purpose == "batch_output"


def test_a_file_of_only_bad_lines_fails_with_per_line_errors(batches):
    client = batches.client()
    file_id = _upload(client, ["nope", _line("x", "hi", url="/v1/embeddings")])
    batch = client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                                  completion_window="24h")
    failed = _until_status(client, batch.id, {"failed", "completed"}, batches.worker)
    assert failed.status == "failed" and failed.failed_at
    assert [(e.code, e.line) for e in failed.errors.data] == [("invalid_json", 1), ("invalid_url", 2)]


def test_another_key_sees_nothing(batches):
    owner, other = batches.client(KEY_A), batches.client(KEY_B)
    file_id = _upload(owner, [_line("only", "hi", max_tokens=2)])
    batch = owner.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                                 completion_window="24h")
    with pytest.raises(openai.NotFoundError):
        other.batches.retrieve(batch.id)
    with pytest.raises(openai.NotFoundError):
        other.batches.cancel(batch.id)
    with pytest.raises(openai.NotFoundError):
        other.files.retrieve(file_id)
    with pytest.raises(openai.NotFoundError):
        other.files.content(file_id)
    with pytest.raises(openai.NotFoundError):
        other.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                             completion_window="24h")
    assert batch.id not in [b.id for b in other.batches.list()]
    assert file_id not in [f.id for f in other.files.list()]
    assert batch.id in [b.id for b in owner.batches.list()]
    _until_status(owner, batch.id, {"completed"}, batches.worker)


def test_files_over_the_limit_get_413_and_delete_works(batches):
    client = batches.client()
    with pytest.raises(openai.APIStatusError) as caught:
        client.files.create(file=("big.jsonl", io.BytesIO(b"x" * 300_000)), purpose="batch")
    assert caught.value.status_code == 413
    file_id = _upload(client, [_line("a", "hi")])
    assert client.files.delete(file_id).deleted
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(file_id)


def test_cancel_mid_batch(batches):
    client = batches.client()
    file_id = _upload(client, [_line(f"c{i}", f"Tell a story about {i}", max_tokens=48)
                               for i in range(24)])
    batch = client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                                  completion_window="24h")
    _until_status(client, batch.id, {"in_progress"}, batches.worker)
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status in ("cancelling", "cancelled")
    cancelled = _until_status(client, batch.id, {"cancelled"}, batches.worker)
    assert cancelled.cancelled_at and cancelled.request_counts.completed < 24
    outputs = _jsonl(client, cancelled.output_file_id)
    assert len(outputs) == cancelled.request_counts.completed


def test_expiry_keeps_partial_output(batches):
    client = batches.client()
    file_id = _upload(client, [_line(f"e{i}", f"Describe {i} at length", max_tokens=48)
                               for i in range(24)])
    batch = client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                                  completion_window="3s")
    expired = _until_status(client, batch.id, {"expired", "completed"}, batches.worker)
    assert expired.status == "expired" and expired.expired_at
    outputs = _jsonl(client, expired.output_file_id)
    errors = _jsonl(client, expired.error_file_id)
    assert {e["error"]["code"] for e in errors} == {"batch_expired"}
    ids = [o["custom_id"] for o in outputs] + [e["custom_id"] for e in errors]
    assert sorted(ids) == sorted(f"e{i}" for i in range(24))
    assert expired.request_counts.failed == len(errors)


def test_kill_9_of_the_celery_worker_mid_batch_loses_and_repeats_nothing(batches):
    client = batches.client()
    num_lines = 16
    batch = _start_batch(client, [_line(f"k{i}", f"Count from {i}", max_tokens=16)
                                  for i in range(num_lines)])
    _wait(lambda: client.batches.retrieve(batch.id).request_counts.completed >= 2,
          "two lines completed", batches.worker)
    batches.worker.kill()
    batches.worker.start()
    done = _until_status(client, batch.id, {"completed"}, batches.worker)
    outputs = _jsonl(client, done.output_file_id)
    assert sorted(o["custom_id"] for o in outputs) == sorted(f"k{i}" for i in range(num_lines))
    assert done.request_counts.completed == num_lines and done.error_file_id is None


def _holder_of_batch_work(stack: Stack) -> WorkerProcess | None:
    """A live model worker with batch (priority 2) entries pending on it, if any."""
    stream = keys.request_stream(MODEL, keys.PRIORITY_BATCH)
    pending = {c["name"].decode(): c["pending"]
               for c in stack.redis.xinfo_consumers(stream, keys.CONSUMER_GROUP)}
    return next((w for w in stack.live_workers() if pending.get(w.worker_id, 0) > 0), None)


def test_kill_9_of_a_model_worker_mid_batch_loses_and_repeats_nothing(batches):
    """The victim's batch entries are claimed by the other worker, which resumes them from their
    result streams; the runner still collects each line once. The victim is replaced afterwards
    (the package's later tests expect two workers)."""
    stack = batches.stack
    assert len(stack.live_workers()) == 2, worker_logs(stack)
    client = batches.client()
    num_lines = 16
    batch = _start_batch(client, [_line(f"w{i}", f"Name {i} animals", max_tokens=24)
                                  for i in range(num_lines)])
    victim = _wait(lambda: client.batches.retrieve(batch.id).request_counts.completed >= 1
                   and _holder_of_batch_work(stack), "a worker holding batch work mid-batch",
                   batches.worker)
    victim.kill()
    try:
        done = _until_status(client, batch.id, {"completed"}, batches.worker)
        assert victim.proc.returncode == -9
        outputs = _jsonl(client, done.output_file_id)
        assert sorted(o["custom_id"] for o in outputs) == sorted(f"w{i}" for i in range(num_lines))
        assert all(o["response"]["status_code"] == 200 for o in outputs)
        assert done.request_counts.completed == num_lines and done.error_file_id is None
        stream = keys.request_stream(MODEL, keys.PRIORITY_BATCH)
        consumers = {c["name"].decode() for c in stack.redis.xinfo_consumers(stream, keys.CONSUMER_GROUP)}
        assert victim.worker_id not in consumers  # its entries were claimed, not waited out
    finally:
        replacement = WorkerProcess(MODEL, victim.registry, victim.redis_url,
                                    victim.log_path.with_name("worker-replacement.log"),
                                    metrics_port=free_port()).start()
        stack.workers[stack.workers.index(victim)] = replacement
        replacement.wait_ready(stack.redis)


def test_bench_batch_measures_the_batch_and_interactive_ttft(batches):
    """`pagefleet bench batch`'s measurement against this stack, at a tiny size."""
    settings = BatchBenchSettings(num_requests=4, num_interactive=3, interactive_rate=20.0,
                                  input_len=8, output_len=4, interactive_output_len=3,
                                  timeout_s=BATCH_TIMEOUT_S)
    files_before = {f.id for f in batches.client().files.list()}
    report = asyncio.run(measure(batches.base_url, MODEL, settings, api_key=KEY_A))
    assert (report.batch.status, report.batch.completed, report.batch.failed) == ("completed", 4, 0)
    assert report.batch.output_tokens == 4 * 4 and report.batch.output_throughput > 0
    assert (report.sync.completed, report.sync.failed) == (4, 0), report.sync.first_error
    for summary in (report.interactive_alone, report.interactive_with_batch):
        assert (summary.completed, summary.failed) == (3, 0), summary.first_error
        assert 0 < summary.ttft.p50 <= summary.ttft.p95
    assert report.batch_vs_sync > 0
    assert {f.id for f in batches.client().files.list()} == files_before  # the bench cleans up
    text = format_report(MODEL, settings, report)
    assert "TTFT p95 (ms)" in text and "one batch, /v1/batches | completed | 4 / 0" in text

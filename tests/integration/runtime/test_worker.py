"""The worker runtime against a real redis-server and a real `pagefleet worker` process.

Requests go straight onto the model's streams (no gateway), so these tests pin the wire
contract itself: event order and offsets, acks, errors, cancellation, admission, priorities,
claiming from a dead consumer, jobs and metrics.
"""

from __future__ import annotations

import http.server
import threading
import time
import uuid

import httpx
import msgspec
import redis

from pagefleet.platform.protocol import (
    DeltaEvent,
    ErrorEvent,
    FinalEvent,
    JobRecord,
    decode_event,
    decode_job,
    encode,
    keys,
)
from pagefleet.platform.protocol.webhooks import webhook_signature
from pagefleet.workers.runtime.config import WorkerSettings
from tests.integration.runtime.conftest import MAX_NUM_SEQS, MODEL, WEBHOOK_SECRET
from tests.integration.runtime.processes import (
    WorkerProcess,
    assert_well_formed,
    choice_texts,
    enqueue,
    envelope,
    read_until_done,
)
from tests.support.waiting import wait_for

CHAT = [{"role": "user", "content": "Name three colours."}]




def _metrics(worker: WorkerProcess) -> dict[str, float]:
    text = httpx.get(f"http://127.0.0.1:{worker.metrics_port}/metrics").text
    values = {}
    for line in text.splitlines():
        if line.startswith("pagefleet:") and "{" in line:
            name = line.split("{", 1)[0]
            values.setdefault(name, float(line.rsplit(" ", 1)[1]))
    return values


def test_chat_with_two_choices_streams_in_order_then_acks(worker, client: redis.Redis) -> None:
    env = envelope(MODEL, messages=CHAT, n=2, max_tokens=6)
    events = read_until_done(client, enqueue(client, env))
    final = assert_well_formed(events, n=2)
    assert final.usage.prompt_tokens > 0
    assert all(text for text in choice_texts(events, n=2))
    assert 0 < client.ttl(keys.result_stream(env.request_id)) <= 3600
    stream = keys.request_stream(MODEL, 0)
    wait_for(lambda: client.xpending(stream, keys.CONSUMER_GROUP)["pending"] == 0, "the ack")
    assert client.xlen(stream) == 0  # acked entries are deleted; the result stream is the record


def test_completion_of_token_ids_with_logprobs(worker, client: redis.Redis) -> None:
    env = envelope(MODEL, prompt=[504, 1230, 282], max_tokens=5, logprobs=2, ignore_eos=True)
    events = read_until_done(client, enqueue(client, env))
    final = assert_well_formed(events)
    assert final.usage.prompt_tokens == 3
    assert final.finish_reasons == ["length"] and final.usage.completion_tokens == 5
    logprobs = [lp for e in events if isinstance(e, DeltaEvent) for lp in e.logprobs]
    tokens = [t for e in events if isinstance(e, DeltaEvent) for t in e.token_ids]
    assert [lp.token_id for lp in logprobs] == tokens
    assert all(len(lp.top) == 2 and lp.logprob <= 0 for lp in logprobs)


def test_prompt_over_the_context_is_a_400_error_event(worker, client: redis.Redis) -> None:
    env = envelope(MODEL, messages=CHAT, max_tokens=500)
    [error] = read_until_done(client, enqueue(client, env))
    assert isinstance(error, ErrorEvent)
    assert (error.status, error.code, error.param) == (400, "context_length_exceeded", "messages")


def test_undecodable_entry_is_answered_not_retried(worker, client: redis.Redis) -> None:
    request_id = f"req-{uuid.uuid4().hex}"
    client.xadd(keys.request_stream(MODEL, 0), {keys.ENTRY_REQUEST_ID: request_id,
                                                keys.ENTRY_ENVELOPE: b"\x93not an envelope"})
    [error] = read_until_done(client, request_id)
    assert isinstance(error, ErrorEvent) and error.status == 400


def test_passed_deadline_is_a_504(worker, client: redis.Redis) -> None:
    env = envelope(MODEL, messages=CHAT, deadline=time.time() - 1)
    [error] = read_until_done(client, enqueue(client, env))
    assert isinstance(error, ErrorEvent) and (error.status, error.code) == (504, "deadline_exceeded")


def test_request_flagged_before_the_pull_is_skipped(worker, client: redis.Redis) -> None:
    env = envelope(MODEL, messages=CHAT)
    client.set(keys.cancel_flag(env.request_id), 1, ex=60)
    [final] = read_until_done(client, enqueue(client, env))
    assert isinstance(final, FinalEvent) and final.finish_reasons == ["abort"]
    assert final.usage.completion_tokens == 0


def test_cancel_mid_generation_frees_the_engine_blocks(worker, client: redis.Redis) -> None:
    env = envelope(MODEL, prompt="Once upon a time", max_tokens=100, ignore_eos=True)
    request_id = enqueue(client, env)
    wait_for(lambda: client.xlen(keys.result_stream(request_id)) > 0, "the first delta")
    assert _metrics(worker)["pagefleet:kv_cache_usage_perc"] > 0
    client.set(keys.cancel_flag(request_id), 1, ex=60)
    client.publish(keys.cancel_channel(MODEL), request_id)
    events = read_until_done(client, request_id)
    final = assert_well_formed(events)
    assert final.finish_reasons == ["abort"] and final.usage.completion_tokens < 100
    wait_for(lambda: (m := _metrics(worker))["pagefleet:kv_cache_usage_perc"] == 0
              and m["pagefleet:num_requests_running"] == 0, "the blocks to be freed")


def _is_done(client: redis.Redis, request_id: str) -> bool:
    last = client.xrevrange(keys.result_stream(request_id), count=1)
    return bool(last) and not isinstance(decode_event(last[0][1][keys.ENTRY_EVENT.encode()]), DeltaEvent)


def test_never_pulls_more_than_it_can_admit(worker, client: redis.Redis) -> None:
    envs = [envelope(MODEL, prompt=f"Count to {i}:", max_tokens=6, ignore_eos=True) for i in range(12)]
    stream = keys.request_stream(MODEL, 0)
    for env in envs:
        enqueue(client, env)
    samples = []  # (pending, lag) of the group while the burst is served
    while not all(_is_done(client, e.request_id) for e in envs):
        [group] = client.xinfo_groups(stream)
        samples.append((group["pending"], group["lag"]))
        time.sleep(0.01)  # sampling interval of the observation loop
    assert max(pending for pending, _ in samples) <= MAX_NUM_SEQS
    assert max(lag for _, lag in samples) > 0  # the rest of the burst waited in Redis
    for env in envs:
        assert_well_formed(read_until_done(client, env.request_id))


def _event_ms(client: redis.Redis, request_id: str, last: bool) -> int:
    stream = keys.result_stream(request_id)
    [(entry_id, _)] = client.xrevrange(stream, count=1) if last else client.xrange(stream, count=1)
    return int(entry_id.split(b"-")[0])


def test_higher_priority_is_pulled_first(worker, client: redis.Redis) -> None:
    blockers = [envelope(MODEL, prompt="Tell a story:", max_tokens=8, ignore_eos=True)
                for _ in range(MAX_NUM_SEQS)]
    for env in blockers:
        enqueue(client, env)
    wait_for(lambda: all(client.xlen(keys.result_stream(e.request_id)) for e in blockers),
              "the blockers to fill every slot")
    low = [envelope(MODEL, prompt="Hi", max_tokens=2, ignore_eos=True) for _ in range(MAX_NUM_SEQS)]
    high = [envelope(MODEL, prompt="Hi", max_tokens=2, ignore_eos=True) for _ in range(MAX_NUM_SEQS)]
    for env in low:
        enqueue(client, env, keys.PRIORITY_BATCH)
    for env in high:
        enqueue(client, env, keys.PRIORITY_INTERACTIVE)
    for env in blockers + low + high:
        assert_well_formed(read_until_done(client, env.request_id))
    # The later, higher-priority requests took every slot the blockers freed, so no batch
    # request could start before one of them had finished.
    first_high_done = min(_event_ms(client, e.request_id, last=True) for e in high)
    assert min(_event_ms(client, e.request_id, last=False) for e in low) >= first_high_done


def test_entries_of_a_dead_consumer_resume_without_repeating_tokens(worker, client: redis.Redis) -> None:
    params = {"prompt": "The capital of France is", "max_tokens": 10, "ignore_eos": True}
    reference = read_until_done(client, enqueue(client, envelope(MODEL, **params)))
    env = envelope(MODEL, **params)
    stream = keys.request_stream(MODEL, keys.PRIORITY_BATCH)
    _ghost_takes(client, env, stream)
    ghost_deltas = [e for e in reference if isinstance(e, DeltaEvent) and e.offset < 4]
    for delta in ghost_deltas:
        client.xadd(keys.result_stream(env.request_id), {keys.ENTRY_EVENT: encode(delta)})
    events = read_until_done(client, env.request_id)
    final = assert_well_formed(events)
    assert events[: len(ghost_deltas)] == ghost_deltas
    assert choice_texts(events) == choice_texts(reference)
    assert final.usage == reference[-1].usage
    wait_for(lambda: "ghost" not in {c["name"].decode() for c in
                                      client.xinfo_consumers(stream, keys.CONSUMER_GROUP)},
              "the dead consumer to be removed")


def _ghost_takes(client: redis.Redis, env, stream: str) -> None:
    """A consumer that never heartbeats takes the entry atomically (before the live worker can)."""
    with client.pipeline(transaction=True) as pipe:
        pipe.xadd(stream, {keys.ENTRY_REQUEST_ID: env.request_id, keys.ENTRY_ENVELOPE: encode(env)})
        pipe.xreadgroup(keys.CONSUMER_GROUP, "ghost", {stream: ">"}, count=1)
        pipe.execute()


def test_resume_skips_choices_that_had_already_finished(worker, client: redis.Redis) -> None:
    params = {"prompt": "Water boils at", "max_tokens": 8, "ignore_eos": True, "n": 2}
    reference = read_until_done(client, enqueue(client, envelope(MODEL, **params)))
    env = envelope(MODEL, **params)
    _ghost_takes(client, env, keys.request_stream(MODEL, keys.PRIORITY_BATCH))
    # The ghost had finished choice 1 and streamed three tokens of choice 0 when it died.
    written = [e for e in reference if isinstance(e, DeltaEvent) and (e.index == 1 or e.offset < 3)]
    for delta in written:
        client.xadd(keys.result_stream(env.request_id), {keys.ENTRY_EVENT: encode(delta)})
    events = read_until_done(client, env.request_id)
    final = assert_well_formed(events, n=2)
    assert all(e.index == 0 for e in events[len(written):-1])  # nothing more for choice 1
    assert choice_texts(events, n=2) == choice_texts(reference, n=2)
    assert final.usage == reference[-1].usage and final.finish_reasons == ["length", "length"]


class _WebhookReceiver(http.server.ThreadingHTTPServer):
    def __init__(self) -> None:
        self.bodies: list[dict] = []
        self.signed: list[bool] = []  # whether each POST carried a valid Standard Webhooks signature
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                raw = self.rfile.read(length)
                receiver.signed.append(self.headers["webhook-signature"] == webhook_signature(
                    WEBHOOK_SECRET, self.headers["webhook-id"],
                    int(self.headers["webhook-timestamp"]), raw))
                receiver.bodies.append(msgspec.json.decode(raw))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}/hook"


def _job(client: redis.Redis, job_id: str, webhook: str, status: str = "queued") -> None:
    record = JobRecord(id=job_id, owner="owner-a", endpoint="/v1/chat/completions",
                       body={"model": MODEL, "messages": CHAT}, status=status,
                       created_at=time.time(), webhook=webhook)
    client.hset(keys.job_hash(job_id), keys.JOB_RECORD_FIELD, encode(record))
    client.expire(keys.job_hash(job_id), 600)


def _record(client: redis.Redis, job_id: str) -> JobRecord:
    return decode_job(client.hget(keys.job_hash(job_id), keys.JOB_RECORD_FIELD))


def test_job_succeeds_with_the_openai_response_and_posts_its_webhook(worker, client: redis.Redis) -> None:
    hook = _WebhookReceiver()
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    try:
        job_id = f"job-{uuid.uuid4().hex}"
        _job(client, job_id, hook.url)
        env = envelope(MODEL, messages=CHAT, job_id=job_id, max_tokens=5)
        events = read_until_done(client, enqueue(client, env, keys.PRIORITY_JOB))
        record = wait_for(lambda: (r := _record(client, job_id)).status == "succeeded" and r, "success")
        final = assert_well_formed(events)
        assert record.result["id"] == job_id and record.result["object"] == "chat.completion"
        assert record.result["choices"][0]["message"]["content"] == choice_texts(events)[0]
        assert record.result["usage"]["total_tokens"] == final.usage.total_tokens
        assert record.started_at <= record.finished_at
        assert 0 < client.ttl(keys.job_hash(job_id)) <= 600  # the gateway's retention is kept
        [body] = wait_for(lambda: hook.bodies, "the webhook")
        assert (body["id"], body["status"], body["result"]) == (job_id, "succeeded", record.result)
        assert "owner" not in body and "body" not in body
        assert hook.signed == [True]
    finally:
        hook.shutdown()


def test_cancelled_job_stays_cancelled(worker, client: redis.Redis) -> None:
    job_id = f"job-{uuid.uuid4().hex}"
    _job(client, job_id, webhook=None, status="cancelled")
    env = envelope(MODEL, messages=CHAT, job_id=job_id)
    client.set(keys.cancel_flag(env.request_id), 1, ex=60)
    [final] = read_until_done(client, enqueue(client, env, keys.PRIORITY_JOB))
    assert final.finish_reasons == ["abort"]
    stream = keys.request_stream(MODEL, keys.PRIORITY_JOB)
    wait_for(lambda: client.xpending(stream, keys.CONSUMER_GROUP)["pending"] == 0, "the ack")
    assert _record(client, job_id).status == "cancelled"


def test_health_and_metrics_endpoints(worker, client: redis.Redis) -> None:
    health = httpx.get(f"http://127.0.0.1:{worker.metrics_port}/health")
    assert health.status_code == 200 and health.json()["state"] == "ready"
    metrics = _metrics(worker)
    for name in ("num_requests_running", "num_requests_waiting", "kv_cache_usage_perc",
                 "prefix_cache_hit_rate", "prompt_tokens_total", "generation_tokens_total",
                 "time_to_first_token_seconds_count", "time_per_output_token_seconds_count",
                 "e2e_request_latency_seconds_count", "queue_time_seconds_count"):
        assert f"pagefleet:{name}" in metrics, name
    assert metrics["pagefleet:generation_tokens_total"] > 0
    assert metrics["pagefleet:e2e_request_latency_seconds_count"] > 0


def test_batch_work_leaves_slots_for_interactive_requests(worker, client: redis.Redis) -> None:
    """Batch entries fill at most `batch_share` (0.75) of the 4 slots, so an interactive
    request arriving while the batch queue is full starts at once instead of waiting for a
    batch request to finish (the engine does not preempt)."""
    batch_cap = int(WorkerSettings(model=MODEL).batch_share * MAX_NUM_SEQS)
    assert 0 < batch_cap < MAX_NUM_SEQS
    stream = keys.request_stream(MODEL, keys.PRIORITY_BATCH)
    batch = [envelope(MODEL, prompt=f"Story {i}:", max_tokens=24, ignore_eos=True) for i in range(8)]
    for env in batch:
        enqueue(client, env, keys.PRIORITY_BATCH)
    wait_for(lambda: sum(client.xlen(keys.result_stream(e.request_id)) > 0 for e in batch) >= batch_cap,
             "the batch to start")
    urgent = envelope(MODEL, prompt="Hi", max_tokens=2, ignore_eos=True)
    enqueue(client, urgent)
    samples = []
    while not _is_done(client, urgent.request_id):
        samples.append(client.xinfo_groups(stream)[0]["pending"])
        time.sleep(0.01)  # sampling interval of the observation loop
    assert_well_formed(read_until_done(client, urgent.request_id))
    first_batch_done = min((_event_ms(client, e.request_id, last=True) for e in batch
                            if _is_done(client, e.request_id)), default=None)
    assert first_batch_done is None or _event_ms(client, urgent.request_id, last=True) <= first_batch_done
    assert max(samples) <= batch_cap
    for env in batch:
        assert_well_formed(read_until_done(client, env.request_id))

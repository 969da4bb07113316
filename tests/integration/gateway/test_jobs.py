"""Async jobs through the live gateway: submit, poll, cancel, list, owner isolation, retention."""

from __future__ import annotations

import time
from collections.abc import Callable

import openai
import pytest
import redis

from pagefleet.platform.protocol import keys
from tests.integration.gateway.conftest import IDLE_MODEL, KEY_A, KEY_B, MODEL, LiveGateway


def submit(client: openai.OpenAI, endpoint: str, body: dict, **extra) -> dict:
    return client.post("/jobs", cast_to=object, body={"endpoint": endpoint, "body": body, **extra})


def poll_until(fetch: Callable[[], dict], done: Callable[[dict], bool], timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = fetch()
        if done(job):
            return job
        assert time.monotonic() < deadline, f"job never got there: {job}"
        time.sleep(0.02)  # polling a condition with a deadline


def get_job(client: openai.OpenAI, job_id: str) -> dict:
    return client.get(f"/jobs/{job_id}", cast_to=object)


def test_job_result_equals_the_sync_endpoint(gateway: LiveGateway) -> None:
    client = gateway.client()
    body = {"model": MODEL, "messages": [{"role": "user", "content": "j k l"}], "max_tokens": 4,
            "seed": 3, "n": 2}
    job = submit(client, "/v1/chat/completions", body)
    assert job["status"] == "queued" and job["id"].startswith("job-")
    done = poll_until(lambda: get_job(client, job["id"]), lambda j: j["status"] == "succeeded")
    assert done["started_at"] is not None and done["finished_at"] >= done["started_at"]
    sync = client.chat.completions.create(**body)
    result = done["result"]
    assert result["object"] == "chat.completion"
    assert [c["message"]["content"] for c in result["choices"]] == [c.message.content for c in sync.choices]
    assert result["usage"] == sync.usage.model_dump(exclude_none=True)


def test_completion_job_and_failed_job(gateway: LiveGateway) -> None:
    client = gateway.client()
    ok = submit(client, "/v1/completions", {"model": MODEL, "prompt": "g h", "max_tokens": 2})
    done = poll_until(lambda: get_job(client, ok["id"]), lambda j: j["status"] == "succeeded")
    assert done["result"]["choices"][0]["text"] == " g h"
    too_long = submit(client, "/v1/completions", {"model": MODEL, "prompt": "g h", "max_tokens": 1000})
    failed = poll_until(lambda: get_job(client, too_long["id"]), lambda j: j["status"] == "failed")
    assert failed["error"]["code"] == "context_length_exceeded"


@pytest.mark.parametrize(("job", "param"), [
    ({"endpoint": "/v1/completions", "body": {"model": MODEL}}, "body"),
    ({"endpoint": "/v1/completions", "body": {"model": MODEL, "prompt": "x", "stream": True}}, "body.stream"),
    ({"endpoint": "/v1/completions", "body": {"model": MODEL, "prompt": ["a", "b"]}}, "body.prompt"),
    ({"endpoint": "/v1/completions", "body": {"model": MODEL, "prompt": "x"}, "webhook": "ftp://x"}, "webhook"),
    ({"endpoint": "/v1/embeddings", "body": {}}, "endpoint"),
])
def test_invalid_jobs_are_400(gateway: LiveGateway, job: dict, param: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        gateway.client().post("/jobs", cast_to=object, body=job)
    assert info.value.body["param"] == param


@pytest.mark.parametrize("webhook", ["http://127.0.0.1:9/hook", "http://localhost/hook",
                                     "http://10.1.2.3/hook", "http://[::1]:8080/hook",
                                     "http://169.254.169.254/latest/meta-data"])
def test_private_webhook_targets_are_400(gateway: LiveGateway, webhook: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        submit(gateway.client(), "/v1/completions", {"model": MODEL, "prompt": "x"}, webhook=webhook)
    assert info.value.body["param"] == "webhook"
    assert "not allowed" in info.value.body["message"]


def test_private_webhook_targets_when_allowed(tight: LiveGateway, idle_queue_empty: None) -> None:
    job = submit(tight.client(), "/v1/completions", {"model": IDLE_MODEL, "prompt": "x"},
                 webhook="http://127.0.0.1:9/hook")
    assert job["status"] == "queued"


def test_job_for_unknown_model_is_404(gateway: LiveGateway) -> None:
    with pytest.raises(openai.NotFoundError):
        submit(gateway.client(), "/v1/completions", {"model": "nope", "prompt": "x"})


def test_owner_isolation(gateway: LiveGateway) -> None:
    a, b = gateway.client(KEY_A), gateway.client(KEY_B)
    job = submit(a, "/v1/completions", {"model": MODEL, "prompt": "iso", "max_tokens": 1})
    with pytest.raises(openai.NotFoundError):
        get_job(b, job["id"])
    with pytest.raises(openai.NotFoundError):
        b.delete(f"/jobs/{job['id']}", cast_to=object)
    assert job["id"] in [j["id"] for j in a.get("/jobs", cast_to=object)["data"]]
    assert job["id"] not in [j["id"] for j in b.get("/jobs", cast_to=object)["data"]]
    assert get_job(a, job["id"])["id"] == job["id"]


def test_cancel_a_queued_job(tight: LiveGateway, idle_queue_empty: None, redis_raw: redis.Redis) -> None:
    client = tight.client()
    job = submit(client, "/v1/completions", {"model": IDLE_MODEL, "prompt": "never served"})
    cancelled = client.delete(f"/jobs/{job['id']}", cast_to=object)
    assert cancelled["status"] == "cancelled" and cancelled["finished_at"] is not None
    assert redis_raw.exists(keys.cancel_flag(f"{job['id']}-0"))
    assert client.delete(f"/jobs/{job['id']}", cast_to=object)["status"] == "cancelled"


def test_cancel_a_running_job_aborts_it(gateway: LiveGateway, worker) -> None:
    client = gateway.client()
    job = submit(client, "/v1/chat/completions", {
        "model": MODEL, "messages": [{"role": "user", "content": "[hold] z"}], "max_tokens": 8})
    poll_until(lambda: get_job(client, job["id"]), lambda j: j["status"] == "running")
    assert client.delete(f"/jobs/{job['id']}", cast_to=object)["status"] == "cancelled"
    assert worker.wait_aborted(job["id"])
    assert get_job(client, job["id"])["status"] == "cancelled"


def test_retention_expires_jobs(tight: LiveGateway, idle_queue_empty: None, redis_raw: redis.Redis) -> None:
    client = tight.client()
    job = submit(client, "/v1/completions", {"model": IDLE_MODEL, "prompt": "short-lived"})
    ttl_ms = redis_raw.pttl(keys.job_hash(job["id"]))
    assert 0 < ttl_ms <= tight.settings.job_retention_s * 1000

    def gone() -> bool:
        try:
            get_job(client, job["id"])
        except openai.NotFoundError:
            return True
        return False

    poll_until(lambda: {"gone": gone()}, lambda j: j["gone"])
    assert job["id"] not in [j["id"] for j in client.get("/jobs", cast_to=object)["data"]]


def test_jobs_list_is_newest_first_and_limited(gateway: LiveGateway) -> None:
    client = gateway.client(KEY_B)
    ids = [submit(client, "/v1/completions", {"model": MODEL, "prompt": f"l{i}", "max_tokens": 1})["id"]
           for i in range(3)]
    listed = client.get("/jobs", cast_to=object, options={"params": {"limit": 2}})["data"]
    assert [j["id"] for j in listed] == ids[::-1][:2]

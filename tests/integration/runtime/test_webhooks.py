"""Webhook delivery against a real Redis: schedule written with the job's end, back-off
retries, give-up after the window, permanent refusals, SSRF refusal, signature."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable

import httpx
import redis
import redis.asyncio as aioredis

from pagefleet.platform.protocol import JobRecord, encode, keys
from pagefleet.platform.protocol.resilience import RedisOutages
from pagefleet.platform.protocol.webhooks import WEBHOOK_SCHEDULE, webhook_signature
from pagefleet.workers.runtime.config import WorkerSettings
from pagefleet.workers.runtime.jobs import JobUpdater
from pagefleet.workers.runtime.webhooks import WebhookDeliverer

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
HOOK = "http://93.184.216.34/hook"  # public; the mock transport answers, nothing leaves the host


def _settings(redis_url: str, **overrides) -> WorkerSettings:
    values = {"webhook_backoff_s": 0.01, "webhook_backoff_cap_s": 0.02, "webhook_poll_s": 0.01,
              "webhook_secret": SECRET, **overrides}
    return WorkerSettings(model="wh", redis_url=redis_url, **values)


def _job(client: redis.Redis, webhook: str) -> str:
    job_id = f"job-{uuid.uuid4().hex}"
    record = JobRecord(id=job_id, owner=None, endpoint="/v1/completions", body={},
                       status="running", created_at=time.time(), webhook=webhook)
    client.hset(keys.job_hash(job_id), "record", encode(record))
    return job_id


def _run(redis_url: str, settings: WorkerSettings, answer: Callable[[int], int],
         job_ids: list[str], until: Callable[[list[httpx.Request]], bool]) -> list[httpx.Request]:
    """Finish the jobs, then deliver until `until(requests)` holds or the schedule is empty."""
    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(answer(len(requests)))

    async def scenario() -> None:
        client = aioredis.Redis.from_url(redis_url)
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            for job_id in job_ids:
                await JobUpdater(client).mark_finished(job_id, {"ok": True}, None)
            stop = asyncio.Event()
            deliverer = WebhookDeliverer(client, http, settings, RedisOutages(logging.getLogger("t")))
            task = asyncio.create_task(deliverer.run(stop))
            deadline = time.monotonic() + 20
            while not until(requests) and await client.zcard(WEBHOOK_SCHEDULE) > 0:
                assert time.monotonic() < deadline, requests
                await asyncio.sleep(0.01)  # polling the schedule with a deadline
            stop.set()
            await task
        await client.aclose()

    asyncio.run(scenario())
    return requests


def test_failed_deliveries_are_retried_then_signed_delivery_succeeds(redis_url: str, redis_client) -> None:
    job_id = _job(redis_client, HOOK)
    requests = _run(redis_url, _settings(redis_url), lambda n: 503 if n < 3 else 204, [job_id],
                    lambda r: False)
    assert len(requests) == 3
    assert redis_client.zcard(WEBHOOK_SCHEDULE) == 0
    last = requests[-1]
    body = last.content
    assert json.loads(body)["id"] == job_id and json.loads(body)["status"] == "succeeded"
    assert last.headers["webhook-id"] == job_id
    timestamp = int(last.headers["webhook-timestamp"])
    assert abs(timestamp - time.time()) < 3600
    assert last.headers["webhook-signature"] == webhook_signature(SECRET, job_id, timestamp, body)


def test_attempts_stop_when_the_window_has_passed(redis_url: str, redis_client) -> None:
    job_id = _job(redis_client, HOOK)
    settings = _settings(redis_url, webhook_window_s=0.05, webhook_backoff_s=0.02,
                         webhook_backoff_cap_s=0.04)
    requests = _run(redis_url, settings, lambda n: 500, [job_id], lambda r: False)
    assert 1 <= len(requests) < 10
    assert redis_client.zcard(WEBHOOK_SCHEDULE) == 0


def test_a_permanent_refusal_is_not_retried(redis_url: str, redis_client) -> None:
    job_id = _job(redis_client, HOOK)
    requests = _run(redis_url, _settings(redis_url), lambda n: 410, [job_id], lambda r: False)
    assert len(requests) == 1 and redis_client.zcard(WEBHOOK_SCHEDULE) == 0


def test_loopback_target_is_refused_unless_allowed(redis_url: str, redis_client) -> None:
    refused, allowed = _job(redis_client, "http://127.0.0.1:9/hook"), _job(redis_client, "http://127.0.0.1:9/ok")
    requests = _run(redis_url, _settings(redis_url), lambda n: 200, [refused], lambda r: False)
    assert requests == [] and redis_client.zcard(WEBHOOK_SCHEDULE) == 0
    requests = _run(redis_url, _settings(redis_url, webhook_allow_private=True), lambda n: 200,
                    [allowed], lambda r: False)
    assert [str(r.url) for r in requests] == ["http://127.0.0.1:9/ok"]


def test_the_schedule_is_written_with_the_terminal_state(redis_url: str, redis_client) -> None:
    """A worker that dies right after the job ends leaves the delivery for any other worker."""
    job_id = _job(redis_client, HOOK)

    async def finish() -> None:
        client = aioredis.Redis.from_url(redis_url)
        await JobUpdater(client).mark_finished(job_id, {"ok": True}, None)
        await client.aclose()

    asyncio.run(finish())
    assert redis_client.zscore(WEBHOOK_SCHEDULE, job_id) is not None
    requests = _run(redis_url, _settings(redis_url), lambda n: 200, [], lambda r: False)
    assert [r.headers["webhook-id"] for r in requests] == [job_id]

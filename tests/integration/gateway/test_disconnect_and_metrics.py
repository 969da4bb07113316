"""A client leaving, mid-stream or before a whole answer, cancels its request; /metrics
reports what the gateway did."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import httpx
import redis
from prometheus_client.parser import text_string_to_metric_families

from pagefleet.platform.protocol import keys
from tests.integration.gateway.conftest import KEY_A, MODEL, LiveGateway
from tests.support.scripted_engine import HOLD, InProcessWorker


def test_disconnect_during_stream_cancels_the_request(gateway: LiveGateway, worker: InProcessWorker,
                                                      redis_raw: redis.Redis) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": f"{HOLD} waiting"}],
            "max_tokens": 10, "stream": True}
    headers = {"Authorization": f"Bearer {KEY_A}"}
    with httpx.Client(base_url=gateway.root_url, headers=headers, timeout=30) as http, \
            http.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: "):
                chunk = json.loads(line.removeprefix("data: "))
                if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                    request_id = chunk["id"]
                    break
    # The connection is closed here while the worker holds the request open.
    assert worker.wait_aborted(request_id)
    assert redis_raw.get(keys.cancel_flag(request_id)) == b"1"


def held_request_id(redis_raw: redis.Redis, marker: str, timeout: float = 30.0) -> str:
    """The id of the request whose first token is `marker`, once the worker holds it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:  # polling a condition with a deadline
        for stream in redis_raw.scan_iter(keys.result_stream("*")):
            first = redis_raw.xrange(stream, count=1)
            if first and f" {marker}".encode() in first[0][1][keys.ENTRY_EVENT.encode()]:
                return stream.decode().removeprefix(keys.result_stream(""))
        time.sleep(0.01)
    raise AssertionError(f"no held request answered {marker!r}")


def test_disconnect_before_a_whole_answer_cancels_the_request(gateway: LiveGateway, worker: InProcessWorker,
                                                              redis_raw: redis.Redis) -> None:
    marker = f"m{uuid.uuid4().hex}"
    body = {"model": MODEL, "messages": [{"role": "user", "content": f"{marker} {HOLD}"}],
            "max_tokens": 10}
    headers = {"Authorization": f"Bearer {KEY_A}"}

    async def post_then_leave() -> str:
        async with httpx.AsyncClient(base_url=gateway.root_url, headers=headers, timeout=30) as http:
            post = asyncio.create_task(http.post("/v1/chat/completions", json=body))
            request_id = await asyncio.to_thread(held_request_id, redis_raw, marker)
            assert not post.done()  # the worker holds it: no answer can have come
            post.cancel()  # httpx closes the connection
            await asyncio.gather(post, return_exceptions=True)
        return request_id

    request_id = asyncio.run(post_then_leave())
    assert worker.wait_aborted(request_id)
    assert redis_raw.get(keys.cancel_flag(request_id)) == b"1"
    # The gateway answered the departed client with a 499, not a logged 500.
    deadline = time.monotonic() + 30
    while closed_requests(gateway) < 1:  # polling a condition with a deadline
        assert time.monotonic() < deadline, "the gateway never answered 499"
        time.sleep(0.01)


def closed_requests(gateway: LiveGateway) -> float:
    return sum(s.value for s in metric_samples(gateway)["pagefleet:gateway_requests"]
               if s.name.endswith("_total") and s.labels["route"] == "/v1/chat/completions"
               and s.labels["status"] == "499")


def metric_samples(gateway: LiveGateway) -> dict[str, list]:
    text = httpx.get(f"{gateway.root_url}/metrics").text
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def test_metrics_count_requests_and_report_backlog(gateway: LiveGateway) -> None:
    client = gateway.client()
    client.completions.create(model=MODEL, prompt="metrics", max_tokens=1)
    list(client.completions.create(model=MODEL, prompt="metrics", max_tokens=1, stream=True))
    families = metric_samples(gateway)
    requests = {(s.labels["route"], s.labels["status"]): s.value
                for s in families["pagefleet:gateway_requests"] if s.name.endswith("_total")}
    assert requests[("/v1/completions", "200")] >= 2
    latency = [s for s in families["pagefleet:gateway_request_latency_seconds"]
               if s.name.endswith("_count") and s.labels["route"] == "/v1/completions"]
    assert latency and latency[0].value >= 2
    backlog = {s.labels["model"]: s.value for s in families["pagefleet:gateway_queue_backlog"]}
    assert set(backlog) == {"fake-echo", "idle-model"}
    ttft = [s for s in families["pagefleet:gateway_time_to_first_token_seconds"]
            if s.name.endswith("_count") and s.labels["model"] == MODEL]
    assert ttft and ttft[0].value >= 1

"""A client leaving mid-stream cancels its request; /metrics reports what the gateway did."""

from __future__ import annotations

import json

import httpx
import redis
from prometheus_client.parser import text_string_to_metric_families

from pagefleet.platform.protocol import keys
from tests.integration.gateway.conftest import KEY_A, MODEL, LiveGateway
from tests.support.fake_worker import HOLD, FakeEchoWorker


def test_disconnect_during_stream_cancels_the_request(gateway: LiveGateway, fake_worker: FakeEchoWorker,
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
    assert fake_worker.wait_aborted(request_id)
    assert redis_raw.get(keys.cancel_flag(request_id)) == b"1"


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

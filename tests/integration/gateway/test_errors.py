"""Every error status, in OpenAI's JSON shape, as the SDK's typed exceptions."""

from __future__ import annotations

import httpx
import openai
import pytest
import redis

from tests.integration.gateway.conftest import IDLE_MODEL, KEY_A, MAX_MODEL_LEN, MODEL, LiveGateway

CHAT = [{"role": "user", "content": "hello there"}]


def raw_post(gateway: LiveGateway, path: str, content: bytes, key: str | None = KEY_A) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    return httpx.post(f"{gateway.root_url}{path}", content=content, headers=headers, timeout=30)


def assert_openai_error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    return error


def test_malformed_json_is_400(gateway: LiveGateway) -> None:
    error = assert_openai_error(raw_post(gateway, "/v1/chat/completions", b'{"model": '), 400)
    assert error["type"] == "invalid_request_error"


def test_schema_violation_is_400_not_422(gateway: LiveGateway) -> None:
    response = raw_post(gateway, "/v1/chat/completions", b'{"model": "fake-echo", "messages": 5}')
    error = assert_openai_error(response, 400)
    assert error["param"] == "messages"
    with pytest.raises(openai.BadRequestError):
        gateway.client().chat.completions.create(model=MODEL, messages="nope")  # type: ignore[arg-type]


@pytest.mark.parametrize(("extra", "param"), [
    ({"n": 0}, "n"), ({"temperature": -1}, "temperature"), ({"top_p": 0}, "top_p"),
    ({"max_tokens": 0}, "max_tokens"), ({"n": 65}, "n"),
])
def test_bad_sampling_parameter_is_400_naming_it(gateway: LiveGateway, extra: dict, param: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        gateway.client().chat.completions.create(model=MODEL, messages=CHAT, **extra)
    assert info.value.body["param"] == param


def test_unknown_model_is_404(gateway: LiveGateway) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        gateway.client().chat.completions.create(model="no-such-model", messages=CHAT)
    assert info.value.code == "model_not_found"
    assert info.value.body["param"] == "model"


@pytest.mark.parametrize("stream", [False, True])
def test_context_too_long_is_400_from_the_worker(gateway: LiveGateway, stream: bool) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        gateway.client().completions.create(model=MODEL, prompt="a b c", max_tokens=MAX_MODEL_LEN,
                                            stream=stream)
    assert info.value.code == "context_length_exceeded"
    assert info.value.body["param"] == "prompt"


def test_missing_or_wrong_api_key_is_401(gateway: LiveGateway) -> None:
    with pytest.raises(openai.AuthenticationError):
        gateway.client(api_key="sk-wrong").models.list()
    response = raw_post(gateway, "/v1/completions", b'{"model": "fake-echo", "prompt": "x"}', key=None)
    assert assert_openai_error(response, 401)["type"] == "authentication_error"


def test_health_and_metrics_need_no_key(gateway: LiveGateway) -> None:
    assert httpx.get(f"{gateway.root_url}/health").json() == {"status": "ok"}
    assert httpx.get(f"{gateway.root_url}/metrics").status_code == 200


def test_payload_too_large_is_413(gateway: LiveGateway) -> None:
    prompt = "word " * gateway.settings.max_body_bytes
    with pytest.raises(openai.APIStatusError) as info:
        gateway.client().completions.create(model=MODEL, prompt=prompt)
    assert info.value.status_code == 413
    assert info.value.body["type"] == "invalid_request_error"


def test_queue_full_is_429_with_retry_after(tight: LiveGateway, idle_queue_empty: None,
                                            redis_raw: redis.Redis) -> None:
    for k in range(tight.settings.max_backlog):  # interactive entries no worker has pulled
        redis_raw.xadd(f"pf:q:{IDLE_MODEL}:0", {"id": f"waiting-{k}", "env": b""})
    with pytest.raises(openai.RateLimitError) as info:
        tight.client().completions.create(model=IDLE_MODEL, prompt="x")
    assert info.value.response.headers["retry-after"] == str(tight.settings.retry_after_s)
    assert info.value.code == "queue_full"


def test_a_job_flood_never_429s_interactive_requests(tight: LiveGateway, idle_queue_empty: None) -> None:
    client = tight.client()
    job = {"endpoint": "/v1/completions", "body": {"model": IDLE_MODEL, "prompt": "x"}}
    for _ in range(tight.settings.max_job_backlog):
        client.post("/jobs", cast_to=object, body=job)
    with pytest.raises(openai.RateLimitError) as info:  # the job queue is at its own bound
        client.post("/jobs", cast_to=object, body=job)
    assert info.value.code == "queue_full"
    # An interactive request is still admitted: it waits (no worker here) until its deadline.
    with pytest.raises(openai.InternalServerError) as waited:
        client.completions.create(model=IDLE_MODEL, prompt="x")
    assert waited.value.status_code == 504


def test_deadline_exceeded_is_504_and_cancels(tight: LiveGateway, idle_queue_empty: None,
                                              redis_raw: redis.Redis) -> None:
    with pytest.raises(openai.InternalServerError) as info:
        tight.client().chat.completions.create(model=IDLE_MODEL, messages=CHAT)
    assert info.value.status_code == 504
    assert info.value.code == "deadline_exceeded"
    assert len(redis_raw.keys("pf:c:chatcmpl-*")) >= 1


def test_deadline_exceeded_while_streaming_is_504(tight: LiveGateway, idle_queue_empty: None) -> None:
    with pytest.raises(openai.InternalServerError) as info:
        tight.client().completions.create(model=IDLE_MODEL, prompt="x", stream=True)
    assert info.value.status_code == 504


def test_unknown_route_and_method_are_openai_errors(gateway: LiveGateway) -> None:
    headers = {"Authorization": f"Bearer {KEY_A}"}
    assert_openai_error(httpx.get(f"{gateway.root_url}/v1/nothing", headers=headers), 404)
    assert_openai_error(httpx.get(f"{gateway.root_url}/v1/completions", headers=headers), 405)

"""Hostile input gets a 4xx in OpenAI's shape (never a 500) while another stream stays open.

Each case once reached a 500 or was accepted: integers past 64 bits (msgpack overflow),
JSON nested 100k deep (decoder recursion), non-JSON content types (a cross-site form post),
an unknown chat role, and a prompt that cannot fit the model's context (tokenised by the
worker before its 400).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.integration.gateway.conftest import KEY_A, MAX_MODEL_LEN, MODEL, LiveGateway
from tests.integration.gateway.test_errors import assert_openai_error, raw_post
from tests.support.scripted_engine import HOLD, InProcessWorker

HUGE = 2**70
CHAT = [{"role": "user", "content": "hello there"}]
JSON_CASES = {
    "seed past 64 bits": ("/v1/chat/completions", {"model": MODEL, "messages": CHAT, "seed": HUGE}),
    "max_tokens past 64 bits": ("/v1/completions", {"model": MODEL, "prompt": "x", "max_tokens": HUGE}),
    "token id past 64 bits": ("/v1/completions", {"model": MODEL, "prompt": [1, HUGE]}),
    "negative past 64 bits": ("/v1/completions", {"model": MODEL, "prompt": "x", "top_k": -HUGE}),
    "job body, nested anywhere": ("/v1/jobs", {"endpoint": "/v1/completions", "body": {
        "model": MODEL, "prompt": "x", "metadata": {"deep": [{"n": HUGE}]}}}),
    "job body field": ("/v1/jobs", {"endpoint": "/v1/completions",
                                     "body": {"model": MODEL, "prompt": "x", "seed": HUGE}}),
    "unknown role": ("/v1/chat/completions", {"model": MODEL, "messages": [
        {"role": "bogus", "content": "hi"}]}),
    "prompt longer than the context can hold": ("/v1/completions", {
        "model": MODEL, "prompt": "x" * (MAX_MODEL_LEN * 32 + 1), "max_tokens": 1}),
    "chat longer than the context can hold": ("/v1/chat/completions", {
        "model": MODEL, "messages": [{"role": "user", "content": "y" * (MAX_MODEL_LEN * 32 + 1)}]}),
    "more token ids than the context": ("/v1/completions", {
        "model": MODEL, "prompt": list(range(MAX_MODEL_LEN + 1)), "max_tokens": 1}),
}


@pytest.fixture
def held_stream(gateway: LiveGateway, worker: InProcessWorker) -> Iterator[str]:
    """A stream that has its first token and stays open until the test closes it."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": f"{HOLD} still"}],
            "max_tokens": 10, "stream": True}
    with httpx.Client(base_url=gateway.root_url, headers={"Authorization": f"Bearer {KEY_A}"},
                      timeout=30) as http, http.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        request_id = None
        for line in response.iter_lines():
            if line.startswith("data: ") and json.loads(line[6:])["choices"][0]["delta"].get("content"):
                request_id = json.loads(line[6:])["id"]
                break
        assert request_id is not None
        yield request_id
    # Closing the stream above cancels it: proof it was still live after the bad input.
    assert worker.wait_aborted(request_id)


@pytest.mark.parametrize("case", sorted(JSON_CASES))
def test_bad_json_input_is_400_and_a_parallel_stream_keeps_going(gateway: LiveGateway, held_stream: str,
                                                                  case: str) -> None:
    path, body = JSON_CASES[case]
    error = assert_openai_error(raw_post(gateway, path, json.dumps(body).encode()), 400)
    assert error["type"] == "invalid_request_error"
    if "context" in case:
        assert error["code"] == "context_length_exceeded"
    if "64 bits" in case or "job body" in case:
        assert error["code"] == "integer_out_of_range"


@pytest.mark.parametrize("depth", [33, 30_000])  # 30k: the most this body cap lets through
def test_json_nested_too_deep_is_400(gateway: LiveGateway, held_stream: str, depth: int) -> None:
    body = b'{"model": "fake-echo", "prompt": "x", "extra": ' + b"[" * depth + b"]" * depth + b"}"
    error = assert_openai_error(raw_post(gateway, "/v1/completions", body), 400)
    assert "nested deeper" in error["message"]


def test_json_at_the_depth_limit_is_accepted(gateway: LiveGateway) -> None:
    # Unknown fields are refused, so the nesting sits in an accepted free-form field (a JSON
    # schema, which the echo worker does not enforce); the body and that object are two levels.
    depth = gateway.settings.max_json_depth - 2
    body = (b'{"model": "fake-echo", "prompt": "a b", "max_tokens": 2, "guided_json": {"enum": '
            + b"[" * depth + b"]" * depth + b"}}")
    response = raw_post(gateway, "/v1/completions", body)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["text"] == " a b"


@pytest.mark.parametrize(("content_type", "content"), [
    ("text/plain", json.dumps({"model": MODEL, "prompt": "x"})),
    ("application/x-www-form-urlencoded", "model=fake-echo&prompt=x"),
    ("multipart/form-data; boundary=x", "--x\r\n\r\n--x--"),
    (None, json.dumps({"model": MODEL, "prompt": "x"})),
])
def test_non_json_content_type_is_415(gateway: LiveGateway, held_stream: str, content_type: str | None,
                                      content: str) -> None:
    headers = {"Authorization": f"Bearer {KEY_A}"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    for path in ("/v1/completions", "/v1/chat/completions", "/v1/jobs", "/v1/batches"):
        response = httpx.post(f"{gateway.root_url}{path}", content=content.encode(), headers=headers,
                              timeout=30)
        error = assert_openai_error(response, 415)
        assert error["code"] == "unsupported_media_type"


def test_the_file_upload_route_takes_multipart(gateway: LiveGateway) -> None:
    """Only /v1/files names multipart in its route opt; a form without `file` reaches its
    handler (400 on the field, not 415), so nothing is written."""
    response = httpx.post(f"{gateway.root_url}/v1/files", data={"purpose": "batch"},
                          files={"other": ("x.txt", b"x")}, timeout=30,
                          headers={"Authorization": f"Bearer {KEY_A}"})
    error = assert_openai_error(response, 400)
    assert error["param"] == "file"


def test_a_post_without_a_body_needs_no_content_type(gateway: LiveGateway) -> None:
    response = httpx.post(f"{gateway.root_url}/v1/batches/batch_missing/cancel", timeout=30,
                          headers={"Authorization": f"Bearer {KEY_A}"})
    assert_openai_error(response, 404)


def test_json_with_charset_is_accepted(gateway: LiveGateway) -> None:
    response = httpx.post(f"{gateway.root_url}/v1/completions", timeout=30,
                          content=json.dumps({"model": MODEL, "prompt": "a", "max_tokens": 1}).encode(),
                          headers={"Authorization": f"Bearer {KEY_A}",
                                   "Content-Type": "application/json; charset=utf-8"})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("role", ["system", "user", "assistant", "tool", "developer"])
def test_every_openai_role_is_accepted(gateway: LiveGateway, role: str) -> None:
    first = {"role": role, "content": "one two"}
    if role == "tool":  # OpenAI requires the id of the call a tool message answers
        first["tool_call_id"] = "call_1"
    messages = [first, {"role": "user", "content": "three"}]
    completion = gateway.client().chat.completions.create(model=MODEL, messages=messages, max_tokens=1)
    assert completion.choices[0].message.content == " one"

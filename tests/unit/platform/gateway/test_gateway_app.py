"""The app's request validation and error shapes, in process, with Redis unreachable."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
from litestar.testing import TestClient

from pagefleet.platform.gateway import GatewaySettings, create_app

KEY = "sk-unit"


@pytest.fixture
def client() -> Iterator[TestClient]:
    # Nothing listens on this port: a test that reached Redis would fail loudly.
    settings = GatewaySettings(redis_url="redis://127.0.0.1:1/0", api_keys=(KEY,), max_body_bytes=2048)
    with TestClient(create_app(settings)) as test_client:
        test_client.headers["Authorization"] = f"Bearer {KEY}"
        yield test_client


def error_of(response) -> dict:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


@pytest.mark.parametrize(("content", "status"), [
    (b"{not json", 400),
    (b'{"model": "smollm2-135m-instruct"}', 400),
    (b'{"model": 3, "messages": []}', 400),
    (b'{"model": "unknown", "messages": [{"role": "user", "content": "x"}]}', 404),
    (b'{"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "'
     + b"x" * 4096 + b'"}]}', 413),
])
def test_errors_are_openai_shaped(client: TestClient, content: bytes, status: int) -> None:
    response = client.post("/v1/chat/completions", content=content,
                                 headers={"Content-Type": "application/json"})
    assert response.status_code == status
    error_of(response)


def test_unknown_model_names_code(client: TestClient) -> None:
    response = client.post("/v1/completions", json={"model": "nope", "prompt": "x"})
    assert error_of(response)["code"] == "model_not_found"


def test_missing_key_is_401_but_openapi_schema_is_served(client: TestClient) -> None:
    response = client.get("/v1/models", headers={"Authorization": ""})
    assert response.status_code == 401
    assert error_of(response)["type"] == "authentication_error"
    schema = client.get("/schema/openapi.json", headers={"Authorization": ""}).json()
    assert "/v1/chat/completions" in schema["paths"]


def test_redis_down_is_503_with_retry_after(client: TestClient) -> None:
    response = client.post("/v1/completions", json={"model": "smollm2-135m-instruct", "prompt": "x"})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert error_of(response)["code"] == "queue_unavailable"


def test_gateway_and_its_cli_never_import_torch() -> None:
    code = (
        "import sys\n"
        "from pagefleet.platform.cli import build_parser\n"
        "args = build_parser().parse_args(['gateway', '--api-key', 'k'])\n"
        "from pagefleet.platform.cli.gateway import settings_from_args\n"
        "from pagefleet.platform.gateway import create_app\n"
        "create_app(settings_from_args(args))\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


CHAT = {"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "x"}]}


@pytest.mark.parametrize(("extra", "param"), [
    ({"functions": []}, "functions"),
    ({"tools": [{"type": "function", "function": {"name": "f", "extra": 1}}]}, "tools[0].function.extra"),
    ({"messages": [{"role": "user", "content": "x", "audio": {}}]}, "messages[0].audio"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": {},
                                                                "extra": 1}}},
     "response_format.json_schema.extra"),
    ({"stream": True, "stream_options": {"include_usage": True, "usage_every": 2}},
     "stream_options.usage_every"),
])
def test_unimplemented_fields_are_400_naming_the_field(client: TestClient, extra: dict, param: str) -> None:
    """No silent ignores: a field the gateway would not honour is refused, as OpenAI refuses
    unrecognised arguments."""
    response = client.post("/v1/chat/completions", json={**CHAT, **extra})
    assert response.status_code == 400
    error = error_of(response)
    assert error["param"] == param
    assert error["message"] == f"Unrecognized request argument supplied: {param}"


def test_unimplemented_completion_field_is_400(client: TestClient) -> None:
    response = client.post("/v1/completions", json={"model": "smollm2-135m-instruct", "prompt": "x",
                                                    "best_of": 3})
    assert response.status_code == 400
    assert error_of(response)["param"] == "best_of"


@pytest.mark.parametrize(("extra", "param"), [
    ({"logit_bias": {"12": 101}}, None),
    ({"logit_bias": {"a": 1}}, "logit_bias"),
    ({"response_format": {"type": "json_schema"}}, "response_format"),
    ({"response_format": {"type": "json_object"}, "guided_regex": "a+"}, "guided_regex"),
    ({"guided_choice": []}, "guided_choice"),
    ({"guided_json": "not json"}, "guided_json"),
])
def test_bad_structured_output_and_bias_are_400(client: TestClient, extra: dict, param: str | None) -> None:
    response = client.post("/v1/chat/completions", json={**CHAT, **extra})
    assert response.status_code == 400
    error = error_of(response)
    if param is not None:
        assert error["param"] == param
    else:
        assert "logit_bias values must be in [-100, 100]" in error["message"]


def test_retrieving_an_unknown_model_is_model_not_found(client: TestClient) -> None:
    response = client.get("/v1/models/org/nope")
    assert response.status_code == 404
    error = error_of(response)
    assert error["code"] == "model_not_found" and error["param"] == "model"
    assert error["message"] == "The model `org/nope` does not exist."


def test_version_is_public(client: TestClient) -> None:
    response = client.get("/version", headers={"Authorization": ""})
    assert response.status_code == 200
    assert response.json()["version"] == "0.1.0"

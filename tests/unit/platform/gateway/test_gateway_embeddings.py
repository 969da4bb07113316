"""/v1/embeddings in the gateway: a body becomes one envelope per input (pure), refusals are
400s naming the field, and the finals' packed vectors become OpenAI's list shape."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import msgspec
import numpy as np
import pytest
from litestar.testing import TestClient

from pagefleet.platform.gateway import GatewaySettings, create_app
from pagefleet.platform.gateway.completions.params import RequestContext
from pagefleet.platform.gateway.completions.results import ResultAccumulator
from pagefleet.platform.gateway.embeddings.params import prepare_embedding
from pagefleet.platform.gateway.embeddings.schemas import EmbeddingRequest
from pagefleet.platform.gateway.errors import OpenAIError
from pagefleet.platform.protocol import FinalEvent, Usage
from pagefleet.platform.protocol.embeddings import pack_vector
from pagefleet.platform.registry import ModelSpec

CONTEXT = RequestContext(response_id="embd-1", owner="o", created_at=100.0, deadline=160.0, max_choices=8)
EMBED = ModelSpec(name="e", source="all-minilm-l6-v2", task="embed")
MATRYOSHKA = ModelSpec(name="e", source="qwen3-embedding", task="embed", matryoshka=True)
CHAT = ModelSpec(name="e", source="smollm2-135m-instruct")


def body(**fields) -> EmbeddingRequest:
    return msgspec.convert({"model": "e", **fields}, EmbeddingRequest)


@pytest.mark.parametrize(("given", "inputs"), [
    ("one text", ["one text"]),
    (["a", "b c"], ["a", "b c"]),
    ([5, 6, 7], [[5, 6, 7]]),
    ([[5], [6, 7]], [[5], [6, 7]]),
])
def test_one_envelope_per_input(given, inputs) -> None:
    prepared = prepare_embedding(body(input=given), EMBED, CONTEXT, max_inputs=4)
    assert prepared.kind == "embedding" and prepared.encoding_format == "float"
    assert [e.prompt for e in prepared.envelopes] == inputs
    assert [e.request_id for e in prepared.envelopes] == [f"embd-1-{k}" for k in range(len(inputs))]
    assert all(e.kind == "embedding" and e.deadline == 160.0 and e.dimensions is None
               for e in prepared.envelopes)


def test_dimensions_and_base64_are_carried_for_a_matryoshka_model() -> None:
    prepared = prepare_embedding(body(input="x", dimensions=64, encoding_format="base64"),
                                 MATRYOSHKA, CONTEXT, max_inputs=4)
    assert prepared.envelopes[0].dimensions == 64
    assert prepared.encoding_format == "base64"


@pytest.mark.parametrize(("fields", "spec", "param"), [
    ({"input": "x", "dimensions": 64}, EMBED, "dimensions"),  # not trained for truncation
    ({"input": "x", "dimensions": 0}, MATRYOSHKA, "dimensions"),
    ({"input": "x"}, CHAT, "model"),
    ({"input": ""}, EMBED, "input"),
    ({"input": ["a", ""]}, EMBED, "input"),
    ({"input": []}, EMBED, "input"),
    ({"input": [[1], []]}, EMBED, "input"),
    ({"input": [1, "a"]}, EMBED, "input"),
    ({"input": [[1, -2]]}, EMBED, "input"),
    ({"input": ["a"] * 5}, EMBED, "input"),  # more than max_inputs
])
def test_refusals_name_the_field(fields, spec, param) -> None:
    with pytest.raises(OpenAIError) as info:
        prepare_embedding(body(**fields), spec, CONTEXT, max_inputs=4)
    assert info.value.status == 400
    assert info.value.body.param == param


def test_unknown_fields_and_formats_are_schema_errors() -> None:
    with pytest.raises(msgspec.ValidationError):
        body(input="x", encoding_format="int8")
    with pytest.raises(msgspec.ValidationError):
        body(input="x", n=2)


def _finished(encoding_format: str) -> tuple[ResultAccumulator, list[list[float]]]:
    prepared = prepare_embedding(body(input=["a", "b"], encoding_format=encoding_format), EMBED,
                                 CONTEXT, max_inputs=4)
    vectors = [[0.5, -0.25, 0.125], [1.0, 0.0, -1.0]]
    accumulator = ResultAccumulator(prepared)
    for source in (1, 0):  # finals arrive in any order
        accumulator.add_final(source, FinalEvent(finish_reasons=["stop"], usage=Usage(3 + source, 0, 3 + source),
                                                 embedding=pack_vector(vectors[source])))
    return accumulator, vectors


def test_float_response_puts_input_k_at_index_k() -> None:
    accumulator, vectors = _finished("float")
    response = msgspec.to_builtins(accumulator.response())
    assert response == {"object": "list", "model": "e",
                        "usage": {"prompt_tokens": 7, "total_tokens": 7},
                        "data": [{"object": "embedding", "index": k, "embedding": vectors[k]} for k in range(2)]}


def test_base64_response_is_little_endian_float32() -> None:
    accumulator, vectors = _finished("base64")
    data = msgspec.to_builtins(accumulator.response())["data"]
    for k, item in enumerate(data):
        decoded = np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4")
        assert decoded.tolist() == vectors[k]


def test_a_final_without_a_vector_is_not_answered_as_an_embedding() -> None:
    prepared = prepare_embedding(body(input="a"), EMBED, CONTEXT, max_inputs=4)
    accumulator = ResultAccumulator(prepared)
    accumulator.add_final(0, FinalEvent(finish_reasons=["abort"], usage=Usage(0, 0, 0)))
    with pytest.raises(RuntimeError, match="without an embedding"):
        accumulator.response()


# ---- the app (packaged registry, Redis unreachable): refusals come before anything is queued ----

@pytest.fixture
def client() -> Iterator[TestClient]:
    settings = GatewaySettings(redis_url="redis://127.0.0.1:1/0")  # nothing listens there
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.mark.parametrize(("path", "payload", "status", "param"), [
    ("/v1/embeddings", {"model": "smollm2-135m-instruct", "input": "x"}, 400, "model"),
    ("/v1/embeddings", {"model": "all-minilm-l6-v2", "input": "x", "dimensions": 8}, 400, "dimensions"),
    ("/v1/embeddings", {"model": "nope", "input": "x"}, 404, "model"),
    ("/v1/embeddings", {"model": "all-minilm-l6-v2", "input": "x", "n": 2}, 400, "n"),
    ("/v1/completions", {"model": "all-minilm-l6-v2", "prompt": "x"}, 400, "model"),
    ("/v1/chat/completions", {"model": "all-minilm-l6-v2",
                              "messages": [{"role": "user", "content": "x"}]}, 400, "model"),
])
def test_wrong_model_or_field_is_refused_before_queueing(client: TestClient, path, payload, status, param) -> None:
    response = client.post(path, json=payload)
    assert response.status_code == status, response.text
    assert response.json()["error"]["param"] == param


def test_openapi_schema_documents_embeddings(client: TestClient) -> None:
    schema = client.get("/schema/openapi.json").json()
    assert "/v1/embeddings" in schema["paths"]

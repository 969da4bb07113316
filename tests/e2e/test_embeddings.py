"""`client.embeddings.create` of the official openai client against the real stack: gateway,
Redis and a real `pagefleet worker` process serving the packaged all-MiniLM-L6-v2 (`task: embed`).

The vectors are held to transformers (`AutoModel` + mean pooling + L2 normalisation, computed
here) rather than to stored numbers; errors are checked by status, type and param.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator

import httpx
import numpy as np
import openai
import pytest
import redis
import torch
import torch.nn.functional as F
import yaml

from pagefleet.platform.gateway import GatewaySettings
from pagefleet.workers.models.sources import DEFAULT_EMBEDDING_MODEL, embedding_folder
from tests.e2e.conftest import Stack, _serve_gateway
from tests.integration.runtime.processes import SOURCE, WorkerProcess

MODEL = "e2e-minilm"
CHAT_MODEL = "e2e-chat-idle"  # in the registry, never served: the gateway refuses it first
MAX_MODEL_LEN = 128
TEXTS = ["The weather is lovely today.", "It is sunny and warm outside.",
         "He drove his truck to the hardware store."]


@pytest.fixture(scope="module")
def stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("e2e-embeddings")
    registry = root / "registry.yaml"
    registry.write_text(yaml.safe_dump({"models": {
        MODEL: {"source": DEFAULT_EMBEDDING_MODEL, "task": "embed",
                "engine": {"max_model_len": MAX_MODEL_LEN, "max_num_seqs": 16, "dtype": "float32"}},
        CHAT_MODEL: {"source": SOURCE}}}))
    client = redis.Redis.from_url(redis_url)
    worker = WorkerProcess(MODEL, registry, redis_url, root / "worker.log").start()
    server = thread = None
    try:
        worker.wait_ready(client)
        server, thread, port = _serve_gateway(GatewaySettings(
            redis_url=redis_url, registry_path=str(registry), request_timeout_s=120))
        yield Stack(f"http://127.0.0.1:{port}/v1", f"http://127.0.0.1:{port}", client, [worker])
    finally:
        if server is not None:
            server.should_exit = True
            thread.join(timeout=30)
        worker.kill()
        client.close()


@pytest.fixture(scope="module")
def reference() -> tuple[object, object]:
    from transformers import AutoModel, AutoTokenizer

    folder = embedding_folder(DEFAULT_EMBEDDING_MODEL)
    return AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()


def reference_vectors(reference: tuple[object, object], texts: list[str]) -> torch.Tensor:
    tokenizer, model = reference
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    return F.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)


def test_embeddings_equal_transformers_mean_pooling(stack: Stack, reference) -> None:
    response = stack.client().embeddings.create(model=MODEL, input=TEXTS, encoding_format="float")
    assert response.object == "list" and response.model == MODEL
    assert [d.index for d in response.data] == [0, 1, 2]
    got = torch.tensor([d.embedding for d in response.data])
    assert got.shape == (3, 384)
    cosines = (got * reference_vectors(reference, TEXTS)).sum(-1)
    assert cosines.min().item() >= 0.9999
    tokenizer = reference[0]
    num_tokens = sum(len(tokenizer(t)["input_ids"]) for t in TEXTS)
    assert response.usage.prompt_tokens == num_tokens == response.usage.total_tokens
    # Related sentences are closer than unrelated ones: the vectors carry meaning.
    assert (got[0] @ got[1]).item() > (got[0] @ got[2]).item()


def test_base64_is_the_same_float32_vector(stack: Stack) -> None:
    client = stack.client()
    floats = client.embeddings.create(model=MODEL, input=TEXTS[0], encoding_format="float")
    raw = httpx.post(f"{stack.base_url}/embeddings", json={
        "model": MODEL, "input": TEXTS[0], "encoding_format": "base64"}, timeout=120).json()
    decoded = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), dtype="<f4")
    assert decoded.tolist() == floats.data[0].embedding
    # The SDK's default asks for base64 and decodes it itself.
    default = client.embeddings.create(model=MODEL, input=TEXTS[0])
    assert default.data[0].embedding == floats.data[0].embedding


def test_token_id_inputs(stack: Stack, reference) -> None:
    tokenizer = reference[0]
    ids = [tokenizer(t)["input_ids"] for t in TEXTS[:2]]
    client = stack.client()
    by_text = client.embeddings.create(model=MODEL, input=TEXTS[:2], encoding_format="float")
    by_ids = client.embeddings.create(model=MODEL, input=ids, encoding_format="float")
    single = client.embeddings.create(model=MODEL, input=ids[0], encoding_format="float")
    for a, b in zip(by_text.data, by_ids.data, strict=True):
        assert np.dot(a.embedding, b.embedding) >= 0.9999
    assert np.dot(single.data[0].embedding, by_ids.data[0].embedding) >= 0.9999  # batched with padding
    assert by_ids.usage.prompt_tokens == len(ids[0]) + len(ids[1])


def test_bad_requests_are_openai_errors(stack: Stack) -> None:
    client = stack.client()
    cases = [
        (dict(model=MODEL, input="hi", dimensions=128), "dimensions"),  # not a Matryoshka model
        (dict(model=CHAT_MODEL, input="hi"), "model"),  # a chat model
        (dict(model=MODEL, input=""), "input"),
        (dict(model=MODEL, input=[[101, 999_999]]), "input"),  # outside the vocabulary (worker)
    ]
    for kwargs, param in cases:
        with pytest.raises(openai.BadRequestError) as info:
            client.embeddings.create(encoding_format="float", **kwargs)
        assert info.value.body["param"] == param, kwargs
        assert info.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model=MODEL, input="word " * (MAX_MODEL_LEN + 10))
    assert info.value.code == "context_length_exceeded"
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="no-such-model", input="hi")
    with pytest.raises(openai.BadRequestError, match="/v1/embeddings"):
        client.completions.create(model=MODEL, prompt="hi", max_tokens=2)


def test_models_lists_the_embedding_model_beside_the_chat_model(stack: Stack) -> None:
    ids = [m.id for m in stack.client().models.list().data]
    assert MODEL in ids and CHAT_MODEL in ids


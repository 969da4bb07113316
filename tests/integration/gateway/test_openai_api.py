"""The official openai client (sync and async) against a live gateway and the real worker
runtime on a scripted engine.

Expected texts follow from the scripted engine's rule (choice i echoes the prompt's words from word i),
so they check the gateway's plumbing -- merging, indices, offsets, usage -- not a model.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import openai
import redis

from pagefleet.platform.protocol import Heartbeat, encode, keys
from tests.integration.gateway.conftest import IDLE_MODEL, KEY_A, MAX_MODEL_LEN, MODEL, LiveGateway


def echo(words: str, max_tokens: int, start: int = 0) -> str:
    parts = words.split()
    return "".join(f" {parts[(start + j) % len(parts)]}" for j in range(max_tokens))


def test_models_lists_the_registry_with_readiness(gateway: LiveGateway) -> None:
    models = gateway.client().models.list()
    by_id = {m.id: m for m in models.data}
    assert set(by_id) == {"fake-echo", "idle-model"}
    assert by_id["fake-echo"].object == "model"
    assert by_id["fake-echo"].model_extra["ready"] is True  # the worker's heartbeat says ready
    assert by_id["fake-echo"].model_extra["ready_workers"] == 1


def test_models_ready_follows_fresh_ready_heartbeats(gateway: LiveGateway, redis_raw: redis.Redis) -> None:
    key = keys.heartbeat_hash(IDLE_MODEL)
    now = time.time()
    redis_raw.hset(key, mapping={
        "w-ready": encode(Heartbeat(worker_id="w-ready", model=IDLE_MODEL, state="ready", timestamp=now)),
        "w-stale": encode(Heartbeat(worker_id="w-stale", model=IDLE_MODEL, state="ready", timestamp=now - 3600)),
        "w-start": encode(Heartbeat(worker_id="w-start", model=IDLE_MODEL, state="starting", timestamp=now)),
    })
    try:
        card = next(m for m in gateway.client().models.list().data if m.id == IDLE_MODEL)
        assert card.model_extra["ready"] is True
        assert card.model_extra["ready_workers"] == 1
        assert card.model_extra["max_model_len"] == MAX_MODEL_LEN
    finally:
        redis_raw.delete(key)


def test_chat_completion(gateway: LiveGateway) -> None:
    result = gateway.client().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "alpha beta gamma"}], max_tokens=5)
    assert result.object == "chat.completion"
    assert result.id.startswith("chatcmpl-")
    assert len(result.choices) == 1
    choice = result.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == echo("alpha beta gamma", 5)
    assert choice.finish_reason == "length"
    assert result.usage.prompt_tokens == 3
    assert result.usage.completion_tokens == 5
    assert result.usage.total_tokens == 8


def test_completion_with_n_2(gateway: LiveGateway) -> None:
    result = gateway.client().completions.create(model=MODEL, prompt="one two three", max_tokens=4, n=2)
    assert result.object == "text_completion"
    assert [c.index for c in result.choices] == [0, 1]
    assert [c.text for c in result.choices] == [echo("one two three", 4, i) for i in range(2)]
    assert result.usage.completion_tokens == 8


def test_list_prompt_merges_choices_like_vllm(gateway: LiveGateway) -> None:
    prompts = ["a b", "c d e", "f"]
    result = gateway.client().completions.create(model=MODEL, prompt=prompts, max_tokens=3, n=2)
    assert [c.index for c in result.choices] == list(range(6))
    for k, prompt in enumerate(prompts):
        for i in range(2):
            assert result.choices[k * 2 + i].text == echo(prompt, 3, i)
    assert result.usage.prompt_tokens == 6
    assert result.usage.completion_tokens == 18


def test_token_id_prompts(gateway: LiveGateway) -> None:
    single = gateway.client().completions.create(model=MODEL, prompt=[5, 6], max_tokens=2)
    assert single.choices[0].text == " t5 t6"
    batch = gateway.client().completions.create(model=MODEL, prompt=[[7], [8, 9]], max_tokens=2)
    assert [c.text for c in batch.choices] == [" t7 t7", " t8 t9"]


def test_stop_string_ends_the_choice(gateway: LiveGateway) -> None:
    result = gateway.client().completions.create(
        model=MODEL, prompt="red green blue yellow", max_tokens=10, stop=["blue"])
    assert result.choices[0].text == " red green "
    assert result.choices[0].finish_reason == "stop"


def test_vllm_extras_are_accepted(gateway: LiveGateway) -> None:
    result = gateway.client().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "x y"}], max_tokens=3, seed=7,
        extra_body={"top_k": 5, "min_p": 0.1, "repetition_penalty": 1.1, "ignore_eos": True,
                    "stop_token_ids": [3], "min_tokens": 1})
    assert result.choices[0].message.content == echo("x y", 3)


def test_chat_logprobs(gateway: LiveGateway) -> None:
    result = gateway.client().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "p q"}], max_tokens=3, logprobs=True,
        top_logprobs=2)
    content = result.choices[0].logprobs.content
    assert len(content) == 3
    assert "".join(t.token for t in content) == result.choices[0].message.content
    assert all(len(t.top_logprobs) == 2 and t.bytes == list(t.token.encode()) for t in content)


def test_completion_logprobs(gateway: LiveGateway) -> None:
    result = gateway.client().completions.create(model=MODEL, prompt="u v w", max_tokens=3, logprobs=1)
    logprobs = result.choices[0].logprobs
    assert "".join(logprobs.tokens) == result.choices[0].text
    assert len(logprobs.token_logprobs) == 3
    assert all(len(top) == 1 for top in logprobs.top_logprobs)
    assert logprobs.text_offset == [0, len(logprobs.tokens[0]),
                                    len(logprobs.tokens[0]) + len(logprobs.tokens[1])]


def test_chat_stream_with_usage(gateway: LiveGateway) -> None:
    stream = gateway.client().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "m n o"}], max_tokens=4, n=2,
        stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    texts = ["", ""]
    finish = [None, None]
    for chunk in chunks[:-1]:
        assert chunk.object == "chat.completion.chunk"
        assert len(chunk.choices) == 1
        choice = chunk.choices[0]
        texts[choice.index] += choice.delta.content or ""
        finish[choice.index] = choice.finish_reason or finish[choice.index]
    assert texts == [echo("m n o", 4, i) for i in range(2)]
    assert finish == ["length", "length"]
    assert {c.choices[0].delta.role for c in chunks[:2]} == {"assistant"}
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == []
    assert usage_chunk.usage.completion_tokens == 8
    assert len({c.id for c in chunks}) == 1


def test_completion_stream_ends_with_done(gateway: LiveGateway) -> None:
    with httpx.Client(base_url=gateway.root_url, headers={"Authorization": f"Bearer {KEY_A}"}) as http:
        response = http.post("/v1/completions", json={
            "model": MODEL, "prompt": ["a", "b"], "max_tokens": 2, "stream": True})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [e for e in response.text.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    assert sum("[DONE]" in e for e in events) == 1


def test_async_client_streams(gateway: LiveGateway) -> None:
    async def run() -> str:
        async with gateway.async_client() as client:
            stream = await client.completions.create(model=MODEL, prompt="s t", max_tokens=3,
                                                     stream=True)
            return "".join([chunk.choices[0].text async for chunk in stream if chunk.choices])

    assert asyncio.run(run()) == echo("s t", 3)


def test_64_concurrent_streams_are_well_formed(gateway: LiveGateway) -> None:
    async def one(client: openai.AsyncOpenAI, k: int) -> tuple[str, str, list[str]]:
        prompt = f"w{k} x{k}"
        stream = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": prompt}], max_tokens=6, stream=True,
            stream_options={"include_usage": True})
        text, ids, reasons = "", set(), []
        async for chunk in stream:
            ids.add(chunk.id)
            for choice in chunk.choices:
                text += choice.delta.content or ""
                if choice.finish_reason:
                    reasons.append(choice.finish_reason)
            if not chunk.choices:
                assert chunk.usage.completion_tokens == 6
        assert len(ids) == 1
        return prompt, text, reasons

    async def run() -> list[tuple[str, str, list[str]]]:
        async with gateway.async_client(http_client=openai.DefaultAsyncHttpxClient(
                limits=httpx.Limits(max_connections=64))) as client:
            return await asyncio.gather(*(one(client, k) for k in range(64)))

    results = asyncio.run(run())
    assert len(results) == 64
    for prompt, text, reasons in results:
        assert text == echo(prompt, 6)
        assert reasons == ["length"]

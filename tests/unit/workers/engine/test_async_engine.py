"""AsyncEngine: concurrent streams, abort on early exit, resume after a crash elsewhere."""

from __future__ import annotations

import asyncio

import pytest

from pagefleet.workers import EngineConfig, SamplingParams
from pagefleet.workers.engine.async_engine import AsyncEngine
from pagefleet.workers.engine.errors import PromptTooLongError

GREEDY = SamplingParams(temperature=0, max_tokens=12)


@pytest.fixture(scope="module")
def engine():
    engine = AsyncEngine(EngineConfig(max_model_len=256))
    yield engine
    engine.shutdown()


async def _collect(engine, request_id, prompt, params, resume=None):
    deltas = [d async for d in engine.add_request(request_id, prompt, params, resume)]
    return deltas


def test_concurrent_requests_stream_independently(engine, llm):
    prompts = [f"Question {i}: what is {i} plus {i}?" for i in range(6)]

    async def run():
        return await asyncio.gather(*(_collect(engine, f"c{i}", p, GREEDY) for i, p in enumerate(prompts)))

    results = asyncio.run(run())
    expected = llm.generate(prompts, GREEDY)
    for deltas, want in zip(results, expected, strict=True):
        assert deltas[-1].finished and deltas[-1].finish_reason in ("stop", "length")
        assert sum(len(d.token_ids) for d in deltas) == len(want.outputs[0].token_ids)
        assert [t for d in deltas for t in d.token_ids] == want.outputs[0].token_ids
        assert "".join(d.text for d in deltas) == want.outputs[0].text
        offsets = [d.offset for d in deltas]
        assert offsets == sorted(offsets) and offsets[0] == 0


def test_resume_continues_without_repeating_tokens(engine):
    async def run():
        full = await _collect(engine, "full", "The history of Rome", GREEDY)
        tokens = [t for d in full for t in d.token_ids]
        resumed = await _collect(engine, "resumed", "The history of Rome", GREEDY, {0: tokens[:5]})
        return tokens, resumed

    tokens, resumed = asyncio.run(run())
    assert resumed[0].offset == 5
    assert [t for d in resumed for t in d.token_ids] == tokens[5:]


def test_leaving_the_stream_aborts_and_frees_blocks(engine):
    async def run():
        stream = engine.add_request("leave", "Tell me a long story", SamplingParams(max_tokens=200))
        async for _ in stream:
            break
        await stream.aclose()
        # The abort is a command to the engine thread; a follow-up request is served after it.
        await _collect(engine, "after", "hi", SamplingParams(max_tokens=1))

    asyncio.run(run())
    stats = engine.stats()
    assert stats.num_running == 0 and stats.num_waiting == 0
    assert stats.kv_cache_usage == 0.0


def test_bad_request_raises_before_any_delta(engine):
    async def run():
        with pytest.raises(PromptTooLongError):
            await _collect(engine, "long", "hi", SamplingParams(max_tokens=1000))
        with pytest.raises(ValueError, match="empty"):
            await _collect(engine, "empty", "", GREEDY)

    asyncio.run(run())


def test_a_malformed_chat_fails_alone(engine):
    async def run():
        good = asyncio.create_task(_collect(engine, "ok", "Hello there", GREEDY))
        with pytest.raises(ValueError):
            await _collect(engine, "bad", [{"role": "user"}, {"content": 3}], GREEDY)
        return await good

    deltas = asyncio.run(run())
    assert deltas[-1].finished and deltas[-1].finish_reason in ("stop", "length")


def test_huge_prompts_never_stall_a_parallel_stream(engine, monkeypatch):
    """Issue 8/4: tokenising runs off the engine thread, and text no context could hold is
    refused before the tokenizer sees it. The tokenizer is held inside `tokenize` until the
    parallel stream has received a delta: with tokenising in the engine thread that delta could
    never come (the hold would time out and the test fail)."""
    import threading

    from pagefleet.workers.engine import prompt_encoder

    real_encode = prompt_encoder.encode_prompt
    tokenizing = threading.Event()
    stream_moved = threading.Event()
    tokenized_chars: list[int] = []
    held_until_stream_moved: list[bool] = []

    def gated_encode(tokenizer, vocab_size, prompt):
        if isinstance(prompt, str):
            tokenized_chars.append(len(prompt))
            if len(prompt) > 1000:
                tokenizing.set()
                held_until_stream_moved.append(stream_moved.wait(timeout=30))
        return real_encode(tokenizer, vocab_size, prompt)

    monkeypatch.setattr(prompt_encoder, "encode_prompt", gated_encode)
    huge = "x" * 3_600_000
    large = "word " * (engine.max_prompt_chars // 5)  # within the character bound

    async def parallel_stream(started: asyncio.Event):
        params = SamplingParams(temperature=0, max_tokens=200, ignore_eos=True)
        num_deltas_during = 0
        async for _ in engine.add_request("parallel", "Count to a thousand:", params):
            started.set()
            if tokenizing.is_set() and not stream_moved.is_set():
                num_deltas_during += 1
                stream_moved.set()
        return num_deltas_during

    async def run():
        started = asyncio.Event()
        stream = asyncio.create_task(parallel_stream(started))
        await asyncio.wait_for(started.wait(), timeout=60)
        with pytest.raises(PromptTooLongError, match="3600000 characters"):
            await _collect(engine, "huge", huge, GREEDY)
        with pytest.raises(PromptTooLongError, match="maximum context length is 256"):
            await _collect(engine, "large", large, GREEDY)
        return await stream

    assert asyncio.run(run()) == 1
    assert held_until_stream_moved == [True]
    assert tokenized_chars == [len("Count to a thousand:"), len(large)]  # never the huge one

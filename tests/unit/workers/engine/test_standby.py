"""Standby (`LLMEngine.sleep` / `wake`): after a round trip the engine answers exactly as a
fresh one does. CPU, torch backend: the weights really leave their tensors (each parameter
is an empty placeholder while asleep) and come back from the host buffer, and the KV cache
is reallocated, so a wrong offset, a lost buffer or a stale prefix-cache entry changes the
tokens."""

from __future__ import annotations

import asyncio

import pytest

from pagefleet.workers import LLM, EngineConfig, SamplingParams
from pagefleet.workers.engine.async_engine import AsyncEngine
from pagefleet.workers.engine.errors import EngineAsleepError, EngineBusyError
from tests.support.waiting import wait_for

PROMPTS = ["The capital of France is", "def fibonacci(n):", "Write a short poem about the sea:"]
GREEDY = SamplingParams(temperature=0, max_tokens=12)


def _tokens(llm: LLM) -> list[list[int]]:
    return [out.outputs[0].token_ids for out in llm.generate(PROMPTS, GREEDY)]


@pytest.fixture(scope="module")
def fresh_tokens() -> list[list[int]]:
    return _tokens(LLM(max_model_len=256, block_size=4))


def test_wake_answers_like_a_fresh_engine(fresh_tokens) -> None:
    llm = LLM(max_model_len=256, block_size=4)
    engine = llm.engine
    assert _tokens(llm) == fresh_tokens  # fills the prefix cache, which sleep must forget
    for _ in range(2):  # the second sleep reuses the host copy made by the first
        engine.sleep()
        assert engine.is_sleeping and engine.stats().is_sleeping
        assert all(p.numel() == 0 for p in engine.runner.model.parameters())
        assert engine.runner.kv_caches == []
        assert not engine.kv_cache.pool.cached
        engine.wake()
        assert not engine.is_sleeping
        outputs = llm.generate(PROMPTS, GREEDY)
        assert [out.outputs[0].token_ids for out in outputs] == fresh_tokens
        assert all(out.num_cached_tokens == 0 for out in outputs)  # nothing stale was served


def test_sleep_is_refused_while_requests_run_and_requests_while_asleep() -> None:
    llm = LLM(max_model_len=256)
    engine = llm.engine
    engine.add_request("a", PROMPTS[0], GREEDY)
    engine.step()
    with pytest.raises(EngineBusyError, match="1 request"):
        engine.sleep()
    assert not engine.is_sleeping
    engine.abort("a")
    engine.sleep()
    engine.sleep()  # idempotent
    with pytest.raises(EngineAsleepError, match="wake"):
        engine.add_request("b", PROMPTS[0], GREEDY)
    engine.wake()
    engine.wake()  # idempotent
    engine.add_request("b", PROMPTS[0], GREEDY)
    while engine.has_unfinished():
        engine.step()


def test_an_idle_async_engine_sleeps_and_the_next_request_wakes_it(fresh_tokens) -> None:
    engine = AsyncEngine(EngineConfig(max_model_len=256, block_size=4), standby_after_s=0.0)
    try:
        wait_for(lambda: engine.stats().is_sleeping, "the idle engine to go to standby")

        async def generate(request_id: str) -> list[int]:
            return [t async for d in engine.add_request(request_id, PROMPTS[0], GREEDY)
                    for t in d.token_ids]

        assert asyncio.run(generate("after-standby")) == fresh_tokens[0]
        wait_for(lambda: engine.stats().is_sleeping, "the engine to go back to standby")
        assert asyncio.run(generate("again")) == fresh_tokens[0]
    finally:
        engine.shutdown()


def test_standby_after_s_is_validated() -> None:
    with pytest.raises(ValueError, match="standby_after_s"):
        AsyncEngine(EngineConfig(), standby_after_s=-1)


def test_fp8_weights_survive_a_sleep() -> None:
    # FP8 linear layers: one-byte weights and their float scales packed side by side.
    llm = LLM(max_model_len=128, quantization="fp8")
    before = _tokens(llm)
    llm.engine.sleep()
    llm.engine.wake()
    assert _tokens(llm) == before

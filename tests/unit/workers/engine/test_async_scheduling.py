"""Asynchronous scheduling (step N+1 scheduled while step N runs, inputs read on the device)
gives exactly what the synchronous engine gives: same tokens, texts, finish reasons, through
chunked prefill, preemption, prefix-cache hits, stop strings and ids, n > 1, penalties,
logprobs and aborts. CPU, torch backend: the bookkeeping is what is under test."""

from __future__ import annotations

import pytest

from pagefleet.workers import LLM, SamplingParams

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "1, 2, 3, 4,",
    "Write a short poem about the sea:",
    "The capital of France is Paris. The capital of Italy is",  # shares a prefix with [0]
]


def _params() -> list[SamplingParams]:
    return [
        SamplingParams(temperature=0, max_tokens=12),
        SamplingParams(temperature=0, max_tokens=9, stop=["\n\n"]),
        SamplingParams(temperature=0, max_tokens=16, stop=[" 7"]),
        SamplingParams(temperature=0.8, seed=5, n=2, max_tokens=10, logprobs=2),
        SamplingParams(temperature=0, max_tokens=11, repetition_penalty=1.3, min_tokens=4),
    ]


def _run(async_scheduling: bool, **engine_args) -> list[list[tuple]]:
    """Per request, per choice: tokens, text, finish and stop reasons, logprobs rounded (the
    two modes batch differently, so float sums may differ in the last bits; tokens may not)."""
    llm = LLM(max_model_len=256, async_scheduling=async_scheduling, **engine_args)
    assert llm.engine.settings.async_scheduling is async_scheduling
    outputs = llm.generate(PROMPTS, _params())
    assert llm.engine.in_flight is None or not llm.engine.has_unfinished()
    assert llm.engine.kv_cache.pool.num_free_blocks == llm.engine.kv_cache.pool.num_blocks
    return [[(c.token_ids, c.text, c.finish_reason, c.stop_reason,
              [round(lp.logprob, 3) for lp in c.logprobs or []]) for c in out.outputs]
            for out in outputs]


@pytest.mark.parametrize("engine_args", [
    {},  # plain continuous batching
    {"max_num_batched_tokens": 8},  # chunked prefill, mixed steps
    {"num_kv_blocks": 7, "block_size": 4},  # preemption by recompute
], ids=["plain", "chunked", "preempting"])
def test_async_scheduling_equals_synchronous(engine_args) -> None:
    assert _run(True, **engine_args) == _run(False, **engine_args)


def test_async_scheduling_hits_the_prefix_cache_and_stops_exactly() -> None:
    llm = LLM(max_model_len=256, async_scheduling=True, block_size=4)
    first = llm.generate(PROMPTS[0], SamplingParams(temperature=0, max_tokens=20))[0]
    # The prompt plus the generated answer: the answer's blocks were cached once their tokens
    # were read back (all but the last, which the finished sequence never reached again).
    again = llm.generate(first.prompt_token_ids + first.outputs[0].token_ids,
                         SamplingParams(temperature=0, max_tokens=3))[0]
    assert again.outputs[0].finish_reason == "length" and len(again.outputs[0].token_ids) == 3
    assert again.num_cached_tokens >= len(first.prompt_token_ids) + 12


def test_abort_while_a_step_is_in_flight() -> None:
    llm = LLM(max_model_len=256, async_scheduling=True)
    engine = llm.engine
    engine.add_request("a", PROMPTS[0], SamplingParams(temperature=0, max_tokens=30))
    engine.add_request("b", PROMPTS[1], SamplingParams(temperature=0, max_tokens=6))
    deltas = []
    while engine.in_flight is None:
        deltas += engine.step()
    deltas += engine.abort("a")
    while engine.has_unfinished():
        deltas += engine.step()
    finals = {d.request_id: d.finish_reason for d in deltas if d.finish_reason}
    assert finals == {"a": "abort", "b": "length"}
    assert sum(len(d.token_ids) for d in deltas if d.request_id == "b") == 6
    assert engine.kv_cache.pool.num_free_blocks == engine.kv_cache.pool.num_blocks
    want = LLM(max_model_len=256, async_scheduling=False).generate(
        PROMPTS[1], SamplingParams(temperature=0, max_tokens=6))[0].outputs[0].token_ids
    assert [t for d in deltas if d.request_id == "b" for t in d.token_ids] == want

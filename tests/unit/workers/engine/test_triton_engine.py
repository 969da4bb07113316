"""The engine with the Triton attention backend (the CPU interpreter in CI) picks the same
greedy tokens as with the torch backend."""

from __future__ import annotations

from pagefleet.workers import LLM, SamplingParams

PROMPTS = ["The capital of France is", "def add(a, b):", "1, 2, 3,"]


def test_triton_backend_greedy_tokens_equal_torch_backend(llm):
    params = SamplingParams(temperature=0, max_tokens=5)
    want = [o.outputs[0].token_ids for o in llm.generate(PROMPTS, params)]
    triton_llm = LLM(max_model_len=128, attention_backend="triton", max_num_batched_tokens=4)
    assert triton_llm.engine.runner.attention.name == "triton"
    # A 4-token budget splits every prompt into chunks: prefill, chunked prefill, mixed and
    # decode kernels all run.
    assert [o.outputs[0].token_ids for o in triton_llm.generate(PROMPTS, params)] == want

"""TP=2 over gloo on the CPU picks the same greedy tokens as TP=1 (engine level, two processes)."""

from __future__ import annotations

import pytest
import torch

from pagefleet.workers import LLM, SamplingParams


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> str:
    """A small random Llama saved by transformers: 4 query heads and 2 KV heads split over 2 ranks."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=1024, hidden_size=128, intermediate_size=256,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, initializer_range=0.15)
    folder = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(folder)
    return str(folder)


@pytest.mark.parametrize("async_scheduling", [False, True])
def test_tp2_greedy_tokens_equal_tp1(tiny_llama, async_scheduling):
    """With asynchronous scheduling the other rank takes its decode inputs from the ids rank 0
    broadcasts after sampling; 16-token steps make prompt chunks and decodes share steps."""
    prompts = [[(11 * i + 5 * j) % 1000 + 3 for j in range(4 + 9 * i)] for i in range(5)]
    params = SamplingParams(temperature=0, ignore_eos=True, max_tokens=12)
    single = LLM(model=tiny_llama, max_model_len=256, num_kv_blocks=64)
    want = [o.outputs[0].token_ids for o in single.generate(prompts, params)]
    parallel = LLM(model=tiny_llama, max_model_len=256, num_kv_blocks=64, tensor_parallel_size=2,
                   async_scheduling=async_scheduling,
                   max_num_batched_tokens=16 if async_scheduling else None)
    workers = parallel.engine.tp_context.processes
    try:
        assert parallel.engine.runner.num_kv_heads == 1  # each rank holds half the KV heads
        assert parallel.engine.settings.async_scheduling is async_scheduling
        got = [o.outputs[0].token_ids for o in parallel.generate(prompts, params)]
    finally:
        parallel.shutdown()
    assert got == want
    assert workers and not any(process.is_alive() for process in workers)

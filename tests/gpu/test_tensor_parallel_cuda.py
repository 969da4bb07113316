"""TP=2 over NCCL on two GPUs: the same greedy tokens as TP=1. Skipped with fewer GPUs."""

from __future__ import annotations

import pytest
import torch

from pagefleet.workers import LLM, SamplingParams

pytestmark = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")


def test_tp2_on_two_gpus_equals_tp1(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=2048, hidden_size=256, intermediate_size=512,
                         num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2,
                         max_position_embeddings=1024, initializer_range=0.15)
    LlamaForCausalLM(config).save_pretrained(tmp_path)
    prompts = [[(13 * i + 7 * j) % 2000 + 5 for j in range(3 + 11 * i)] for i in range(8)]
    params = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)
    kwargs = dict(model=str(tmp_path), dtype="float32", max_model_len=512, num_kv_blocks=256)
    single = LLM(**kwargs)
    want = [o.outputs[0].token_ids for o in single.generate(prompts, params)]
    del single
    torch.cuda.empty_cache()
    parallel = LLM(tensor_parallel_size=2, **kwargs)
    try:
        assert parallel.engine.runner.graphs is not None
        got = [o.outputs[0].token_ids for o in parallel.generate(prompts, params)]
    finally:
        parallel.shutdown()
    assert got == want

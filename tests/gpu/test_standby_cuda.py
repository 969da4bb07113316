"""Standby and KV swapping on the GPU (Triton backend, CUDA graphs, pinned host memory), in
float32 so that tokens do not depend on how steps are batched. Skipped without CUDA; run on
the lent H200 with `pytest tests/gpu`."""

from __future__ import annotations

import pytest
import torch

from pagefleet.workers import LLM, SamplingParams

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

PROMPTS = [[(7 * i + j) % 5000 + 10 for j in range(5 + 9 * i)] for i in range(12)]
GREEDY = SamplingParams(temperature=0, ignore_eos=True, max_tokens=24)
MODEL = {"model": "llama-3.2-1b", "load_format": "dummy", "dtype": "float32",  # exact across batchings
         "max_model_len": 256, "max_num_seqs": 16}


def _tokens(llm: LLM) -> list[list[int]]:
    return [o.outputs[0].token_ids for o in llm.generate(PROMPTS, GREEDY)]


def test_sleep_frees_the_gpu_and_wake_gives_the_same_tokens():
    llm = LLM(num_kv_blocks=512, **MODEL)
    engine = llm.engine
    before = _tokens(llm)
    awake = torch.cuda.memory_allocated()
    engine.sleep()
    asleep = torch.cuda.memory_allocated()
    assert asleep < 0.05 * awake, (awake, asleep)
    assert engine.runner.host_weights is not None
    times = engine.wake()
    assert times.weights_s > 0 and engine.runner.graphs is not None
    assert _tokens(llm) == before


def test_swapping_gives_the_tokens_of_recomputing_and_of_no_pressure():
    unpressured = _tokens(LLM(num_kv_blocks=512, **MODEL))
    torch.cuda.empty_cache()
    pressure = {"num_kv_blocks": 24, **MODEL}  # 384 tokens for twelve prompts of up to 128
    recompute = LLM(swap_space=0.5, preemption_mode="recompute", **pressure)
    assert _tokens(recompute) == unpressured
    assert recompute.engine.stats().num_preemptions_total > 0
    del recompute
    torch.cuda.empty_cache()
    swap = LLM(swap_space=0.5, preemption_mode="swap", **pressure)
    assert _tokens(swap) == unpressured
    stats = swap.engine.stats()
    assert stats.num_swapped_out_total == stats.num_preemptions_total > 0

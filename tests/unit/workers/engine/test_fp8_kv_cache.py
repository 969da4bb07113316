"""kv_cache_dtype="fp8" on the CPU engine: half the bytes of a bf16 cache per block (so twice
the blocks in the same memory), generation through the torch and Triton backends, and swapped
blocks that come back bit for bit."""

from __future__ import annotations

import pytest

from pagefleet.kernels.fp8_e4m3 import FP8_DTYPE
from pagefleet.workers import LLM, SamplingParams
from pagefleet.workers.engine.config import EngineConfig

PROMPTS = ["The capital of France is", "def fibonacci(n):", "1, 2, 3, 4,"]
GREEDY = SamplingParams(temperature=0, max_tokens=8)
BUDGET = 8 * 2**20  # bytes of KV cache, the same for both engines


def _greedy(llm: LLM, params: SamplingParams = GREEDY) -> list[list[int]]:
    return [out.outputs[0].token_ids for out in llm.generate(PROMPTS, params)]


@pytest.fixture(scope="module")
def bf16_cache() -> LLM:
    return LLM(max_model_len=128, dtype="bfloat16", kv_cache_memory_bytes=BUDGET)


@pytest.fixture(scope="module")
def fp8_cache() -> LLM:
    return LLM(max_model_len=128, dtype="bfloat16", kv_cache_memory_bytes=BUDGET,
               kv_cache_dtype="fp8")


def test_fp8_blocks_take_half_the_bytes_so_twice_as_many_fit(bf16_cache, fp8_cache) -> None:
    full, half = bf16_cache.engine.runner, fp8_cache.engine.runner
    assert full.kv_cache_dtype == full.dtype and half.kv_cache_dtype == FP8_DTYPE
    assert 2 * half.bytes_per_block == full.bytes_per_block
    assert all(k.dtype == v.dtype == FP8_DTYPE for k, v in half.kv_caches)
    assert 2 * half.kv_caches[0][0][0].nbytes == full.kv_caches[0][0][0].nbytes  # one block
    # Each cache holds one null block besides the blocks the scheduler hands out; halving
    # the block doubles the count, plus one where the bf16 count left half a block over.
    assert full.num_blocks + 1 == BUDGET // full.bytes_per_block
    assert half.num_blocks + 1 in (2 * (full.num_blocks + 1), 2 * (full.num_blocks + 1) + 1)
    assert fp8_cache.engine.kv_cache.pool.num_blocks == half.num_blocks


def test_fp8_cache_generates_close_to_the_bf16_cache(bf16_cache, fp8_cache) -> None:
    """e4m3 keeps 3 mantissa bits: greedy paths may part after a near-tie, but the first
    tokens, decided with the least rounding accumulated, agree."""
    outputs = fp8_cache.generate(PROMPTS, GREEDY)
    assert all(len(o.outputs[0].token_ids) == GREEDY.max_tokens for o in outputs)
    assert all(o.outputs[0].text for o in outputs)
    got, want = [o.outputs[0].token_ids for o in outputs], _greedy(bf16_cache)
    assert [ids[0] for ids in got] == [ids[0] for ids in want]
    agree = sum(a == b for g, w in zip(got, want, strict=True) for a, b in zip(g, w, strict=True))
    assert agree >= 0.75 * sum(len(w) for w in want)


def test_fp8_cache_through_the_triton_kernels_matches_the_torch_backend() -> None:
    # A float32 model (the CPU default): the interpreter runs bf16 models far slower.
    common = dict(max_model_len=64, kv_cache_dtype="fp8", num_kv_blocks=32)
    params = SamplingParams(temperature=0, max_tokens=3)
    want = _greedy(LLM(**common), params)
    triton_llm = LLM(attention_backend="triton", max_num_batched_tokens=8, **common)
    assert triton_llm.engine.runner.kv_caches[0][0].dtype == FP8_DTYPE
    # An 8-token budget chunks the prompts: prefill, chunked, mixed and decode kernels run.
    assert _greedy(triton_llm, params) == want


def test_fp8_blocks_swap_out_and_back_bit_for_bit() -> None:
    common = dict(max_model_len=64, kv_cache_dtype="fp8", block_size=4)
    params = SamplingParams(temperature=0, max_tokens=14)
    pressured = LLM(num_kv_blocks=8, swap_space=0.01, **common)
    swapped = _greedy(pressured, params)
    stats = pressured.engine.stats()
    assert stats.num_swapped_out_total == stats.num_preemptions_total > 0
    assert swapped == _greedy(LLM(num_kv_blocks=64, **common), params)


def test_kv_cache_dtype_is_checked() -> None:
    with pytest.raises(ValueError, match="kv_cache_dtype must be one of"):
        EngineConfig(kv_cache_dtype="int8")  # type: ignore[arg-type]

"""Paged prefill attention against its torch reference: full, chunked and mixed batches."""

from __future__ import annotations

import pytest
import torch

from pagefleet.kernels.fp8_e4m3 import FP8_DTYPE
from pagefleet.kernels.paged_prefill_attention import (
    PrefillConfig,
    paged_prefill_attention,
    paged_prefill_attention_ref,
    shared_heads,
)
from pagefleet.kernels.reshape_and_cache import to_cache_dtype
from pagefleet.kernels.testing import (
    FP8_KV_TOLERANCE,
    TOLERANCE,
    make_paged_batch,
    nan_like,
    poison_unused_slots,
    random_tensor,
    relative_error,
)

FULL = torch.cuda.is_available()
HEADS = [(32, 8, 128), (24, 8, 128), (16, 16, 64), (64, 8, 64)] if FULL else [
    (4, 4, 64), (6, 2, 128), (8, 1, 64)]
# (seq_lens, query_lens): whole prompts, chunked prefill over a cached prefix, and a mixed
# batch where decode rows are queries of length 1.
BATCHES = {
    "prefill": ([37, 1, 16], [37, 1, 16]),
    "chunked": ([100, 70], [30, 64]),
    "mixed": ([1, 50, 90, 33], [1, 50, 20, 1]),
}
if FULL:
    BATCHES = {
        "prefill": ([1000, 1, 16, 2049], [1000, 1, 16, 2049]),
        "chunked": ([5000, 777, 4097], [512, 700, 1]),
        "mixed": ([1, 3000, 900, 33, 8191], [1, 1000, 900, 1, 1]),
    }
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
KINDS = list(BATCHES)
# The interpreter is slow: on the CPU every value is covered, not every combination.
F32, F16, BF16 = DTYPES
CASES = [(*h, k, d) for h in HEADS for k in KINDS for d in DTYPES] if FULL else [
    (4, 4, 64, "prefill", F32), (4, 4, 64, "mixed", BF16), (6, 2, 128, "chunked", F16),
    (6, 2, 128, "mixed", F32), (8, 1, 64, "chunked", BF16), (8, 1, 64, "prefill", F16),
    (8, 2, 64, "mixed", BF16)]


@pytest.mark.parametrize(("num_heads", "num_kv_heads", "head_dim", "kind", "dtype"), CASES)
def test_prefill_matches_reference(
    num_heads: int, num_kv_heads: int, head_dim: int, kind: str, dtype: torch.dtype,
    device: torch.device, generator: torch.Generator,
) -> None:
    seq_lens, query_lens = BATCHES[kind]
    block_size = 16
    batch = make_paged_batch(seq_lens, query_lens, block_size, generator, device)
    cache_shape = (batch.num_blocks, block_size, num_kv_heads, head_dim)
    k_cache = random_tensor(cache_shape, dtype, generator, device)
    v_cache = random_tensor(cache_shape, dtype, generator, device)
    poison_unused_slots(k_cache, batch)
    poison_unused_slots(v_cache, batch)
    q = random_tensor((batch.num_tokens, num_heads, head_dim), dtype, generator, device)
    out = nan_like(q)
    # On the CPU 64 rows a program: 4 heads x 16 tokens where the group allows (shared K/V tiles).
    config = None if FULL else PrefillConfig(block_m=64, block_n=32)
    scale = head_dim**-0.5
    paged_prefill_attention(q, k_cache, v_cache, batch.block_tables, batch.seq_lens,
                            batch.query_start_loc, scale, out, batch.max_query_len, config)
    ref = paged_prefill_attention_ref(q, k_cache, v_cache, batch.block_tables, batch.seq_lens,
                                      batch.query_start_loc, scale)
    assert not out.isnan().any()
    assert relative_error(out, ref) < TOLERANCE[dtype]


FP8_CASES = [(*h, k, d) for h in HEADS[:2] for k in KINDS for d in DTYPES] if FULL else [
    (4, 4, 64, "prefill", F32), (6, 2, 128, "mixed", BF16), (8, 2, 64, "chunked", F16)]


@pytest.mark.parametrize(("num_heads", "num_kv_heads", "head_dim", "kind", "dtype"), FP8_CASES)
def test_prefill_reads_an_fp8_cache(
    num_heads: int, num_kv_heads: int, head_dim: int, kind: str, dtype: torch.dtype,
    device: torch.device, generator: torch.Generator,
) -> None:
    """The kernel and its reference read the same fp8 cache (so agree to `dtype`'s
    tolerance), and both stay within quantisation error of the unrounded cache."""
    seq_lens, query_lens = BATCHES[kind]
    block_size = 16
    batch = make_paged_batch(seq_lens, query_lens, block_size, generator, device)
    cache_shape = (batch.num_blocks, block_size, num_kv_heads, head_dim)
    k_full = random_tensor(cache_shape, dtype, generator, device)
    v_full = random_tensor(cache_shape, dtype, generator, device)
    poison_unused_slots(k_full, batch)
    poison_unused_slots(v_full, batch)
    k_cache, v_cache = to_cache_dtype(k_full, FP8_DTYPE), to_cache_dtype(v_full, FP8_DTYPE)
    q = random_tensor((batch.num_tokens, num_heads, head_dim), dtype, generator, device)
    out = nan_like(q)
    config = None if FULL else PrefillConfig(block_m=64, block_n=32)
    scale = head_dim**-0.5
    args = (batch.block_tables, batch.seq_lens, batch.query_start_loc, scale)
    paged_prefill_attention(q, k_cache, v_cache, *args, out, batch.max_query_len, config)
    ref = paged_prefill_attention_ref(q, k_cache, v_cache, *args)
    unrounded = paged_prefill_attention_ref(q, k_full, v_full, *args)
    assert not out.isnan().any()
    assert relative_error(out, ref) < TOLERANCE[dtype]
    assert relative_error(out, unrounded) < FP8_KV_TOLERANCE


def test_prefill_odd_head_dim_and_block_size(device: torch.device, generator: torch.Generator) -> None:
    block_size, head_dim, num_heads, num_kv_heads = 8, 80, 4, 2
    batch = make_paged_batch([45, 9], [20, 9], block_size, generator, device)
    cache_shape = (batch.num_blocks, block_size, num_kv_heads, head_dim)
    k_cache = random_tensor(cache_shape, torch.float32, generator, device)
    v_cache = random_tensor(cache_shape, torch.float32, generator, device)
    q = random_tensor((batch.num_tokens, num_heads, head_dim), torch.float32, generator, device)
    out = nan_like(q)
    paged_prefill_attention(q, k_cache, v_cache, batch.block_tables, batch.seq_lens,
                            batch.query_start_loc, 0.2, out, batch.max_query_len,
                            PrefillConfig(block_m=16, block_n=16))
    ref = paged_prefill_attention_ref(q, k_cache, v_cache, batch.block_tables, batch.seq_lens,
                                      batch.query_start_loc, 0.2)
    assert relative_error(out, ref) < TOLERANCE[torch.float32]


# (kind, sliding_window, softcap, dtype): windows of one key, of a few tiles and longer than
# every sequence; hard and Gemma-2 caps; soft-capping alone.
WINDOWED = [("prefill", 1, None, F32), ("chunked", 20, 1.0, F32), ("mixed", 45, None, BF16),
            ("prefill", 9, 50.0, F16), ("chunked", 4096, None, F32), ("mixed", None, 1.0, F32)]


@pytest.mark.parametrize(("kind", "sliding_window", "softcap", "dtype"), WINDOWED)
def test_prefill_window_and_softcap_match_reference(
    kind: str, sliding_window: int | None, softcap: float | None, dtype: torch.dtype,
    device: torch.device, generator: torch.Generator,
) -> None:
    """Keys before the first query's window are NaN: reading one fails the test."""
    seq_lens, query_lens = BATCHES[kind]
    block_size, num_heads, num_kv_heads, head_dim = 16, 8, 2, 64
    batch = make_paged_batch(seq_lens, query_lens, block_size, generator, device)
    cache_shape = (batch.num_blocks, block_size, num_kv_heads, head_dim)
    k_cache = random_tensor(cache_shape, dtype, generator, device)
    v_cache = random_tensor(cache_shape, dtype, generator, device)
    poison_unused_slots(k_cache, batch, sliding_window)
    poison_unused_slots(v_cache, batch, sliding_window)
    q = random_tensor((batch.num_tokens, num_heads, head_dim), dtype, generator, device) * 3
    out = nan_like(q)
    config = None if FULL else PrefillConfig(block_m=32, block_n=16)  # 2 heads x 16 tokens
    scale = head_dim**-0.5
    paged_prefill_attention(q, k_cache, v_cache, batch.block_tables, batch.seq_lens,
                            batch.query_start_loc, scale, out, batch.max_query_len, config,
                            sliding_window=sliding_window, softcap=softcap)
    ref = paged_prefill_attention_ref(q, k_cache, v_cache, batch.block_tables, batch.seq_lens,
                                      batch.query_start_loc, scale, sliding_window, softcap)
    assert not out.isnan().any()
    assert relative_error(out, ref) < TOLERANCE[dtype]


@pytest.mark.parametrize(("queries_per_kv", "block_m", "max_shared", "want"), [
    (1, 128, 8, 1), (4, 128, 8, 4), (3, 128, 8, 1), (6, 128, 8, 2), (16, 128, 8, 8),
    (8, 32, 8, 2), (4, 16, 8, 1), (4, 128, 1, 1)])
def test_shared_heads_stay_inside_one_kv_group_with_16_tokens_a_tile(
    queries_per_kv: int, block_m: int, max_shared: int, want: int,
) -> None:
    assert shared_heads(queries_per_kv, PrefillConfig(block_m=block_m, max_shared_heads=max_shared)) == want

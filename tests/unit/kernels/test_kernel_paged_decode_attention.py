"""Split-KV paged decode attention against its torch reference, on shuffled block tables."""

from __future__ import annotations

import pytest
import torch

from pagefleet.kernels.fp8_e4m3 import FP8_DTYPE
from pagefleet.kernels.paged_decode_attention import (
    DecodeConfig,
    choose_num_splits,
    paged_decode_attention,
    paged_decode_attention_ref,
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
# (num_heads, num_kv_heads, head_dim): GQA ratios 1, 3 and 8; head_dim 64 and 128.
HEADS = [(32, 8, 128), (24, 8, 128), (16, 16, 64), (64, 8, 64)] if FULL else [
    (4, 4, 64), (6, 2, 128), (8, 1, 64)]
# Lengths off the block size, a 1-token sequence, and (on GPU) long ones.
SEQ_LENS = [1, 17, 255, 1000, 4097, 9000, 33, 16] if FULL else [1, 17, 100]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# None: the launcher's own choice; 3 leaves an uneven last split; 5 and 64 leave empty ones.
SPLITS = [None, 1, 3, 64] if FULL else [None, 1, 5]
# The interpreter is slow: on the CPU every value is covered, not every combination.
F32, F16, BF16 = DTYPES
CASES = [(*h, d, s) for h in HEADS for d in DTYPES for s in SPLITS] if FULL else [
    (4, 4, 64, F32, 1), (4, 4, 64, BF16, 5), (6, 2, 128, F16, None), (6, 2, 128, F32, 5),
    (8, 1, 64, BF16, 1), (8, 1, 64, F32, None)]


@pytest.mark.parametrize(("num_heads", "num_kv_heads", "head_dim", "dtype", "num_splits"), CASES)
def test_decode_matches_reference(
    num_heads: int, num_kv_heads: int, head_dim: int, dtype: torch.dtype,
    num_splits: int | None, device: torch.device, generator: torch.Generator,
) -> None:
    block_size = 16
    batch = make_paged_batch(SEQ_LENS, [1] * len(SEQ_LENS), block_size, generator, device)
    cache_shape = (batch.num_blocks, block_size, num_kv_heads, head_dim)
    k_cache = random_tensor(cache_shape, dtype, generator, device)
    v_cache = random_tensor(cache_shape, dtype, generator, device)
    poison_unused_slots(k_cache, batch)
    poison_unused_slots(v_cache, batch)
    q = random_tensor((len(SEQ_LENS), num_heads, head_dim), dtype, generator, device)
    out = nan_like(q)
    config = DecodeConfig(num_splits=num_splits, block_n=64 if FULL else 32,
                          min_tokens_per_split=256 if FULL else 16)
    scale = head_dim**-0.5
    paged_decode_attention(q, k_cache, v_cache, batch.block_tables, batch.seq_lens, scale, out,
                           max_seq_len=batch.max_seq_len, config=config)
    ref = paged_decode_attention_ref(q, k_cache, v_cache, batch.block_tables, batch.seq_lens, scale)
    assert not out.isnan().any()
    assert relative_error(out, ref) < TOLERANCE[dtype]


FP8_CASES = [(*h, d, s) for h in HEADS[:2] for d in DTYPES for s in SPLITS[:2]] if FULL else [
    (4, 4, 64, F32, 5), (6, 2, 128, BF16, None), (8, 1, 64, F16, 1)]


@pytest.mark.parametrize(("num_heads", "num_kv_heads", "head_dim", "dtype", "num_splits"), FP8_CASES)
def test_decode_reads_an_fp8_cache(
    num_heads: int, num_kv_heads: int, head_dim: int, dtype: torch.dtype,
    num_splits: int | None, device: torch.device, generator: torch.Generator,
) -> None:
    """The kernel and its reference read the same fp8 cache (so agree to `dtype`'s
    tolerance), and both stay within quantisation error of the unrounded cache."""
    block_size = 16
    batch = make_paged_batch(SEQ_LENS, [1] * len(SEQ_LENS), block_size, generator, device)
    cache_shape = (batch.num_blocks, block_size, num_kv_heads, head_dim)
    k_full = random_tensor(cache_shape, dtype, generator, device)
    v_full = random_tensor(cache_shape, dtype, generator, device)
    poison_unused_slots(k_full, batch)
    poison_unused_slots(v_full, batch)
    k_cache, v_cache = to_cache_dtype(k_full, FP8_DTYPE), to_cache_dtype(v_full, FP8_DTYPE)
    q = random_tensor((len(SEQ_LENS), num_heads, head_dim), dtype, generator, device)
    out = nan_like(q)
    config = DecodeConfig(num_splits=num_splits, block_n=64 if FULL else 32,
                          min_tokens_per_split=256 if FULL else 16)
    scale = head_dim**-0.5
    paged_decode_attention(q, k_cache, v_cache, batch.block_tables, batch.seq_lens, scale, out,
                           max_seq_len=batch.max_seq_len, config=config)
    ref = paged_decode_attention_ref(q, k_cache, v_cache, batch.block_tables, batch.seq_lens, scale)
    unrounded = paged_decode_attention_ref(q, k_full, v_full, batch.block_tables, batch.seq_lens, scale)
    assert not out.isnan().any()
    assert relative_error(out, ref) < TOLERANCE[dtype]
    assert relative_error(out, unrounded) < FP8_KV_TOLERANCE


def test_decode_rejects_a_cache_of_another_float_dtype(
    device: torch.device, generator: torch.Generator,
) -> None:
    batch = make_paged_batch([5], [1], 16, generator, device)
    cache = random_tensor((batch.num_blocks, 16, 2, 64), torch.float16, generator, device)
    q = random_tensor((1, 4, 64), torch.bfloat16, generator, device)
    with pytest.raises(ValueError, match=r"k_cache must be torch\.bfloat16"):
        paged_decode_attention(q, cache, cache.clone(), batch.block_tables, batch.seq_lens, 0.1,
                               torch.empty_like(q), max_seq_len=5)


def test_decode_non_power_of_two_head_dim_and_block_size(
    device: torch.device, generator: torch.Generator,
) -> None:
    block_size, head_dim, num_heads, num_kv_heads = 8, 80, 6, 2
    seq_lens = [3, 8, 41]
    batch = make_paged_batch(seq_lens, [1] * 3, block_size, generator, device)
    cache_shape = (batch.num_blocks, block_size, num_kv_heads, head_dim)
    k_cache = random_tensor(cache_shape, torch.float32, generator, device)
    v_cache = random_tensor(cache_shape, torch.float32, generator, device)
    q = random_tensor((3, num_heads, head_dim), torch.float32, generator, device)
    out = nan_like(q)
    paged_decode_attention(q, k_cache, v_cache, batch.block_tables, batch.seq_lens, 0.3, out,
                           max_seq_len=41, config=DecodeConfig(num_splits=2, block_n=16))
    ref = paged_decode_attention_ref(q, k_cache, v_cache, batch.block_tables, batch.seq_lens, 0.3)
    assert relative_error(out, ref) < TOLERANCE[torch.float32]


@pytest.mark.parametrize(
    ("num_seqs", "num_kv_heads", "max_seq_len", "expected"),
    [
        (64, 8, 4096, 1),  # 512 programs already cover 132 SMs twice
        (1, 8, 32768, 32),  # one long sequence: as many splits as allowed
        (1, 8, 300, 1),  # too short to split
        (4, 8, 4096, 8),  # 32 programs: 8 splits give 256, about two waves
    ],
)
def test_choose_num_splits(num_seqs: int, num_kv_heads: int, max_seq_len: int, expected: int) -> None:
    config = DecodeConfig(programs_per_sm=2, min_tokens_per_split=256, max_splits=32)
    assert choose_num_splits(num_seqs, num_kv_heads, max_seq_len, 132, config) == expected


def test_rejects_mismatched_shapes(device: torch.device, generator: torch.Generator) -> None:
    batch = make_paged_batch([5], [1], 16, generator, device)
    k_cache = random_tensor((batch.num_blocks, 16, 2, 64), torch.float32, generator, device)
    q = random_tensor((1, 3, 64), torch.float32, generator, device)  # 3 heads over 2 KV heads
    with pytest.raises(ValueError, match="multiple"):
        paged_decode_attention(q, k_cache, k_cache, batch.block_tables, batch.seq_lens, 1.0,
                               nan_like(q), max_seq_len=5)


# (sliding_window, softcap, num_splits, dtype): windows shorter than, equal to and longer than
# the sequences (1 sees only the query's own key), a hard cap (1.0 bends every score) and
# Gemma 2's 50.0, split and unsplit.
WINDOWED = [(1, None, 1, F32), (16, 1.0, 5, F32), (40, None, None, BF16), (4096, 50.0, 3, F16),
            (None, 1.0, None, F32)]


@pytest.mark.parametrize(("sliding_window", "softcap", "num_splits", "dtype"), WINDOWED)
def test_decode_window_and_softcap_match_reference(
    sliding_window: int | None, softcap: float | None, num_splits: int | None, dtype: torch.dtype,
    device: torch.device, generator: torch.Generator,
) -> None:
    """Keys before the window are NaN: a kernel that read one (or a freed block) fails."""
    block_size, num_heads, num_kv_heads, head_dim = 16, 6, 2, 64
    batch = make_paged_batch(SEQ_LENS, [1] * len(SEQ_LENS), block_size, generator, device)
    cache_shape = (batch.num_blocks, block_size, num_kv_heads, head_dim)
    k_cache = random_tensor(cache_shape, dtype, generator, device)
    v_cache = random_tensor(cache_shape, dtype, generator, device)
    poison_unused_slots(k_cache, batch, sliding_window)
    poison_unused_slots(v_cache, batch, sliding_window)
    q = random_tensor((len(SEQ_LENS), num_heads, head_dim), dtype, generator, device) * 3
    out = nan_like(q)
    config = DecodeConfig(num_splits=num_splits, block_n=64 if FULL else 16,
                          min_tokens_per_split=256 if FULL else 16)
    scale = head_dim**-0.5
    paged_decode_attention(q, k_cache, v_cache, batch.block_tables, batch.seq_lens, scale, out,
                           max_seq_len=batch.max_seq_len, config=config,
                           sliding_window=sliding_window, softcap=softcap)
    ref = paged_decode_attention_ref(q, k_cache, v_cache, batch.block_tables, batch.seq_lens,
                                     scale, sliding_window, softcap)
    assert not out.isnan().any()
    assert relative_error(out, ref) < TOLERANCE[dtype]
    if sliding_window is not None and sliding_window < batch.max_seq_len:  # in float32
        args = (q.float(), k_cache.float().nan_to_num(), v_cache.float().nan_to_num(),
                batch.block_tables, batch.seq_lens, scale)
        full = paged_decode_attention_ref(*args, None, softcap)
        windowed = paged_decode_attention_ref(*args, sliding_window, softcap)
        assert relative_error(full, windowed) > 1e-3, "the window must matter"


def test_decode_rejects_an_empty_window(device: torch.device, generator: torch.Generator) -> None:
    batch = make_paged_batch([5], [1], 16, generator, device)
    k_cache = random_tensor((batch.num_blocks, 16, 2, 64), torch.float32, generator, device)
    q = random_tensor((1, 2, 64), torch.float32, generator, device)
    with pytest.raises(ValueError, match="sliding_window"):
        paged_decode_attention(q, k_cache, k_cache, batch.block_tables, batch.seq_lens, 1.0,
                               nan_like(q), max_seq_len=5, sliding_window=0)

"""Paged decode attention: one query token per sequence, split-KV (flash-decoding).

One program serves every query head of one KV head (GQA: K/V are read once for the group),
walking its share of the sequence's block table with an online softmax. Long contexts and
small batches leave most SMs idle with one program per (sequence, KV head), so the sequence
is cut into `num_splits` parts whose partial results a second kernel merges by their
log-sum-exp. The result is exact for any `num_splits`; the count only decides speed.

With a sliding window the walk starts at the window's first key, so keys (and blocks) before
it are never read and the split count follows the window, not the sequence length. Gemma 2's
soft-capping bends the scores (`cap * tanh(s / cap)`) before the softmax.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from pagefleet.kernels.attention_mask import check_window_and_cap, first_visible_key, soft_cap
from pagefleet.kernels.checks import (
    check_float,
    check_kv_caches,
    check_last_dim_contiguous,
    check_shape,
    upcast_dot_operands,
)
from pagefleet.kernels.host_math import cdiv, next_power_of_2
from pagefleet.kernels.soft_cap import soft_cap_tile

LOG2E = 1.4426950408889634


@dataclass(frozen=True, slots=True)
class DecodeConfig:
    """Launch parameters; `num_splits=None` picks the count from batch and length."""

    # Defaults from `pagefleet bench kernels --tune` on an H100 (docs/benchmarks.md).
    block_n: int = 64  # KV tokens per tile
    num_warps: int = 4
    num_stages: int = 3
    num_splits: int | None = None
    programs_per_sm: int = 2  # split until the grid has this many programs per SM
    min_tokens_per_split: int = 256
    max_splits: int = 32

    def __post_init__(self) -> None:
        if self.block_n < 16 or self.block_n & (self.block_n - 1):
            raise ValueError(f"block_n must be a power of two >= 16, got {self.block_n}")
        if self.num_splits is not None and self.num_splits < 1:
            raise ValueError(f"num_splits must be >= 1, got {self.num_splits}")


def choose_num_splits(
    num_seqs: int, num_kv_heads: int, max_seq_len: int, num_sms: int, config: DecodeConfig,
) -> int:
    """Enough programs to fill the GPU evenly, never splits shorter than the minimum."""
    if config.num_splits is not None:
        return config.num_splits
    programs = max(1, num_seqs * num_kv_heads)
    by_occupancy = cdiv(config.programs_per_sm * num_sms, programs)
    by_length = max(1, max_seq_len // config.min_tokens_per_split)
    splits = max(1, min(by_occupancy, by_length, config.max_splits))
    return 1 << (splits.bit_length() - 1)  # a power of two: few compiled variants


# Block-table width and split count change from step to step: one compiled kernel serves
# them all (by default Triton would compile a variant per divisibility class).
@triton.jit(do_not_specialize=["num_splits", "stride_table_seq"])
def _paged_decode_attention_kernel(
    q_ptr, k_cache_ptr, v_cache_ptr, block_tables_ptr, seq_lens_ptr,
    out_ptr, partial_out_ptr, partial_lse_ptr,
    qk_scale, num_splits, sliding_window, softcap,
    stride_q_token, stride_q_head,
    stride_cache_block, stride_cache_slot, stride_cache_head,
    stride_table_seq,
    stride_out_token, stride_out_head,
    stride_partial_seq, stride_partial_head, stride_partial_split,
    QUERIES_PER_KV: tl.constexpr, GROUP_PAD: tl.constexpr,
    HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr,
    BLOCK_SIZE: tl.constexpr, BLOCK_N: tl.constexpr, SPLIT: tl.constexpr,
    DOT_PRECISION: tl.constexpr, UPCAST_DOT: tl.constexpr,
    HAS_WINDOW: tl.constexpr, HAS_SOFTCAP: tl.constexpr,
):
    seq = tl.program_id(0)
    kv_head = tl.program_id(1)
    split = tl.program_id(2)
    seq_len = tl.load(seq_lens_ptr + seq)
    first_key = 0
    if HAS_WINDOW:  # the one query (position seq_len - 1) sees the last `sliding_window` keys
        first_key = tl.maximum(seq_len - sliding_window, 0)
    tokens_per_split = tl.cdiv(tl.cdiv(seq_len - first_key, num_splits), BLOCK_N) * BLOCK_N
    start = first_key + split * tokens_per_split
    end = tl.minimum(start + tokens_per_split, seq_len)

    offs_g = tl.arange(0, GROUP_PAD)
    offs_d = tl.arange(0, HEAD_DIM_PAD)
    offs_n = tl.arange(0, BLOCK_N)
    heads = kv_head * QUERIES_PER_KV + offs_g
    g_mask = offs_g < QUERIES_PER_KV
    d_mask = offs_d < HEAD_DIM
    q = tl.load(
        q_ptr + seq * stride_q_token + heads[:, None] * stride_q_head + offs_d[None, :],
        mask=g_mask[:, None] & d_mask[None, :], other=0.0,
    )  # [GROUP_PAD, HEAD_DIM_PAD]
    if UPCAST_DOT:
        q = q.to(tl.float32)
    table_ptr = block_tables_ptr + seq.to(tl.int64) * stride_table_seq
    head_offset = kv_head * stride_cache_head

    m_i = tl.full([GROUP_PAD], float("-inf"), tl.float32)
    l_i = tl.zeros([GROUP_PAD], tl.float32)
    acc = tl.zeros([GROUP_PAD, HEAD_DIM_PAD], tl.float32)
    for tile_start in range(start, end, BLOCK_N):
        tokens = tile_start + offs_n
        n_mask = tokens < end
        blocks = tl.load(table_ptr + tokens // BLOCK_SIZE, mask=n_mask, other=0).to(tl.int64)
        rows = blocks * stride_cache_block + (tokens % BLOCK_SIZE) * stride_cache_slot + head_offset
        kv_mask = n_mask[:, None] & d_mask[None, :]
        # An fp8 cache is read back as the query's dtype (float32 with UPCAST_DOT).
        k = tl.load(k_cache_ptr + rows[:, None] + offs_d[None, :], mask=kv_mask, other=0.0).to(q.dtype)
        scores = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale  # [G, N]
        if HAS_SOFTCAP:
            scores = soft_cap_tile(scores, softcap)
        scores = tl.where(n_mask[None, :], scores, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(scores, 1))
        alpha = tl.math.exp2(m_i - m_new)
        p = tl.math.exp2(scores - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(v_cache_ptr + rows[:, None] + offs_d[None, :], mask=kv_mask, other=0.0).to(q.dtype)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
        m_i = m_new

    has_keys = l_i > 0.0  # false only for an empty split (or an empty padding sequence)
    result = acc / tl.where(has_keys, l_i, 1.0)[:, None]
    if SPLIT:
        partial = (
            seq.to(tl.int64) * stride_partial_seq + heads[:, None] * stride_partial_head
            + split * stride_partial_split + offs_d[None, :]
        )
        tl.store(partial_out_ptr + partial, result, mask=g_mask[:, None] & d_mask[None, :])
        lse = tl.where(has_keys, m_i + tl.math.log2(tl.where(has_keys, l_i, 1.0)), float("-inf"))
        lse_offsets = (seq * tl.num_programs(1) * QUERIES_PER_KV + heads) * num_splits + split
        tl.store(partial_lse_ptr + lse_offsets, lse, mask=g_mask)
    else:
        out_offsets = seq * stride_out_token + heads[:, None] * stride_out_head + offs_d[None, :]
        tl.store(out_ptr + out_offsets, result.to(out_ptr.dtype.element_ty),
                 mask=g_mask[:, None] & d_mask[None, :])


@triton.jit
def _paged_decode_reduce_kernel(
    partial_out_ptr, partial_lse_ptr, out_ptr, num_splits,
    stride_partial_seq, stride_partial_head, stride_partial_split,
    stride_out_token, stride_out_head,
    HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr, SPLITS_PAD: tl.constexpr,
):
    seq = tl.program_id(0)
    head = tl.program_id(1)
    offs_s = tl.arange(0, SPLITS_PAD)
    offs_d = tl.arange(0, HEAD_DIM_PAD)
    s_mask = offs_s < num_splits
    d_mask = offs_d < HEAD_DIM
    lse = tl.load(
        partial_lse_ptr + (seq * tl.num_programs(1) + head) * num_splits + offs_s,
        mask=s_mask, other=float("-inf"),
    )
    lse_max = tl.max(lse, 0)
    lse_max = tl.where(lse_max == float("-inf"), 0.0, lse_max)
    weights = tl.math.exp2(lse - lse_max)  # empty splits weigh 0
    total = tl.sum(weights, 0)
    partial = tl.load(
        partial_out_ptr + seq.to(tl.int64) * stride_partial_seq + head * stride_partial_head
        + offs_s[:, None] * stride_partial_split + offs_d[None, :],
        mask=s_mask[:, None] & d_mask[None, :], other=0.0,
    )
    result = tl.sum(partial * weights[:, None], 0) / tl.where(total > 0.0, total, 1.0)
    tl.store(out_ptr + seq * stride_out_token + head * stride_out_head + offs_d,
             result.to(out_ptr.dtype.element_ty), mask=d_mask)


def _num_sms(device: torch.device) -> int:
    if device.type != "cuda":
        return 4  # the CPU interpreter: a token "GPU" so tests exercise the split path
    return torch.cuda.get_device_properties(device).multi_processor_count


def paged_decode_attention(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
    block_tables: torch.Tensor, seq_lens: torch.Tensor, scale: float, out: torch.Tensor,
    max_seq_len: int, config: DecodeConfig | None = None,
    sliding_window: int | None = None, softcap: float | None = None,
) -> torch.Tensor:
    """Attention of one query token per sequence, `q` `[num_seqs, num_heads, head_dim]`.

    `max_seq_len` is a host-side bound (no device sync) used only to choose the split count;
    the kernels read the true lengths from `seq_lens`. `sliding_window`: the query sees only
    the last that many keys (None: all); `softcap`: scores become `cap * tanh(s / cap)`.
    Writes `out` and returns it.
    """
    config = config or DecodeConfig()
    num_seqs, num_heads, head_dim = q.shape
    _, block_size, num_kv_heads, _ = k_cache.shape
    _check_args(q, k_cache, v_cache, block_tables, seq_lens, out, num_kv_heads, head_dim)
    check_window_and_cap(sliding_window, softcap)
    if num_seqs == 0:
        return out
    queries_per_kv = num_heads // num_kv_heads
    num_keys = max_seq_len if sliding_window is None else min(max_seq_len, sliding_window)
    num_splits = choose_num_splits(num_seqs, num_kv_heads, num_keys, _num_sms(q.device), config)
    split = num_splits > 1
    partial_out = partial_lse = out  # unused placeholders when not split
    if split:
        partial_out = torch.empty(
            (num_seqs, num_heads, num_splits, head_dim), dtype=torch.float32, device=q.device)
        partial_lse = torch.empty((num_seqs, num_heads, num_splits), dtype=torch.float32,
                                  device=q.device)
    head_dim_pad = next_power_of_2(head_dim)
    _paged_decode_attention_kernel[(num_seqs, num_kv_heads, num_splits)](
        q, k_cache, v_cache, block_tables, seq_lens, out, partial_out, partial_lse,
        scale * LOG2E, num_splits, sliding_window or 0, (softcap or 1.0) * LOG2E,
        q.stride(0), q.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        block_tables.stride(0), out.stride(0), out.stride(1),
        partial_out.stride(0) if split else 0, partial_out.stride(1) if split else 0,
        partial_out.stride(2) if split else 0,
        QUERIES_PER_KV=queries_per_kv, GROUP_PAD=max(16, next_power_of_2(queries_per_kv)),
        HEAD_DIM=head_dim, HEAD_DIM_PAD=head_dim_pad, BLOCK_SIZE=block_size,
        BLOCK_N=config.block_n, SPLIT=split,
        DOT_PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
        UPCAST_DOT=upcast_dot_operands(q),
        HAS_WINDOW=sliding_window is not None, HAS_SOFTCAP=softcap is not None,
        num_warps=config.num_warps, num_stages=config.num_stages,
    )
    if split:
        _paged_decode_reduce_kernel[(num_seqs, num_heads)](
            partial_out, partial_lse, out, num_splits,
            partial_out.stride(0), partial_out.stride(1), partial_out.stride(2),
            out.stride(0), out.stride(1),
            HEAD_DIM=head_dim, HEAD_DIM_PAD=head_dim_pad,
            SPLITS_PAD=next_power_of_2(num_splits), num_warps=4,
        )
    return out


def _check_args(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor,
    seq_lens: torch.Tensor, out: torch.Tensor, num_kv_heads: int, head_dim: int,
) -> None:
    num_seqs, num_heads, _ = q.shape
    check_shape("q", q, (num_seqs, num_heads, head_dim))
    check_shape("out", out, tuple(q.shape))
    check_shape("v_cache", v_cache, tuple(k_cache.shape))
    check_shape("seq_lens", seq_lens, (num_seqs,))
    if block_tables.dim() != 2 or block_tables.shape[0] != num_seqs:
        raise ValueError(f"block_tables must be [num_seqs={num_seqs}, max_blocks], got {tuple(block_tables.shape)}")
    if num_heads % num_kv_heads:
        raise ValueError(f"num_heads {num_heads} is not a multiple of num_kv_heads {num_kv_heads}")
    for name, tensor in (("q", q), ("out", out)):
        check_float(name, tensor)
        check_last_dim_contiguous(name, tensor)
    check_kv_caches(k_cache, v_cache, q.dtype)
    for name, tensor in (("block_tables", block_tables), ("seq_lens", seq_lens)):
        if tensor.dtype != torch.int32:
            raise ValueError(f"{name} must be int32, got {tensor.dtype}")
    if block_tables.stride(1) != 1:
        raise ValueError("block_tables must be contiguous in its last dimension")


def paged_decode_attention_ref(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
    block_tables: torch.Tensor, seq_lens: torch.Tensor, scale: float,
    sliding_window: int | None = None, softcap: float | None = None,
) -> torch.Tensor:
    """Plain torch, in float32: gather each sequence's keys and values (from the window's
    first, when windowed), softmax, weight. An fp8 cache's values are exact in float32, so
    the kernel, which reads them as the query's dtype, sees the same keys and values."""
    num_heads = q.shape[1]
    num_kv_heads = k_cache.shape[2]
    block_size = k_cache.shape[1]
    out = torch.empty_like(q)
    for s, seq_len in enumerate(seq_lens.tolist()):
        num_blocks = cdiv(seq_len, block_size)
        blocks = block_tables[s, :num_blocks].long()
        first = first_visible_key(seq_len, 1, sliding_window)
        keys = k_cache[blocks].flatten(0, 1)[first:seq_len].float()  # [keys, kv_heads, dim]
        values = v_cache[blocks].flatten(0, 1)[first:seq_len].float()
        keys = keys.repeat_interleave(num_heads // num_kv_heads, dim=1)
        values = values.repeat_interleave(num_heads // num_kv_heads, dim=1)
        scores = soft_cap(torch.einsum("hd,thd->ht", q[s].float(), keys) * scale, softcap)
        out[s] = torch.einsum("ht,thd->hd", scores.softmax(-1), values).to(q.dtype)
    return out

"""Paged prefill / chunked-prefill attention for variable-length causal queries.

Sequence `s` brings `query_len` new tokens (rows `query_start_loc[s]..[s+1]` of `q`) at the
end of its `seq_len` tokens, all already in the paged cache. Query row `i` sits at position
`seq_len - query_len + i` and sees keys `0..` that position. Decode rows are query_len 1, so
one launch serves a mixed batch. Grid: (query tiles, groups of query heads, sequences); key
tiles before the first row's position need no causal mask and run unmasked.

GQA: query heads that read the same KV head share each K/V tile. A program's BLOCK_M rows are
`BLOCK_M // HEADS_PER_PROGRAM` tokens times `HEADS_PER_PROGRAM` heads of one KV group (token-
major), so every gathered key tile feeds that many heads' dot products instead of being
gathered again by each head's own program, and the causal diagonal spans fewer keys per tile.

With a sliding window a row sees only its last `sliding_window` keys: the walk starts at the
first key the tile's first row sees (earlier blocks are never read), and tiles that some rows
see and others do not run masked. Gemma 2's soft-capping bends scores before the softmax.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from pagefleet.kernels.attention_mask import (
    check_window_and_cap,
    first_visible_key,
    soft_cap,
    visible_keys,
)
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
class PrefillConfig:
    # Defaults from `pagefleet bench kernels --tune` on an H200 at 4 x 4096, 8B shapes
    # (docs/benchmarks.md): 64 tokens x 4 heads of a KV group per program, 64 keys a tile.
    block_m: int = 256  # query rows (tokens x shared heads) per program
    block_n: int = 64  # keys per tile
    num_warps: int = 8
    num_stages: int = 3

    max_shared_heads: int = 8  # query heads of one KV group per program (1: one head each)

    def __post_init__(self) -> None:
        for name in ("block_m", "block_n"):
            value = getattr(self, name)
            if value < 16 or value & (value - 1):
                raise ValueError(f"{name} must be a power of two >= 16, got {value}")
        if self.max_shared_heads < 1 or self.max_shared_heads & (self.max_shared_heads - 1):
            raise ValueError(f"max_shared_heads must be a power of two >= 1, got {self.max_shared_heads}")


def default_config(head_dim: int) -> PrefillConfig:
    """The tuned launch for head sizes up to 128; larger heads (Gemma's 256) keep half the rows,
    so the float32 accumulator `[block_m, head_dim]` stays the same size in registers."""
    return PrefillConfig() if head_dim <= 128 else PrefillConfig(block_m=128)


def shared_heads(queries_per_kv: int, config: PrefillConfig) -> int:
    """Query heads per program: the largest power of two dividing the GQA group (so a program
    never straddles two KV heads), leaving at least 16 tokens per tile (`tl.dot`'s minimum)."""
    heads = 1
    while (queries_per_kv % (heads * 2) == 0 and heads * 2 <= config.max_shared_heads
           and config.block_m // (heads * 2) >= 16):
        heads *= 2
    return heads


@triton.jit
def _attend_tile(
    q, acc, m_i, l_i, tile_start, k_cache_ptr, v_cache_ptr, table_ptr, head_offset, q_pos,
    seq_len, qk_scale, sliding_window, softcap, stride_cache_block, stride_cache_slot,
    HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr, BLOCK_SIZE: tl.constexpr,
    BLOCK_N: tl.constexpr, MASKED: tl.constexpr, DOT_PRECISION: tl.constexpr,
    UPCAST_DOT: tl.constexpr, HAS_WINDOW: tl.constexpr, HAS_SOFTCAP: tl.constexpr,
):
    """One online-softmax step over keys `tile_start..+BLOCK_N` gathered from the block table."""
    offs_d = tl.arange(0, HEAD_DIM_PAD)
    tokens = tile_start + tl.arange(0, BLOCK_N)
    d_mask = offs_d < HEAD_DIM
    if MASKED:
        n_mask = tokens < seq_len
        if HAS_WINDOW:  # keys before the first row's window are dead: never load them
            n_mask = n_mask & (tokens > tl.min(q_pos, 0) - sliding_window)
    else:
        n_mask = tokens >= 0
    blocks = tl.load(table_ptr + tokens // BLOCK_SIZE, mask=n_mask, other=0).to(tl.int64)
    rows = blocks * stride_cache_block + (tokens % BLOCK_SIZE) * stride_cache_slot + head_offset
    kv_mask = n_mask[:, None] & d_mask[None, :]
    # An fp8 cache is read back as the query's dtype (float32 with UPCAST_DOT).
    k = tl.load(k_cache_ptr + rows[:, None] + tl.arange(0, HEAD_DIM_PAD)[None, :],
                mask=kv_mask, other=0.0).to(q.dtype)
    v = tl.load(v_cache_ptr + rows[:, None] + tl.arange(0, HEAD_DIM_PAD)[None, :],
                mask=kv_mask, other=0.0).to(q.dtype)
    scores = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale  # [M, N]
    if HAS_SOFTCAP:
        scores = soft_cap_tile(scores, softcap)
    if MASKED:
        visible = (tokens[None, :] <= q_pos[:, None]) & n_mask[None, :]
        if HAS_WINDOW:
            visible = visible & (tokens[None, :] > q_pos[:, None] - sliding_window)
        scores = tl.where(visible, scores, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(scores, 1))
    m_shift = m_new
    if HAS_WINDOW:  # a row may see none of a tile's keys yet: shift by 0, not by -inf
        m_shift = tl.where(m_new == float("-inf"), 0.0, m_new)
    alpha = tl.math.exp2(m_i - m_shift)
    p = tl.math.exp2(scores - m_shift[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
    return acc, m_new, l_i


@triton.jit
def _attend_range(
    q, acc, m_i, l_i, lo, hi, k_cache_ptr, v_cache_ptr, table_ptr, head_offset, q_pos,
    seq_len, qk_scale, sliding_window, softcap, stride_cache_block, stride_cache_slot,
    HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr, BLOCK_SIZE: tl.constexpr,
    BLOCK_N: tl.constexpr, MASKED: tl.constexpr, DOT_PRECISION: tl.constexpr,
    UPCAST_DOT: tl.constexpr, HAS_WINDOW: tl.constexpr, HAS_SOFTCAP: tl.constexpr,
):
    """`_attend_tile` over the key tiles `lo..hi` (tile-aligned), all masked or none."""
    for tile_start in range(lo, hi, BLOCK_N):
        acc, m_i, l_i = _attend_tile(
            q, acc, m_i, l_i, tile_start, k_cache_ptr, v_cache_ptr, table_ptr, head_offset,
            q_pos, seq_len, qk_scale, sliding_window, softcap, stride_cache_block,
            stride_cache_slot, HEAD_DIM, HEAD_DIM_PAD, BLOCK_SIZE, BLOCK_N, MASKED,
            DOT_PRECISION, UPCAST_DOT, HAS_WINDOW, HAS_SOFTCAP)
    return acc, m_i, l_i


# The block-table width changes from step to step: one compiled kernel serves every width
# (by default Triton would compile a variant per divisibility class of the stride).
@triton.jit(do_not_specialize=["stride_table_seq"])
def _paged_prefill_attention_kernel(
    q_ptr, k_cache_ptr, v_cache_ptr, block_tables_ptr, seq_lens_ptr, query_start_loc_ptr,
    out_ptr, qk_scale, sliding_window, softcap,
    stride_q_token, stride_q_head,
    stride_cache_block, stride_cache_slot, stride_cache_head,
    stride_table_seq, stride_out_token, stride_out_head,
    QUERIES_PER_KV: tl.constexpr, HEADS_PER_PROGRAM: tl.constexpr, HEAD_DIM: tl.constexpr,
    HEAD_DIM_PAD: tl.constexpr, BLOCK_SIZE: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr, DOT_PRECISION: tl.constexpr, UPCAST_DOT: tl.constexpr,
    HAS_WINDOW: tl.constexpr, HAS_SOFTCAP: tl.constexpr,
):
    BLOCK_T: tl.constexpr = BLOCK_M // HEADS_PER_PROGRAM  # query tokens per program
    m_block = tl.program_id(0)
    first_head = tl.program_id(1) * HEADS_PER_PROGRAM
    seq = tl.program_id(2)
    q_start = tl.load(query_start_loc_ptr + seq)
    query_len = tl.load(query_start_loc_ptr + seq + 1) - q_start
    if m_block * BLOCK_T >= query_len:
        return
    seq_len = tl.load(seq_lens_ptr + seq)
    context_len = seq_len - query_len

    rows = tl.arange(0, BLOCK_M)
    offs_m = m_block * BLOCK_T + rows // HEADS_PER_PROGRAM  # each row's token
    heads = first_head + rows % HEADS_PER_PROGRAM  # and its query head
    offs_d = tl.arange(0, HEAD_DIM_PAD)
    m_mask = offs_m < query_len
    d_mask = offs_d < HEAD_DIM
    q_pos = context_len + offs_m
    q_offsets = (q_start + offs_m).to(tl.int64) * stride_q_token + heads * stride_q_head
    q = tl.load(q_ptr + q_offsets[:, None] + offs_d[None, :],
                mask=m_mask[:, None] & d_mask[None, :], other=0.0)  # [BLOCK_M, HEAD_DIM_PAD]
    if UPCAST_DOT:
        q = q.to(tl.float32)
    table_ptr = block_tables_ptr + seq.to(tl.int64) * stride_table_seq
    head_offset = (first_head // QUERIES_PER_KV) * stride_cache_head

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM_PAD], tl.float32)
    # Keys before the tile's first query position are visible to every row: no mask.
    unmasked_end = (context_len + m_block * BLOCK_T) // BLOCK_N * BLOCK_N
    unmasked_start = 0
    if HAS_WINDOW:
        # Keys before the first row's window are never read; keys inside every row's window
        # (from the last row's first key on) need no mask; those between run masked.
        first_key = tl.maximum(context_len + m_block * BLOCK_T - sliding_window + 1, 0)
        last_row_key = context_len + tl.minimum((m_block + 1) * BLOCK_T, query_len) - sliding_window
        unmasked_start = tl.cdiv(tl.maximum(last_row_key, 0), BLOCK_N) * BLOCK_N
        first_tile = first_key // BLOCK_N * BLOCK_N
        unmasked_start = tl.maximum(first_tile, tl.minimum(unmasked_start, unmasked_end))
        acc, m_i, l_i = _attend_range(
            q, acc, m_i, l_i, first_tile, unmasked_start, k_cache_ptr, v_cache_ptr, table_ptr,
            head_offset, q_pos, seq_len, qk_scale, sliding_window, softcap, stride_cache_block,
            stride_cache_slot, HEAD_DIM, HEAD_DIM_PAD, BLOCK_SIZE, BLOCK_N, True, DOT_PRECISION,
            UPCAST_DOT, HAS_WINDOW, HAS_SOFTCAP)
    acc, m_i, l_i = _attend_range(
        q, acc, m_i, l_i, unmasked_start, unmasked_end, k_cache_ptr, v_cache_ptr, table_ptr,
        head_offset, q_pos, seq_len, qk_scale, sliding_window, softcap, stride_cache_block,
        stride_cache_slot, HEAD_DIM, HEAD_DIM_PAD, BLOCK_SIZE, BLOCK_N, False, DOT_PRECISION,
        UPCAST_DOT, HAS_WINDOW, HAS_SOFTCAP)
    kv_end = tl.minimum(seq_len, context_len + (m_block + 1) * BLOCK_T)
    acc, m_i, l_i = _attend_range(
        q, acc, m_i, l_i, unmasked_end, kv_end, k_cache_ptr, v_cache_ptr, table_ptr,
        head_offset, q_pos, seq_len, qk_scale, sliding_window, softcap, stride_cache_block,
        stride_cache_slot, HEAD_DIM, HEAD_DIM_PAD, BLOCK_SIZE, BLOCK_N, True, DOT_PRECISION,
        UPCAST_DOT, HAS_WINDOW, HAS_SOFTCAP)

    result = acc / tl.where(l_i > 0.0, l_i, 1.0)[:, None]  # only padding rows see no key
    out_offsets = (q_start + offs_m).to(tl.int64) * stride_out_token + heads * stride_out_head
    tl.store(out_ptr + out_offsets[:, None] + offs_d[None, :],
             result.to(out_ptr.dtype.element_ty), mask=m_mask[:, None] & d_mask[None, :])


def paged_prefill_attention(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
    block_tables: torch.Tensor, seq_lens: torch.Tensor, query_start_loc: torch.Tensor,
    scale: float, out: torch.Tensor, max_query_len: int, config: PrefillConfig | None = None,
    sliding_window: int | None = None, softcap: float | None = None,
) -> torch.Tensor:
    """Causal attention of `q` `[num_tokens, num_heads, head_dim]` over the paged cache.

    `max_query_len` is a host-side bound (no device sync) that sizes the grid. A row sees only
    its last `sliding_window` keys (None: all of them); `softcap` caps the scores. Writes `out`.
    """
    num_tokens, num_heads, head_dim = q.shape
    config = config or default_config(head_dim)
    _, block_size, num_kv_heads, _ = k_cache.shape
    num_seqs = seq_lens.shape[0]
    check_shape("out", out, tuple(q.shape))
    check_shape("v_cache", v_cache, tuple(k_cache.shape))
    check_shape("query_start_loc", query_start_loc, (num_seqs + 1,))
    if k_cache.shape[3] != head_dim:
        raise ValueError(f"cache head_dim {k_cache.shape[3]} != q head_dim {head_dim}")
    if block_tables.dim() != 2 or block_tables.shape[0] != num_seqs:
        raise ValueError(f"block_tables must be [num_seqs={num_seqs}, max_blocks], got {tuple(block_tables.shape)}")
    if num_heads % num_kv_heads:
        raise ValueError(f"num_heads {num_heads} is not a multiple of num_kv_heads {num_kv_heads}")
    for name, tensor in (("q", q), ("out", out)):
        check_float(name, tensor)
        check_last_dim_contiguous(name, tensor)
    check_kv_caches(k_cache, v_cache, q.dtype)
    for name, tensor in (("block_tables", block_tables), ("seq_lens", seq_lens),
                         ("query_start_loc", query_start_loc)):
        if tensor.dtype != torch.int32:
            raise ValueError(f"{name} must be int32, got {tensor.dtype}")
    check_window_and_cap(sliding_window, softcap)
    if num_tokens == 0 or num_seqs == 0 or max_query_len == 0:
        return out
    heads_per_program = shared_heads(num_heads // num_kv_heads, config)
    grid = (cdiv(max_query_len, config.block_m // heads_per_program),
            num_heads // heads_per_program, num_seqs)
    _paged_prefill_attention_kernel[grid](
        q, k_cache, v_cache, block_tables, seq_lens, query_start_loc, out, scale * LOG2E,
        sliding_window or 0, (softcap or 1.0) * LOG2E,
        q.stride(0), q.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        block_tables.stride(0), out.stride(0), out.stride(1),
        QUERIES_PER_KV=num_heads // num_kv_heads, HEADS_PER_PROGRAM=heads_per_program, HEAD_DIM=head_dim,
        HEAD_DIM_PAD=next_power_of_2(head_dim), BLOCK_SIZE=block_size,
        BLOCK_M=config.block_m, BLOCK_N=config.block_n,
        DOT_PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
        UPCAST_DOT=upcast_dot_operands(q),
        HAS_WINDOW=sliding_window is not None, HAS_SOFTCAP=softcap is not None,
        num_warps=config.num_warps, num_stages=config.num_stages,
    )
    return out


def paged_prefill_attention_ref(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
    block_tables: torch.Tensor, seq_lens: torch.Tensor, query_start_loc: torch.Tensor,
    scale: float, sliding_window: int | None = None, softcap: float | None = None,
) -> torch.Tensor:
    """Plain torch, in float32: per sequence, gather the keys its queries can see (from the
    first row's window on) and run masked softmax attention."""
    num_heads = q.shape[1]
    block_size, num_kv_heads = k_cache.shape[1], k_cache.shape[2]
    out = torch.empty_like(q)
    starts = query_start_loc.tolist()
    for s, seq_len in enumerate(seq_lens.tolist()):
        q_start, q_end = starts[s], starts[s + 1]
        if q_end == q_start:
            continue
        first = first_visible_key(seq_len, q_end - q_start, sliding_window)
        blocks = block_tables[s, : cdiv(seq_len, block_size)].long()
        group = num_heads // num_kv_heads
        keys = k_cache[blocks].flatten(0, 1)[first:seq_len].float().repeat_interleave(group, dim=1)
        values = v_cache[blocks].flatten(0, 1)[first:seq_len].float().repeat_interleave(group, dim=1)
        scores = soft_cap(torch.einsum("qhd,khd->hqk", q[q_start:q_end].float(), keys) * scale, softcap)
        q_pos = torch.arange(seq_len - (q_end - q_start), seq_len, device=q.device)
        k_pos = torch.arange(first, seq_len, device=q.device)
        scores = scores.masked_fill(~visible_keys(q_pos[:, None], k_pos[None, :], sliding_window),
                                    float("-inf"))
        out[q_start:q_end] = torch.einsum("hqk,khd->qhd", scores.softmax(-1), values).to(q.dtype)
    return out

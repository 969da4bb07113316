"""A mixture-of-experts SwiGLU layer as two grouped GEMMs (vLLM's fused-MoE scheme).

Each token picks `top_k` experts, so a step holds `num_pairs = num_tokens * top_k` (token,
expert) pairs. Looping over experts in torch costs a host sync and several launches per expert;
instead the pairs are sorted by expert (`align_to_experts`, device-only torch ops of static
shape, so CUDA-graph safe) and padded so every `BLOCK_M` rows belong to one expert. One launch
then multiplies every row block by its expert's weights: gate_up for all experts at once, the
SiLU-and-mul kernel, and down for all experts at once (scaled by the routing weights). The
`top_k` rows of a token are summed at the end.

Weights use transformers' stacked layout: `w13` `[num_experts, 2 * inter, hidden]` (gate rows
then up rows) and `w2` `[num_experts, hidden, inter]`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from pagefleet.kernels.checks import check_float, check_shape, upcast_dot_operands
from pagefleet.kernels.host_math import cdiv
from pagefleet.kernels.silu_and_mul import silu_and_mul


@dataclass(frozen=True, slots=True)
class MoeBlockConfig:
    """Tile sizes of the grouped GEMMs; plain data picked by `moe_block_config`."""

    block_m: int
    block_n: int
    block_k: int
    num_warps: int
    num_stages: int


def moe_block_config(num_pairs: int, num_experts: int) -> MoeBlockConfig:
    """Small row blocks when each expert sees few rows (decode: padding is wasted weight reads
    and work), large ones when experts see hundreds of rows (prefill: compute-bound)."""
    rows_per_expert = num_pairs / num_experts  # tuned on the H200 at Qwen3-30B-A3B's shapes
    if rows_per_expert <= 8:
        return MoeBlockConfig(16, 64, 128, num_warps=4, num_stages=4)
    if rows_per_expert <= 16:  # a decode batch of 256: one 32-row block reads each expert once
        return MoeBlockConfig(32, 128, 128, num_warps=4, num_stages=3)
    if rows_per_expert <= 256:
        return MoeBlockConfig(64, 128, 64, num_warps=4, num_stages=3)
    return MoeBlockConfig(128, 128, 64, num_warps=8, num_stages=3)


@dataclass(frozen=True, slots=True)
class ExpertBlocks:
    """Pairs sorted by expert, each expert's run padded to a multiple of `block_m` rows."""

    sorted_pair_ids: torch.Tensor  # [max_blocks * block_m] int32; padding rows hold num_pairs
    block_experts: torch.Tensor  # [max_blocks] int32: the expert of each row block, -1 if unused
    block_m: int


def align_to_experts(topk_ids: torch.Tensor, num_experts: int, block_m: int) -> ExpertBlocks:
    """`topk_ids` `[num_tokens, top_k]` -> pair ids (`token * top_k + slot`) grouped by expert.

    Sizes depend only on the input's shape (the blocks needed are at most
    `cdiv(num_pairs, block_m) + min(num_experts, num_pairs)`), never on its values, so
    nothing waits for the device and the launch grid is fixed under CUDA graphs.
    """
    flat = topk_ids.reshape(-1).long()
    num_pairs = flat.numel()
    device = flat.device
    max_blocks = cdiv(num_pairs, block_m) + min(num_experts, num_pairs)
    counts = torch.zeros(num_experts, dtype=torch.int64, device=device)
    counts.scatter_add_(0, flat, torch.ones_like(flat))
    padded_ends = torch.cumsum((counts + block_m - 1) // block_m * block_m, 0)  # [E]
    order = torch.argsort(flat, stable=True)  # pair ids, by expert
    experts = flat[order]
    rank_in_expert = torch.arange(num_pairs, device=device) - (torch.cumsum(counts, 0) - counts)[experts]
    padded_starts = padded_ends - (counts + block_m - 1) // block_m * block_m
    sorted_pair_ids = torch.full((max_blocks * block_m,), num_pairs, dtype=torch.int32, device=device)
    sorted_pair_ids[padded_starts[experts] + rank_in_expert] = order.to(torch.int32)
    block_starts = torch.arange(max_blocks, device=device) * block_m
    block_experts = torch.searchsorted(padded_ends, block_starts, right=True)
    block_experts = torch.where(block_experts < num_experts, block_experts, -1).to(torch.int32)
    return ExpertBlocks(sorted_pair_ids, block_experts, block_m)


@triton.jit
def _fused_moe_kernel(
    a_ptr, w_ptr, out_ptr, sorted_pair_ids_ptr, block_experts_ptr, pair_weights_ptr,
    num_pairs, N, K,
    stride_a_row, stride_w_expert, stride_w_n, stride_w_k, stride_out_row,
    ROWS_PER_A: tl.constexpr, MUL_WEIGHTS: tl.constexpr, UPCAST: tl.constexpr,
    DOT_PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """out[pair] = a[pair // ROWS_PER_A] @ w[expert].T (times the pair's weight) for one
    `BLOCK_M x BLOCK_N` tile of one expert's rows."""
    block = tl.program_id(0)
    expert = tl.load(block_experts_ptr + block).to(tl.int64)
    if expert < 0:
        return
    pair_ids = tl.load(sorted_pair_ids_ptr + block * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    row_mask = pair_ids < num_pairs
    a_rows = pair_ids // ROWS_PER_A
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    col_mask = cols < N
    ks = tl.arange(0, BLOCK_K)
    a_ptrs = a_ptr + a_rows[:, None] * stride_a_row + ks[None, :]
    w_ptrs = w_ptr + expert * stride_w_expert + cols[None, :] * stride_w_n + ks[:, None] * stride_w_k
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k_mask = ks < K - k0
        a = tl.load(a_ptrs, mask=row_mask[:, None] & k_mask[None, :], other=0.0)
        w = tl.load(w_ptrs, mask=k_mask[:, None] & col_mask[None, :], other=0.0)  # [BLOCK_K, BLOCK_N]
        if UPCAST:
            a = a.to(tl.float32)
            w = w.to(tl.float32)
        acc = tl.dot(a, w, acc, input_precision=DOT_PRECISION)
        a_ptrs += BLOCK_K
        w_ptrs += BLOCK_K * stride_w_k
    if MUL_WEIGHTS:
        pair_weights = tl.load(pair_weights_ptr + pair_ids, mask=row_mask, other=0.0).to(tl.float32)
        acc = acc * pair_weights[:, None]
    out_ptrs = out_ptr + pair_ids[:, None] * stride_out_row + cols[None, :]
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=row_mask[:, None] & col_mask[None, :])


def _grouped_gemm(a: torch.Tensor, w: torch.Tensor, out: torch.Tensor, blocks: ExpertBlocks,
                  rows_per_a: int, pair_weights: torch.Tensor | None, config: MoeBlockConfig) -> None:
    """One launch for every expert: `out` `[num_pairs, N]` from `a` rows and `w` `[E, N, K]`."""
    num_pairs, n = out.shape
    grid = (blocks.block_experts.numel(), cdiv(n, config.block_n))
    _fused_moe_kernel[grid](
        a, w, out, blocks.sorted_pair_ids, blocks.block_experts,
        out if pair_weights is None else pair_weights,
        num_pairs, n, w.shape[2],
        a.stride(0), w.stride(0), w.stride(1), w.stride(2), out.stride(0),
        ROWS_PER_A=rows_per_a, MUL_WEIGHTS=pair_weights is not None, UPCAST=upcast_dot_operands(a),
        DOT_PRECISION="ieee" if a.dtype == torch.float32 else "tf32",
        BLOCK_M=config.block_m, BLOCK_N=config.block_n, BLOCK_K=config.block_k,
        num_warps=config.num_warps, num_stages=config.num_stages,
    )


def _check_moe_args(x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor,
                    topk_weights: torch.Tensor, topk_ids: torch.Tensor) -> None:
    for name, tensor in (("x", x), ("w13", w13), ("w2", w2)):
        check_float(name, tensor)
        if not tensor.is_contiguous():
            raise ValueError(f"{name} must be contiguous")
    if x.dim() != 2 or w13.dim() != 3 or w13.shape[1] % 2:
        raise ValueError(f"x must be [tokens, hidden] and w13 [experts, 2 * inter, hidden], got "
                         f"{tuple(x.shape)} and {tuple(w13.shape)}")
    num_experts, two_inter, hidden = w13.shape
    check_shape("w13", w13, (num_experts, two_inter, x.shape[1]))
    check_shape("w2", w2, (num_experts, hidden, two_inter // 2))
    if topk_ids.dim() != 2 or topk_ids.shape[0] != x.shape[0]:
        raise ValueError(f"topk_ids must be [{x.shape[0]}, top_k], got {tuple(topk_ids.shape)}")
    if topk_ids.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"topk_ids must be int32 or int64, got {topk_ids.dtype}")
    check_shape("topk_weights", topk_weights, tuple(topk_ids.shape))
    if x.dtype != w13.dtype or x.dtype != w2.dtype:
        raise ValueError(f"x, w13 and w2 must share a dtype, got {x.dtype}, {w13.dtype}, {w2.dtype}")


def fused_moe(x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, topk_weights: torch.Tensor,
              topk_ids: torch.Tensor, out: torch.Tensor, config: MoeBlockConfig | None = None) -> torch.Tensor:
    """`x` `[num_tokens, hidden]` -> `out` `[num_tokens, hidden]`: each token's experts' SwiGLU
    outputs weighted by `topk_weights` `[num_tokens, top_k]` and summed. `config` overrides
    `moe_block_config` (tuning)."""
    _check_moe_args(x, w13, w2, topk_weights, topk_ids)
    check_shape("out", out, tuple(x.shape))
    num_tokens, top_k = topk_ids.shape
    num_pairs, inter = num_tokens * top_k, w13.shape[1] // 2
    if num_tokens == 0:
        return out
    config = config or moe_block_config(num_pairs, w13.shape[0])
    blocks = align_to_experts(topk_ids, w13.shape[0], config.block_m)
    gate_up = x.new_empty(num_pairs, 2 * inter)  # [pairs, 2 * inter]
    _grouped_gemm(x, w13, gate_up, blocks, top_k, None, config)
    activated = silu_and_mul(gate_up, x.new_empty(num_pairs, inter))  # [pairs, inter]
    down = x.new_empty(num_pairs, x.shape[1])  # [pairs, hidden], already weighted
    _grouped_gemm(activated, w2, down, blocks, 1, topk_weights.contiguous().view(-1), config)
    return torch.sum(down.view(num_tokens, top_k, -1), dim=1, out=out)


def fused_moe_ref(x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, topk_weights: torch.Tensor,
                  topk_ids: torch.Tensor) -> torch.Tensor:
    """Expert by expert in float32 (transformers' loop): the CPU path and the kernel's reference."""
    _check_moe_args(x, w13, w2, topk_weights, topk_ids)
    out = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
    for expert in topk_ids.unique().tolist():
        token_ids, slots = (topk_ids == expert).nonzero(as_tuple=True)
        gate, up = F.linear(x[token_ids].float(), w13[expert].float()).chunk(2, dim=-1)
        y = F.linear(F.silu(gate) * up, w2[expert].float())  # [n, hidden]
        out.index_add_(0, token_ids, y * topk_weights[token_ids, slots, None].float())
    return out.to(x.dtype)

"""Weight-only int4 GEMM (w4a16): `y = x @ dequant(W)^T` reading a quarter of bf16's weight bytes.

Decode is bound by reading weights, so int4 weights make it up to 4x cheaper; the
activations stay in their float dtype and the products accumulate in float32. Every weight
is dequantised in registers just before `tl.dot`, never written back to memory.

The one layout this kernel reads (GPTQ and AWQ checkpoints are converted to it at load time,
see workers/models/int4.py), with `K` input and `N` output features and groups of `G` inputs:

- `qweight` `[N, K // 8]` int32: input `k` of row `n` is bits `4 * (k % 8)` .. `+ 3` of
  `qweight[n, k // 8]`, an unsigned value `q` in 0..15;
- `scales` `[N, K // G]` and `zeros` `[N, K // G]` (float32): `W[n, k] = (q - zero) * scale`
  with the group `k // G`. Symmetric checkpoints have `zero == 8` everywhere.

Row-major by output feature like a bf16 `[out, in]` weight, so tensor-parallel slicing is the
same narrow on dim 0 (column parallel) or dim 1 (row parallel, whole groups per rank).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from pagefleet.kernels.checks import (
    check_float,
    check_last_dim_contiguous,
    check_shape,
    upcast_dot_operands,
)
from pagefleet.kernels.host_math import cdiv

PACK_FACTOR = 8  # int4 values per int32
GROUP_SIZES = (32, 64, 128)


MAX_SPLIT_K = 16
CPU_PROGRAMS = 4  # what split-K aims for under the interpreter, so CPU tests take that path too


@dataclass(frozen=True, slots=True)
class W4A16BlockConfig:
    """Tile sizes: `block_k` divides the group size, so a K step needs one scale per column."""

    block_m: int
    block_n: int
    block_k: int
    num_warps: int = 4
    num_stages: int = 2


def block_config(num_rows: int, group_size: int) -> W4A16BlockConfig:
    """Small tiles in M for decode batches (weights dominate), larger ones for prefill."""
    if num_rows <= 16:
        return W4A16BlockConfig(block_m=16, block_n=64, block_k=group_size)
    if num_rows <= 64:
        return W4A16BlockConfig(block_m=64, block_n=64, block_k=min(group_size, 64))
    return W4A16BlockConfig(block_m=128, block_n=128, block_k=min(group_size, 64), num_warps=8, num_stages=3)


def split_k(num_tiles: int, num_k_blocks: int, target_programs: int) -> int:
    """K slices per output tile, so a decode step (few tiles, long K) still fills the GPU:
    without it an `N = 4096` projection at batch 1 runs 64 programs on 132 SMs."""
    return max(1, min(target_programs // max(num_tiles, 1), num_k_blocks, MAX_SPLIT_K))


@triton.jit
def _w4a16_gemm_kernel(
    x_ptr, qweight_ptr, scales_ptr, zeros_ptr, out_ptr, M, N, K, k_per_split,
    stride_x_row, stride_w_n, stride_s_n, stride_out_split, stride_out_row,
    GROUP_SIZE: tl.constexpr, UPCAST: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """One `BLOCK_M x BLOCK_N` tile of `out` over K slice `program_id(2)` (`k_per_split`
    inputs, a multiple of `BLOCK_K`), walking it in `BLOCK_K` steps inside one group."""
    k_start = tl.program_id(2) * k_per_split
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_mask = rows < M
    col_mask = cols < N
    ks = tl.arange(0, BLOCK_K)
    words = tl.arange(0, BLOCK_K // 8)
    shifts = tl.arange(0, 8) * 4
    x_ptrs = x_ptr + rows[:, None].to(tl.int64) * stride_x_row + k_start + ks[None, :]
    # Each row's packed words are contiguous, so the tile loads as `[BLOCK_N, BLOCK_K // 8]`
    # wide vectors; indexing `[k, n]` by `k // 8` instead defeats the compiler's contiguity
    # analysis and loads every word eight times, one scalar at a time (20-30x slower, H200).
    w_ptrs = qweight_ptr + cols[:, None].to(tl.int64) * stride_w_n + k_start // 8 + words[None, :]
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(k_start, tl.minimum(k_start + k_per_split, K), BLOCK_K):
        group = k0 // GROUP_SIZE
        scale = tl.load(scales_ptr + cols * stride_s_n + group, mask=col_mask, other=0.0)
        zero = tl.load(zeros_ptr + cols * stride_s_n + group, mask=col_mask, other=0.0)
        packed = tl.load(w_ptrs, mask=col_mask[:, None], other=0)  # [BLOCK_N, BLOCK_K // 8] int32
        nibbles = (packed[:, :, None] >> shifts[None, None, :]) & 0xF  # nibble i -> input 8c + i
        q = tl.reshape(nibbles, (BLOCK_N, BLOCK_K)).to(tl.float32)
        w = (q - zero[:, None]) * scale[:, None]  # [BLOCK_N, BLOCK_K]
        a = tl.load(x_ptrs, mask=row_mask[:, None], other=0.0)
        if UPCAST:
            a = a.to(tl.float32)
        else:
            w = w.to(a.dtype)
        acc = tl.dot(a, tl.trans(w), acc, input_precision=DOT_PRECISION)
        x_ptrs += BLOCK_K
        w_ptrs += BLOCK_K // 8
    out_ptrs = (out_ptr + tl.program_id(2) * stride_out_split + rows[:, None].to(tl.int64) * stride_out_row
                + cols[None, :])
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=row_mask[:, None] & col_mask[None, :])


def check_int4_weight(qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor,
                      in_features: int) -> int:
    """Validate the internal layout for `in_features` inputs; returns the group size."""
    if qweight.dtype != torch.int32 or qweight.dim() != 2:
        raise ValueError(f"qweight must be a 2-D int32 tensor, got {qweight.dtype} {tuple(qweight.shape)}")
    out_features = qweight.shape[0]
    check_shape("qweight", qweight, (out_features, in_features // PACK_FACTOR))
    if scales.dim() != 2 or scales.shape[0] != out_features or scales.shape[1] == 0:
        raise ValueError(f"scales must be [{out_features}, groups], got {tuple(scales.shape)}")
    group_size = in_features // scales.shape[1]
    if group_size not in GROUP_SIZES or group_size * scales.shape[1] != in_features:
        raise ValueError(f"{in_features} inputs in {scales.shape[1]} groups: group size must be one of "
                         f"{GROUP_SIZES}")
    check_shape("zeros", zeros, tuple(scales.shape))
    if scales.dtype != torch.float32 or zeros.dtype != torch.float32:
        raise ValueError(f"scales and zeros must be float32, got {scales.dtype} and {zeros.dtype}")
    return group_size


def w4a16_gemm(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor,
               out: torch.Tensor) -> torch.Tensor:
    """`x` `[M, K]` times the int4 weight `[N, K]` transposed -> `out` `[M, N]` (x's dtype)."""
    check_float("x", x)
    if x.dim() != 2:
        raise ValueError(f"x must be [M, K], got {tuple(x.shape)}")
    num_rows, in_features = x.shape
    group_size = check_int4_weight(qweight, scales, zeros, in_features)
    check_shape("out", out, (num_rows, qweight.shape[0]))
    if out.dtype != x.dtype:
        raise ValueError(f"out must be {x.dtype}, got {out.dtype}")
    for name, tensor in (("x", x), ("qweight", qweight), ("scales", scales), ("zeros", zeros), ("out", out)):
        check_last_dim_contiguous(name, tensor)
    if scales.stride(0) != zeros.stride(0):
        raise ValueError("scales and zeros must share their row stride")
    if num_rows == 0:
        return out
    config = block_config(num_rows, group_size)
    tiles = (cdiv(num_rows, config.block_m), cdiv(out.shape[1], config.block_n))
    num_k_blocks = in_features // config.block_k
    target = (2 * torch.cuda.get_device_properties(x.device).multi_processor_count
              if x.device.type == "cuda" else CPU_PROGRAMS)
    splits = split_k(tiles[0] * tiles[1], num_k_blocks, target)
    k_per_split = cdiv(num_k_blocks, splits) * config.block_k
    splits = cdiv(in_features, k_per_split)
    # Split-K partial sums go to a float32 workspace and are summed by torch (deterministic,
    # no atomics); a single slice writes `out` directly.
    target_out = out if splits == 1 else torch.empty((splits, *out.shape), dtype=torch.float32, device=out.device)
    _w4a16_gemm_kernel[(*tiles, splits)](
        x, qweight, scales, zeros, target_out, num_rows, out.shape[1], in_features, k_per_split,
        x.stride(0), qweight.stride(0), scales.stride(0), 0 if splits == 1 else target_out.stride(0),
        out.stride(0) if splits == 1 else target_out.stride(1),
        GROUP_SIZE=group_size, UPCAST=upcast_dot_operands(x),
        DOT_PRECISION="ieee" if x.dtype == torch.float32 else "tf32",
        BLOCK_M=config.block_m, BLOCK_N=config.block_n, BLOCK_K=config.block_k,
        num_warps=config.num_warps, num_stages=config.num_stages,
    )
    if splits > 1:
        out.copy_(target_out.sum(0))
    return out


def unpack_int4_rows(packed: torch.Tensor) -> torch.Tensor:
    """`[rows, cols // 8]` int32 -> `[rows, cols]` uint8 values 0..15, nibble `i` -> column `8c + i`."""
    shifts = torch.arange(0, 32, 4, dtype=torch.int32, device=packed.device)
    values = (packed[..., None] >> shifts) & 0xF
    return values.reshape(*packed.shape[:-1], -1).to(torch.uint8)


def pack_int4_rows(values: torch.Tensor) -> torch.Tensor:
    """The inverse of `unpack_int4_rows`: `[rows, cols]` values 0..15 -> `[rows, cols // 8]` int32."""
    if values.shape[-1] % PACK_FACTOR:
        raise ValueError(f"last dimension must be a multiple of {PACK_FACTOR}, got {values.shape[-1]}")
    nibbles = values.to(torch.int32).reshape(*values.shape[:-1], -1, PACK_FACTOR)
    shifts = torch.arange(0, 32, 4, dtype=torch.int32, device=values.device)
    # Disjoint bits, so the sum is the bitwise or (and wraps into the sign bit like C's int32).
    return (nibbles << shifts).sum(-1, dtype=torch.int32)


def dequantize_int4(qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor) -> torch.Tensor:
    """The float32 `[N, K]` weight the internal layout stands for (the CPU path runs this per
    call, so it broadcasts the group's scale and zero instead of repeating them)."""
    out_features, num_groups = scales.shape
    shifts = torch.arange(0, 32, 4, dtype=torch.int32, device=qweight.device)
    values = ((qweight[..., None] >> shifts) & 0xF).view(out_features, num_groups, -1).float()
    return ((values - zeros[..., None]) * scales[..., None]).view(out_features, -1)


def w4a16_gemm_ref(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor,
                   zeros: torch.Tensor) -> torch.Tensor:
    """Dequantise, then one float32 matmul; returns x's dtype."""
    return (x.float() @ dequantize_int4(qweight, scales, zeros).t()).to(x.dtype)

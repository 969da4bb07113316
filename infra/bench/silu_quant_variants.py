"""Where the fused SiLU-and-mul + FP8 quantisation spends its 25 us (run on a GPU).

The 2026-12-07 profile of one 8B FP8 decode step (batch 256) put the fused kernel at 25 us a
call where its bytes (14.7 MB read, 3.7 MB written) take ~6 us. Suspects: the arithmetic of
the exact e4m3 rounding (three IEEE divisions and bit tricks per element, written so the CPU
interpreter gives the GPU's bits) and one program per row (256 programs, 16 warps each). This
times, at the shapes of Llama-3.1-8B's MLP (d = 14336) and a few batch sizes:

- `kernel`: `silu_and_mul_quant_fp8` as it is;
- `hwcast`: the same row kernel, rounding by the hardware's fp32 -> e4m3 conversion (round to
  nearest even, saturating) instead of the explicit float32 rounding;
- `hwcast_w8` / `hwcast_w32`: that with 8 / 32 warps per row;
- `split`: each row over several programs in two launches (SiLU-and-mul in tiles, written
  back in x's dtype with each tile's |max| folded into the row's by an atomic max; then the
  quantisation of each tile from the row's scale): the whole card works on a few rows, and
  the second pass reads what the first wrote, mostly from L2;
- `exact_split`: the production kernel's bits (its explicit rounding, `quant_fp8`'s device
  functions) over several programs a row, without atomics or scratch: a first launch writes
  each tile's |max| (of the activation rounded to x's dtype), a second recomputes the tile's
  SiLU-and-mul from x (read again, mostly from L2), folds the row's tile maxima into its scale
  and quantises; it must differ from the reference exactly where `kernel` does;
- `torch`: the unfused reference (silu-and-mul, then per-token quantisation), for scale;

and counts the fp8 codes and scales of each that differ from the torch reference.
    python3 infra/bench/silu_quant_variants.py
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from pagefleet.kernels.host_math import cdiv, next_power_of_2
from pagefleet.kernels.quant_fp8 import (
    FP8_MAX,
    MIN_SCALE,
    QuantizedActivation,
    fp8_scale,
    round_to_fp8_grid,
)
from pagefleet.kernels.silu_and_mul import silu_and_mul_quant_fp8, silu_and_mul_quant_fp8_ref

D = 14336


@triton.jit
def _silu_mul_hwcast_kernel(x_ptr, out_ptr, scale_ptr, stride_x_row, stride_out_row,
                            D: tl.constexpr, BLOCK: tl.constexpr, FP8_MAX_C: tl.constexpr,
                            MIN_SCALE_C: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < D
    gate = tl.load(x_ptr + row * stride_x_row + cols, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(x_ptr + row * stride_x_row + D + cols, mask=mask, other=0.0).to(tl.float32)
    result = (gate / (1.0 + tl.exp(-gate)) * up).to(x_ptr.dtype.element_ty).to(tl.float32)
    scale = tl.maximum(tl.math.div_rn(tl.max(tl.abs(result), 0), FP8_MAX_C), MIN_SCALE_C)
    v = tl.clamp(tl.math.div_rn(result, scale), -FP8_MAX_C, FP8_MAX_C)
    tl.store(out_ptr + row * stride_out_row + cols, v.to(out_ptr.dtype.element_ty), mask=mask)
    tl.store(scale_ptr + row, scale)


@triton.jit
def _silu_mul_tile(x_ptr, stride_x_row, row, tile, D: tl.constexpr, BLOCK: tl.constexpr):
    """One tile of a row's SiLU-and-mul, rounded to x's dtype, as float32 (0 past the row)."""
    cols = tile * BLOCK + tl.arange(0, BLOCK)
    mask = cols < D
    gate = tl.load(x_ptr + row * stride_x_row + cols, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(x_ptr + row * stride_x_row + D + cols, mask=mask, other=0.0).to(tl.float32)
    return (gate / (1.0 + tl.exp(-gate)) * up).to(x_ptr.dtype.element_ty).to(tl.float32), cols, mask


@triton.jit
def _silu_mul_tiles_kernel(x_ptr, act_ptr, amax_ptr, stride_x_row, D: tl.constexpr,
                           BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    result, cols, mask = _silu_mul_tile(x_ptr, stride_x_row, row, tl.program_id(1), D, BLOCK)
    tl.store(act_ptr + row * D + cols, result.to(act_ptr.dtype.element_ty), mask=mask)
    tl.atomic_max(amax_ptr + row, tl.max(tl.abs(result), 0))


@triton.jit
def _quant_tiles_kernel(act_ptr, amax_ptr, out_ptr, scale_ptr, stride_out_row, D: tl.constexpr,
                        BLOCK: tl.constexpr, FP8_MAX_C: tl.constexpr, MIN_SCALE_C: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    tile = tl.program_id(1)
    cols = tile * BLOCK + tl.arange(0, BLOCK)
    mask = cols < D
    scale = tl.maximum(tl.math.div_rn(tl.load(amax_ptr + row), FP8_MAX_C), MIN_SCALE_C)
    x = tl.load(act_ptr + row * D + cols, mask=mask, other=0.0).to(tl.float32)
    v = tl.clamp(tl.math.div_rn(x, scale), -FP8_MAX_C, FP8_MAX_C)
    tl.store(out_ptr + row * stride_out_row + cols, v.to(out_ptr.dtype.element_ty), mask=mask)
    if tile == 0:
        tl.store(scale_ptr + row, scale)


@triton.jit
def _tile_amax_kernel(x_ptr, amax_ptr, stride_x_row, TILES: tl.constexpr, D: tl.constexpr,
                      BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    tile = tl.program_id(1)
    result, _cols, _mask = _silu_mul_tile(x_ptr, stride_x_row, row, tile, D, BLOCK)
    tl.store(amax_ptr + row * TILES + tile, tl.max(tl.abs(result), 0))


@triton.jit
def _tile_quant_kernel(x_ptr, amax_ptr, out_ptr, scale_ptr, stride_x_row, stride_out_row,
                       TILES: tl.constexpr, TILES_POW2: tl.constexpr, D: tl.constexpr,
                       BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    tile = tl.program_id(1)
    tiles = tl.arange(0, TILES_POW2)
    amax = tl.load(amax_ptr + row * TILES + tiles, mask=tiles < TILES, other=0.0)
    scale = fp8_scale(tl.max(amax, 0))
    result, cols, mask = _silu_mul_tile(x_ptr, stride_x_row, row, tile, D, BLOCK)
    rounded = round_to_fp8_grid(result, scale)
    tl.store(out_ptr + row * stride_out_row + cols, rounded.to(out_ptr.dtype.element_ty), mask=mask)
    if tile == 0:
        tl.store(scale_ptr + row, scale)


def exact_split(x: torch.Tensor, out: QuantizedActivation, block: int = 1024) -> QuantizedActivation:
    rows, tiles = x.shape[0], cdiv(D, block)
    amax = torch.empty(rows, tiles, dtype=torch.float32, device=x.device)
    _tile_amax_kernel[(rows, tiles)](x, amax, x.stride(0), TILES=tiles, D=D, BLOCK=block, num_warps=4)
    _tile_quant_kernel[(rows, tiles)](
        x, amax, out.values, out.scale, x.stride(0), out.values.stride(0), TILES=tiles,
        TILES_POW2=next_power_of_2(tiles), D=D, BLOCK=block, num_warps=4)
    return out


def split(x: torch.Tensor, out: QuantizedActivation, block: int = 1024) -> QuantizedActivation:
    rows = x.shape[0]
    act = torch.empty(rows, D, dtype=x.dtype, device=x.device)
    amax = torch.zeros(rows, dtype=torch.float32, device=x.device)
    grid = (rows, cdiv(D, block))
    _silu_mul_tiles_kernel[grid](x, act, amax, x.stride(0), D=D, BLOCK=block, num_warps=4)
    _quant_tiles_kernel[grid](act, amax, out.values, out.scale, out.values.stride(0), D=D,
                              BLOCK=block, FP8_MAX_C=FP8_MAX, MIN_SCALE_C=MIN_SCALE, num_warps=4)
    return out


def hwcast(x: torch.Tensor, out: QuantizedActivation, num_warps: int) -> QuantizedActivation:
    _silu_mul_hwcast_kernel[(x.shape[0],)](
        x, out.values, out.scale, x.stride(0), out.values.stride(0), D=D,
        BLOCK=next_power_of_2(D), FP8_MAX_C=FP8_MAX, MIN_SCALE_C=MIN_SCALE,
        num_warps=num_warps)
    return out


def torch_unfused(x: torch.Tensor, out: QuantizedActivation) -> QuantizedActivation:
    return silu_and_mul_quant_fp8_ref(x)


def time_us(fn, reps: int = 200) -> float:
    for _ in range(10):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) * 1000 / reps


def main() -> None:
    torch.manual_seed(0)
    print(torch.cuda.get_device_name(), "torch", torch.__version__, "triton", triton.__version__)
    variants = {
        "kernel": silu_and_mul_quant_fp8,
        "hwcast": lambda x, out: hwcast(x, out, 16),
        "hwcast_w8": lambda x, out: hwcast(x, out, 8),
        "hwcast_w32": lambda x, out: hwcast(x, out, 32),
        "split": split,
        "split_2048": lambda x, out: split(x, out, 2048),
        "exact_split": exact_split,
        "exact_split_2048": lambda x, out: exact_split(x, out, 2048),
        "torch": torch_unfused,
    }
    for rows in (1, 64, 256, 512):
        x = torch.randn(rows, 2 * D, device="cuda", dtype=torch.bfloat16) * 3
        reference = silu_and_mul_quant_fp8_ref(x)
        floor_us = (x.numel() * 2 + rows * D) / 3.35e12 * 1e6  # H100 HBM3 at its data-sheet rate
        line = [f"rows {rows:4d} (bytes floor {floor_us:5.1f} us):"]
        for name, fn in variants.items():
            out = QuantizedActivation.empty(rows, D, x.dtype, x.device)
            result = fn(x, out)
            codes = (result.values.view(torch.uint8) != reference.values.view(torch.uint8)).sum().item()
            scales = (result.scale.view(-1) != reference.scale.view(-1)).sum().item()
            us = time_us(lambda fn=fn, x=x, out=out: fn(x, out))
            line.append(f"{name} {us:6.1f} us ({codes} codes, {scales} scales differ)")
        print("  ".join(line), flush=True)


if __name__ == "__main__":
    main()

"""Per-token FP8 (e4m3) quantisation of activations: one pass per row, values and scale.

Before an FP8 matmul every token's row is scaled so its largest magnitude maps to 448 and
rounded to e4m3. In torch that is six kernels (upcast, abs, amax, divide, clamp, cast), each
reading the whole activation; this kernel reads the row once. Rounding is done explicitly
in float32 onto the e4m3 grid (round half to even, like torch's cast) before the final cast,
which is then exact: the same bits on the GPU and in Triton's CPU interpreter.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from pagefleet.kernels.checks import check_float, check_last_dim_contiguous, check_shape
from pagefleet.kernels.fp8_e4m3 import FP8_DTYPE, FP8_MAX, round_to_e4m3

__all__ = ["FP8_DTYPE", "FP8_MAX", "per_token_quant_fp8", "per_token_quant_fp8_ref"]

MIN_SCALE = 1e-12  # an all-zero row keeps a finite scale


@triton.jit
def _per_token_quant_fp8_kernel(
    x_ptr, out_ptr, scale_ptr, stride_x_row, stride_out_row,
    COLS: tl.constexpr, BLOCK: tl.constexpr, FP8_MAX_VALUE: tl.constexpr,
    MIN_SCALE_VALUE: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < COLS
    x = tl.load(x_ptr + row * stride_x_row + cols, mask=mask, other=0.0).to(tl.float32)
    scale = tl.maximum(tl.max(tl.abs(x), 0) / FP8_MAX_VALUE, MIN_SCALE_VALUE)
    # IEEE division (plain `/` is approximate on NVIDIA GPUs): a value on a rounding tie
    # must land exactly where torch puts it.
    rounded = round_to_e4m3(tl.math.div_rn(x, scale))
    tl.store(out_ptr + row * stride_out_row + cols, rounded.to(out_ptr.dtype.element_ty), mask=mask)
    tl.store(scale_ptr + row, scale)


def per_token_quant_fp8(x: torch.Tensor, out: torch.Tensor, scale: torch.Tensor) -> None:
    """`x` `[rows, cols]` -> `out` fp8 `[rows, cols]` and `scale` float32 `[rows, 1]`,
    with `x ~= out * scale` (per row)."""
    check_float("x", x)
    check_last_dim_contiguous("x", x)
    check_last_dim_contiguous("out", out)
    if x.dim() != 2:
        raise ValueError(f"x must be [rows, cols], got {tuple(x.shape)}")
    rows, cols = x.shape
    check_shape("out", out, (rows, cols))
    check_shape("scale", scale, (rows, 1))
    if out.dtype != FP8_DTYPE:
        raise ValueError(f"out must be {FP8_DTYPE}, got {out.dtype}")
    if scale.dtype != torch.float32 or not scale.is_contiguous():
        raise ValueError(f"scale must be contiguous float32, got {scale.dtype}")
    if rows == 0:
        return
    block = triton.next_power_of_2(cols)
    _per_token_quant_fp8_kernel[(rows,)](
        x, out, scale, x.stride(0), out.stride(0), COLS=cols, BLOCK=block,
        FP8_MAX_VALUE=FP8_MAX, MIN_SCALE_VALUE=MIN_SCALE, num_warps=min(16, max(1, block // 1024)),
    )


def per_token_quant_fp8_ref(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`x` `[rows, cols]` -> (fp8 values, float32 scale `[rows, 1]`), in torch."""
    x32 = x.float()
    scale = x32.abs().amax(dim=-1, keepdim=True).div_(FP8_MAX).clamp_(min=MIN_SCALE)
    return x32.div(scale).clamp_(-FP8_MAX, FP8_MAX).to(FP8_DTYPE), scale

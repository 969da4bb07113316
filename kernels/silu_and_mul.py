"""SwiGLU's gate: `silu(x[..., :d]) * x[..., d:]`, fused so the 2d-wide input is read once.

`silu_and_mul_quant_fp8` writes the result as fp8 e4m3 with its per-token scale
(`QuantizedActivation`), the input of the FP8 down projection, instead of the activation. A
scale needs the row's maximum, so that launch gives each program a whole row (the plain one
tiles rows into 1024-wide blocks); the row is rounded to x's dtype first, exactly as the plain
kernel's output would be, then quantised by quant_fp8's own rounding: the matmul sees the same
bits as after the plain kernel and a separate quantisation pass.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from pagefleet.kernels.checks import check_float, check_last_dim_contiguous, check_shape
from pagefleet.kernels.host_math import cdiv, next_power_of_2
from pagefleet.kernels.quant_fp8 import (
    QuantizedActivation,
    per_token_quant_fp8_ref,
    quantize_row_fp8,
    row_num_warps,
)


@triton.jit
def _silu_and_mul_kernel(
    x_ptr, out_ptr, scale_ptr, stride_x_row, stride_out_row, D: tl.constexpr, BLOCK: tl.constexpr,
    QUANT_FP8: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < D
    gate = tl.load(x_ptr + row * stride_x_row + cols, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(x_ptr + row * stride_x_row + D + cols, mask=mask, other=0.0).to(tl.float32)
    result = gate / (1.0 + tl.exp(-gate)) * up
    if QUANT_FP8:  # BLOCK >= D: this program holds the whole row (masked lanes are 0)
        result, scale = quantize_row_fp8(result.to(x_ptr.dtype.element_ty).to(tl.float32))
        tl.store(scale_ptr + row, scale)
    tl.store(out_ptr + row * stride_out_row + cols, result.to(out_ptr.dtype.element_ty), mask=mask)


def _rows(x: torch.Tensor) -> torch.Tensor:
    """`x` `[..., 2 * d]` checked and viewed as `[rows, 2 * d]`."""
    check_float("x", x)
    if x.shape[-1] % 2:
        raise ValueError(f"x last dimension must be even, got {x.shape[-1]}")
    check_last_dim_contiguous("x", x)
    return x.view(-1, x.shape[-1])


def silu_and_mul(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """`x` `[..., 2 * d]` -> `out` `[..., d]`."""
    x2 = _rows(x)
    d = x.shape[-1] // 2
    check_float("out", out)
    check_shape("out", out, (*x.shape[:-1], d))
    check_last_dim_contiguous("out", out)
    out2 = out.view(-1, d)
    if x2.shape[0] == 0:
        return out
    block = min(1024, next_power_of_2(d))
    _silu_and_mul_kernel[(x2.shape[0], cdiv(d, block))](
        x2, out2, out2, x2.stride(0), out2.stride(0), D=d, BLOCK=block, QUANT_FP8=False,
        num_warps=4,
    )
    return out


def silu_and_mul_quant_fp8(x: torch.Tensor, out: QuantizedActivation) -> QuantizedActivation:
    """`x` `[..., 2 * d]` -> `out` `[rows, d]` (rows = x's leading dims), quantised per row."""
    x2 = _rows(x)
    d = x.shape[-1] // 2
    out.check(x2.shape[0], d)
    if x2.shape[0] == 0:
        return out
    block = next_power_of_2(d)
    _silu_and_mul_kernel[(x2.shape[0], 1)](
        x2, out.values, out.scale, x2.stride(0), out.values.stride(0), D=d, BLOCK=block,
        QUANT_FP8=True, num_warps=row_num_warps(block),
    )
    return out


def silu_and_mul_ref(x: torch.Tensor) -> torch.Tensor:
    d = x.shape[-1] // 2
    return (torch.nn.functional.silu(x[..., :d].float()) * x[..., d:].float()).to(x.dtype)


def silu_and_mul_quant_fp8_ref(x: torch.Tensor) -> QuantizedActivation:
    """The composition the kernel fuses: `silu_and_mul_ref`, then `per_token_quant_fp8_ref`."""
    activated = silu_and_mul_ref(x)
    values, scale = per_token_quant_fp8_ref(activated.reshape(-1, activated.shape[-1]))
    return QuantizedActivation(values, scale, x.dtype)

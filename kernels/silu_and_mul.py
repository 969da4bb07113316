"""SwiGLU's gate: `silu(x[..., :d]) * x[..., d:]`, fused so the 2d-wide input is read once."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from pagefleet.kernels.checks import check_float, check_last_dim_contiguous, check_shape


@triton.jit
def _silu_and_mul_kernel(
    x_ptr, out_ptr, stride_x_row, stride_out_row, D: tl.constexpr, BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < D
    gate = tl.load(x_ptr + row * stride_x_row + cols, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(x_ptr + row * stride_x_row + D + cols, mask=mask, other=0.0).to(tl.float32)
    result = gate / (1.0 + tl.exp(-gate)) * up
    tl.store(out_ptr + row * stride_out_row + cols, result.to(out_ptr.dtype.element_ty), mask=mask)


def silu_and_mul(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """`x` `[..., 2 * d]` -> `out` `[..., d]`."""
    check_float("x", x)
    check_float("out", out)
    if x.shape[-1] % 2:
        raise ValueError(f"x last dimension must be even, got {x.shape[-1]}")
    d = x.shape[-1] // 2
    check_shape("out", out, (*x.shape[:-1], d))
    check_last_dim_contiguous("x", x)
    check_last_dim_contiguous("out", out)
    x2, out2 = x.view(-1, 2 * d), out.view(-1, d)
    if x2.shape[0] == 0:
        return out
    block = min(1024, triton.next_power_of_2(d))
    _silu_and_mul_kernel[(x2.shape[0], triton.cdiv(d, block))](
        x2, out2, x2.stride(0), out2.stride(0), D=d, BLOCK=block, num_warps=4,
    )
    return out


def silu_and_mul_ref(x: torch.Tensor) -> torch.Tensor:
    d = x.shape[-1] // 2
    return (torch.nn.functional.silu(x[..., :d].float()) * x[..., d:].float()).to(x.dtype)

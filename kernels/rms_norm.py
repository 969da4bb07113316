"""RMSNorm, plain and fused with the residual add that precedes it in every Llama block.

One program per row: the row is read once, so `out` may alias `x` and `residual_out` may
alias `residual` (in place). Rounding follows the unfused model: the residual sum is rounded
to its storage dtype before it is normalised, and the normalised row is rounded to the input
dtype before it is scaled by the weight (as Hugging Face's LlamaRMSNorm does).

The `*_quant_fp8` variants write the normalised row as fp8 e4m3 with its per-token scale
(`QuantizedActivation`), the input of the FP8 matmul that follows the norm, instead of
the activation: the row is rounded to the input dtype first, exactly as the plain kernel's
output would be, and then quantised by quant_fp8's own rounding, so the matmul sees the
same bits as after the plain kernel and a separate quantisation pass.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from pagefleet.kernels.checks import check_float, check_last_dim_contiguous, check_shape
from pagefleet.kernels.host_math import next_power_of_2
from pagefleet.kernels.quant_fp8 import (
    QuantizedActivation,
    per_token_quant_fp8_ref,
    quantize_row_fp8,
)


@triton.jit
def _rms_norm_kernel(
    x_ptr, residual_ptr, weight_ptr, out_ptr, residual_out_ptr, scale_ptr, eps,
    stride_x_row, stride_residual_row, stride_out_row, stride_residual_out_row,
    HIDDEN: tl.constexpr, BLOCK: tl.constexpr, ADD_RESIDUAL: tl.constexpr,
    QUANT_FP8: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < HIDDEN
    x = tl.load(x_ptr + row * stride_x_row + cols, mask=mask, other=0.0)
    input_dtype = x.dtype
    if ADD_RESIDUAL:
        residual = tl.load(residual_ptr + row * stride_residual_row + cols, mask=mask, other=0.0)
        summed = (x.to(tl.float32) + residual.to(tl.float32)).to(residual_out_ptr.dtype.element_ty)
        tl.store(residual_out_ptr + row * stride_residual_out_row + cols, summed, mask=mask)
        x = summed
        input_dtype = summed.dtype
    x = x.to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(x * x, 0) / HIDDEN + eps)
    weight = tl.load(weight_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    normed = (x * rstd).to(input_dtype).to(tl.float32) * weight
    if QUANT_FP8:  # out is fp8; the activation the plain kernel would store has x's dtype
        normed, scale = quantize_row_fp8(normed.to(x_ptr.dtype.element_ty).to(tl.float32))
        tl.store(scale_ptr + row, scale)
    tl.store(out_ptr + row * stride_out_row + cols, normed.to(out_ptr.dtype.element_ty), mask=mask)


def _rows(name: str, tensor: torch.Tensor, hidden: int) -> torch.Tensor:
    check_float(name, tensor)
    check_last_dim_contiguous(name, tensor)
    if tensor.shape[-1] != hidden:
        raise ValueError(f"{name} last dimension must be {hidden}, got {tensor.shape[-1]}")
    return tensor.view(-1, hidden)  # raises if the leading dimensions cannot be flattened


def _launch(
    x: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor, eps: float,
    out: torch.Tensor | QuantizedActivation, residual_out: torch.Tensor | None,
) -> None:
    hidden = weight.shape[0]
    check_shape("weight", weight, (hidden,))
    check_float("weight", weight)
    x2 = _rows("x", x, hidden)
    quant = isinstance(out, QuantizedActivation)
    if quant:
        out.check(x2.shape[0], hidden)
        out2, scale = out.values, out.scale
    else:
        check_shape("out", out, tuple(x.shape))
        out2 = _rows("out", out, hidden)
        scale = out2  # never read: the kernel stores a scale only when quantising
    add = residual is not None
    res2 = _rows("residual", residual, hidden) if add else x2
    res_out2 = _rows("residual_out", residual_out, hidden) if add else x2
    if add:
        check_shape("residual", residual, tuple(x.shape))
        check_shape("residual_out", residual_out, tuple(x.shape))
    if eps <= 0:
        raise ValueError(f"eps must be positive, got {eps}")
    num_rows = x2.shape[0]
    if num_rows == 0:
        return
    block = next_power_of_2(hidden)
    _rms_norm_kernel[(num_rows,)](
        x2, res2, weight, out2, res_out2, scale, eps,
        x2.stride(0), res2.stride(0), out2.stride(0), res_out2.stride(0),
        HIDDEN=hidden, BLOCK=block, ADD_RESIDUAL=add, QUANT_FP8=quant,
        num_warps=min(16, max(1, block // 512)),
    )


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float, out: torch.Tensor) -> torch.Tensor:
    """`out = weight * x / rms(x)` over the last dimension; `out` may be `x`."""
    _launch(x, None, weight, eps, out, None)
    return out


def fused_add_rms_norm(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float,
    out: torch.Tensor, residual_out: torch.Tensor,
) -> None:
    """`residual_out = x + residual; out = rms_norm(residual_out)` in one pass (in place allowed)."""
    _launch(x, residual, weight, eps, out, residual_out)


def rms_norm_quant_fp8(
    x: torch.Tensor, weight: torch.Tensor, eps: float, out: QuantizedActivation,
) -> QuantizedActivation:
    """`rms_norm(x)` quantised per row into `out` (`[rows, hidden]`, rows = x's leading dims)."""
    _launch(x, None, weight, eps, out, None)
    return out


def fused_add_rms_norm_quant_fp8(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float,
    out: QuantizedActivation, residual_out: torch.Tensor,
) -> None:
    """`residual_out = x + residual; out = quantised rms_norm(residual_out)` in one pass;
    `residual_out` may be `residual` (in place)."""
    _launch(x, residual, weight, eps, out, residual_out)


def rms_norm_ref(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    normed = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + eps)
    return (normed.to(x.dtype).float() * weight.float()).to(x.dtype)


def fused_add_rms_norm_ref(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns `(normed, new_residual)`."""
    summed = (x.float() + residual.float()).to(residual.dtype)
    return rms_norm_ref(summed, weight, eps).to(x.dtype), summed


def rms_norm_quant_fp8_ref(x: torch.Tensor, weight: torch.Tensor, eps: float) -> QuantizedActivation:
    """The composition the kernel fuses: `rms_norm_ref`, then `per_token_quant_fp8_ref`."""
    return _quantized_ref(rms_norm_ref(x, weight, eps))


def fused_add_rms_norm_quant_fp8_ref(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float,
) -> tuple[QuantizedActivation, torch.Tensor]:
    """`fused_add_rms_norm_ref`, then `per_token_quant_fp8_ref`: `(quantised normed rows,
    new_residual)`."""
    normed, summed = fused_add_rms_norm_ref(x, residual, weight, eps)
    return _quantized_ref(normed), summed


def _quantized_ref(normed: torch.Tensor) -> QuantizedActivation:
    values, scale = per_token_quant_fp8_ref(normed.reshape(-1, normed.shape[-1]))
    return QuantizedActivation(values, scale, normed.dtype)

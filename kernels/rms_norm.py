"""RMSNorm, plain and fused with the residual add that precedes it in every Llama block.

One program per row: the row is read once, so `out` may alias `x` and `residual_out` may
alias `residual` (in place). Rounding follows the unfused model: the residual sum is rounded
to its storage dtype before it is normalised, and the normalised row is rounded to the input
dtype before it is scaled by the weight (as Hugging Face's LlamaRMSNorm does).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from pagefleet.kernels.checks import check_float, check_last_dim_contiguous, check_shape


@triton.jit
def _rms_norm_kernel(
    x_ptr, residual_ptr, weight_ptr, out_ptr, residual_out_ptr, eps,
    stride_x_row, stride_residual_row, stride_out_row, stride_residual_out_row,
    HIDDEN: tl.constexpr, BLOCK: tl.constexpr, ADD_RESIDUAL: tl.constexpr,
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
    tl.store(out_ptr + row * stride_out_row + cols, normed.to(out_ptr.dtype.element_ty), mask=mask)


def _rows(name: str, tensor: torch.Tensor, hidden: int) -> torch.Tensor:
    check_float(name, tensor)
    check_last_dim_contiguous(name, tensor)
    if tensor.shape[-1] != hidden:
        raise ValueError(f"{name} last dimension must be {hidden}, got {tensor.shape[-1]}")
    return tensor.view(-1, hidden)  # raises if the leading dimensions cannot be flattened


def _launch(
    x: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor, eps: float,
    out: torch.Tensor, residual_out: torch.Tensor | None,
) -> None:
    hidden = weight.shape[0]
    check_shape("weight", weight, (hidden,))
    check_float("weight", weight)
    x2, out2 = _rows("x", x, hidden), _rows("out", out, hidden)
    check_shape("out", out, tuple(x.shape))
    add = residual is not None
    res2 = _rows("residual", residual, hidden) if add else x2
    res_out2 = _rows("residual_out", residual_out, hidden) if add else out2
    if add:
        check_shape("residual", residual, tuple(x.shape))
        check_shape("residual_out", residual_out, tuple(x.shape))
    if eps <= 0:
        raise ValueError(f"eps must be positive, got {eps}")
    num_rows = x2.shape[0]
    if num_rows == 0:
        return
    block = triton.next_power_of_2(hidden)
    _rms_norm_kernel[(num_rows,)](
        x2, res2, weight, out2, res_out2, eps,
        x2.stride(0), res2.stride(0), out2.stride(0), res_out2.stride(0),
        HIDDEN=hidden, BLOCK=block, ADD_RESIDUAL=add,
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


def rms_norm_ref(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    normed = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + eps)
    return (normed.to(x.dtype).float() * weight.float()).to(x.dtype)


def fused_add_rms_norm_ref(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns `(normed, new_residual)`."""
    summed = (x.float() + residual.float()).to(residual.dtype)
    return rms_norm_ref(summed, weight, eps).to(x.dtype), summed

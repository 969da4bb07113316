"""FP8 (e4m3) weights: linear layers that read half the bytes of bf16 and run at twice its peak.

Weights are quantised once, per output channel (one float32 scale per row, so the rows of a
fused q/k/v or gate/up projection keep their own range); activations are quantised per token
at run time (dynamic, no calibration). On Hopper-class GPUs the matmul is
`torch._scaled_mm` (cuBLASLt FP8 with row-wise scales, fp32 accumulation); elsewhere the same
rounded operands are multiplied in float32, which is the reference the GPU path is tested
against and lets CPU tests measure what FP8 does to greedy outputs.

vLLM names this `quantization="fp8"` (online quantisation of a bf16 checkpoint); checkpoints
already in FP8 (a `weight_scale` beside each weight) load as stored (`loader.build_model`,
`QuantizableLinear.prepare_fp8`, `per_row_scale`).

The input may come already quantised (`QuantizedActivation`): with fused layers, the RMSNorm
and SiLU-and-mul kernels before the qkv, gate/up and down projections write fp8 rows and
scales themselves, so three of a layer's four quantisation passes disappear (the attention
output before o_proj is still quantised here).
"""

from __future__ import annotations

import functools

import torch

from pagefleet.kernels.quant_fp8 import (
    FP8_DTYPE,
    FP8_MAX,
    QuantizedActivation,
    per_token_quant_fp8,
    per_token_quant_fp8_ref,
)
from pagefleet.workers.engine.config import QUANTIZATIONS

__all__ = ["FP8_DTYPE", "FP8_MAX", "QUANTIZATIONS", "QuantizedActivation", "fp8_linear", "per_row_scale",
           "quantize_activation", "quantize_rows"]


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`x` `[rows, cols]` -> (fp8 values, float32 scale `[rows, 1]`) with `x ~= values * scale`:
    one Triton pass on CUDA, the torch reference (same bits) elsewhere."""
    if x.device.type != "cuda":
        return per_token_quant_fp8_ref(x)
    values = torch.empty(x.shape, dtype=FP8_DTYPE, device=x.device)
    scale = torch.empty((x.shape[0], 1), dtype=torch.float32, device=x.device)
    per_token_quant_fp8(x.contiguous(), values, scale)
    return values, scale


def quantize_activation(x: torch.Tensor) -> QuantizedActivation:
    """`x` `[..., cols]` -> its rows `[rows, cols]` quantised per token."""
    values, scale = quantize_rows(x.reshape(-1, x.shape[-1]))
    return QuantizedActivation(values, scale, x.dtype)


def scaled_mm_supported(device: torch.device) -> bool:
    """FP8 tensor cores: compute capability 8.9 (Ada) or 9.x (Hopper) and newer."""
    return device.type == "cuda" and _has_fp8_tensor_cores(device.index)


@functools.cache
def _has_fp8_tensor_cores(index: int | None) -> bool:
    """Asked once per device, not on every linear layer's call."""
    return torch.cuda.get_device_capability(index) >= (8, 9)


def fp8_linear(x: torch.Tensor | QuantizedActivation, weight: torch.Tensor,
               weight_scale: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`x @ (weight * weight_scale)^T + bias`, with `x` quantised per token on the fly unless
    it comes quantised (then `[rows, in]`, and the result is `[rows, out]`).

    `weight` is `[out, in]` fp8, `weight_scale` `[out]` float32; returns the activation's dtype.
    """
    lead = x.shape[:-1]
    q = x if isinstance(x, QuantizedActivation) else quantize_activation(x)
    if scaled_mm_supported(q.values.device):
        out = torch._scaled_mm(q.values, weight.t(), scale_a=q.scale, scale_b=weight_scale.view(1, -1),
                               out_dtype=q.dtype)
    else:
        out = ((q.values.float() * q.scale) @ (weight.float() * weight_scale[:, None]).t()).to(q.dtype)
    if bias is not None:
        out = out + bias
    return out.view(*lead, weight.shape[0])


def per_row_scale(scale: torch.Tensor, rows: int) -> torch.Tensor:
    """A checkpoint's `weight_scale` (per tensor: a scalar or `[1]`; per channel: `[rows]` or
    `[rows, 1]`) as one float32 scale per row."""
    scale = scale.float().reshape(-1)
    if scale.numel() == 1:
        return scale.expand(rows).clone()
    if scale.numel() != rows:
        raise ValueError(f"weight_scale must hold 1 or {rows} values, got {scale.numel()}")
    return scale

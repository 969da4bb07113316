"""Int8 weight-only linear layers for the CPU: a quarter of float32's weight bytes.

A CPU decode step of a small model is bound by reading its weights from memory: every step
streams every linear layer once, for a handful of token rows. Stored as int8 with one scale
per output row, the weights are a quarter of their float32 size, and
`torch._weight_int8pack_mm` multiplies them by bfloat16 activations without writing a float
copy (AVX-512 BF16 on x86). Measured on this project's 2-core machine for SmolLM2-135M's
shapes (docs/benchmarks.md, "Quantised weights on the CPU"):

- up to `GEMV_MAX_ROWS` rows (decode), the op beats a float32 matmul by 1.6-5x;
- with more rows (prefill) it is a little slower than float32, while dequantising the layer
  to bfloat16 and running one bfloat16 matmul (oneDNN) is 1.3-2x faster than float32, so
  larger batches take that path: the weight still lives in memory as int8;
- only bfloat16 activations are fast: with float32 or float16 inputs the op is 10-50x slower
  than float32, and its AVX-512 path returns wrong numbers (or crashes) when the input width
  is not a multiple of 16. So `int8_linear` always computes in bfloat16 (casting float32
  activations in and the result back), and `quantize_int8_rows` refuses other widths.

Scales are stored in bfloat16 (the op takes them in the activations' dtype), rounded up from
`absmax / 127` so that no value needs more than 127 steps: the weight's error is then only
int8's half step of each row.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

INT8_MAX = 127
INPUT_MULTIPLE = 16  # the op's AVX-512 path reads inputs 16 at a time (see above)
COMPUTE_DTYPE = torch.bfloat16  # the only activation dtype with a fast path
GEMV_MAX_ROWS = 16  # measured crossover: int8 matvec up to here, bfloat16 GEMM above


@dataclass(frozen=True, slots=True)
class Int8Weight:
    """One linear layer's weight: `qweight * scales[:, None]` approximates the float weight."""

    qweight: torch.Tensor  # [out, in] int8, symmetric (-127..127)
    scales: torch.Tensor  # [out] bfloat16


def quantize_int8_rows(weight: torch.Tensor) -> Int8Weight:
    """Symmetric round-to-nearest per output row (no calibration).

    The scale is rounded up to bfloat16, so `|weight / scale| <= 127` holds before rounding
    and no value is clipped; an all-zero row keeps a tiny positive scale and zero values.
    """
    if weight.dim() != 2:
        raise ValueError(f"int8 weights must be 2-D [out, in], got shape {tuple(weight.shape)}")
    in_features = weight.shape[1]
    if in_features % INPUT_MULTIPLE:
        raise ValueError(f"int8 needs input features divisible by {INPUT_MULTIPLE} "
                         f"(torch._weight_int8pack_mm), got {in_features}")
    rows = weight.float()
    exact = (rows.abs().amax(-1) / INT8_MAX).clamp_min(torch.finfo(COMPUTE_DTYPE).tiny)
    scales = exact.to(COMPUTE_DTYPE)
    rounded_down = scales.float() < exact
    scales = torch.where(rounded_down, torch.nextafter(scales, scales.new_tensor(float("inf"))), scales)
    values = torch.round(rows / scales.float()[:, None]).clamp(-INT8_MAX, INT8_MAX)
    return Int8Weight(values.to(torch.int8), scales)


def dequantize_int8(weight: Int8Weight) -> torch.Tensor:
    """The float32 weight the int8 values and scales stand for."""
    return weight.qweight.float() * weight.scales.float()[:, None]


def int8_linear_ref(x: torch.Tensor, weight: Int8Weight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """The reference: bfloat16-rounded activations times the dequantised weight, in float32."""
    out = F.linear(x.to(COMPUTE_DTYPE).float(), dequantize_int8(weight)).to(x.dtype)
    return out if bias is None else out + bias


def int8_matvec(x: torch.Tensor, weight: Int8Weight) -> torch.Tensor:
    """`[rows, in]` -> `[rows, out]` bfloat16 through the int8 op (fast for few rows only)."""
    return torch._weight_int8pack_mm(x.to(COMPUTE_DTYPE).contiguous(), weight.qweight, weight.scales)


def int8_linear(x: torch.Tensor, weight: Int8Weight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`x @ (qweight * scales)^T + bias` in x's dtype, computed in bfloat16 on the CPU."""
    if x.device.type != "cpu":
        raise ValueError(f"int8 weights run on the CPU only, got activations on {x.device}")
    shape = x.shape
    x2 = x.reshape(-1, shape[-1])
    if x2.shape[0] <= GEMV_MAX_ROWS:
        out = int8_matvec(x2, weight)
    else:  # dequantise this layer for this step: one bfloat16 GEMM beats the op here
        dense = weight.qweight.to(COMPUTE_DTYPE) * weight.scales[:, None]
        out = F.linear(x2.to(COMPUTE_DTYPE), dense)
    out = out.to(x.dtype)
    if bias is not None:
        out = out + bias
    return out.view(*shape[:-1], weight.qweight.shape[0])

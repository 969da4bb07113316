"""Int4 weight-only linear layers (w4a16): GPTQ and AWQ checkpoints, and online RTN quantisation.

Most published quantised checkpoints are GPTQ or AWQ: 4-bit values packed eight to an int32,
with a float16 scale (and an integer zero point) per group of 128 inputs. The two formats
pack in different directions and orders, so each tensor is converted once, at load time, into
the single layout `kernels/w4a16_gemm.py` reads (`qweight` `[out, in / 8]`, float32
`scales`/`zeros` `[out, groups]`), held by a `QuantizableLinear` as `weight`,
`weight_scale` and `weight_zero`. From then on both formats are the same model.

- GPTQ (AutoGPTQ / GPTQModel, `checkpoint_format` "gptq"): `qweight` `[in / 8, out]` packed
  along the input, nibble `i` of row `r` = input `8r + i`; `qzeros` `[groups, out / 8]`
  packed along the output and stored minus one (the "v1" convention; "gptq_v2" stores them
  as they are); `scales` `[groups, out]`; `g_idx` `[in]`, the group of each input, which must
  be `input // group_size` (no act-order: `desc_act=True` reorders groups and is refused).
- AWQ (AutoAWQ "gemm"): `qweight` `[in, out / 8]` packed along the output in the interleaved
  order 0 2 4 6 1 3 5 7 (nibble `i` holds output `8c + order[i]`), `qzeros` likewise,
  `scales` `[groups, out]`; zeros are stored as they are.

The CPU path dequantises per call and runs one float matmul (the reference); CUDA runs the
Triton kernel, which never materialises the float weight.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from pagefleet.kernels.w4a16_gemm import (
    GROUP_SIZES,
    dequantize_int4,
    pack_int4_rows,
    unpack_int4_rows,
    w4a16_gemm,
)

INT4_METHODS = ("gptq", "awq")
SYMMETRIC_ZERO = 8.0
AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)  # nibble i of an AWQ int32 holds output 8c + AWQ_ORDER[i]
_AWQ_INVERSE = tuple(AWQ_ORDER.index(j) for j in range(8))  # output j sits in nibble _AWQ_INVERSE[j]


@dataclass(frozen=True, slots=True)
class Int4Format:
    """What a checkpoint's `quantization_config` says about its int4 tensors."""

    method: str  # "gptq" | "awq"
    group_size: int
    zero_offset: int = 0  # added to stored zero points (1 for GPTQ's v1 checkpoints)

    def __post_init__(self) -> None:
        if self.method not in INT4_METHODS:
            raise ValueError(f"int4 method must be one of {INT4_METHODS}, got {self.method!r}")
        if self.group_size == -1:
            raise ValueError("int4 with group_size -1 (one scale per output channel) is not supported; "
                             f"use a checkpoint with group_size in {GROUP_SIZES}")
        if self.group_size not in GROUP_SIZES:
            raise ValueError(f"int4 group_size must be one of {GROUP_SIZES}, got {self.group_size}")


def int4_format(config: Mapping[str, Any]) -> Int4Format:
    """Validate a GPTQ/AWQ `quantization_config` (as config.json stores it)."""
    method = config.get("quant_method")
    bits = config.get("bits", config.get("w_bit"))
    if bits != 4:
        raise ValueError(f"{method} checkpoints must have bits 4, got {bits!r}")
    group_size = config.get("group_size", config.get("q_group_size"))
    if method == "gptq":
        if config.get("lm_head", False):
            raise ValueError("GPTQ checkpoints with a quantised lm_head are not supported")
        if config.get("desc_act", False):
            raise ValueError("GPTQ act-order (desc_act=True) checkpoints are not supported; "
                             "use one quantised with desc_act=False")
        checkpoint_format = config.get("checkpoint_format", "gptq")
        if checkpoint_format not in ("gptq", "gptq_v2"):
            raise ValueError(f"GPTQ checkpoint_format {checkpoint_format!r} is not supported "
                             "(only 'gptq' and 'gptq_v2')")
        return Int4Format("gptq", group_size, zero_offset=1 if checkpoint_format == "gptq" else 0)
    if method == "awq":
        version = str(config.get("version", "gemm")).lower()
        if version != "gemm":
            raise ValueError(f"AWQ version {version!r} is not supported (only 'gemm')")
        return Int4Format("awq", group_size)
    raise ValueError(f"int4 quant_method must be one of {INT4_METHODS}, got {method!r}")


def _awq_unpack(packed: torch.Tensor) -> torch.Tensor:
    """`[rows, cols / 8]` AWQ int32 -> `[rows, cols]` values in output order."""
    values = unpack_int4_rows(packed)
    rows, cols = values.shape
    return values.view(rows, cols // 8, 8)[..., list(_AWQ_INVERSE)].reshape(rows, cols)


def convert_tensor(fmt: Int4Format, name: str, tensor: torch.Tensor) -> tuple[str, torch.Tensor] | None:
    """One checkpoint tensor in the internal layout, renamed to the layer's parameter; None
    for tensors that carry nothing the layout needs (a trivial `g_idx`)."""
    prefix, _, leaf = name.rpartition(".")
    if leaf == "qweight":
        if fmt.method == "gptq":  # [in / 8, out], packed along the input: transposed, it is ours
            return f"{prefix}.weight", tensor.t().contiguous()
        return f"{prefix}.weight", pack_int4_rows(_awq_unpack(tensor).t())
    if leaf == "qzeros":
        values = unpack_int4_rows(tensor) if fmt.method == "gptq" else _awq_unpack(tensor)
        return f"{prefix}.weight_zero", (values.float() + fmt.zero_offset).t().contiguous()
    if leaf == "scales":
        return f"{prefix}.weight_scale", tensor.float().t().contiguous()
    if leaf == "g_idx":
        expected = torch.arange(tensor.numel()) // fmt.group_size
        if not torch.equal(tensor.long().cpu(), expected):
            raise ValueError(f"{name} reorders input groups (act-order); only desc_act=False is supported")
        return None
    return name, tensor


def convert_checkpoint(weights: Iterable[tuple[str, torch.Tensor]],
                       fmt: Int4Format) -> Iterator[tuple[str, torch.Tensor]]:
    """A GPTQ/AWQ checkpoint's tensors as the layers' parameters, one tensor at a time."""
    for name, tensor in weights:
        converted = convert_tensor(fmt, name, tensor)
        if converted is not None:
            yield converted


@dataclass(frozen=True, slots=True)
class Int4Weight:
    """One linear layer's weight in the internal layout."""

    qweight: torch.Tensor  # [out, in / 8] int32
    scales: torch.Tensor  # [out, groups] float32
    zeros: torch.Tensor  # [out, groups] float32


def online_group_size(in_features: int) -> int:
    """128, or the largest smaller group size that divides a narrow layer (SmolLM2's 576)."""
    for size in sorted(GROUP_SIZES, reverse=True):
        if in_features % size == 0:
            return size
    raise ValueError(f"{in_features} input features are not divisible by any int4 group size {GROUP_SIZES}")


def quantize_int4_rtn(weight: torch.Tensor, group_size: int | None = None) -> Int4Weight:
    """Symmetric round-to-nearest per group (no calibration): `scale = absmax / 7`, zero 8;
    groups of 128 inputs unless the layer needs smaller ones (`online_group_size`).

    vLLM-style online quantisation for benchmarks on dummy or bf16 weights; real int4 models
    should use a calibrated GPTQ/AWQ checkpoint.
    """
    out_features, in_features = weight.shape
    group_size = group_size or online_group_size(in_features)
    if in_features % group_size:
        raise ValueError(f"{in_features} input features are not divisible by group size {group_size}")
    groups = weight.float().view(out_features, in_features // group_size, group_size)
    scales = (groups.abs().amax(-1) / 7).clamp_min(1e-12)
    values = (torch.round(groups / scales[..., None]) + SYMMETRIC_ZERO).clamp(0, 15)
    return Int4Weight(pack_int4_rows(values.view(out_features, in_features)), scales,
                      torch.full_like(scales, SYMMETRIC_ZERO))


def int4_linear(x: torch.Tensor, weight: Int4Weight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`x @ dequant(weight)^T + bias` in x's dtype: the Triton kernel on CUDA, the reference elsewhere."""
    if x.device.type != "cuda":
        return F.linear(x, dequantize_int4(weight.qweight, weight.scales, weight.zeros).to(x.dtype), bias)
    shape = x.shape
    x2 = x.reshape(-1, shape[-1]).contiguous()
    out = torch.empty((x2.shape[0], weight.qweight.shape[0]), dtype=x.dtype, device=x.device)
    w4a16_gemm(x2, weight.qweight, weight.scales, weight.zeros, out)
    if bias is not None:
        out = out + bias
    return out.view(*shape[:-1], out.shape[-1])

"""GPTQ and AWQ checkpoints written the way their own packers write them, for the loader tests.

Independent of the loader's conversion on purpose: bits are or-ed into uint32 words in
numpy, following AutoGPTQ's `QuantLinear.pack` (input-major `qweight`, zeros stored minus
one) and AutoAWQ's `WQLinear_GEMM.from_linear` (output-major, order 0 2 4 6 1 3 5 7).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from pagefleet.workers.models.arch import ModelArch
from pagefleet.workers.models.loader import dummy_weights
from tests.unit.workers.models.tiny import tiny_config

AWQ_PACK_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)
# 128-wide layers, so every projection holds whole groups of 128 inputs.
INT4_TINY = {"hidden_size": 128, "intermediate_size": 256, "num_attention_heads": 4,
             "num_key_value_heads": 2, "head_dim": 32}


@dataclass(frozen=True, slots=True)
class FakeQuant:
    """A weight `[out, in]` rounded to int4 per group: `restored == (values - zeros) * scales`."""

    values: torch.Tensor  # [out, in] int64 0..15
    scales: torch.Tensor  # [out, groups] float16
    zeros: torch.Tensor  # [out, groups] int64
    restored: torch.Tensor  # [out, in] float32


def fake_quantize(weight: torch.Tensor, group_size: int, symmetric: bool) -> FakeQuant:
    """Min-max (asymmetric) or absmax (symmetric, zero 8) rounding with float16 scales, as
    the published checkpoints store them. Zeros stay in 1..15: GPTQ's v1 format stores
    `zero - 1` in four bits, so a zero of 0 does not survive it (nor AutoGPTQ's own kernels)."""
    out_features, in_features = weight.shape
    groups = weight.float().view(out_features, -1, group_size)
    if symmetric:
        scales = (groups.abs().amax(-1) * 2 / 15).half()
        zeros = torch.full(scales.shape, 8, dtype=torch.int64)
    else:
        low, high = groups.amin(-1), groups.amax(-1)
        scales = ((high - low) / 15).half()
        zeros = torch.round(-low / scales.float()).clamp(1, 15).long()
    values = (torch.round(groups / scales.float()[..., None]) + zeros[..., None]).clamp(0, 15).long()
    restored = (values - zeros[..., None]).float() * scales.float()[..., None]
    return FakeQuant(values.view(out_features, in_features), scales, zeros,
                     restored.view(out_features, in_features))


def _or_nibbles(nibbles: list[np.ndarray]) -> torch.Tensor:
    word = np.zeros(nibbles[0].shape, dtype=np.uint32)
    for i, nibble in enumerate(nibbles):
        word |= nibble.astype(np.uint32) << np.uint32(4 * i)
    return torch.from_numpy(word.view(np.int32).copy())


def gptq_tensors(prefix: str, quant: FakeQuant, group_size: int) -> dict[str, torch.Tensor]:
    """`qweight` `[in / 8, out]` (nibble i of row r = input 8r + i), `qzeros` `[groups, out / 8]`
    (stored minus one), `scales` `[groups, out]`, `g_idx` `[in]`."""
    intweight = quant.values.t().numpy()  # [in, out]
    zeros = (quant.zeros - 1).t().numpy()  # [groups, out]
    in_features = intweight.shape[0]
    return {
        f"{prefix}.qweight": _or_nibbles([intweight[i::8] for i in range(8)]),
        f"{prefix}.qzeros": _or_nibbles([zeros[:, i::8] for i in range(8)]),
        f"{prefix}.scales": quant.scales.t().contiguous(),
        f"{prefix}.g_idx": torch.arange(in_features, dtype=torch.int32) // group_size,
    }


def awq_tensors(prefix: str, quant: FakeQuant) -> dict[str, torch.Tensor]:
    """`qweight` `[in, out / 8]` and `qzeros` `[groups, out / 8]`, nibble i = output
    8c + AWQ_PACK_ORDER[i]; `scales` `[groups, out]`."""
    intweight = quant.values.t().numpy()  # [in, out]
    zeros = quant.zeros.t().numpy()
    return {
        f"{prefix}.qweight": _or_nibbles([intweight[:, j::8] for j in AWQ_PACK_ORDER]),
        f"{prefix}.qzeros": _or_nibbles([zeros[:, j::8] for j in AWQ_PACK_ORDER]),
        f"{prefix}.scales": quant.scales.t().contiguous(),
    }


def write_int4_checkpoints(folder: Path, variant: str, method: str, symmetric: bool,
                           group_size: int = 128) -> tuple[Path, Path]:
    """(int4 checkpoint, the same model with its fake-quantised weights in float32)."""
    config = tiny_config(variant)
    for key, value in INT4_TINY.items():
        setattr(config, key, value)
    tensors = dict(dummy_weights(ModelArch.from_hf_config(config), 0, torch.float32, torch.device("cpu")))
    packed: dict[str, torch.Tensor] = {}
    restored: dict[str, torch.Tensor] = {}
    for name, tensor in tensors.items():
        if not name.endswith("proj.weight"):
            packed[name] = restored[name] = tensor
            continue
        quant = fake_quantize(tensor, group_size, symmetric)
        prefix = name.removesuffix(".weight")
        packed |= gptq_tensors(prefix, quant, group_size) if method == "gptq" else awq_tensors(prefix, quant)
        restored[name] = quant.restored
    quantization: dict[str, Any] = (
        {"quant_method": "gptq", "bits": 4, "group_size": group_size, "desc_act": False, "sym": symmetric,
         "checkpoint_format": "gptq"}
        if method == "gptq" else
        {"quant_method": "awq", "bits": 4, "group_size": group_size, "zero_point": not symmetric,
         "version": "gemm"})
    paths = folder / method, folder / "restored"
    for path, weights in zip(paths, (packed, restored), strict=True):
        path.mkdir(parents=True, exist_ok=True)
        config.save_pretrained(path)
        save_file(weights, path / "model.safetensors")
    config_path = paths[0] / "config.json"
    config_path.write_text(json.dumps({**json.loads(config_path.read_text()), "quantization_config": quantization}))
    return paths

"""Phi-3 / Phi-4 (dense): the Llama layers under Phi's checkpoint names.

Phi checkpoints store q/k/v as one `self_attn.qkv_proj` tensor and gate/up as one
`mlp.gate_up_proj` tensor. Our fused modules shard each part separately across tensor-parallel
ranks (rank r holds `[q_r; k_r; v_r]`), so a fused checkpoint tensor is split back into its
Llama-named parts on the way in and then takes exactly Llama's loading path.

Partial rotary (`partial_rotary_factor`, Phi-4-mini's 0.75) is `ModelArch.rotary_dim`, handled
by the shared attention on both the torch and the fused-kernel path. Long-context RoPE
(`su`/`longrope`, the 128k variants) is refused when the config is read (see arch.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch

from pagefleet.workers.models.arch import ModelArch
from pagefleet.workers.models.llama import LlamaForCausalLM


def split_phi3_names(
    arch: ModelArch, weights: Iterable[tuple[str, torch.Tensor]],
) -> Iterator[tuple[str, torch.Tensor]]:
    """Phi-named tensors -> Llama-named ones: fused qkv and gate_up split by rows, rest as is."""
    q_size, kv_size = arch.num_heads * arch.head_dim, arch.num_kv_heads * arch.head_dim
    parts = {
        "self_attn.qkv_proj": (("q_proj", q_size), ("k_proj", kv_size), ("v_proj", kv_size)),
        "mlp.gate_up_proj": (("gate_proj", arch.intermediate_size), ("up_proj", arch.intermediate_size)),
    }
    for name, tensor in weights:
        prefix, _, param = name.rpartition(".")
        block, _, fused = prefix.rpartition(".")
        block, _, sub = block.rpartition(".")
        split = parts.get(f"{sub}.{fused}")
        if split is None:
            yield name, tensor
            continue
        sizes = [size for _, size in split]
        if tensor.shape[0] != sum(sizes):
            raise ValueError(f"{name!r} has {tensor.shape[0]} rows, expected {sum(sizes)} ({sizes})")
        for (part, _), piece in zip(split, tensor.split(sizes, dim=0), strict=True):
            yield f"{block}.{sub}.{part}.{param}", piece


class Phi3ForCausalLM(LlamaForCausalLM):
    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        super().load_weights(split_phi3_names(self.arch, weights))

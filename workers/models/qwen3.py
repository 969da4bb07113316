"""Qwen3 (dense): the Llama layers plus an RMSNorm over every q and k head before RoPE.

Everything else is Llama's: no qkv bias (unlike Qwen2), `head_dim` read from the config (it
may differ from hidden / heads: Qwen3-8B has 32 heads of 128 on a 4096 hidden). The norm
weights `self_attn.{q,k}_norm.weight` are `[head_dim]`, shared by all heads, so every
tensor-parallel rank holds them whole.
"""

from __future__ import annotations

import torch

from pagefleet.workers.attention.base import AttentionBackend
from pagefleet.workers.models.arch import ModelArch
from pagefleet.workers.models.llama import Attention, DecoderLayer, LlamaForCausalLM, RMSNorm
from pagefleet.workers.models.parallel import TensorParallel


class Qwen3Attention(Attention):
    norm_cls: type[RMSNorm] = RMSNorm  # Gemma 3 normalises heads the same way with its own norm

    def __init__(self, arch: ModelArch, tp: TensorParallel, attention: AttentionBackend,
                 fused: bool) -> None:
        super().__init__(arch, tp, attention, fused)
        self.q_norm = self.norm_cls(arch.head_dim, arch.rms_norm_eps, fused)
        self.k_norm = self.norm_cls(arch.head_dim, arch.rms_norm_eps, fused)

    def normalize_qk(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q `[T, heads, hd]`, k `[T, kv, hd]` (views into the qkv output) -> normalised copies.

        Rows are flattened to `[T * heads, hd]` (a copy, since q and k are strided views), which
        is the 2-D layout the fused RMSNorm kernel takes; RoPE then rotates the copies in place.
        """
        q_normed = self.q_norm(q.reshape(-1, self.head_dim))[0]
        k_normed = self.k_norm(k.reshape(-1, self.head_dim))[0]
        return q_normed.view(q.shape), k_normed.view(k.shape)


class Qwen3DecoderLayer(DecoderLayer):
    attention_cls = Qwen3Attention


class Qwen3ForCausalLM(LlamaForCausalLM):
    """Checkpoint names are Llama's plus `q_norm` / `k_norm`, so loading is inherited."""

    layer_cls = Qwen3DecoderLayer

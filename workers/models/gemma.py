"""Gemma 2 and Gemma 3 (text): Llama's projections with Gemma's layer recipe.

What differs from Llama, and where it lives:
- embeddings scaled by sqrt(hidden) (rounded to the model dtype, as Hugging Face does);
- RMSNorm scaling by `1 + weight`, in float32 before the cast back (`GemmaRMSNorm`), and four
  norms per layer: each sublayer's output is normalised before the residual add;
- GeGLU (`gelu_pytorch_tanh`) instead of SwiGLU;
- attention scaled by `query_pre_attn_scalar ** -0.5`; Gemma 2 soft-caps the scores
  (`attn_logit_softcapping`) and the final logits (`final_logit_softcapping`);
- sliding-window layers interleaved with global ones (`ModelArch.layer_types`): each layer binds
  its window into the backend call (`LayerAttention`), and the kernels never read keys before
  the window;
- Gemma 3: per-head q/k norms (Qwen3's hook with Gemma's norm) and two RoPE tables, the local
  base for sliding layers and the global base (with linear scaling) for full ones.

Norms and GeGLU run in torch on every path: the fused RMSNorm kernel rounds before the weight
(Llama's order), which is not Gemma's.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pagefleet.kernels.attention_mask import soft_cap
from pagefleet.workers.attention.base import AttentionBackend
from pagefleet.workers.attention.metadata import AttentionMetadata
from pagefleet.workers.models.arch import SLIDING, ModelArch
from pagefleet.workers.models.llama import (
    MLP,
    Attention,
    DecoderLayer,
    KVCache,
    LlamaForCausalLM,
    RMSNorm,
    Rope,
    rope_inv_freq,
)
from pagefleet.workers.models.parallel import TensorParallel, VocabParallelEmbedding
from pagefleet.workers.models.qwen3 import Qwen3Attention


class GemmaRMSNorm(RMSNorm):
    """`x / rms(x) * (1 + weight)` in float32, cast once at the end; `(x, residual)` like RMSNorm."""

    def forward(
        self, x: torch.Tensor, residual: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if residual is not None:
            x = x + residual
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (normed * (1.0 + self.weight.float())).to(x.dtype), x


@dataclass(frozen=True, slots=True)
class LayerAttention:
    """One layer's view of the backend, its window and soft-cap bound in, so the shared
    `Attention` module calls it like any backend."""

    backend: AttentionBackend
    sliding_window: int | None
    softcap: float | None

    @property
    def name(self) -> str:
        return self.backend.name

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor,
                v_cache: torch.Tensor, metadata: AttentionMetadata, scale: float) -> torch.Tensor:
        return self.backend.forward(q, k, v, k_cache, v_cache, metadata, scale,
                                    sliding_window=self.sliding_window, softcap=self.softcap)


def layer_attention(arch: ModelArch, backend: AttentionBackend, layer: int) -> LayerAttention:
    return LayerAttention(backend, arch.layer_window(layer), arch.attn_logit_softcapping)


class Gemma2Attention(Attention):
    def __init__(self, arch: ModelArch, tp: TensorParallel, attention: LayerAttention,
                 fused: bool) -> None:
        super().__init__(arch, tp, attention, fused)
        self.scale = arch.attention_scale


class Gemma3Attention(Qwen3Attention):
    """Gemma 2's attention plus an RMSNorm (Gemma's) over every q and k head before RoPE."""

    norm_cls = GemmaRMSNorm

    def __init__(self, arch: ModelArch, tp: TensorParallel, attention: LayerAttention,
                 fused: bool) -> None:
        super().__init__(arch, tp, attention, fused)
        self.scale = arch.attention_scale


class GeGLU(MLP):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)  # [T, intermediate / tp] each
        return self.down_proj(F.gelu(gate, approximate="tanh") * up)


class GemmaDecoderLayer(nn.Module):
    def __init__(self, arch: ModelArch, tp: TensorParallel, attention: LayerAttention,
                 fused: bool) -> None:
        super().__init__()
        eps = arch.rms_norm_eps
        self.input_layernorm = GemmaRMSNorm(arch.hidden_size, eps)
        attention_cls = Gemma3Attention if arch.qk_norm else Gemma2Attention
        self.self_attn = attention_cls(arch, tp, attention, fused)
        self.post_attention_layernorm = GemmaRMSNorm(arch.hidden_size, eps)
        self.pre_feedforward_layernorm = GemmaRMSNorm(arch.hidden_size, eps)
        self.mlp = GeGLU(arch, tp, fused=False)
        self.post_feedforward_layernorm = GemmaRMSNorm(arch.hidden_size, eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None, rope: Rope,
                kv_cache: KVCache, metadata: AttentionMetadata) -> tuple[torch.Tensor, torch.Tensor]:
        """`(x, residual)` -> `(normalised mlp output, residual before it)`, as Llama's layer:
        each pre-norm adds the previous sublayer's (already post-normalised) output."""
        hidden, residual = self.input_layernorm(x, residual)
        hidden = self.post_attention_layernorm(self.self_attn(hidden, rope, kv_cache, metadata))[0]
        hidden, residual = self.pre_feedforward_layernorm(hidden, residual)
        return self.post_feedforward_layernorm(self.mlp(hidden))[0], residual


class RotaryTable(nn.Module):
    """One RoPE base's frequencies (and, for the fused kernel, its whole-range cos|sin table)."""

    def __init__(self, arch: ModelArch, fused: bool) -> None:
        super().__init__()
        self.fused = fused
        self.register_buffer("inv_freq", rope_inv_freq(arch), persistent=False)  # float32
        if fused:
            angles = torch.outer(torch.arange(arch.max_position_embeddings, dtype=torch.float32),
                                 self.inv_freq)
            self.register_buffer("cos_sin_cache", torch.cat((angles.cos(), angles.sin()), dim=-1),
                                 persistent=False)  # [max_position, rotary_dim]

    def forward(self, positions: torch.Tensor, dtype: torch.dtype) -> Rope:
        if self.fused:
            return Rope(positions, cos_sin_cache=self.cos_sin_cache)
        angles = torch.outer(positions.float(), self.inv_freq.float()).repeat(1, 2)  # [T, rotary_dim]
        return Rope(positions, angles.cos().to(dtype), angles.sin().to(dtype))


class GemmaModel(nn.Module):
    """Called like `LlamaModel`; the layer class argument is ignored (Gemma has its own)."""

    def __init__(self, arch: ModelArch, tp: TensorParallel, attention: AttentionBackend,
                 fused: bool = False, layer_cls: type[DecoderLayer] | None = None) -> None:
        super().__init__()
        # sqrt(hidden) in the model dtype (created under it by the loader), rounded as HF rounds it
        self.register_buffer("normalizer", torch.tensor(arch.hidden_size**0.5), persistent=False)
        self.embed_tokens = VocabParallelEmbedding(arch.vocab_size, arch.hidden_size, tp)
        self.layers = nn.ModuleList(
            GemmaDecoderLayer(arch, tp, layer_attention(arch, attention, i), fused)
            for i in range(arch.num_layers))
        self.norm = GemmaRMSNorm(arch.hidden_size, arch.rms_norm_eps)
        self.rotary = RotaryTable(arch, fused)
        # Gemma 3's sliding layers rotate with their own base (no scaling); Gemma 2 shares one.
        self.local_rotary = None
        if arch.rope_local_theta is not None:
            local = dataclasses.replace(arch, rope_theta=arch.rope_local_theta, rope_scaling=None)
            self.local_rotary = RotaryTable(local, fused)
        self.uses_local_rope = [
            self.local_rotary is not None and kind == SLIDING for kind in arch.layer_types
        ] or [False] * arch.num_layers

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor,
                kv_caches: list[KVCache], metadata: AttentionMetadata) -> torch.Tensor:
        x = self.embed_tokens(input_ids) * self.normalizer  # [T, hidden]
        global_rope = self.rotary(positions, x.dtype)
        local_rope = self.local_rotary(positions, x.dtype) if self.local_rotary is not None else None
        residual = None
        for layer, kv_cache, local in zip(self.layers, kv_caches, self.uses_local_rope, strict=True):
            x, residual = layer(x, residual, local_rope if local else global_rope, kv_cache, metadata)
        return self.norm(x, residual)[0]


class GemmaForCausalLM(LlamaForCausalLM):
    """Gemma 2 and Gemma 3 text checkpoints (tied embeddings; Llama's tensor names plus the
    pre/post feed-forward norms and, for Gemma 3, `q_norm`/`k_norm`), so loading is inherited."""

    model_cls = GemmaModel

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        # Capped in float32, as transformers does.
        return soft_cap(super().compute_logits(hidden).float(), self.arch.final_logit_softcapping)

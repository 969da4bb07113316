"""The Llama family in one file: Llama 2/3, Mistral, Qwen2 (qkv bias), SmolLM2.

Tokens of all sequences in a step are flattened into one `[num_tokens]` batch; attention
finds each token's sequence and cache slots through `AttentionMetadata`, so the model itself
never sees sequence boundaries. Weights use Hugging Face names at load time; q/k/v and
gate/up are fused into one matmul each.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from pagefleet.workers.attention.base import AttentionBackend
from pagefleet.workers.attention.metadata import AttentionMetadata
from pagefleet.workers.models.arch import ModelArch
from pagefleet.workers.models.parallel import (
    ColumnParallelLinear,
    ParallelLMHead,
    RowParallelLinear,
    TensorParallel,
    VocabParallelEmbedding,
)

KVCache = tuple[torch.Tensor, torch.Tensor]  # each [num_blocks, block_size, kv_heads/tp, head_dim]

# HF projection name -> (our fused module, index of the part within it)
_FUSED = {
    "q_proj": ("qkv_proj", 0), "k_proj": ("qkv_proj", 1), "v_proj": ("qkv_proj", 2),
    "gate_proj": ("gate_up_proj", 0), "up_proj": ("gate_up_proj", 1),
}


def rope_inv_freq(arch: ModelArch) -> torch.Tensor:
    """Per-pair rotation frequencies `[head_dim / 2]`, float32, with llama3 long-context scaling.

    llama3 scaling leaves high frequencies alone, divides low ones by `factor` and blends
    linearly (in wavelength) in between.
    """
    exponents = torch.arange(0, arch.head_dim, 2, dtype=torch.int64).float() / arch.head_dim
    inv_freq = 1.0 / (arch.rope_theta ** exponents)
    if arch.rope_scaling is None:
        return inv_freq
    s = arch.rope_scaling
    old_len = s["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv_freq
    smooth = (old_len / wavelen - s["low_freq_factor"]) / (s["high_freq_factor"] - s["low_freq_factor"])
    blended = (1 - smooth) * inv_freq / s["factor"] + smooth * inv_freq
    scaled = torch.where(wavelen > old_len / s["low_freq_factor"], inv_freq / s["factor"], inv_freq)
    is_medium = (wavelen >= old_len / s["high_freq_factor"]) & (wavelen <= old_len / s["low_freq_factor"])
    return torch.where(is_medium, blended, scaled)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half RoPE (HF layout). x `[num_tokens, heads, head_dim]`, cos/sin `[num_tokens, head_dim]`."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos.unsqueeze(1) + rotated * sin.unsqueeze(1)


class RMSNorm(nn.Module):
    """Normalises in float32 and casts back before the weight, exactly like HF's LlamaRMSNorm."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


class Attention(nn.Module):
    def __init__(self, arch: ModelArch, tp: TensorParallel, attention: AttentionBackend) -> None:
        super().__init__()
        self.attention = attention
        self.head_dim = arch.head_dim
        self.num_heads = arch.num_heads_per_rank(tp.size)
        self.num_kv_heads = arch.num_kv_heads_per_rank(tp.size)
        self.scale = arch.head_dim ** -0.5
        q_size, kv_size = arch.num_heads * arch.head_dim, arch.num_kv_heads * arch.head_dim
        self.qkv_proj = ColumnParallelLinear(
            arch.hidden_size, [q_size, kv_size, kv_size], arch.attention_bias, tp
        )
        self.o_proj = RowParallelLinear(q_size, arch.hidden_size, False, tp)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                kv_cache: KVCache, metadata: AttentionMetadata) -> torch.Tensor:
        q_size, kv_size = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        q, k, v = self.qkv_proj(x).split([q_size, kv_size, kv_size], dim=-1)
        q = apply_rotary(q.view(-1, self.num_heads, self.head_dim), cos, sin)  # [T, heads, hd]
        k = apply_rotary(k.view(-1, self.num_kv_heads, self.head_dim), cos, sin)  # [T, kv, hd]
        v = v.contiguous().view(-1, self.num_kv_heads, self.head_dim)  # [T, kv, hd]
        out = self.attention.forward(q, k, v, kv_cache[0], kv_cache[1], metadata, self.scale)
        return self.o_proj(out.reshape(-1, q_size))  # [T, hidden]


class MLP(nn.Module):
    def __init__(self, arch: ModelArch, tp: TensorParallel) -> None:
        super().__init__()
        self.gate_up_proj = ColumnParallelLinear(
            arch.hidden_size, [arch.intermediate_size] * 2, False, tp
        )
        self.down_proj = RowParallelLinear(arch.intermediate_size, arch.hidden_size, False, tp)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)  # [T, intermediate / tp] each
        return self.down_proj(F.silu(gate) * up)


class DecoderLayer(nn.Module):
    def __init__(self, arch: ModelArch, tp: TensorParallel, attention: AttentionBackend) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(arch.hidden_size, arch.rms_norm_eps)
        self.self_attn = Attention(arch, tp, attention)
        self.post_attention_layernorm = RMSNorm(arch.hidden_size, arch.rms_norm_eps)
        self.mlp = MLP(arch, tp)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                kv_cache: KVCache, metadata: AttentionMetadata) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, kv_cache, metadata)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaModel(nn.Module):
    def __init__(self, arch: ModelArch, tp: TensorParallel, attention: AttentionBackend) -> None:
        super().__init__()
        self.embed_tokens = VocabParallelEmbedding(arch.vocab_size, arch.hidden_size, tp)
        self.layers = nn.ModuleList(DecoderLayer(arch, tp, attention) for _ in range(arch.num_layers))
        self.norm = RMSNorm(arch.hidden_size, arch.rms_norm_eps)
        self.register_buffer("inv_freq", rope_inv_freq(arch), persistent=False)  # float32

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor,
                kv_caches: list[KVCache], metadata: AttentionMetadata) -> torch.Tensor:
        x = self.embed_tokens(input_ids)  # [T, hidden]
        freqs = positions.float()[:, None] * self.inv_freq.float()[None, :]  # [T, head_dim / 2]
        angles = torch.cat((freqs, freqs), dim=-1)  # [T, head_dim]
        cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
        for layer, kv_cache in zip(self.layers, kv_caches, strict=True):
            x = layer(x, cos, sin, kv_cache, metadata)
        return self.norm(x)


class LlamaForCausalLM(nn.Module):
    """`forward` returns final hidden states; `compute_logits` only for the rows that need them."""

    def __init__(self, arch: ModelArch, tp: TensorParallel, attention: AttentionBackend) -> None:
        super().__init__()
        self.arch = arch
        self.model = LlamaModel(arch, tp, attention)
        self.lm_head = ParallelLMHead(arch.vocab_size, arch.hidden_size, tp)
        if arch.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor,
                kv_caches: list[KVCache], metadata: AttentionMetadata) -> torch.Tensor:
        return self.model(input_ids, positions, kv_caches, metadata)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """`[n, hidden]` -> `[n, vocab]` float32, the full vocabulary on every rank."""
        return self.lm_head.compute_logits(hidden)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy full HF-named tensors in, each layer keeping its tensor-parallel slice."""
        params = dict(self.named_parameters())
        loaded: set[str] = set()
        for hf_name, tensor in weights:
            if "rotary_emb." in hf_name or (hf_name == "lm_head.weight" and self.arch.tie_word_embeddings):
                continue
            module_name, _, param_name = hf_name.rpartition(".")
            parent, _, leaf = module_name.rpartition(".")
            shard_index = 0
            if leaf in _FUSED:
                leaf, shard_index = _FUSED[leaf]
                module_name = f"{parent}.{leaf}"
            name = f"{module_name}.{param_name}"
            if name not in params:
                raise ValueError(f"checkpoint tensor {hf_name!r} has no place in {type(self).__name__}")
            module = self.get_submodule(module_name)
            if hasattr(module, "load_weight"):
                module.load_weight(param_name, tensor, shard_index)
            else:
                params[name].data.copy_(tensor)
            loaded.add(name)
        missing = sorted(set(params) - loaded)
        if missing:
            raise ValueError(f"checkpoint lacks {len(missing)} tensors, e.g. {missing[:5]}")

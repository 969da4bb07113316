"""The Llama family in one file: Llama 2/3, Mistral, Qwen2 (qkv bias), SmolLM2.

Its layers are the shared ones: Qwen3 (qwen3.py) and Phi-3 (phi3.py) subclass them for what
differs (a q/k norm hook, checkpoint names) and partial rotary is a number in `ModelArch`.

Tokens of all sequences in a step are flattened into one `[num_tokens]` batch; attention
finds each token's sequence and cache slots through `AttentionMetadata`, so the model itself
never sees sequence boundaries. Weights use Hugging Face names at load time; q/k/v and
gate/up are fused into one matmul each.

With `fused_layers` the elementwise work around the matmuls runs through pagefleet's Triton
kernels: residual add + RMSNorm in one pass, RoPE in place from a cos/sin table, SiLU-and-mul.
A decode step of a large model is otherwise hundreds of tiny torch kernels per token batch;
fused, each layer is about nine launches. The torch path stays the reference (and the CPU path).
With FP8 linear layers the fused RMSNorm and SiLU-and-mul kernels also quantise their rows for
the matmul that follows (`QuantizedActivation`), which then skips its own quantisation pass.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pagefleet.kernels.quant_fp8 import QuantizedActivation
from pagefleet.kernels.rms_norm import (
    fused_add_rms_norm,
    fused_add_rms_norm_quant_fp8,
    rms_norm,
    rms_norm_quant_fp8,
)
from pagefleet.kernels.rotary_embedding import rotary_embedding
from pagefleet.kernels.silu_and_mul import silu_and_mul, silu_and_mul_quant_fp8
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
    """Per-pair rotation frequencies `[rotary_dim / 2]`, float32, with llama3 or linear scaling.

    llama3 scaling leaves high frequencies alone, divides low ones by `factor` and blends
    linearly (in wavelength) in between; linear scaling divides them all.
    """
    exponents = torch.arange(0, arch.rotary_dim, 2, dtype=torch.int64).float() / arch.rotary_dim
    inv_freq = 1.0 / (arch.rope_theta ** exponents)
    if arch.rope_scaling is None:
        return inv_freq
    s = arch.rope_scaling
    if s["rope_type"] == "linear":
        return inv_freq / s["factor"]
    old_len = s["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv_freq
    smooth = (old_len / wavelen - s["low_freq_factor"]) / (s["high_freq_factor"] - s["low_freq_factor"])
    blended = (1 - smooth) * inv_freq / s["factor"] + smooth * inv_freq
    scaled = torch.where(wavelen > old_len / s["low_freq_factor"], inv_freq / s["factor"], inv_freq)
    is_medium = (wavelen >= old_len / s["high_freq_factor"]) & (wavelen <= old_len / s["low_freq_factor"])
    return torch.where(is_medium, blended, scaled)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half RoPE (HF layout). x `[num_tokens, heads, head_dim]`, cos/sin `[num_tokens, rotary_dim]`.

    With partial rotary (rotary_dim < head_dim) the dimensions past rotary_dim pass unchanged.
    """
    rotary_dim = cos.shape[-1]
    x_rot, x_pass = x[..., :rotary_dim], x[..., rotary_dim:]
    half = rotary_dim // 2
    rotated = torch.cat((-x_rot[..., half:], x_rot[..., :half]), dim=-1)
    out = x_rot * cos.unsqueeze(1) + rotated * sin.unsqueeze(1)
    return out if x_pass.shape[-1] == 0 else torch.cat((out, x_pass), dim=-1)


class RMSNorm(nn.Module):
    """Normalises in float32 and casts back before the weight, exactly like HF's LlamaRMSNorm.

    Takes the residual stream too (vLLM's shape): `(x, residual) -> (norm(x + residual),
    x + residual)`, so the fused kernel can add and normalise in one pass. With `fp8` (the
    next matmul is FP8) the fused kernel returns the normed rows quantised for it; the torch
    path returns them as they are and the matmul quantises them itself.
    """

    def __init__(self, dim: int, eps: float, fused: bool = False) -> None:
        super().__init__()
        self.eps = eps
        self.fused = fused
        self.weight = nn.Parameter(torch.ones(dim), requires_grad=False)

    def forward(
        self, x: torch.Tensor, residual: torch.Tensor | None = None, fp8: bool = False,
    ) -> tuple[torch.Tensor | QuantizedActivation, torch.Tensor]:
        if self.fused and fp8:
            quantized = QuantizedActivation.empty(x.shape[0], x.shape[-1], x.dtype, x.device)  # x: [T, dim]
            if residual is None:
                return rms_norm_quant_fp8(x, self.weight, self.eps, quantized), x
            fused_add_rms_norm_quant_fp8(x, residual, self.weight, self.eps, quantized, residual)  # in place
            return quantized, residual
        if self.fused:
            out = torch.empty_like(x)
            if residual is None:
                return rms_norm(x, self.weight, self.eps, out), x
            fused_add_rms_norm(x, residual, self.weight, self.eps, out, residual)  # in place
            return out, residual
        if residual is not None:
            x = x + residual
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype), x


class Attention(nn.Module):
    def __init__(self, arch: ModelArch, tp: TensorParallel, attention: AttentionBackend,
                 fused: bool) -> None:
        super().__init__()
        self.attention = attention
        self.fused = fused
        self.head_dim = arch.head_dim
        self.rotary_dim = arch.rotary_dim
        self.num_heads = arch.num_heads_per_rank(tp.size)
        self.num_kv_heads = arch.num_kv_heads_per_rank(tp.size)
        self.scale = arch.head_dim ** -0.5
        q_size, kv_size = arch.num_heads * arch.head_dim, arch.num_kv_heads * arch.head_dim
        self.qkv_proj = ColumnParallelLinear(
            arch.hidden_size, [q_size, kv_size, kv_size], arch.attention_bias, tp
        )
        self.o_proj = RowParallelLinear(q_size, arch.hidden_size, False, tp)

    @property
    def takes_quantized_input(self) -> bool:
        return self.qkv_proj.takes_quantized_input

    def forward(self, x: torch.Tensor | QuantizedActivation, rope: Rope, kv_cache: KVCache,
                metadata: AttentionMetadata) -> torch.Tensor:
        q_size, kv_size = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        q, k, v = self.qkv_proj(x).split([q_size, kv_size, kv_size], dim=-1)
        q = q.view(-1, self.num_heads, self.head_dim)  # [T, heads, hd], a view into qkv
        k = k.view(-1, self.num_kv_heads, self.head_dim)  # [T, kv, hd]
        q, k = self.normalize_qk(q, k)
        if self.fused:
            # The kernel indexes heads by stride, so a partial rotary is a slice, rotated in place.
            q_rot, k_rot = q[..., :self.rotary_dim], k[..., :self.rotary_dim]
            rotary_embedding(rope.positions, q_rot, k_rot, rope.cos_sin_cache, q_rot, k_rot)
        else:
            q, k = apply_rotary(q, rope.cos, rope.sin), apply_rotary(k, rope.cos, rope.sin)
        v = v.contiguous().view(-1, self.num_kv_heads, self.head_dim)  # [T, kv, hd]
        out = self.attention.forward(q, k, v, kv_cache[0], kv_cache[1], metadata, self.scale)
        return self.o_proj(out.reshape(-1, q_size))  # [T, hidden]

    def normalize_qk(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Hook before RoPE for families that normalise q/k heads (Qwen3); Llama has none."""
        return q, k


class MLP(nn.Module):
    def __init__(self, arch: ModelArch, tp: TensorParallel, fused: bool) -> None:
        super().__init__()
        self.fused = fused
        self.gate_up_proj = ColumnParallelLinear(
            arch.hidden_size, [arch.intermediate_size] * 2, False, tp
        )
        self.down_proj = RowParallelLinear(arch.intermediate_size, arch.hidden_size, False, tp)

    @property
    def takes_quantized_input(self) -> bool:
        return self.gate_up_proj.takes_quantized_input

    def forward(self, x: torch.Tensor | QuantizedActivation) -> torch.Tensor:
        gate_up = self.gate_up_proj(x)  # [T, 2 * intermediate / tp]
        rows, width = gate_up.shape[0], gate_up.shape[1] // 2
        if self.fused and self.down_proj.takes_quantized_input:
            activated = silu_and_mul_quant_fp8(
                gate_up, QuantizedActivation.empty(rows, width, gate_up.dtype, gate_up.device))
        elif self.fused:
            activated = silu_and_mul(gate_up, gate_up.new_empty(rows, width))
        else:
            gate, up = gate_up.chunk(2, dim=-1)
            activated = F.silu(gate) * up
        return self.down_proj(activated)


class DecoderLayer(nn.Module):
    attention_cls: type[Attention] = Attention  # a family with another attention subclasses this
    mlp_cls: type[nn.Module] = MLP  # ... or another MLP (moe.py: sparse experts)

    def __init__(self, arch: ModelArch, tp: TensorParallel, attention: AttentionBackend,
                 fused: bool) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(arch.hidden_size, arch.rms_norm_eps, fused)
        self.self_attn = self.attention_cls(arch, tp, attention, fused)
        self.post_attention_layernorm = RMSNorm(arch.hidden_size, arch.rms_norm_eps, fused)
        self.mlp = self.mlp_cls(arch, tp, fused)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None, rope: Rope,
                kv_cache: KVCache, metadata: AttentionMetadata) -> tuple[torch.Tensor, torch.Tensor]:
        """`(x, residual)` -> `(mlp output, residual stream before it)`: the add that closes
        the block happens in the next norm, where it is fused."""
        hidden, residual = self.input_layernorm(x, residual, fp8=self.self_attn.takes_quantized_input)
        hidden = self.self_attn(hidden, rope, kv_cache, metadata)
        hidden, residual = self.post_attention_layernorm(hidden, residual, fp8=self.mlp.takes_quantized_input)
        return self.mlp(hidden), residual


@dataclass(frozen=True, slots=True)
class Rope:
    """The step's rotary inputs: per-token cos/sin (torch path) or positions and the
    whole-range table (fused kernel)."""

    positions: torch.Tensor  # [T]
    cos: torch.Tensor | None = None  # [T, rotary_dim], model dtype
    sin: torch.Tensor | None = None
    cos_sin_cache: torch.Tensor | None = None  # [max_position, rotary_dim] float32: cos | sin


class LlamaModel(nn.Module):
    def __init__(self, arch: ModelArch, tp: TensorParallel, attention: AttentionBackend,
                 fused: bool = False, layer_cls: type[DecoderLayer] = DecoderLayer) -> None:
        super().__init__()
        self.fused = fused
        self.embed_tokens = VocabParallelEmbedding(arch.vocab_size, arch.hidden_size, tp)
        self.layers = nn.ModuleList(
            layer_cls(arch, tp, attention, fused) for _ in range(arch.num_layers))
        self.norm = RMSNorm(arch.hidden_size, arch.rms_norm_eps, fused)
        inv_freq = rope_inv_freq(arch)  # float32
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        if fused:  # computed as HF does (float32 angles), once for every position
            freqs = torch.arange(arch.max_position_embeddings, dtype=torch.float32)[:, None] * inv_freq
            table = torch.cat((freqs.cos(), freqs.sin()), dim=-1)  # [max_position, rotary_dim]
            self.register_buffer("cos_sin_cache", table.float(), persistent=False)

    def _rope(self, positions: torch.Tensor, dtype: torch.dtype) -> Rope:
        if self.fused:
            return Rope(positions, cos_sin_cache=self.cos_sin_cache)
        freqs = positions.float()[:, None] * self.inv_freq.float()[None, :]  # [T, rotary_dim / 2]
        angles = torch.cat((freqs, freqs), dim=-1)  # [T, rotary_dim]
        return Rope(positions, angles.cos().to(dtype), angles.sin().to(dtype))

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor,
                kv_caches: list[KVCache], metadata: AttentionMetadata) -> torch.Tensor:
        x = self.embed_tokens(input_ids)  # [T, hidden]
        rope = self._rope(positions, x.dtype)
        residual = None
        for layer, kv_cache in zip(self.layers, kv_caches, strict=True):
            x, residual = layer(x, residual, rope, kv_cache, metadata)
        return self.norm(x, residual)[0]


class LlamaForCausalLM(nn.Module):
    """`forward` returns final hidden states; `compute_logits` only for the rows that need them."""

    layer_cls: type[DecoderLayer] = DecoderLayer
    model_cls: type[nn.Module] = LlamaModel  # a family with another layer stack (Gemma) swaps it

    def __init__(self, arch: ModelArch, tp: TensorParallel, attention: AttentionBackend,
                 fused_layers: bool = False) -> None:
        super().__init__()
        self.arch = arch
        self.model = self.model_cls(arch, tp, attention, fused_layers, self.layer_cls)
        self.lm_head = ParallelLMHead(arch.vocab_size, arch.hidden_size, tp)
        if arch.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor,
                kv_caches: list[KVCache], metadata: AttentionMetadata) -> torch.Tensor:
        return self.model(input_ids, positions, kv_caches, metadata)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """`[n, hidden]` -> `[n, vocab]` in the model's dtype, the full vocabulary on every
        rank. Not widened to float32 here: a greedy row's argmax is the same on the bf16 values
        (widening is exact), and the copy would cost a decode step as much as its argmax (at
        batch 256 and a 128k vocabulary, 131 MB written); the sampler widens what needs it."""
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

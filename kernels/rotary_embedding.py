"""Rotary position embedding, neox style (rotate halves) as Llama uses, in place or not.

`cos_sin_cache` is `[max_position, head_dim]`: cos of every frequency in the first half, sin
in the second. Context-extension schemes (Llama 3's frequency scaling) live entirely in how
that cache is built, so the kernel stays one gather and a few multiplies per token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from pagefleet.kernels.checks import check_float, check_last_dim_contiguous, check_shape
from pagefleet.kernels.host_math import next_power_of_2


@triton.jit
def _rotate_heads(
    x_ptr, out_ptr, cos, sin, token, stride_x_token, stride_x_head, stride_out_token,
    stride_out_head, NUM_HEADS: tl.constexpr, HEADS_PAD: tl.constexpr, HALF: tl.constexpr,
    HALF_PAD: tl.constexpr,
):
    heads = tl.arange(0, HEADS_PAD)
    dims = tl.arange(0, HALF_PAD)
    mask = (heads[:, None] < NUM_HEADS) & (dims[None, :] < HALF)
    src = x_ptr + token * stride_x_token + heads[:, None] * stride_x_head + dims[None, :]
    x1 = tl.load(src, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(src + HALF, mask=mask, other=0.0).to(tl.float32)
    dst = out_ptr + token * stride_out_token + heads[:, None] * stride_out_head + dims[None, :]
    tl.store(dst, (x1 * cos[None, :] - x2 * sin[None, :]).to(out_ptr.dtype.element_ty), mask=mask)
    tl.store(dst + HALF, (x2 * cos[None, :] + x1 * sin[None, :]).to(out_ptr.dtype.element_ty),
             mask=mask)


@triton.jit
def _rotary_embedding_kernel(
    positions_ptr, q_ptr, k_ptr, cos_sin_ptr, q_out_ptr, k_out_ptr,
    stride_q_token, stride_q_head, stride_k_token, stride_k_head,
    stride_q_out_token, stride_q_out_head, stride_k_out_token, stride_k_out_head,
    stride_cos_sin_pos,
    NUM_HEADS: tl.constexpr, NUM_KV_HEADS: tl.constexpr, HEADS_PAD: tl.constexpr,
    KV_HEADS_PAD: tl.constexpr, HALF: tl.constexpr, HALF_PAD: tl.constexpr,
):
    token = tl.program_id(0).to(tl.int64)
    position = tl.load(positions_ptr + token).to(tl.int64)
    dims = tl.arange(0, HALF_PAD)
    cos = tl.load(cos_sin_ptr + position * stride_cos_sin_pos + dims, mask=dims < HALF).to(tl.float32)
    sin = tl.load(cos_sin_ptr + position * stride_cos_sin_pos + HALF + dims,
                  mask=dims < HALF).to(tl.float32)
    _rotate_heads(q_ptr, q_out_ptr, cos, sin, token, stride_q_token, stride_q_head,
                  stride_q_out_token, stride_q_out_head, NUM_HEADS, HEADS_PAD, HALF, HALF_PAD)
    _rotate_heads(k_ptr, k_out_ptr, cos, sin, token, stride_k_token, stride_k_head,
                  stride_k_out_token, stride_k_out_head, NUM_KV_HEADS, KV_HEADS_PAD, HALF, HALF_PAD)


def rotary_embedding(
    positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor, cos_sin_cache: torch.Tensor,
    q_out: torch.Tensor, k_out: torch.Tensor,
) -> None:
    """Rotate `q` `[num_tokens, num_heads, head_dim]` and `k` `[num_tokens, num_kv_heads, head_dim]`.

    `q_out`/`k_out` may be `q`/`k` (in place): each program reads a row before writing it.
    """
    num_tokens, num_heads, head_dim = q.shape
    num_kv_heads = k.shape[1]
    check_shape("k", k, (num_tokens, num_kv_heads, head_dim))
    check_shape("q_out", q_out, tuple(q.shape))
    check_shape("k_out", k_out, tuple(k.shape))
    check_shape("positions", positions, (num_tokens,))
    if cos_sin_cache.dim() != 2 or cos_sin_cache.shape[1] != head_dim or head_dim % 2:
        raise ValueError(f"cos_sin_cache must be [max_position, head_dim={head_dim}] with an even "
                         f"head_dim (partial rotary is not supported), got {tuple(cos_sin_cache.shape)}")
    for name, tensor in (("q", q), ("k", k), ("q_out", q_out), ("k_out", k_out),
                         ("cos_sin_cache", cos_sin_cache)):
        check_float(name, tensor)
        check_last_dim_contiguous(name, tensor)
    if positions.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"positions must be int32 or int64, got {positions.dtype}")
    if num_tokens == 0:
        return
    half = head_dim // 2
    _rotary_embedding_kernel[(num_tokens,)](
        positions, q, k, cos_sin_cache, q_out, k_out,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1),
        q_out.stride(0), q_out.stride(1), k_out.stride(0), k_out.stride(1),
        cos_sin_cache.stride(0),
        NUM_HEADS=num_heads, NUM_KV_HEADS=num_kv_heads,
        HEADS_PAD=next_power_of_2(num_heads),
        KV_HEADS_PAD=next_power_of_2(num_kv_heads),
        HALF=half, HALF_PAD=next_power_of_2(half), num_warps=4,
    )


def rotary_embedding_ref(
    positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor, cos_sin_cache: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns rotated `(q, k)`, computed in float32."""
    half = cos_sin_cache.shape[1] // 2
    cos = cos_sin_cache[positions.long(), :half].float()[:, None, :]  # [tokens, 1, half]
    sin = cos_sin_cache[positions.long(), half:].float()[:, None, :]

    def rotate(x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.float()[..., :half], x.float()[..., half:]
        return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).to(x.dtype)

    return rotate(q), rotate(k)


@dataclass(frozen=True, slots=True)
class Llama3RopeScaling:
    """Llama 3.1's `rope_scaling`: long wavelengths slowed by `factor`, short ones kept."""

    factor: float = 8.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192

    def __post_init__(self) -> None:
        if self.factor <= 0 or self.original_max_position_embeddings <= 0:
            raise ValueError("factor and original_max_position_embeddings must be positive")
        if self.high_freq_factor <= self.low_freq_factor:
            raise ValueError("high_freq_factor must exceed low_freq_factor")


def rope_inv_freq(head_dim: int, base: float, scaling: Llama3RopeScaling | None) -> torch.Tensor:
    """Inverse frequencies `[head_dim // 2]` in float64, Llama 3 scaled when asked."""
    inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    if scaling is None:
        return inv_freq
    low_freq_wavelen = scaling.original_max_position_embeddings / scaling.low_freq_factor
    high_freq_wavelen = scaling.original_max_position_embeddings / scaling.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / scaling.factor, inv_freq)
    smooth = (scaling.original_max_position_embeddings / wavelen - scaling.low_freq_factor) / (
        scaling.high_freq_factor - scaling.low_freq_factor)
    smoothed = (1 - smooth) * scaled / scaling.factor + smooth * scaled
    medium = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen)
    return torch.where(medium, smoothed, scaled)


def rope_cos_sin_cache_ref(
    head_dim: int, max_position: int, base: float, scaling: Llama3RopeScaling | None = None,
    dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
) -> torch.Tensor:
    """`[max_position, head_dim]`: cos then sin of `position * inv_freq`, built in float64."""
    inv_freq = rope_inv_freq(head_dim, base, scaling)
    angles = torch.arange(max_position, dtype=torch.float64)[:, None] * inv_freq[None, :]
    return torch.cat((angles.cos(), angles.sin()), dim=-1).to(dtype=dtype, device=device)

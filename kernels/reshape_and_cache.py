"""Write the step's new K/V rows into the paged KV cache, one program per token.

The cache is `[num_blocks, block_size, num_kv_heads, head_dim]`; `slot_mapping[t]` is
`block_id * block_size + offset`. A negative slot means "padding token, write nothing", so a
CUDA graph captured for a padded batch can replay with unused rows.

An fp8 e4m3 cache (`kv_cache_dtype="fp8"`) stores the values unscaled (a per-tensor scale of
1.0, vLLM's default without calibration): K/V beyond +-448 saturate to +-448 rather than
becoming NaN, and everything is rounded to nearest even on the e4m3 grid (see fp8_e4m3.py).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from pagefleet.kernels.checks import (
    check_float,
    check_last_dim_contiguous,
    check_shape,
)
from pagefleet.kernels.fp8_e4m3 import FP8_DTYPE, round_to_e4m3, saturate_to_e4m3
from pagefleet.kernels.host_math import next_power_of_2


@triton.jit
def _reshape_and_cache_kernel(
    key_ptr, value_ptr, k_cache_ptr, v_cache_ptr, slot_mapping_ptr,
    stride_key_token, stride_key_head, stride_value_token, stride_value_head,
    stride_cache_block, stride_cache_slot, stride_cache_head,
    NUM_KV_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr,
    HEADS_PAD: tl.constexpr, HEAD_DIM_PAD: tl.constexpr, BLOCK_SIZE: tl.constexpr,
    FP8_CACHE: tl.constexpr,
):
    token = tl.program_id(0)
    slot = tl.load(slot_mapping_ptr + token).to(tl.int64)
    if slot >= 0:
        block = slot // BLOCK_SIZE
        offset = slot % BLOCK_SIZE
        heads = tl.arange(0, HEADS_PAD)
        dims = tl.arange(0, HEAD_DIM_PAD)
        mask = (heads[:, None] < NUM_KV_HEADS) & (dims[None, :] < HEAD_DIM)
        key = tl.load(
            key_ptr + token * stride_key_token + heads[:, None] * stride_key_head + dims[None, :],
            mask=mask,
        )
        value = tl.load(
            value_ptr + token * stride_value_token + heads[:, None] * stride_value_head + dims[None, :],
            mask=mask,
        )
        if FP8_CACHE:
            key = round_to_e4m3(key.to(tl.float32))
            value = round_to_e4m3(value.to(tl.float32))
        cache_offsets = (
            block * stride_cache_block + offset * stride_cache_slot
            + heads[:, None] * stride_cache_head + dims[None, :]
        )
        tl.store(k_cache_ptr + cache_offsets, key.to(k_cache_ptr.dtype.element_ty), mask=mask)
        tl.store(v_cache_ptr + cache_offsets, value.to(v_cache_ptr.dtype.element_ty), mask=mask)


def reshape_and_cache(
    key: torch.Tensor, value: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> None:
    """Scatter `key`/`value` `[num_tokens, num_kv_heads, head_dim]` into the caches in place."""
    _, block_size, num_kv_heads, head_dim = k_cache.shape
    num_tokens = key.shape[0]
    check_shape("key", key, (num_tokens, num_kv_heads, head_dim))
    check_shape("value", value, (num_tokens, num_kv_heads, head_dim))
    check_shape("v_cache", v_cache, tuple(k_cache.shape))
    check_shape("slot_mapping", slot_mapping, (num_tokens,))
    for name, tensor in (("key", key), ("value", value), ("k_cache", k_cache), ("v_cache", v_cache)):
        if not (name.endswith("cache") and tensor.dtype == FP8_DTYPE):
            check_float(name, tensor)
        check_last_dim_contiguous(name, tensor)
    if k_cache.dtype != v_cache.dtype:
        raise ValueError(f"k_cache and v_cache must share a dtype, got {k_cache.dtype}, {v_cache.dtype}")
    if k_cache.stride() != v_cache.stride():
        raise ValueError("k_cache and v_cache must share strides")
    if slot_mapping.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"slot_mapping must be int32 or int64, got {slot_mapping.dtype}")
    if num_tokens == 0:
        return
    _reshape_and_cache_kernel[(num_tokens,)](
        key, value, k_cache, v_cache, slot_mapping,
        key.stride(0), key.stride(1), value.stride(0), value.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        NUM_KV_HEADS=num_kv_heads, HEAD_DIM=head_dim,
        HEADS_PAD=next_power_of_2(num_kv_heads),
        HEAD_DIM_PAD=next_power_of_2(head_dim), BLOCK_SIZE=block_size,
        FP8_CACHE=k_cache.dtype == FP8_DTYPE,
    )


def reshape_and_cache_ref(
    key: torch.Tensor, value: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> None:
    """Plain torch: copy every row with a non-negative slot into its cache slot (saturated
    to +-448 first when the cache is fp8)."""
    _, _, num_kv_heads, head_dim = k_cache.shape
    keep = slot_mapping >= 0
    slots = slot_mapping[keep].long()
    k_cache.view(-1, num_kv_heads, head_dim)[slots] = to_cache_dtype(key[keep], k_cache.dtype)
    v_cache.view(-1, num_kv_heads, head_dim)[slots] = to_cache_dtype(value[keep], v_cache.dtype)


def to_cache_dtype(x: torch.Tensor, cache_dtype: torch.dtype) -> torch.Tensor:
    """What a cache of `cache_dtype` stores for `x`: a plain cast, or a saturating one to fp8."""
    return saturate_to_e4m3(x) if cache_dtype == FP8_DTYPE else x.to(cache_dtype)

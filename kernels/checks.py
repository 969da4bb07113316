"""Argument checks shared by the kernel launchers: fail on the host, before a bad launch."""

from __future__ import annotations

import torch

from pagefleet.kernels.fp8_e4m3 import FP8_DTYPE

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def check_float(name: str, tensor: torch.Tensor) -> None:
    if tensor.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{name} must be float32, float16 or bfloat16, got {tensor.dtype}")


def check_kv_caches(k_cache: torch.Tensor, v_cache: torch.Tensor, dtype: torch.dtype) -> None:
    """A KV cache holds the attention's own `dtype`, or fp8 e4m3 (`kv_cache_dtype="fp8"`:
    half the bytes to read; kernels cast it back to `dtype` before the dots)."""
    for name, cache in (("k_cache", k_cache), ("v_cache", v_cache)):
        if cache.dtype not in (dtype, FP8_DTYPE):
            raise ValueError(f"{name} must be {dtype} (the query's dtype) or {FP8_DTYPE}, "
                             f"got {cache.dtype}")
        check_last_dim_contiguous(name, cache)
    if k_cache.dtype != v_cache.dtype:
        raise ValueError(f"k_cache and v_cache must share a dtype, got {k_cache.dtype}, {v_cache.dtype}")
    if k_cache.stride() != v_cache.stride():
        raise ValueError("k_cache and v_cache must share strides")


def check_shape(name: str, tensor: torch.Tensor, shape: tuple[int, ...]) -> None:
    if tuple(tensor.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(tensor.shape)}")


def check_last_dim_contiguous(name: str, tensor: torch.Tensor) -> None:
    """Kernels index the last dimension with unit stride, so only that one must be dense."""
    if tensor.stride(-1) != 1:
        raise ValueError(f"{name} must be contiguous in its last dimension")


def upcast_dot_operands(tensor: torch.Tensor) -> bool:
    """Whether a kernel must feed `tl.dot` float32 instead of bfloat16.

    Tensors on the CPU run under the Triton interpreter, whose `tl.dot` multiplies bfloat16
    operands as their raw uint16 bits (seen with triton 3.9). The GPU path keeps bfloat16.
    """
    return tensor.device.type != "cuda" and tensor.dtype == torch.bfloat16

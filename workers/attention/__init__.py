"""Attention backends behind one interface (`AttentionBackend`)."""

from __future__ import annotations

from pagefleet.workers.attention.base import AttentionBackend
from pagefleet.workers.attention.metadata import AttentionMetadata
from pagefleet.workers.attention.torch_backend import TorchAttentionBackend


def get_attention_backend(name: str) -> AttentionBackend:
    """Backends by name; the Triton one is imported only when asked for."""
    if name == "torch":
        return TorchAttentionBackend()
    if name == "triton":
        from pagefleet.workers.attention.triton_backend import TritonAttentionBackend

        return TritonAttentionBackend()
    raise ValueError(f"unknown attention backend {name!r}; choose 'torch' or 'triton'")


__all__ = ["AttentionBackend", "AttentionMetadata", "TorchAttentionBackend", "get_attention_backend"]

"""The interface every attention backend implements (torch reference, Triton kernels)."""

from __future__ import annotations

from typing import Protocol

import torch

from pagefleet.workers.attention.metadata import AttentionMetadata


class AttentionBackend(Protocol):
    """Writes the step's new K/V into the paged cache, then attends.

    Shapes: q `[num_tokens, num_heads, head_dim]`, k and v `[num_tokens, num_kv_heads, head_dim]`,
    k_cache and v_cache `[num_blocks, block_size, num_kv_heads, head_dim]`; returns
    `[num_tokens, num_heads, head_dim]`. GQA: query head h reads KV head h // (num_heads // num_kv_heads).

    `sliding_window`: a query at position p sees keys `p - sliding_window + 1 .. p` only (None:
    all of `0..p`); keys before that are never read, so their blocks may have been freed.
    `softcap`: scores (after `scale`) become `softcap * tanh(scores / softcap)` (Gemma 2).
    `out`: where to write the result (a captured graph's buffer, `piecewise_graphs`) instead
    of a new tensor.
    """

    name: str

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        metadata: AttentionMetadata,
        scale: float,
        sliding_window: int | None = None,
        softcap: float | None = None,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor: ...

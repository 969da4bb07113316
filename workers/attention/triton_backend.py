"""Attention through pagefleet's Triton kernels; held to `TorchAttentionBackend` in tests.

Per step: scatter the new K/V into the paged cache, then attend. A decode-only step (one
token per sequence) takes the GQA-aware split-KV decode kernel; anything else (prefills,
chunked prefills, mixed batches) takes the variable-length prefill kernel, where decode rows
are simply queries of length 1. No host syncs: the kernels read lengths from device tensors
and take their grid bounds from the metadata's host-side maxima.
"""

from __future__ import annotations

import torch

from pagefleet.kernels.paged_decode_attention import DecodeConfig, paged_decode_attention
from pagefleet.kernels.paged_prefill_attention import PrefillConfig, paged_prefill_attention
from pagefleet.kernels.reshape_and_cache import reshape_and_cache
from pagefleet.workers.attention.metadata import AttentionMetadata


class TritonAttentionBackend:
    name = "triton"

    def __init__(
        self, decode_config: DecodeConfig | None = None,
        prefill_config: PrefillConfig | None = None,
    ) -> None:
        self.decode_config = decode_config or DecodeConfig()
        self.prefill_config = prefill_config  # None: the kernel's default for the head size

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
        k_cache: torch.Tensor, v_cache: torch.Tensor,
        metadata: AttentionMetadata, scale: float,
        sliding_window: int | None = None, softcap: float | None = None,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        reshape_and_cache(k, v, k_cache, v_cache, metadata.slot_mapping)
        out = torch.empty_like(q) if out is None else out  # [num_tokens, num_heads, head_dim]
        if metadata.max_query_len == 1 and q.shape[0] == metadata.num_seqs:
            return paged_decode_attention(
                q, k_cache, v_cache, metadata.block_tables, metadata.seq_lens, scale, out,
                max_seq_len=metadata.max_seq_len, config=self.decode_config,
                sliding_window=sliding_window, softcap=softcap,
            )
        return paged_prefill_attention(
            q, k_cache, v_cache, metadata.block_tables, metadata.seq_lens,
            metadata.query_start_loc, scale, out, max_query_len=metadata.max_query_len,
            config=self.prefill_config, sliding_window=sliding_window, softcap=softcap,
        )

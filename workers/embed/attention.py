"""Causal attention over the step's own keys: the decoders' attention without a KV cache.

A decoder embedding model reads each input once and never decodes, so writing K/V into a
paged cache would be pure cost. This backend has the engine backends' interface (so the
decoders in workers/models run unchanged) but ignores the cache arguments: every sequence of
the step is a whole input, attending causally to its own tokens.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

from pagefleet.kernels.attention_mask import soft_cap, visible_keys
from pagefleet.workers.attention.metadata import AttentionMetadata


class CacheFreeCausalAttention:
    name = "cache-free"

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor,
                v_cache: torch.Tensor, metadata: AttentionMetadata, scale: float,
                sliding_window: int | None = None, softcap: float | None = None) -> torch.Tensor:
        """q `[T, heads, hd]`, k and v `[T, kv_heads, hd]`, sequences back to back; the
        caches (empty tensors) are never read or written. A window or soft-cap (Gemma
        layers) takes the explicit-scores path, which SDPA has no option for."""
        out = torch.empty_like(q)
        group = q.shape[1] // k.shape[1]
        starts = metadata.query_start_loc_cpu
        for start, end in itertools.pairwise(starts):
            queries = q[start:end].transpose(0, 1)  # [heads, len, hd]
            keys = k[start:end].repeat_interleave(group, dim=1).transpose(0, 1)
            values = v[start:end].repeat_interleave(group, dim=1).transpose(0, 1)
            if sliding_window is None and softcap is None:
                attended = F.scaled_dot_product_attention(queries, keys, values, is_causal=True, scale=scale)
            else:
                pos = torch.arange(end - start, device=q.device)
                scores = soft_cap(queries @ keys.transpose(1, 2) * scale, softcap)
                visible = visible_keys(pos[:, None], pos[None, :], sliding_window)
                attended = scores.masked_fill(~visible, float("-inf")).softmax(-1) @ values
            out[start:end] = attended.transpose(0, 1)
        return out


def whole_sequences(lengths: list[int], device: torch.device) -> AttentionMetadata:
    """Metadata of a step in which every sequence is a whole input with nothing cached."""
    starts = [0]
    for length in lengths:
        starts.append(starts[-1] + length)
    empty = torch.zeros(0, dtype=torch.int64, device=device)
    return AttentionMetadata(
        slot_mapping=empty, query_start_loc=torch.tensor(starts, dtype=torch.int32, device=device),
        seq_lens=torch.tensor(lengths, dtype=torch.int32, device=device),
        block_tables=empty.view(len(lengths), 0).int(), max_query_len=max(lengths),
        max_seq_len=max(lengths), query_start_loc_cpu=starts, seq_lens_cpu=list(lengths))

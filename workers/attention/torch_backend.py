"""Reference attention over the paged cache in plain torch: any device, easy to read."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pagefleet.workers.attention.metadata import AttentionMetadata


def write_kv_cache_ref(
    k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> None:
    """Scatter new K/V rows into the cache slots named by `slot_mapping`."""
    num_blocks, block_size, num_kv_heads, head_dim = k_cache.shape
    k_cache.view(-1, num_kv_heads, head_dim).index_copy_(0, slot_mapping, k.to(k_cache.dtype))
    v_cache.view(-1, num_kv_heads, head_dim).index_copy_(0, slot_mapping, v.to(v_cache.dtype))


def gather_kv(cache: torch.Tensor, block_table: torch.Tensor, seq_len: int) -> torch.Tensor:
    """The first `seq_len` cached rows of one sequence: `[seq_len, num_kv_heads, head_dim]`."""
    block_size = cache.shape[1]
    num_blocks = (seq_len + block_size - 1) // block_size
    rows = cache[block_table[:num_blocks].long()]  # [num_blocks, block_size, kv_heads, head_dim]
    return rows.flatten(0, 1)[:seq_len]


def paged_attention_ref(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
    metadata: AttentionMetadata, scale: float,
) -> torch.Tensor:
    """Causal attention of every query token over its sequence's cached K/V."""
    num_heads = q.shape[1]
    out = torch.empty_like(q)
    starts = metadata.query_start_loc_cpu
    for s, seq_len in enumerate(metadata.seq_lens_cpu):
        q_start, q_end = starts[s], starts[s + 1]
        query_len = q_end - q_start
        if query_len == 0:
            continue
        keys = gather_kv(k_cache, metadata.block_tables[s], seq_len)
        values = gather_kv(v_cache, metadata.block_tables[s], seq_len)
        group = num_heads // keys.shape[1]
        keys = keys.repeat_interleave(group, dim=1).transpose(0, 1).float()  # [heads, seq, dim]
        values = values.repeat_interleave(group, dim=1).transpose(0, 1).float()
        queries = q[q_start:q_end].transpose(0, 1).float()  # [heads, query_len, dim]
        q_pos = torch.arange(seq_len - query_len, seq_len, device=q.device)
        k_pos = torch.arange(seq_len, device=q.device)
        mask = k_pos[None, :] <= q_pos[:, None]  # [query_len, seq_len]
        attn = F.scaled_dot_product_attention(queries, keys, values, attn_mask=mask, scale=scale)
        out[q_start:q_end] = attn.transpose(0, 1).to(q.dtype)
    return out


class TorchAttentionBackend:
    """The reference backend; the Triton backend is tested against it."""

    name = "torch"

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
        k_cache: torch.Tensor, v_cache: torch.Tensor,
        metadata: AttentionMetadata, scale: float,
    ) -> torch.Tensor:
        write_kv_cache_ref(k, v, k_cache, v_cache, metadata.slot_mapping)
        return paged_attention_ref(q, k_cache, v_cache, metadata, scale)

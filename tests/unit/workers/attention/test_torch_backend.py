"""The batched torch backend equals the per-sequence reference on mixed paged batches."""

from __future__ import annotations

import pytest
import torch

from pagefleet.workers.attention import AttentionMetadata, TorchAttentionBackend
from pagefleet.workers.attention.torch_backend import paged_attention_ref, write_kv_cache_ref

BLOCK_SIZE = 4


def _batch(seq_lens: list[int], query_lens: list[int], num_blocks: int, gen: torch.Generator):
    """Random block tables (shuffled, not contiguous) and the metadata of one step."""
    perm = torch.randperm(num_blocks, generator=gen).tolist()
    tables, slot_mapping = [], []
    for seq_len, query_len in zip(seq_lens, query_lens, strict=True):
        count = -(-seq_len // BLOCK_SIZE)
        table, perm = perm[:count], perm[count:]
        tables.append(table)
        for pos in range(seq_len - query_len, seq_len):
            slot_mapping.append(table[pos // BLOCK_SIZE] * BLOCK_SIZE + pos % BLOCK_SIZE)
    width = max(len(t) for t in tables)
    starts = [0]
    for query_len in query_lens:
        starts.append(starts[-1] + query_len)
    return AttentionMetadata(
        slot_mapping=torch.tensor(slot_mapping),
        query_start_loc=torch.tensor(starts, dtype=torch.int32),
        seq_lens=torch.tensor(seq_lens, dtype=torch.int32),
        block_tables=torch.tensor([t + [0] * (width - len(t)) for t in tables], dtype=torch.int32),
        max_query_len=max(query_lens), max_seq_len=max(seq_lens),
        query_start_loc_cpu=starts, seq_lens_cpu=seq_lens,
    )


@pytest.mark.parametrize("num_heads,num_kv_heads", [(4, 4), (6, 2), (8, 1)])
@pytest.mark.parametrize(
    "seq_lens,query_lens",
    [([1, 7, 13], [1, 7, 13]), ([9, 17, 5, 30], [1, 1, 1, 1]), ([23, 6, 11], [5, 1, 11])],
)
def test_batched_backend_equals_reference(num_heads, num_kv_heads, seq_lens, query_lens):
    gen = torch.Generator().manual_seed(sum(seq_lens) + num_heads)
    head_dim, num_blocks = 8, 40
    md = _batch(seq_lens, query_lens, num_blocks, gen)
    num_tokens = sum(query_lens)
    q = torch.randn(num_tokens, num_heads, head_dim, generator=gen)
    k = torch.randn(num_tokens, num_kv_heads, head_dim, generator=gen)
    v = torch.randn(num_tokens, num_kv_heads, head_dim, generator=gen)
    cache_shape = (num_blocks, BLOCK_SIZE, num_kv_heads, head_dim)
    k_cache, v_cache = torch.randn(cache_shape, generator=gen), torch.randn(cache_shape, generator=gen)
    ref_k, ref_v = k_cache.clone(), v_cache.clone()
    out = TorchAttentionBackend().forward(q, k, v, k_cache, v_cache, md, scale=0.3)
    write_kv_cache_ref(k, v, ref_k, ref_v, md.slot_mapping)
    want = paged_attention_ref(q, ref_k, ref_v, md, scale=0.3)
    assert torch.equal(k_cache, ref_k) and torch.equal(v_cache, ref_v)
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)

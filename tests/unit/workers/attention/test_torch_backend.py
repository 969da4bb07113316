"""The batched torch backend equals the per-sequence reference on mixed paged batches."""

from __future__ import annotations

import pytest
import torch

from pagefleet.kernels.fp8_e4m3 import FP8_DTYPE
from pagefleet.kernels.testing import make_paged_batch
from pagefleet.workers.attention import TorchAttentionBackend
from pagefleet.workers.attention.torch_backend import paged_attention_ref, write_kv_cache_ref
from tests.support.paged import to_metadata

BLOCK_SIZE = 4


@pytest.mark.parametrize("num_heads,num_kv_heads", [(4, 4), (6, 2), (8, 1)])
@pytest.mark.parametrize(
    "seq_lens,query_lens",
    [([1, 7, 13], [1, 7, 13]), ([9, 17, 5, 30], [1, 1, 1, 1]), ([23, 6, 11], [5, 1, 11]),
     # decodes between prompt chunks: the two groups are padded apart and interleave back
     ([9, 23, 4, 17, 30, 2], [1, 5, 1, 17, 1, 2])],
)
def test_batched_backend_equals_reference(num_heads, num_kv_heads, seq_lens, query_lens):
    gen = torch.Generator().manual_seed(sum(seq_lens) + num_heads)
    head_dim = 8
    batch = make_paged_batch(seq_lens, query_lens, BLOCK_SIZE, gen, "cpu", extra_blocks=20)
    md = to_metadata(batch)
    num_tokens = sum(query_lens)
    q = torch.randn(num_tokens, num_heads, head_dim, generator=gen)
    k = torch.randn(num_tokens, num_kv_heads, head_dim, generator=gen)
    v = torch.randn(num_tokens, num_kv_heads, head_dim, generator=gen)
    cache_shape = (batch.num_blocks, BLOCK_SIZE, num_kv_heads, head_dim)
    k_cache, v_cache = torch.randn(cache_shape, generator=gen), torch.randn(cache_shape, generator=gen)
    ref_k, ref_v = k_cache.clone(), v_cache.clone()
    out = TorchAttentionBackend().forward(q, k, v, k_cache, v_cache, md, scale=0.3)
    write_kv_cache_ref(k, v, ref_k, ref_v, md.slot_mapping)
    want = paged_attention_ref(q, ref_k, ref_v, md, scale=0.3)
    assert torch.equal(k_cache, ref_k) and torch.equal(v_cache, ref_v)
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)


def test_fp8_cache_write_saturates_and_attention_reads_it_back():
    """kv_cache_dtype="fp8" on the torch backend: rows land saturated to +-448 (not NaN) in
    the e4m3 cache, and attention equals the reference over the same e4m3 values."""
    gen = torch.Generator().manual_seed(7)
    num_heads, num_kv_heads, head_dim = 6, 2, 8
    batch = make_paged_batch([9, 17, 5], [9, 1, 2], BLOCK_SIZE, gen, "cpu", extra_blocks=4)
    md = to_metadata(batch)
    num_tokens = batch.num_tokens
    q = torch.randn(num_tokens, num_heads, head_dim, generator=gen)
    k = torch.randn(num_tokens, num_kv_heads, head_dim, generator=gen)
    v = torch.randn(num_tokens, num_kv_heads, head_dim, generator=gen)
    k[0, 0, 0], v[1, 1, 1] = 1e4, -float("inf")
    cache_shape = (batch.num_blocks, BLOCK_SIZE, num_kv_heads, head_dim)
    k_cache = torch.randn(cache_shape, generator=gen).to(FP8_DTYPE)
    v_cache = torch.randn(cache_shape, generator=gen).to(FP8_DTYPE)
    out = TorchAttentionBackend().forward(q, k, v, k_cache, v_cache, md, scale=0.3)
    rows_k = k_cache.view(-1, num_kv_heads, head_dim)[md.slot_mapping].float()
    rows_v = v_cache.view(-1, num_kv_heads, head_dim)[md.slot_mapping].float()
    assert rows_k[0, 0, 0] == 448 and rows_v[1, 1, 1] == -448
    assert not rows_k.isnan().any() and not rows_v.isnan().any()
    torch.testing.assert_close(rows_k, k.clamp(-448, 448).to(FP8_DTYPE).float(), rtol=0, atol=0)
    want = paged_attention_ref(q, k_cache, v_cache, md, scale=0.3)
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)
    assert out.dtype == q.dtype and not out.isnan().any()


@pytest.mark.parametrize("sliding_window,softcap", [(1, None), (5, 0.5), (None, 0.5), (12, None)])
def test_batched_backend_equals_reference_windowed_and_capped(sliding_window, softcap):
    """Chunked and decode rows past the window; a cap of 0.5 bends every score."""
    gen = torch.Generator().manual_seed(sliding_window or 0)
    seq_lens, query_lens, num_heads, num_kv_heads, head_dim = [23, 6, 30], [5, 1, 30], 6, 2, 8
    batch = make_paged_batch(seq_lens, query_lens, BLOCK_SIZE, gen, "cpu", extra_blocks=20)
    md = to_metadata(batch)
    cache_shape = (batch.num_blocks, BLOCK_SIZE, num_kv_heads, head_dim)
    k_cache, v_cache = torch.randn(cache_shape, generator=gen), torch.randn(cache_shape, generator=gen)
    q = torch.randn(batch.num_tokens, num_heads, head_dim, generator=gen) * 3
    k = torch.randn(batch.num_tokens, num_kv_heads, head_dim, generator=gen)
    v = torch.randn(batch.num_tokens, num_kv_heads, head_dim, generator=gen)
    out = TorchAttentionBackend().forward(q, k, v, k_cache, v_cache, md, 0.3, sliding_window, softcap)
    want = paged_attention_ref(q, k_cache, v_cache, md, 0.3, sliding_window, softcap)
    plain = paged_attention_ref(q, k_cache, v_cache, md, 0.3)
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(want, plain, rtol=1e-3, atol=1e-3), "window or cap must matter"


@pytest.mark.parametrize("sliding_window,softcap", [(None, None), (5, 0.5)])
def test_cache_free_attention_equals_the_paged_reference(sliding_window, softcap):
    """The embedding path's attention (whole inputs, no cache) windows and caps like the rest."""
    from pagefleet.workers.embed.attention import CacheFreeCausalAttention

    gen = torch.Generator().manual_seed(11)
    lengths, num_heads, num_kv_heads, head_dim = [9, 14], 4, 2, 8
    batch = make_paged_batch(lengths, lengths, BLOCK_SIZE, gen, "cpu")
    md = to_metadata(batch)
    q = torch.randn(sum(lengths), num_heads, head_dim, generator=gen) * 3
    k, v = (torch.randn(sum(lengths), num_kv_heads, head_dim, generator=gen) for _ in range(2))
    cache_shape = (batch.num_blocks, BLOCK_SIZE, num_kv_heads, head_dim)
    k_cache, v_cache = torch.zeros(cache_shape), torch.zeros(cache_shape)
    write_kv_cache_ref(k, v, k_cache, v_cache, md.slot_mapping)
    want = paged_attention_ref(q, k_cache, v_cache, md, 0.3, sliding_window, softcap)
    got = CacheFreeCausalAttention().forward(q, k, v, k_cache, v_cache, md, 0.3, sliding_window, softcap)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)

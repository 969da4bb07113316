"""Attention benchmark cases: paged decode in GB/s, paged prefill in TFLOP/s.

Shapes are Llama-3.1-8B's (32 query heads, 8 KV heads, head_dim 128, block 16, bf16; the KV
cache in bf16, or fp8 e4m3 with `cache_dtype`). Block tables are random permutations, so K/V reads are as scattered as in a busy engine.
`triton.testing.do_bench` flushes L2 before every timed call, so small caches are not timed
out of cache.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import triton
import triton.testing

from pagefleet.kernels.host_math import cdiv
from pagefleet.kernels.paged_decode_attention import (
    DecodeConfig,
    choose_num_splits,
    paged_decode_attention,
)
from pagefleet.kernels.paged_prefill_attention import PrefillConfig, paged_prefill_attention
from pagefleet.kernels.reshape_and_cache import to_cache_dtype


@dataclass(frozen=True, slots=True)
class AttentionShape:
    num_heads: int = 32
    num_kv_heads: int = 8
    head_dim: int = 128
    block_size: int = 16
    dtype: torch.dtype = torch.bfloat16
    cache_dtype: torch.dtype | None = None  # None: `dtype` (kv_cache_dtype "auto")

    @property
    def kv_dtype(self) -> torch.dtype:
        return self.dtype if self.cache_dtype is None else self.cache_dtype


@dataclass(frozen=True, slots=True)
class Timing:
    ms: float
    rate: float  # GB/s for decode, TFLOP/s for prefill


def time_ms(fn: Callable[[], object]) -> float:
    return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")


def time_in_graph(runs: list[Callable[[], object]]) -> float:
    """Median ms per run, with `runs` replayed back to back from one CUDA graph.

    This is how the engine launches decode (no Python or launch gaps); callers pass runs
    over distinct buffers, together larger than L2, so no run finds its data in cache.
    """
    for run in runs:
        run()  # compile outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for run in runs:
            run()
    return time_ms(graph.replay) / len(runs)


@dataclass(frozen=True, slots=True)
class PagedCache:
    k_cache: torch.Tensor  # [num_blocks, block_size, num_kv_heads, head_dim]
    v_cache: torch.Tensor
    block_tables: torch.Tensor  # [batch, blocks_per_seq] int32, shuffled
    seq_lens: torch.Tensor  # [batch] int32


def random_paged_cache(
    batch: int, seq_len: int, shape: AttentionShape, device: torch.device,
    generator: torch.Generator,
) -> PagedCache:
    """K and V caches of random values holding `batch` sequences of `seq_len` tokens behind
    a shuffled block table."""
    blocks_per_seq = cdiv(seq_len, shape.block_size)
    num_blocks = batch * blocks_per_seq
    cache_shape = (num_blocks, shape.block_size, shape.num_kv_heads, shape.head_dim)
    k_cache = to_cache_dtype(torch.randn(cache_shape, dtype=shape.dtype, device=device,
                                         generator=generator), shape.kv_dtype)
    v_cache = to_cache_dtype(torch.randn(cache_shape, dtype=shape.dtype, device=device,
                                         generator=generator), shape.kv_dtype)
    perm = torch.randperm(num_blocks, device=device, generator=generator)
    block_tables = perm.view(batch, blocks_per_seq).to(torch.int32)
    seq_lens = torch.full((batch,), seq_len, dtype=torch.int32, device=device)
    return PagedCache(k_cache, v_cache, block_tables, seq_lens)


class DecodeCase:
    """One batch of `batch` sequences of `context` tokens each, cache laid out at random."""

    def __init__(self, batch: int, context: int, shape: AttentionShape, device: torch.device,
                 generator: torch.Generator) -> None:
        self.batch, self.context, self.shape = batch, context, shape
        cache = random_paged_cache(batch, context, shape, device, generator)
        self.k_cache, self.v_cache = cache.k_cache, cache.v_cache
        self.block_tables, self.seq_lens = cache.block_tables, cache.seq_lens
        self.q = torch.randn((batch, shape.num_heads, shape.head_dim), dtype=shape.dtype,
                             device=device, generator=generator)
        self.out = torch.empty_like(self.q)
        self.scale = shape.head_dim**-0.5

    @staticmethod
    def bytes_needed(batch: int, context: int, shape: AttentionShape) -> int:
        elem = shape.kv_dtype.itemsize
        return 2 * batch * context * shape.num_kv_heads * shape.head_dim * elem

    def bytes_moved(self) -> int:
        """K and V read once, plus q read and out written."""
        return self.bytes_needed(self.batch, self.context, self.shape) + 2 * self.q.nbytes

    def run(self, config: DecodeConfig) -> torch.Tensor:
        return paged_decode_attention(self.q, self.k_cache, self.v_cache, self.block_tables,
                                      self.seq_lens, self.scale, self.out, self.context, config)

    def num_splits(self, config: DecodeConfig) -> int:
        num_sms = torch.cuda.get_device_properties(self.q.device).multi_processor_count
        return choose_num_splits(self.batch, self.shape.num_kv_heads, self.context, num_sms, config)

    def time(self, config: DecodeConfig) -> Timing:
        ms = time_ms(lambda: self.run(config))
        return Timing(ms, self.bytes_moved() / ms / 1e6)

    def time_sdpa(self) -> Timing:
        """Dense (unpaged, contiguous) GQA decode through torch SDPA, for comparison."""
        s = self.shape
        k = torch.randn((self.batch, s.num_kv_heads, self.context, s.head_dim), dtype=s.dtype,
                        device=self.q.device)
        v = torch.randn_like(k)
        q = self.q[:, :, None, :]  # [batch, heads, 1, head_dim]
        ms = time_ms(lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True))
        return Timing(ms, self.bytes_moved() / ms / 1e6)


class PrefillCase:
    """`batch` sequences of `query_len` new tokens after `context` cached ones."""

    def __init__(self, batch: int, query_len: int, context: int, shape: AttentionShape,
                 device: torch.device, generator: torch.Generator) -> None:
        self.batch, self.query_len, self.context, self.shape = batch, query_len, context, shape
        seq_len = context + query_len
        cache = random_paged_cache(batch, seq_len, shape, device, generator)
        self.k_cache, self.v_cache = cache.k_cache, cache.v_cache
        self.block_tables, self.seq_lens = cache.block_tables, cache.seq_lens
        self.query_start_loc = torch.arange(0, batch + 1, dtype=torch.int32, device=device) * query_len
        self.q = torch.randn((batch * query_len, shape.num_heads, shape.head_dim), dtype=shape.dtype,
                             device=device, generator=generator)
        self.out = torch.empty_like(self.q)

    def flops(self) -> float:
        """QK^T and PV over the visible (causal) keys only: 4 * head_dim per (row, key, head)."""
        keys_per_seq = self.query_len * self.context + self.query_len * (self.query_len + 1) / 2
        return 4.0 * self.shape.head_dim * self.shape.num_heads * keys_per_seq * self.batch

    def run(self, config: PrefillConfig) -> torch.Tensor:
        return paged_prefill_attention(
            self.q, self.k_cache, self.v_cache, self.block_tables, self.seq_lens,
            self.query_start_loc, self.shape.head_dim**-0.5, self.out, self.query_len, config)

    def time(self, config: PrefillConfig) -> Timing:
        ms = time_ms(lambda: self.run(config))
        return Timing(ms, self.flops() / ms / 1e9)

    def time_sdpa(self) -> Timing | None:
        """Dense causal GQA attention through torch SDPA (only for prompts with no context)."""
        if self.context:
            return None
        s = self.shape
        q = torch.randn((self.batch, s.num_heads, self.query_len, s.head_dim), dtype=s.dtype,
                        device=self.q.device)
        k = torch.randn((self.batch, s.num_kv_heads, self.query_len, s.head_dim), dtype=s.dtype,
                        device=self.q.device)
        v = torch.randn_like(k)
        ms = time_ms(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True))
        return Timing(ms, self.flops() / ms / 1e9)

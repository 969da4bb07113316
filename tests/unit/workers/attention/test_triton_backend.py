"""The Triton backend held to the torch reference through the `forward` interface."""

from __future__ import annotations

import pytest
import torch

from pagefleet.kernels.fp8_e4m3 import FP8_DTYPE
from pagefleet.kernels.reshape_and_cache import to_cache_dtype
from pagefleet.kernels.testing import (
    FP8_KV_TOLERANCE,
    TOLERANCE,
    make_paged_batch,
    random_tensor,
    relative_error,
)
from pagefleet.workers.attention import get_attention_backend
from pagefleet.workers.attention.torch_backend import TorchAttentionBackend
from pagefleet.workers.attention.triton_backend import TritonAttentionBackend
from tests.support.paged import to_metadata

FULL = torch.cuda.is_available()
# (seq_lens, query_lens) of one engine step.
STEPS = {
    "decode": ([1, 17, 100, 48], [1, 1, 1, 1]),
    "prefill": ([37, 5], [37, 5]),
    "chunked": ([90], [26]),
    "mixed": ([1, 40, 70, 33], [1, 40, 18, 1]),
}
if FULL:
    STEPS = {
        "decode": ([1, 17, 4097, 1000, 9000] * 8, [1] * 40),
        "prefill": ([2000, 5, 513], [2000, 5, 513]),
        "chunked": ([6000, 4096], [1024, 96]),
        "mixed": ([1, 2000, 700, 33, 5000], [1, 2000, 300, 1, 1]),
    }
HEADS = [(32, 8, 128), (24, 8, 128), (16, 16, 64)] if FULL else [(4, 4, 64), (6, 2, 128), (8, 1, 64)]
F32, BF16 = torch.float32, torch.bfloat16
CASES = [(s, *h, d) for s in STEPS for h in HEADS for d in (F32, BF16)] if FULL else [
    ("decode", 4, 4, 64, F32), ("decode", 8, 1, 64, BF16), ("prefill", 6, 2, 128, BF16),
    ("chunked", 8, 1, 64, F32), ("mixed", 6, 2, 128, F32), ("mixed", 4, 4, 64, BF16)]


@pytest.mark.parametrize(("step", "num_heads", "num_kv_heads", "head_dim", "dtype"), CASES)
def test_forward_matches_torch_backend(
    step: str, num_heads: int, num_kv_heads: int, head_dim: int, dtype: torch.dtype,
    device: torch.device, generator: torch.Generator,
) -> None:
    seq_lens, query_lens = STEPS[step]
    block_size = 16
    batch = make_paged_batch(seq_lens, query_lens, block_size, generator, device)
    metadata = to_metadata(batch)
    cache_shape = (batch.num_blocks, block_size, num_kv_heads, head_dim)
    # The cached prefix is random; the slots of this step's tokens start poisoned, so
    # attention that ran before the write (or missed it) yields NaN.
    k_cache = random_tensor(cache_shape, dtype, generator, device)
    v_cache = random_tensor(cache_shape, dtype, generator, device)
    k_cache.view(-1, num_kv_heads, head_dim)[batch.slot_mapping] = float("nan")
    v_cache.view(-1, num_kv_heads, head_dim)[batch.slot_mapping] = float("nan")
    q = random_tensor((batch.num_tokens, num_heads, head_dim), dtype, generator, device)
    k = random_tensor((batch.num_tokens, num_kv_heads, head_dim), dtype, generator, device)
    v = random_tensor((batch.num_tokens, num_kv_heads, head_dim), dtype, generator, device)
    ref_k_cache, ref_v_cache = k_cache.clone(), v_cache.clone()
    scale = head_dim**-0.5

    out = TritonAttentionBackend().forward(q, k, v, k_cache, v_cache, metadata, scale)
    ref = TorchAttentionBackend().forward(q, k, v, ref_k_cache, ref_v_cache, metadata, scale)

    assert out.shape == q.shape and out.dtype == q.dtype
    assert torch.equal(k_cache.nan_to_num(), ref_k_cache.nan_to_num())
    assert torch.equal(v_cache.nan_to_num(), ref_v_cache.nan_to_num())
    assert not out.isnan().any()
    assert relative_error(out, ref) < TOLERANCE[dtype]


@pytest.mark.parametrize(("step", "sliding_window", "softcap"), [
    ("decode", 20, 50.0), ("mixed", 9, None), ("chunked", 33, 1.0)])
def test_windowed_capped_forward_matches_torch_backend(
    step: str, sliding_window: int, softcap: float | None,
    device: torch.device, generator: torch.Generator,
) -> None:
    """Gemma-style layers: both backends bind the same window and cap."""
    seq_lens, query_lens = STEPS[step]
    num_heads, num_kv_heads, head_dim, block_size = 6, 2, 64, 16
    batch = make_paged_batch(seq_lens, query_lens, block_size, generator, device)
    metadata = to_metadata(batch)
    cache_shape = (batch.num_blocks, block_size, num_kv_heads, head_dim)
    k_cache = random_tensor(cache_shape, F32, generator, device)
    v_cache = random_tensor(cache_shape, F32, generator, device)
    q = random_tensor((batch.num_tokens, num_heads, head_dim), F32, generator, device) * 3
    k = random_tensor((batch.num_tokens, num_kv_heads, head_dim), F32, generator, device)
    v = random_tensor((batch.num_tokens, num_kv_heads, head_dim), F32, generator, device)
    ref_k_cache, ref_v_cache = k_cache.clone(), v_cache.clone()
    scale = head_dim**-0.5
    out = TritonAttentionBackend().forward(q, k, v, k_cache, v_cache, metadata, scale,
                                           sliding_window=sliding_window, softcap=softcap)
    ref = TorchAttentionBackend().forward(q, k, v, ref_k_cache, ref_v_cache, metadata, scale,
                                          sliding_window=sliding_window, softcap=softcap)
    assert relative_error(out, ref) < TOLERANCE[F32]


FP8_CASES = [(s, 32, 8, 128, d) for s in STEPS for d in (F32, BF16)] if FULL else [
    ("decode", 6, 2, 128, BF16), ("mixed", 4, 4, 64, F32), ("chunked", 8, 2, 64, BF16)]


@pytest.mark.parametrize(("step", "num_heads", "num_kv_heads", "head_dim", "dtype"), FP8_CASES)
def test_fp8_cache_forward_matches_torch_backend(
    step: str, num_heads: int, num_kv_heads: int, head_dim: int, dtype: torch.dtype,
    device: torch.device, generator: torch.Generator,
) -> None:
    """kv_cache_dtype="fp8": both backends store the same e4m3 bytes and attend over them
    alike; the result stays within quantisation error of a cache in the model's dtype."""
    seq_lens, query_lens = STEPS[step]
    block_size = 16
    batch = make_paged_batch(seq_lens, query_lens, block_size, generator, device)
    metadata = to_metadata(batch)
    cache_shape = (batch.num_blocks, block_size, num_kv_heads, head_dim)
    full_k_cache = random_tensor(cache_shape, dtype, generator, device)
    full_v_cache = random_tensor(cache_shape, dtype, generator, device)
    k_cache, v_cache = to_cache_dtype(full_k_cache, FP8_DTYPE), to_cache_dtype(full_v_cache, FP8_DTYPE)
    for cache in (k_cache, v_cache):  # this step's slots start as NaN (0x7f in e4m3fn)
        cache.view(torch.uint8).view(-1, num_kv_heads, head_dim)[batch.slot_mapping] = 0x7F
    q = random_tensor((batch.num_tokens, num_heads, head_dim), dtype, generator, device)
    k = random_tensor((batch.num_tokens, num_kv_heads, head_dim), dtype, generator, device)
    v = random_tensor((batch.num_tokens, num_kv_heads, head_dim), dtype, generator, device)
    ref_k_cache, ref_v_cache = k_cache.clone(), v_cache.clone()
    scale = head_dim**-0.5

    out = TritonAttentionBackend().forward(q, k, v, k_cache, v_cache, metadata, scale)
    ref = TorchAttentionBackend().forward(q, k, v, ref_k_cache, ref_v_cache, metadata, scale)
    unrounded = TorchAttentionBackend().forward(q, k, v, full_k_cache, full_v_cache, metadata, scale)

    assert torch.equal(k_cache.view(torch.uint8), ref_k_cache.view(torch.uint8))
    assert torch.equal(v_cache.view(torch.uint8), ref_v_cache.view(torch.uint8))
    assert not out.isnan().any()
    assert relative_error(out, ref) < TOLERANCE[dtype]
    assert relative_error(out, unrounded) < FP8_KV_TOLERANCE


def test_backend_is_registered_by_name() -> None:
    backend = get_attention_backend("triton")
    assert isinstance(backend, TritonAttentionBackend)
    assert backend.name == "triton"


@pytest.mark.skipif(not FULL, reason="CUDA graphs need a GPU")
def test_decode_step_replays_in_a_cuda_graph(device: torch.device, generator: torch.Generator) -> None:
    """Capture fails on any host sync; replay must follow new inputs written in place."""
    num_heads, num_kv_heads, head_dim, block_size = 32, 8, 128, 16
    seq_lens = [1, 17, 4097, 1000, 9000, 300, 63, 2]  # +1 keeps each block count
    batch = make_paged_batch(seq_lens, [1] * len(seq_lens), block_size, generator, device)
    metadata = to_metadata(batch)
    cache_shape = (batch.num_blocks, block_size, num_kv_heads, head_dim)
    k_cache = random_tensor(cache_shape, BF16, generator, device)
    v_cache = random_tensor(cache_shape, BF16, generator, device)
    q = random_tensor((len(seq_lens), num_heads, head_dim), BF16, generator, device)
    k = random_tensor((len(seq_lens), num_kv_heads, head_dim), BF16, generator, device)
    v = random_tensor((len(seq_lens), num_kv_heads, head_dim), BF16, generator, device)
    backend = TritonAttentionBackend()
    backend.forward(q, k, v, k_cache, v_cache, metadata, 0.1)  # compile outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = backend.forward(q, k, v, k_cache, v_cache, metadata, 0.1)

    # The next step: every sequence one token longer, new q/k/v, same buffers.
    next_batch = make_paged_batch([n + 1 for n in seq_lens], [1] * len(seq_lens), block_size,
                                  generator, device)
    metadata.seq_lens.copy_(next_batch.seq_lens)
    metadata.block_tables.copy_(next_batch.block_tables[:, : metadata.block_tables.shape[1]])
    metadata.slot_mapping.copy_(next_batch.slot_mapping)
    for tensor in (q, k, v):
        tensor.copy_(random_tensor(tensor.shape, BF16, generator, device))
    ref_k_cache, ref_v_cache = k_cache.clone(), v_cache.clone()
    graph.replay()
    next_metadata = to_metadata(next_batch)
    ref = TorchAttentionBackend().forward(q, k, v, ref_k_cache, ref_v_cache, next_metadata, 0.1)
    assert relative_error(out, ref) < TOLERANCE[BF16]

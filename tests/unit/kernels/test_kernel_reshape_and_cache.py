"""The KV-cache write against its torch reference: every slot must match, untouched ones too."""

from __future__ import annotations

import pytest
import torch

from pagefleet.kernels.reshape_and_cache import reshape_and_cache, reshape_and_cache_ref
from pagefleet.kernels.testing import make_paged_batch, random_tensor

FULL = torch.cuda.is_available()
BATCH = ([1000, 4097, 1, 33], [1000, 1, 1, 20]) if FULL else ([37, 1, 20], [37, 1, 5])


@pytest.mark.parametrize(
    ("num_kv_heads", "head_dim", "block_size", "src_dtype", "cache_dtype"),
    [
        (2, 64, 16, torch.float32, torch.float32),
        (8, 128, 16, torch.bfloat16, torch.bfloat16),
        (3, 80, 8, torch.float32, torch.float16),  # odd shapes, cast on write
        (1, 128, 32, torch.float16, torch.float16),
    ],
)
def test_write_matches_reference(
    num_kv_heads: int, head_dim: int, block_size: int, src_dtype: torch.dtype,
    cache_dtype: torch.dtype, device: torch.device, generator: torch.Generator,
) -> None:
    seq_lens, query_lens = BATCH
    batch = make_paged_batch(seq_lens, query_lens, block_size, generator, device)
    slot_mapping = batch.slot_mapping.clone()
    slot_mapping[1] = -1  # a padding token writes nothing
    shape = (batch.num_tokens, num_kv_heads, head_dim)
    # Strided sources, as when K and V are views into one fused QKV projection.
    kv = random_tensor((batch.num_tokens, 2 * num_kv_heads, head_dim), src_dtype, generator, device)
    key, value = kv[:, :num_kv_heads], kv[:, num_kv_heads:]
    assert key.shape == shape and not key.is_contiguous()
    cache_shape = (batch.num_blocks, block_size, num_kv_heads, head_dim)
    k_cache = random_tensor(cache_shape, cache_dtype, generator, device)
    v_cache = random_tensor(cache_shape, cache_dtype, generator, device)
    k_expected, v_expected = k_cache.clone(), v_cache.clone()

    reshape_and_cache(key, value, k_cache, v_cache, slot_mapping)
    reshape_and_cache_ref(key, value, k_expected, v_expected, slot_mapping)

    assert torch.equal(k_cache, k_expected)
    assert torch.equal(v_cache, v_expected)
    written = k_cache.view(-1, num_kv_heads, head_dim)[batch.slot_mapping[0]]
    assert torch.equal(written, key[0].to(cache_dtype))  # the reference is not a no-op


def test_rejects_wrong_head_count(device: torch.device, generator: torch.Generator) -> None:
    key = random_tensor((2, 3, 64), torch.float32, generator, device)
    cache = random_tensor((4, 16, 2, 64), torch.float32, generator, device)
    slots = torch.tensor([0, 1], device=device)
    with pytest.raises(ValueError, match="key"):
        reshape_and_cache(key, key, cache, cache.clone(), slots)

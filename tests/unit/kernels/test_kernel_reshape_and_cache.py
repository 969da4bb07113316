"""The KV-cache write against its torch reference: every slot must match, untouched ones too."""

from __future__ import annotations

import pytest
import torch

from pagefleet.kernels.fp8_e4m3 import FP8_DTYPE, FP8_MAX
from pagefleet.kernels.reshape_and_cache import (
    reshape_and_cache,
    reshape_and_cache_ref,
    to_cache_dtype,
)
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
        (2, 64, 16, torch.float32, FP8_DTYPE),  # kv_cache_dtype="fp8"
        (8, 128, 16, torch.bfloat16, FP8_DTYPE),
        (3, 80, 8, torch.float16, FP8_DTYPE),
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

    assert _same_bits(k_cache, k_expected)
    assert _same_bits(v_cache, v_expected)
    written = k_cache.view(-1, num_kv_heads, head_dim)[batch.slot_mapping[0]]
    assert _same_bits(written, to_cache_dtype(key[0], cache_dtype))  # the reference is not a no-op


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bitwise equality (torch has no fp8 `equal` on every device). Compiled for the H200
    (triton 3.6) the e4m3 write gave +0 where torch's cast gives -0 for small negative values,
    so on a GPU the values must be equal and a zero's sign may differ (it reads back as 0)."""
    if a.dtype != b.dtype:
        return False
    if a.is_cuda:
        return torch.equal(a.float(), b.float())
    return torch.equal(a.view(torch.uint8), b.view(torch.uint8))


@pytest.mark.parametrize("src_dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_fp8_write_rounds_like_torch_across_exponents(
    src_dtype: torch.dtype, device: torch.device, generator: torch.Generator,
) -> None:
    """Magnitudes from e4m3's subnormals to its largest normals, ties included: every value
    lands on the e4m3 value torch's cast (round half to even) picks."""
    num_tokens, num_kv_heads, head_dim = 64, 2, 64
    values = random_tensor((num_tokens, num_kv_heads, head_dim), torch.float32, generator, device)
    exponents = torch.randint(-12, 9, values.shape, generator=generator, device=generator.device)
    key = (values * torch.exp2(exponents.to(device, torch.float32))).to(src_dtype)
    grid = torch.arange(256, device=device, dtype=torch.uint8).view(FP8_DTYPE).float()
    grid = grid[grid.isfinite()].sort().values  # every e4m3 value
    ties = ((grid[1:] + grid[:-1]) / 2)[: num_kv_heads * head_dim]  # halfway between neighbours
    key[0] = ties.view(num_kv_heads, head_dim).to(src_dtype)
    value = -key
    cache = torch.zeros((4, 16, num_kv_heads, head_dim), dtype=FP8_DTYPE, device=device)
    k_cache, v_cache, k_expected, v_expected = (cache.clone() for _ in range(4))
    slots = torch.arange(num_tokens, device=device)
    reshape_and_cache(key, value, k_cache, v_cache, slots)
    reshape_and_cache_ref(key, value, k_expected, v_expected, slots)
    assert _same_bits(k_cache, k_expected) and _same_bits(v_cache, v_expected)


def test_fp8_write_saturates_instead_of_nan(device: torch.device, generator: torch.Generator) -> None:
    """Values beyond e4m3's +-448 (an unscaled cache) are stored as +-448, never NaN."""
    num_kv_heads, head_dim = 2, 16
    key = random_tensor((3, num_kv_heads, head_dim), torch.bfloat16, generator, device)
    key[0, 0, :4] = torch.tensor([449.0, 465.0, 1e4, float("inf")])
    key[1, 1, :3] = torch.tensor([-500.0, -3e38, float("-inf")])
    value = key.flip(0)
    k_cache = torch.zeros((1, 16, num_kv_heads, head_dim), dtype=FP8_DTYPE, device=device)
    v_cache = torch.zeros_like(k_cache)
    reshape_and_cache(key, value, k_cache, v_cache, torch.arange(3, device=device))
    k_rows, v_rows = k_cache.view(16, num_kv_heads, head_dim).float(), v_cache.view(16, num_kv_heads, head_dim).float()
    assert not k_rows.isnan().any() and not v_rows.isnan().any()
    assert (k_rows[0, 0, :4] == FP8_MAX).all() and (k_rows[1, 1, :3] == -FP8_MAX).all()
    assert torch.equal(v_rows[:3], k_rows[:3].flip(0))
    k_ref = torch.zeros_like(k_cache)
    reshape_and_cache_ref(key, value, k_ref, torch.zeros_like(v_cache), torch.arange(3, device=device))
    assert _same_bits(k_cache, k_ref)


def test_rejects_wrong_head_count(device: torch.device, generator: torch.Generator) -> None:
    key = random_tensor((2, 3, 64), torch.float32, generator, device)
    cache = random_tensor((4, 16, 2, 64), torch.float32, generator, device)
    slots = torch.tensor([0, 1], device=device)
    with pytest.raises(ValueError, match="key"):
        reshape_and_cache(key, key, cache, cache.clone(), slots)

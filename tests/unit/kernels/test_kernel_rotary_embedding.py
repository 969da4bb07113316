"""Neox rotary embedding against torch; the Llama 3 cos/sin cache against transformers."""

from __future__ import annotations

import pytest
import torch

from pagefleet.kernels.rotary_embedding import (
    Llama3RopeScaling,
    rope_cos_sin_cache_ref,
    rope_inv_freq,
    rotary_embedding,
    rotary_embedding_ref,
)
from pagefleet.kernels.testing import TOLERANCE, nan_like, random_tensor, relative_error

FULL = torch.cuda.is_available()
SHAPES = [(1, 32, 8, 128), (300, 32, 8, 128), (77, 9, 3, 64)] if FULL else [
    (1, 4, 1, 64), (5, 6, 2, 128), (3, 3, 3, 64)]
MAX_POSITION = 8192 if FULL else 256


@pytest.mark.parametrize("in_place", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize(("num_tokens", "num_heads", "num_kv_heads", "head_dim"), SHAPES)
def test_rotary_embedding(
    num_tokens: int, num_heads: int, num_kv_heads: int, head_dim: int, dtype: torch.dtype,
    in_place: bool, device: torch.device, generator: torch.Generator,
) -> None:
    cache = rope_cos_sin_cache_ref(head_dim, MAX_POSITION, 500000.0, Llama3RopeScaling(),
                                   device=device)
    positions = torch.randint(0, MAX_POSITION, (num_tokens,), generator=generator,
                              device=generator.device).to(device)
    # q and k as strided views of one fused projection, as a model produces them.
    qk = random_tensor((num_tokens, num_heads + num_kv_heads, head_dim), dtype, generator, device)
    q, k = qk[:, :num_heads], qk[:, num_heads:]
    expected_q, expected_k = rotary_embedding_ref(positions, q, k, cache)
    q_out, k_out = (q, k) if in_place else (nan_like(q), nan_like(k))
    rotary_embedding(positions, q, k, cache, q_out, k_out)
    assert relative_error(q_out, expected_q) < TOLERANCE[dtype]
    assert relative_error(k_out, expected_k) < TOLERANCE[dtype]


def test_reference_rotates_pairs_by_position() -> None:
    """Position 0 is the identity; a rotation keeps each (x_i, x_{i+half}) pair's norm."""
    cache = rope_cos_sin_cache_ref(8, 16, 10000.0)
    x = torch.randn(2, 1, 8, generator=torch.Generator().manual_seed(1))
    rotated, _ = rotary_embedding_ref(torch.tensor([0, 5]), x, x, cache)
    assert torch.allclose(rotated[0], x[0])
    pair_norms = [t[..., :4].pow(2) + t[..., 4:].pow(2) for t in (rotated[1], x[1])]
    assert torch.allclose(*pair_norms, atol=1e-6)
    assert not torch.allclose(rotated[1], x[1])


def test_llama3_inv_freq_matches_transformers() -> None:
    transformers = pytest.importorskip("transformers")
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    params = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
              "low_freq_factor": 1.0, "high_freq_factor": 4.0,
              "original_max_position_embeddings": 8192}
    config = transformers.LlamaConfig(hidden_size=512, num_attention_heads=4, head_dim=128,
                                      max_position_embeddings=131072, rope_parameters=params)
    expected, _ = ROPE_INIT_FUNCTIONS["llama3"](config, "cpu")
    ours = rope_inv_freq(128, 500000.0, Llama3RopeScaling(
        factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=8192))
    assert torch.allclose(ours.float(), expected.float(), rtol=1e-5, atol=0)
    unscaled = rope_inv_freq(128, 500000.0, None)
    assert torch.allclose(ours[:8], unscaled[:8])  # short wavelengths are kept
    assert torch.allclose(ours[-8:], unscaled[-8:] / 8.0)  # long ones slowed by the factor

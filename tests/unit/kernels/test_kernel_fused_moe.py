"""Fused MoE (grouped GEMMs over tokens sorted by expert) against the expert-by-expert loop."""

from __future__ import annotations

import pytest
import torch

from pagefleet.kernels.fused_moe import align_to_experts, fused_moe, fused_moe_ref, moe_block_config
from pagefleet.kernels.testing import TOLERANCE, random_tensor, relative_error

FULL = torch.cuda.is_available()
# (num_tokens, hidden, inter, num_experts, top_k): odd sizes that cross tile edges, a single
# token, more experts than pairs (most experts idle), and on a GPU the large-block configs.
SHAPES = [(1, 64, 48, 8, 2), (7, 72, 40, 4, 2), (33, 64, 24, 6, 3)]
if FULL:
    SHAPES += [(256, 2048, 768, 128, 8), (1000, 512, 1408, 16, 4), (4096, 1024, 384, 64, 8)]


def random_routing(num_tokens: int, num_experts: int, top_k: int,
                   generator: torch.Generator, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Distinct experts per token (as top-k gives) and positive weights."""
    scores = torch.rand(num_tokens, num_experts, generator=generator, device=generator.device)
    weights, ids = scores.topk(top_k, dim=-1)
    return weights.to(device), ids.to(device)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", SHAPES)
def test_fused_moe(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device,
                   generator: torch.Generator) -> None:
    num_tokens, hidden, inter, num_experts, top_k = shape
    x = random_tensor((num_tokens, hidden), dtype, generator, device)
    w13 = random_tensor((num_experts, 2 * inter, hidden), dtype, generator, device) * hidden ** -0.5
    w2 = random_tensor((num_experts, hidden, inter), dtype, generator, device) * inter ** -0.5
    weights, ids = random_routing(num_tokens, num_experts, top_k, generator, device)
    out = torch.full_like(x, float("nan"))
    fused_moe(x, w13, w2, weights, ids, out)
    assert relative_error(out, fused_moe_ref(x, w13, w2, weights, ids)) < TOLERANCE[dtype]


@pytest.mark.parametrize("block_m", [16, 32])
def test_align_groups_every_pair_once_by_expert(block_m: int, device: torch.device,
                                                generator: torch.Generator) -> None:
    num_tokens, num_experts, top_k = 45, 5, 2
    _, ids = random_routing(num_tokens, num_experts, top_k, generator, device)
    blocks = align_to_experts(ids, num_experts, block_m)
    pairs = blocks.sorted_pair_ids.view(-1, block_m).long().cpu()
    block_experts = blocks.block_experts.cpu()
    flat = ids.reshape(-1).cpu()
    real = pairs[pairs < flat.numel()]
    assert sorted(real.tolist()) == list(range(flat.numel()))  # every pair exactly once
    for block, expert in zip(pairs, block_experts.tolist(), strict=True):
        members = block[block < flat.numel()]
        if expert < 0:
            assert members.numel() == 0
        else:
            assert members.numel() > 0 and (flat[members] == expert).all()
    used = int((block_experts >= 0).sum())
    assert used == sum(-(-int((flat == e).sum()) // block_m) for e in range(num_experts))


def test_block_config_grows_with_rows_per_expert() -> None:
    sizes = [moe_block_config(num_tokens * 8, 128).block_m for num_tokens in (1, 256, 2048, 8192)]
    assert sizes == sorted(sizes) and sizes[0] == 16 and sizes[-1] == 128


def test_rejects_mismatched_expert_weights(device: torch.device, generator: torch.Generator) -> None:
    x = random_tensor((3, 64), torch.float32, generator, device)
    w13 = random_tensor((4, 96, 64), torch.float32, generator, device)
    w2 = random_tensor((4, 64, 40), torch.float32, generator, device)  # inter is 48, not 40
    weights, ids = random_routing(3, 4, 2, generator, device)
    with pytest.raises(ValueError, match="w2"):
        fused_moe(x, w13, w2, weights, ids, torch.empty_like(x))

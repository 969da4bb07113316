"""SiLU-and-mul against torch, including a width spanning several programs."""

from __future__ import annotations

import pytest
import torch

from pagefleet.kernels.silu_and_mul import silu_and_mul, silu_and_mul_ref
from pagefleet.kernels.testing import TOLERANCE, random_tensor, relative_error

FULL = torch.cuda.is_available()
SHAPES = [(1, 128), (5, 3, 200), (64, 28672)] if FULL else [(1, 128), (5, 3, 200), (2, 2500)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", SHAPES)
def test_silu_and_mul(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device,
                      generator: torch.Generator) -> None:
    x = random_tensor(shape, dtype, generator, device) * 3
    out = torch.full((*shape[:-1], shape[-1] // 2), float("nan"), dtype=dtype, device=device)
    silu_and_mul(x, out)
    assert relative_error(out, silu_and_mul_ref(x)) < TOLERANCE[dtype]


def test_rejects_wrong_output_width(device: torch.device, generator: torch.Generator) -> None:
    x = random_tensor((2, 64), torch.float32, generator, device)
    with pytest.raises(ValueError, match="out"):
        silu_and_mul(x, torch.empty(2, 64, device=device))

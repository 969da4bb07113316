"""RMSNorm and fused residual-add RMSNorm against torch, out of place and in place."""

from __future__ import annotations

import pytest
import torch

from pagefleet.kernels.rms_norm import (
    fused_add_rms_norm,
    fused_add_rms_norm_ref,
    rms_norm,
    rms_norm_ref,
)
from pagefleet.kernels.testing import TOLERANCE, nan_like, random_tensor, relative_error

FULL = torch.cuda.is_available()
SHAPES = [(1, 64), (7, 100), (33, 4096), (300, 8192)] if FULL else [(1, 64), (7, 100), (3, 576)]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
EPS = 1e-5


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_rms_norm(shape: tuple[int, int], dtype: torch.dtype, device: torch.device,
                  generator: torch.Generator) -> None:
    # A strided input: rows of a wider buffer.
    x = random_tensor((shape[0], shape[1] + 3), dtype, generator, device)[:, : shape[1]]
    weight = random_tensor((shape[1],), dtype, generator, device)
    out = nan_like(x)
    rms_norm(x, weight, EPS, out)
    assert relative_error(out, rms_norm_ref(x, weight, EPS)) < TOLERANCE[dtype]


@pytest.mark.parametrize("in_place", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_fused_add_rms_norm(shape: tuple[int, int], dtype: torch.dtype, in_place: bool,
                            device: torch.device, generator: torch.Generator) -> None:
    x = random_tensor(shape, dtype, generator, device)
    residual = random_tensor(shape, dtype, generator, device)
    weight = random_tensor((shape[1],), dtype, generator, device)
    expected_out, expected_residual = fused_add_rms_norm_ref(x, residual, weight, EPS)
    if in_place:
        out, residual_out = x, residual
    else:
        out, residual_out = nan_like(x), nan_like(residual)
    fused_add_rms_norm(x, residual, weight, EPS, out, residual_out)
    assert relative_error(residual_out, expected_residual) < TOLERANCE[dtype]
    assert relative_error(out, expected_out) < TOLERANCE[dtype]


def test_leading_dimensions_are_flattened(device: torch.device, generator: torch.Generator) -> None:
    x = random_tensor((2, 3, 64), torch.float32, generator, device)
    weight = random_tensor((64,), torch.float32, generator, device)
    out = nan_like(x)
    rms_norm(x, weight, EPS, out)
    assert relative_error(out, rms_norm_ref(x, weight, EPS)) < TOLERANCE[torch.float32]


def test_rejects_wrong_weight(device: torch.device, generator: torch.Generator) -> None:
    x = random_tensor((2, 64), torch.float32, generator, device)
    with pytest.raises(ValueError, match="last dimension"):
        rms_norm(x, random_tensor((32,), torch.float32, generator, device), EPS, nan_like(x))

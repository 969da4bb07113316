"""SiLU-and-mul against torch, including a width spanning several programs; its fp8 variant
against the plain kernel followed by the quantisation kernel (the same bits) and against the
torch references composed (within one e4m3 code; the same bits on every row where the plain
kernel rounds as torch does)."""

from __future__ import annotations

import pytest
import torch

from pagefleet.kernels.quant_fp8 import QuantizedActivation, per_token_quant_fp8
from pagefleet.kernels.silu_and_mul import (
    silu_and_mul,
    silu_and_mul_quant_fp8,
    silu_and_mul_quant_fp8_ref,
    silu_and_mul_ref,
)
from pagefleet.kernels.testing import (
    TOLERANCE,
    fp8_code_distance,
    random_tensor,
    relative_error,
    rows_with_outliers,
    same_bits,
)

FULL = torch.cuda.is_available()
SHAPES = [(1, 128), (5, 3, 200), (64, 28672)] if FULL else [(1, 128), (5, 3, 200), (2, 2500)]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_silu_and_mul(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device,
                      generator: torch.Generator) -> None:
    x = random_tensor(shape, dtype, generator, device) * 3
    out = torch.full((*shape[:-1], shape[-1] // 2), float("nan"), dtype=dtype, device=device)
    silu_and_mul(x, out)
    assert relative_error(out, silu_and_mul_ref(x)) < TOLERANCE[dtype]


@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")  # the interpreter
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_silu_and_mul_quant_fp8(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device,
                                generator: torch.Generator) -> None:
    """Gate outliers both ways (a large negative gate's exp overflows: silu gives -0), an
    all-zero row and magnitudes over four decades; float16 keeps products below its range."""
    x = rows_with_outliers(shape, dtype, generator, device, outlier=100.0)
    d = shape[-1] // 2
    rows = x.numel() // shape[-1]
    plain = silu_and_mul(x, torch.full((*shape[:-1], d), float("nan"), dtype=dtype, device=device))
    plain = plain.view(rows, d)
    unfused = QuantizedActivation.empty(rows, d, dtype, device)
    per_token_quant_fp8(plain, unfused.values, unfused.scale)
    got = QuantizedActivation.empty(rows, d, dtype, device)
    got.values.view(torch.uint8).fill_(0x7F)  # e4m3's NaN: anything left unwritten shows
    got.scale.fill_(float("nan"))
    silu_and_mul_quant_fp8(x, got)
    assert torch.equal(got.values.view(torch.uint8), unfused.values.view(torch.uint8))
    assert torch.equal(got.scale, unfused.scale)

    want = silu_and_mul_quant_fp8_ref(x)
    want_plain = silu_and_mul_ref(x).view(rows, d)
    assert fp8_code_distance(got.values, want.values).max().item() <= 1
    torch.testing.assert_close(got.scale, want.scale, rtol=4 * torch.finfo(dtype).eps, atol=0.0)
    if FULL:  # compiled, quantisation is held to torch's bytes by test_kernel_quant_fp8 alone
        return
    same = same_bits(plain, want_plain).all(-1)
    assert torch.equal(got.values[same].view(torch.uint8), want.values[same].view(torch.uint8))
    assert torch.equal(got.scale[same], want.scale[same])


def test_rejects_wrong_output_width(device: torch.device, generator: torch.Generator) -> None:
    x = random_tensor((2, 64), torch.float32, generator, device)
    with pytest.raises(ValueError, match="out"):
        silu_and_mul(x, torch.empty(2, 64, device=device))
    with pytest.raises(ValueError, match=r"out\.values must have shape"):
        silu_and_mul_quant_fp8(x, QuantizedActivation.empty(2, 64, x.dtype, device))

"""RMSNorm and fused residual-add RMSNorm against torch, out of place and in place; their
fp8 variants against the plain kernel followed by the quantisation kernel (the same bits) and
against the torch references composed (within one e4m3 code; the same bits on every row where
the plain kernel rounds as torch does)."""

from __future__ import annotations

import pytest
import torch

from pagefleet.kernels.quant_fp8 import QuantizedActivation, per_token_quant_fp8
from pagefleet.kernels.rms_norm import (
    fused_add_rms_norm,
    fused_add_rms_norm_quant_fp8,
    fused_add_rms_norm_quant_fp8_ref,
    fused_add_rms_norm_ref,
    rms_norm,
    rms_norm_quant_fp8,
    rms_norm_quant_fp8_ref,
    rms_norm_ref,
)
from pagefleet.kernels.testing import (
    TOLERANCE,
    fp8_code_distance,
    nan_like,
    random_tensor,
    relative_error,
    rows_with_outliers,
    same_bits,
)

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


def _poisoned_quantized(rows: int, cols: int, dtype: torch.dtype, device: torch.device) -> QuantizedActivation:
    out = QuantizedActivation.empty(rows, cols, dtype, device)
    out.values.view(torch.uint8).fill_(0x7F)  # e4m3's NaN: a row the kernel skips stays NaN
    out.scale.fill_(float("nan"))
    return out


def _assert_quantized_equal(got: QuantizedActivation, want: QuantizedActivation) -> None:
    """Fused kernel vs plain kernel + quant kernel: the same bits under the interpreter.
    Compiled (H200, triton 3.6) the fused kernel's scale differed from the two-kernel path's in
    the last bits of float32 on a few rows (the compiler orders the row max and the division
    differently in one kernel than across two), so there a value may sit one e4m3 code away."""
    if FULL:
        assert fp8_code_distance(got.values, want.values).max().item() <= 1
        torch.testing.assert_close(got.scale, want.scale, rtol=4 * torch.finfo(torch.float32).eps, atol=0.0)
        return
    assert torch.equal(got.values.view(torch.uint8), want.values.view(torch.uint8))
    assert torch.equal(got.scale, want.scale)


def _assert_near_reference(got: QuantizedActivation, want: QuantizedActivation,
                           plain: torch.Tensor, want_plain: torch.Tensor) -> None:
    """`plain`: the plain kernel's rows; `want_plain`: the torch reference's. The kernels round
    differently from torch (sum order; the interpreter truncates casts to bfloat16) by a unit
    in the last place of `plain`'s dtype, which moves a value by at most one e4m3 code."""
    assert fp8_code_distance(got.values, want.values).max().item() <= 1
    eps = torch.finfo(plain.dtype).eps
    torch.testing.assert_close(got.scale, want.scale, rtol=4 * eps, atol=0.0)
    if FULL:  # compiled, quantisation is held to torch's bytes by test_kernel_quant_fp8 alone
        return
    rows = same_bits(plain, want_plain).all(-1)  # where the rows agree, the quantisation must
    assert torch.equal(got.values[rows].view(torch.uint8), want.values[rows].view(torch.uint8))
    assert torch.equal(got.scale[rows], want.scale[rows])


@pytest.mark.parametrize("in_place", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_fused_add_rms_norm_quant_fp8(shape: tuple[int, int], dtype: torch.dtype, in_place: bool,
                                      device: torch.device, generator: torch.Generator) -> None:
    """Rows with outliers, an all-zero row (residual and input) and magnitudes over four decades."""
    x = rows_with_outliers(shape, dtype, generator, device, outlier=1000.0)
    residual = rows_with_outliers(shape, dtype, generator, device, outlier=1000.0)
    weight = random_tensor((shape[1],), dtype, generator, device)
    want, want_residual = fused_add_rms_norm_quant_fp8_ref(x, residual, weight, EPS)
    want_plain, _ = fused_add_rms_norm_ref(x, residual, weight, EPS)
    plain, plain_residual = nan_like(x), nan_like(residual)
    fused_add_rms_norm(x, residual, weight, EPS, plain, plain_residual)
    unfused = _poisoned_quantized(*shape, dtype, device)
    per_token_quant_fp8(plain, unfused.values, unfused.scale)

    got = _poisoned_quantized(*shape, dtype, device)
    residual_out = residual if in_place else nan_like(residual)
    fused_add_rms_norm_quant_fp8(x, residual, weight, EPS, got, residual_out)
    assert torch.equal(residual_out, plain_residual)
    _assert_quantized_equal(got, unfused)
    assert relative_error(residual_out, want_residual) < TOLERANCE[dtype]
    _assert_near_reference(got, want, plain, want_plain)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_rms_norm_quant_fp8(shape: tuple[int, int], dtype: torch.dtype, device: torch.device,
                            generator: torch.Generator) -> None:
    x = rows_with_outliers(shape, dtype, generator, device, outlier=1000.0)
    weight = random_tensor((shape[1],), dtype, generator, device)
    plain = rms_norm(x, weight, EPS, nan_like(x))
    unfused = _poisoned_quantized(*shape, dtype, device)
    per_token_quant_fp8(plain, unfused.values, unfused.scale)
    got = rms_norm_quant_fp8(x, weight, EPS, _poisoned_quantized(*shape, dtype, device))
    _assert_quantized_equal(got, unfused)
    _assert_near_reference(got, rms_norm_quant_fp8_ref(x, weight, EPS), plain, rms_norm_ref(x, weight, EPS))


def test_quant_fp8_output_is_checked(device: torch.device, generator: torch.Generator) -> None:
    x = random_tensor((2, 64), torch.float32, generator, device)
    weight = random_tensor((64,), torch.float32, generator, device)
    wrong = QuantizedActivation(torch.empty(2, 64, device=device), torch.empty(2, 1, device=device), x.dtype)
    with pytest.raises(ValueError, match=r"out\.values must be"):
        rms_norm_quant_fp8(x, weight, EPS, wrong)
    with pytest.raises(ValueError, match=r"out\.scale must have shape"):
        short = QuantizedActivation.empty(2, 64, x.dtype, device)
        rms_norm_quant_fp8(x, weight, EPS, QuantizedActivation(short.values, short.scale[:1], x.dtype))

"""Per-token FP8 (e4m3) quantisation of activations: one pass per row, values and scale.

Before an FP8 matmul every token's row is scaled so its largest magnitude maps to 448 and
rounded to e4m3. In torch that is six kernels (upcast, abs, amax, divide, clamp, cast), each
reading the whole activation; this kernel reads the row once. Rounding is done explicitly
in float32 onto the e4m3 grid (round half to even, like torch's cast) before the final cast,
which is then exact: the same bits on the GPU and in Triton's CPU interpreter.

`quantize_row_fp8` is that rounding as a device function: the RMSNorm and SiLU-and-mul
kernels call it too, so they can hand an FP8 matmul its input directly
(`QuantizedActivation`) and the standalone pass is skipped, with the very same bits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from pagefleet.kernels.checks import check_float, check_last_dim_contiguous, check_shape
from pagefleet.kernels.host_math import next_power_of_2

FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = float(torch.finfo(FP8_DTYPE).max)  # 448
MIN_SCALE = 1e-12  # an all-zero row keeps a finite scale
_MANTISSA_BITS = 3
_MIN_NORMAL_EXPONENT = -6

# The same numbers as device constants (Triton reads only constexpr globals).
_FP8_MAX_VALUE = tl.constexpr(FP8_MAX)
_MIN_SCALE_VALUE = tl.constexpr(MIN_SCALE)
_MANTISSA = tl.constexpr(_MANTISSA_BITS)
_MIN_NORMAL = tl.constexpr(2.0 ** _MIN_NORMAL_EXPONENT)


@dataclass(frozen=True, slots=True)
class QuantizedActivation:
    """Rows in fp8 e4m3 with one float32 scale each (`rows ~= values * scale`): what an FP8
    matmul takes as its input. A kernel that already holds whole rows (RMSNorm, SiLU-and-mul)
    writes this instead of the activation, so the matmul does not quantise it again."""

    values: torch.Tensor  # [rows, cols] float8_e4m3fn
    scale: torch.Tensor  # [rows, 1] float32
    dtype: torch.dtype  # the activation's own dtype: what the matmul returns

    @classmethod
    def empty(cls, rows: int, cols: int, dtype: torch.dtype, device: torch.device) -> QuantizedActivation:
        return cls(torch.empty((rows, cols), dtype=FP8_DTYPE, device=device),
                   torch.empty((rows, 1), dtype=torch.float32, device=device), dtype)

    @property
    def shape(self) -> torch.Size:
        return self.values.shape

    def check(self, rows: int, cols: int) -> None:
        """Fail on the host before a kernel writes `[rows, cols]` into it."""
        check_shape("out.values", self.values, (rows, cols))
        check_shape("out.scale", self.scale, (rows, 1))
        check_last_dim_contiguous("out.values", self.values)
        if self.values.dtype != FP8_DTYPE:
            raise ValueError(f"out.values must be {FP8_DTYPE}, got {self.values.dtype}")
        if self.scale.dtype != torch.float32 or not self.scale.is_contiguous():
            raise ValueError(f"out.scale must be contiguous float32, got {self.scale.dtype}")


@triton.jit
def fp8_scale(amax):
    """A row's scale from its largest magnitude (float32): `amax / 448`, never below
    MIN_SCALE."""
    # IEEE division (plain `/` is approximate on NVIDIA GPUs): the scale is torch's.
    return tl.maximum(tl.math.div_rn(amax, _FP8_MAX_VALUE), _MIN_SCALE_VALUE)


@triton.jit
def round_to_fp8_grid(x, scale):
    """Float32 values divided by their row's `scale`, clamped to +-448 and rounded onto the
    e4m3 grid (half to even, like torch's cast), still float32: the final cast is exact."""
    # IEEE division: a value on a rounding tie must land exactly where torch puts it.
    v = tl.clamp(tl.math.div_rn(x, scale), -_FP8_MAX_VALUE, _FP8_MAX_VALUE)
    # The grid step at |v|: 2^(exponent - mantissa bits); subnormals share the smallest. The
    # exponent is read off the float's bits and the step built from bits: exact, where the
    # GPU's log2 and exp2 are approximations; dividing by a power of two is then exact too.
    biased_exponent = tl.maximum(tl.abs(v), _MIN_NORMAL).to(tl.int32, bitcast=True) >> 23
    step = ((biased_exponent - _MANTISSA) << 23).to(tl.float32, bitcast=True)
    q = tl.math.div_rn(v, step)
    whole = tl.floor(q)
    frac = q - whole
    odd = (whole - 2.0 * tl.floor(whole * 0.5)) == 1.0
    rounded = tl.where((frac > 0.5) | ((frac == 0.5) & odd), whole + 1.0, whole) * step
    # A negative value that rounds to zero is -0 in torch's cast (floor gave +0): v * 0 is a
    # zero of v's sign.
    return tl.where(rounded == 0.0, v * 0.0, rounded)


@triton.jit
def quantize_row_fp8(x):
    """A float32 row (masked lanes 0) -> (its values rounded onto the e4m3 grid, still float32,
    and the row's scale), with `x ~= values * scale` and `max |values| == 448`."""
    scale = fp8_scale(tl.max(tl.abs(x), 0))
    return round_to_fp8_grid(x, scale), scale


@triton.jit
def _per_token_quant_fp8_kernel(
    x_ptr, out_ptr, scale_ptr, stride_x_row, stride_out_row,
    COLS: tl.constexpr, BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < COLS
    x = tl.load(x_ptr + row * stride_x_row + cols, mask=mask, other=0.0).to(tl.float32)
    rounded, scale = quantize_row_fp8(x)
    tl.store(out_ptr + row * stride_out_row + cols, rounded.to(out_ptr.dtype.element_ty), mask=mask)
    tl.store(scale_ptr + row, scale)


def row_num_warps(block: int) -> int:
    """Warps for one program holding a whole row of `block` float32 values."""
    return min(16, max(1, block // 1024))


def per_token_quant_fp8(x: torch.Tensor, out: torch.Tensor, scale: torch.Tensor) -> None:
    """`x` `[rows, cols]` -> `out` fp8 `[rows, cols]` and `scale` float32 `[rows, 1]`,
    with `x ~= out * scale` (per row)."""
    check_float("x", x)
    check_last_dim_contiguous("x", x)
    if x.dim() != 2:
        raise ValueError(f"x must be [rows, cols], got {tuple(x.shape)}")
    rows, cols = x.shape
    QuantizedActivation(out, scale, x.dtype).check(rows, cols)
    if rows == 0:
        return
    block = next_power_of_2(cols)
    _per_token_quant_fp8_kernel[(rows,)](
        x, out, scale, x.stride(0), out.stride(0), COLS=cols, BLOCK=block,
        num_warps=row_num_warps(block),
    )


def per_token_quant_fp8_ref(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`x` `[rows, cols]` -> (fp8 values, float32 scale `[rows, 1]`), in torch."""
    x32 = x.float()
    scale = x32.abs().amax(dim=-1, keepdim=True).div_(FP8_MAX).clamp_(min=MIN_SCALE)
    return x32.div(scale).clamp_(-FP8_MAX, FP8_MAX).to(FP8_DTYPE), scale

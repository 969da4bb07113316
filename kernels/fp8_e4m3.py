"""FP8 e4m3 rounding shared by the kernels that write fp8: one definition of the grid.

Triton's cast to fp8 is not to be trusted everywhere: in the CPU interpreter (triton 3.9) a
float32 -> e4m3 cast truncates instead of rounding to nearest even, and a bfloat16 -> e4m3
cast loses signs. So every writer clamps to +-448 and rounds onto the e4m3 grid in float32
itself (round half to even, like torch's cast); the final cast then has nothing left to
round and gives the same bits on the GPU, in the interpreter and in the torch references.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = float(torch.finfo(FP8_DTYPE).max)  # 448
_MAX = tl.constexpr(FP8_MAX)
_MANTISSA_BITS = tl.constexpr(3.0)
_MIN_NORMAL = tl.constexpr(2.0**-6)  # subnormals share the grid step of the smallest normal


@triton.jit
def round_to_e4m3(x):
    """`x` (float32) clamped to +-448 and rounded to the nearest e4m3 value, as float32."""
    # Rounded as a magnitude, the sign put back from the sign bit: -tiny and -0.0 stay -0.0,
    # like torch. NaN stays NaN (a NaN-blind min would turn it into 448 on the GPU).
    a = tl.minimum(tl.abs(x), _MAX, propagate_nan=tl.PropagateNan.ALL)
    # The grid step at a: 2^(exponent - mantissa bits).
    exponent = tl.floor(tl.log2(tl.maximum(a, _MIN_NORMAL)))
    step = tl.exp2(exponent - _MANTISSA_BITS)
    q = a / step  # exact: step is a power of two
    whole = tl.floor(q)
    frac = q - whole
    odd = (whole - 2.0 * tl.floor(whole * 0.5)) == 1.0
    rounded = tl.where((frac > 0.5) | ((frac == 0.5) & odd), whole + 1.0, whole) * step
    return tl.where(x.to(tl.int32, bitcast=True) < 0, -rounded, rounded)


def saturate_to_e4m3(x: torch.Tensor) -> torch.Tensor:
    """The torch side of `round_to_e4m3` plus the cast: values beyond +-448 saturate (an
    unclamped cast may give NaN) instead of poisoning the cache."""
    return x.float().clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE)

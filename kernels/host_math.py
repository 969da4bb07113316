"""Integer arithmetic on the host: kernel grids and padded sizes, KV blocks for tokens.

Recent Triton makes `triton.cdiv` and `triton.next_power_of_2` constexpr functions: callable
from Python, but every call unwraps its arguments through Triton's machinery (about 5 us each
on the CI machine, under triton 3.9). A launch computes its grid and padded sizes with a few
of them, for every layer of every eager step, so the host paid for them hundreds of times a
step; these plain functions cost a fraction of that. Inside `@triton.jit` code use `tl.cdiv`.
"""

from __future__ import annotations


def cdiv(a: int, b: int) -> int:
    """Ceiling division for non-negative `a` and positive `b`: blocks needed for `a` tokens."""
    return -(-a // b)


def next_power_of_2(n: int) -> int:
    """The smallest power of two >= `n` (1 for `n` <= 1), as `triton.next_power_of_2`."""
    return 1 if n <= 1 else 1 << (n - 1).bit_length()

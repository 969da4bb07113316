"""Integer arithmetic the data plane repeats: one spelling, so a reader greps one name."""

from __future__ import annotations


def cdiv(a: int, b: int) -> int:
    """Ceiling division for non-negative `a` and positive `b`: blocks needed for `a` tokens."""
    return -(-a // b)

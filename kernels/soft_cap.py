"""Gemma 2's attention-score soft-capping inside the attention kernels (reference:
`attention_mask.soft_cap`), kept apart so the torch path never imports Triton."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def soft_cap_tile(scores, cap):
    """`cap * tanh(scores / cap)`, with tanh as `2 sigmoid(2x) - 1` (Triton has no tanh).
    The kernels keep scores in log2 units, so they pass `cap * log2(e)` as `cap`."""
    return cap * (2.0 * tl.sigmoid(2.0 * scores / cap) - 1.0)

"""The CPU KV cache's lazily zeroed memory: zeros of the asked shape and dtype, writable, each
tensor its own memory, alive as long as the tensor (the mapping is not freed under it)."""

from __future__ import annotations

import gc

import pytest
import torch

from pagefleet.workers.engine.lazy_zeros import zeros

CPU = torch.device("cpu")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_zeros_are_zero_writable_and_separate(dtype: torch.dtype) -> None:
    a, b = zeros((7, 16, 3, 64), dtype, CPU), zeros((7, 16, 3, 64), dtype, CPU)
    assert a.shape == (7, 16, 3, 64) and a.dtype == dtype and a.is_contiguous()
    assert torch.count_nonzero(a) == 0
    gc.collect()  # the mapping must live as long as the tensor, not as long as a local name
    a[3, 5] = 1.5
    assert a.float().sum().item() == 1.5 * 3 * 64 and torch.count_nonzero(b) == 0


def test_an_empty_shape_is_allowed() -> None:
    assert zeros((0, 16, 3, 64), torch.float32, CPU).shape == (0, 16, 3, 64)

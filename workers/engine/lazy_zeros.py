"""Zeroed tensors whose host memory is zeroed by the kernel as it is first touched.

`torch.zeros` on the CPU writes every byte before returning: for the default model's 1 GiB KV
cache that is about two seconds of a cold start on a 2-core machine, spent before the first
request can run. numpy's `zeros` asks for `calloc`, which for large sizes maps fresh pages that
the kernel guarantees to be zero and fills only when touched, so the cost moves to the first
write of each page, spread over serving, and pages never used are never paid for. The contents
are the same zeros either way (the paged attention may read a block's unwritten slots, so they
must be finite). On other devices this is `torch.zeros`.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def zeros(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    if device.type != "cpu":
        return torch.zeros(shape, dtype=dtype, device=device)
    num_bytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
    return torch.from_numpy(np.zeros(num_bytes, dtype=np.uint8)).view(dtype).view(shape)

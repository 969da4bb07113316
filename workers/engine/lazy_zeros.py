"""Zeroed tensors whose host memory is zeroed by the kernel as it is first touched.

`torch.zeros` on the CPU writes every byte before returning: for the default model's 1 GiB KV
cache that is about two seconds of a cold start on a 2-core machine, spent before the first
request can run. A fresh anonymous mapping is guaranteed zero by the kernel, which fills each
page only when it is first touched, so the cost moves to the first write of each page, spread
over serving, and pages never used are never paid for. The contents are the same zeros either
way (the paged attention may read a block's unwritten slots, so they must be finite). The
mapping is plain (no huge-page advice), like the one malloc gives torch for a large tensor, so
serving sees the same memory as before. On other devices this is `torch.zeros`.
"""

from __future__ import annotations

import math
import mmap

import torch


def zeros(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    if device.type != "cpu":
        return torch.zeros(shape, dtype=dtype, device=device)
    num_bytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
    if num_bytes == 0:
        return torch.zeros(shape, dtype=dtype)
    # The tensor holds the mapping (through the buffer protocol) for as long as it lives.
    return torch.frombuffer(mmap.mmap(-1, num_bytes), dtype=torch.uint8).view(dtype).view(shape)

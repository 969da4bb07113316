"""Fixtures for the kernel and attention-backend tests.

Kernel tests run in Triton's CPU interpreter unless a GPU is present. `TRITON_INTERPRET` is
read when `@triton.jit` decorates a kernel; the root conftest sets it, and so does this one,
because `pagefleet bench kernels` runs these folders on a GPU machine with
`--confcutdir=tests/unit` (the root conftest needs redis, which is not installed there).
With a GPU the same tests run compiled, at full size (each module picks its shapes from
`torch.cuda.is_available()`).
"""

from __future__ import annotations

import os
import zlib

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture
def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture
def generator(request: pytest.FixtureRequest, device: torch.device) -> torch.Generator:
    """Seeded per test case: reproducible, yet every parametrization draws different inputs."""
    return torch.Generator(device=device).manual_seed(zlib.crc32(request.node.nodeid.encode()))

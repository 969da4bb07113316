"""Fixtures shared by every test folder.

Without a GPU, Triton kernels run in Triton's CPU interpreter. The variable is read when a
kernel is decorated, so it is set here, before any test module imports `pagefleet.kernels`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest
import redis

from tests.support.redis_server import redis_server


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """One real redis-server for the session; tests use distinct keys or flush it."""
    with redis_server() as url:
        yield url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.close()

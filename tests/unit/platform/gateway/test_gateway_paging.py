"""The page cursor shared by /v1/files and /v1/batches, on fakeredis (pure logic, no server)."""

from __future__ import annotations

import asyncio

import fakeredis.aioredis
import pytest

from pagefleet.platform.gateway.errors import OpenAIError
from pagefleet.platform.gateway.files.service import file_not_found
from pagefleet.platform.gateway.paging import page_start


def _start(after: str | None) -> int:
    async def go() -> int:
        redis = fakeredis.aioredis.FakeRedis()
        await redis.zadd("index", {"a": 1, "b": 2, "c": 3})
        return await page_start(redis, "index", after, file_not_found)
    return asyncio.run(go())


def test_no_cursor_starts_at_the_newest_and_a_cursor_starts_just_after_itself():
    assert _start(None) == 0
    assert _start("c") == 1
    assert _start("a") == 3


def test_an_unknown_cursor_is_the_callers_404():
    with pytest.raises(OpenAIError) as raised:
        _start("zzz")
    assert raised.value.status == 404
    assert raised.value.body.code == "file_not_found" and "zzz" in raised.value.body.message

"""Cursor pagination over an owner's newest-first index (a Redis sorted set of ids)."""

from __future__ import annotations

from collections.abc import Callable

import redis.asyncio as aioredis

from pagefleet.platform.gateway.errors import OpenAIError


async def page_start(redis: aioredis.Redis, index: str, after: str | None,
                     not_found: Callable[[str], OpenAIError]) -> int:
    """The rank in `index` (newest first) the page after the id `after` starts at: 0 without a
    cursor; a cursor the index does not hold is the caller's 404, not an empty page."""
    if after is None:
        return 0
    rank = await redis.zrevrank(index, after)
    if rank is None:
        raise not_found(after)
    return rank + 1

"""The controller's event-driven path: the gateway names a model on `keys.WAKE_CHANNEL` when
an enqueue needs workers now, and the controller reconciles that model at once.

The periodic tick stays the fallback (a wake lost while the controller was reconnecting is
only a tick late). Names that arrive while a reconcile runs are coalesced: one reconcile reads
the whole queue, so it covers every request queued before it. A lost connection raises out of
the listener and `supervise` subscribes again after a back-off.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from pagefleet.platform.protocol import keys

_POLL_S = 1.0  # how often a quiet listener looks at `stop`


async def listen_for_wakes(client: aioredis.Redis, on_wake: Callable[[str], Awaitable[object]],
                           stop: asyncio.Event) -> None:
    """Call `on_wake(model)` for every model named on the wake channel until `stop` is set."""
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    try:
        await pubsub.subscribe(keys.WAKE_CHANNEL)
        while not stop.is_set():
            message = await pubsub.get_message(timeout=_POLL_S)
            models: list[str] = []
            while message is not None:
                if message["type"] == "message":
                    name = _text(message["data"])
                    if name not in models:
                        models.append(name)
                message = await pubsub.get_message(timeout=0)
            for model in models:
                await on_wake(model)
    finally:
        with contextlib.suppress(RedisError, OSError):
            await pubsub.aclose()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value

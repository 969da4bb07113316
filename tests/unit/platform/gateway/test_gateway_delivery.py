from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from pagefleet.platform.gateway.delivery import ResultHub


@pytest.mark.parametrize(("url", "socket_timeout", "max_block_ms"), [
    ("redis://127.0.0.1:1/0", 30.0, 5_000),
    ("redis://127.0.0.1:1/0", 5.0, 2_500),  # redis-py 8's default: blocking 5 s would time out
    ("redis://127.0.0.1:1/0?socket_timeout=2", 30.0, 1_000),  # the URL wins
    ("redis://127.0.0.1:1/0", None, 5_000),
])
def test_blocking_reads_stay_under_the_socket_timeout(url: str, socket_timeout: float | None,
                                                     max_block_ms: int) -> None:
    def client() -> aioredis.Redis:
        return aioredis.Redis.from_url(url, socket_timeout=socket_timeout)  # never connects

    hub = ResultHub.connect(client, client(), num_readers=2, buffer_events=8)
    assert [reader.max_block_ms for reader in hub.readers] == [max_block_ms, max_block_ms]

"""The console's TTFT history on fakeredis: samples land in their time bucket, percentiles per
bucket, only the last 15 minutes read back, and each bucket capped and expiring."""

from __future__ import annotations

import asyncio

import fakeredis.aioredis

from pagefleet.platform.protocol import keys
from pagefleet.platform.protocol.ttft import BUCKET_S, MAX_SAMPLES, WINDOW_S, read_ttft, record_ttft

MODEL = "m"
NOW = 1_000_000 * BUCKET_S + 5.0  # 5 s into a bucket


def test_buckets_hold_percentiles_of_their_samples_over_the_window_only() -> None:
    async def go():
        client = fakeredis.aioredis.FakeRedis()
        for ms in range(1, 101):  # 1..100 ms in the current bucket
            await record_ttft(client, MODEL, 0, ms / 1000, NOW)
        await record_ttft(client, MODEL, 0, 2.0, NOW - BUCKET_S)  # the bucket before
        await record_ttft(client, MODEL, 0, 9.0, NOW - WINDOW_S - BUCKET_S)  # out of the window
        await record_ttft(client, MODEL, 2, 30.0, NOW)  # another priority
        ttl = await client.ttl(keys.ttft_samples(MODEL, 0, int(NOW // BUCKET_S)))
        return await read_ttft(client, MODEL, 0, NOW), await read_ttft(client, MODEL, 2, NOW), ttl

    interactive, batch, ttl = asyncio.run(go())
    assert [(b.at, b.count, b.p50_ms, b.p95_ms) for b in interactive] == [
        (NOW - 5.0 - BUCKET_S, 1, 2000.0, 2000.0), (NOW - 5.0, 100, 50.0, 95.0)]
    assert [(b.count, b.p50_ms) for b in batch] == [(1, 30000.0)]
    assert WINDOW_S < ttl <= WINDOW_S + 2 * BUCKET_S


def test_a_bucket_keeps_only_its_newest_samples() -> None:
    async def go():
        client = fakeredis.aioredis.FakeRedis()
        for _ in range(MAX_SAMPLES + 50):
            await record_ttft(client, MODEL, 0, 5.0, NOW)
        for _ in range(MAX_SAMPLES):
            await record_ttft(client, MODEL, 0, 0.001, NOW)
        return await read_ttft(client, MODEL, 0, NOW)

    (bucket,) = asyncio.run(go())
    assert (bucket.count, bucket.p95_ms) == (MAX_SAMPLES, 1.0)


def test_no_samples_no_buckets() -> None:
    assert asyncio.run(read_ttft(fakeredis.aioredis.FakeRedis(), MODEL, 0, NOW)) == []

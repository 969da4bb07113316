"""Time-to-first-token samples kept in Redis for the console's charts.

The workers write one sample per request (enqueue -> first token: the wait a client sees,
queueing included) into a list per model, priority and `BUCKET_S` bucket; the console reads
p50/p95 per bucket over the last `WINDOW_S`. Capped two ways, so no traffic level grows it:
a bucket keeps its newest `MAX_SAMPLES` samples (trimmed on every write) and expires once it
has left the window. The history is server-side, so a fresh page load shows the last 15 minutes.
"""

from __future__ import annotations

import msgspec
import redis.asyncio as aioredis

from pagefleet.platform.protocol import keys
from pagefleet.platform.protocol.stats import percentile

BUCKET_S = 30
WINDOW_S = 15 * 60
MAX_SAMPLES = 512


class TtftBucket(msgspec.Struct, kw_only=True):
    at: float  # the bucket's start, unix seconds
    count: int  # samples kept (at most MAX_SAMPLES)
    p50_ms: float
    p95_ms: float


def _bucket(at: float) -> int:
    return int(at // BUCKET_S)


async def record_ttft(client: aioredis.Redis, model: str, priority: int, seconds: float,
                      at: float) -> None:
    key = keys.ttft_samples(model, priority, _bucket(at))
    async with client.pipeline(transaction=False) as pipe:
        pipe.lpush(key, f"{seconds:.6f}")
        pipe.ltrim(key, 0, MAX_SAMPLES - 1)
        pipe.expire(key, WINDOW_S + 2 * BUCKET_S)
        await pipe.execute()


async def read_ttft(client: aioredis.Redis, model: str, priority: int, now: float) -> list[TtftBucket]:
    """The buckets of the last `WINDOW_S` that hold samples, oldest first."""
    buckets = range(_bucket(now - WINDOW_S) + 1, _bucket(now) + 1)
    async with client.pipeline(transaction=False) as pipe:
        for bucket in buckets:
            pipe.lrange(keys.ttft_samples(model, priority, bucket), 0, -1)
        replies = await pipe.execute()
    points = []
    for bucket, raw in zip(buckets, replies, strict=True):
        if raw:
            ms = sorted(float(v) * 1000 for v in raw)
            points.append(TtftBucket(at=float(bucket * BUCKET_S), count=len(ms),
                                     p50_ms=round(percentile(ms, 0.5), 3),
                                     p95_ms=round(percentile(ms, 0.95), 3)))
    return points


async def take_samples(client: aioredis.Redis, model: str, priority: int) -> list[float]:
    """Remove and return every sample of `model` at `priority` still in Redis (seconds, any
    order). The serving benchmark calls it before its measured load (to drop the warm-up's)
    and after (the worker's side of the measured requests' TTFT)."""
    pattern = keys.ttft_samples(model, priority, 0).rsplit(":", 1)[0] + ":*"
    samples: list[float] = []
    async for key in client.scan_iter(match=pattern):
        async with client.pipeline(transaction=True) as pipe:
            pipe.lrange(key, 0, -1)
            pipe.delete(key)
            values, _deleted = await pipe.execute()
        samples.extend(float(value) for value in values)
    return samples

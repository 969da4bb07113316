"""Driving a workload and measuring it the way vLLM's `benchmark_serving` does.

TTFT: request sent -> first token. ITL: gaps between streamed chunks. TPOT per request:
(latency - TTFT) / (output tokens - 1). Arrivals are a seeded Poisson process at
`request_rate` (requests/s; inf sends everything at once) or a closed loop of `concurrency`
in-flight requests. The sender is any async callable, so the same runner times an HTTP
server and an in-process engine.
"""

from __future__ import annotations

import asyncio
import math
import random
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from pagefleet.platform.protocol.stats import percentile
from pagefleet.platform.protocol.workload import BenchRequest


@dataclass(slots=True)
class StreamTimer:
    """Timestamps of one streamed request; `tokens(n)` on every chunk that carries tokens."""

    started: float = field(default_factory=time.perf_counter)
    first: float | None = None
    last: float | None = None
    itl_s: list[float] = field(default_factory=list)
    num_tokens: int = 0

    def tokens(self, n: int) -> None:
        now = time.perf_counter()
        if self.first is None:
            self.first = now
        else:
            self.itl_s.append(now - self.last)
        self.last = now
        self.num_tokens += n

    def result(self, prompt_len: int, output_tokens: int | None = None) -> RequestResult:
        end = time.perf_counter()
        if self.first is None:
            return RequestResult(False, prompt_len, 0, 0.0, [], end - self.started, "no tokens")
        return RequestResult(True, prompt_len, output_tokens or self.num_tokens,
                             self.first - self.started, self.itl_s, end - self.started)


@dataclass(frozen=True, slots=True)
class RequestResult:
    ok: bool
    prompt_len: int
    output_tokens: int
    ttft_s: float
    itl_s: list[float]
    latency_s: float
    error: str | None = None


Sender = Callable[[BenchRequest], Awaitable[RequestResult]]


@dataclass(frozen=True, slots=True)
class LoadSpec:
    """Exactly one of `request_rate` (Poisson, may be inf) and `concurrency` (closed loop)."""

    request_rate: float | None = None
    concurrency: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if (self.request_rate is None) == (self.concurrency is None):
            raise ValueError("give exactly one of request_rate and concurrency")
        if self.request_rate is not None and not self.request_rate > 0:
            raise ValueError(f"request_rate must be positive, got {self.request_rate}")
        if self.concurrency is not None and self.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {self.concurrency}")


@dataclass(frozen=True, slots=True)
class BenchRun:
    results: list[RequestResult]
    duration_s: float


async def _guarded(send: Sender, request: BenchRequest) -> RequestResult:
    started = time.perf_counter()
    try:
        return await send(request)
    except Exception as exc:  # a failed request is a data point, not the end of the run
        return RequestResult(False, len(request.prompt_token_ids), 0, 0.0, [],
                             time.perf_counter() - started, f"{type(exc).__name__}: {exc}")


async def run_load(requests: list[BenchRequest], send: Sender, load: LoadSpec) -> BenchRun:
    started = time.perf_counter()
    if load.concurrency is not None:
        gate = asyncio.Semaphore(load.concurrency)

        async def limited(request: BenchRequest) -> RequestResult:
            async with gate:
                return await _guarded(send, request)

        results = await asyncio.gather(*(limited(r) for r in requests))
    else:
        rng = random.Random(load.seed)
        tasks = []
        for request in requests:
            tasks.append(asyncio.create_task(_guarded(send, request)))
            if math.isfinite(load.request_rate):
                await asyncio.sleep(rng.expovariate(load.request_rate))  # the arrival process
        results = await asyncio.gather(*tasks)
    return BenchRun(list(results), time.perf_counter() - started)


@dataclass(frozen=True, slots=True)
class Percentiles:
    """Milliseconds."""

    mean: float
    p50: float
    p90: float
    p95: float
    p99: float

    @classmethod
    def of(cls, values_s: list[float]) -> Percentiles:
        if not values_s:
            return cls(math.nan, math.nan, math.nan, math.nan, math.nan)
        ms = sorted(v * 1000 for v in values_s)
        return cls(statistics.fmean(ms), *(percentile(ms, q) for q in (0.5, 0.9, 0.95, 0.99)))


@dataclass(frozen=True, slots=True)
class BenchSummary:
    completed: int
    failed: int
    duration_s: float
    request_throughput: float
    output_throughput: float
    total_token_throughput: float
    ttft: Percentiles
    tpot: Percentiles
    itl: Percentiles
    e2e: Percentiles
    first_error: str | None


def summarize(run: BenchRun) -> BenchSummary:
    ok = [r for r in run.results if r.ok]
    failed = [r for r in run.results if not r.ok]
    output = sum(r.output_tokens for r in ok)
    prompt = sum(r.prompt_len for r in ok)
    duration = max(run.duration_s, 1e-9)
    tpots = [(r.latency_s - r.ttft_s) / (r.output_tokens - 1) for r in ok if r.output_tokens > 1]
    return BenchSummary(
        completed=len(ok), failed=len(failed), duration_s=run.duration_s,
        request_throughput=len(ok) / duration, output_throughput=output / duration,
        total_token_throughput=(output + prompt) / duration,
        ttft=Percentiles.of([r.ttft_s for r in ok]), tpot=Percentiles.of(tpots),
        itl=Percentiles.of([gap for r in ok for gap in r.itl_s]),
        e2e=Percentiles.of([r.latency_s for r in ok]),
        first_error=failed[0].error if failed else None,
    )

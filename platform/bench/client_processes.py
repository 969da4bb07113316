"""The HTTP load generator in several processes, so the client is never what a run measures.

One aiohttp process parses every SSE chunk of every request in Python: on the GPU host it
used ~0.75 of a core at 22k streamed tokens a second, so past ~28k it would be the bottleneck
and its own queueing would land in every TTFT it reports, while the in-process engine it is
compared with has no client at all. `run_http_load` splits the workload round-robin over
`processes` spawned clients, each with its share of the load (a closed loop of C becomes
loops of about C/N; a rate r becomes N Poisson processes of r/N, which sum to one of rate r).

Every process runs its warm-up, then all wait at a barrier; the parent gets control there
(`between`, e.g. to drop the warm-up's server-side samples, and to start its CPU meter) and
releases them together. The run's duration is the longest process's, each measured from
that release (perf_counter is the system's monotonic clock, the same in every process).
"""

from __future__ import annotations

import multiprocessing
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

from pagefleet.platform.bench.runner import BenchRun, LoadSpec, run_load
from pagefleet.platform.protocol import event_loop
from pagefleet.platform.protocol.workload import BenchRequest

_RESULT_TIMEOUT_S = 3_600.0
_BARRIER_TIMEOUT_S = 600.0


@dataclass(frozen=True, slots=True)
class ClientShare:
    """What one client process sends: its slice of the warm-up and of the measured requests."""

    base_url: str
    model: str
    api_key: str | None
    warmup: list[BenchRequest]
    requests: list[BenchRequest]
    load: LoadSpec


def split_load(load: LoadSpec, processes: int) -> list[LoadSpec]:
    """`processes` loads that together make `load` (concurrency spread as evenly as it goes)."""
    if load.concurrency is not None:
        if load.concurrency < processes:
            raise ValueError(f"{processes} client processes need a concurrency of at least "
                             f"{processes}, got {load.concurrency}")
        base, extra = divmod(load.concurrency, processes)
        return [LoadSpec(concurrency=base + (i < extra), seed=load.seed + i) for i in range(processes)]
    return [LoadSpec(request_rate=load.request_rate / processes, seed=load.seed + i)
            for i in range(processes)]


def run_http_load(base_url: str, model: str, api_key: str | None, requests: list[BenchRequest],
                  warmup: list[BenchRequest], load: LoadSpec, processes: int,
                  between: Callable[[list[int]], None] | None = None,
                  after: Callable[[], None] | None = None) -> BenchRun:
    """The measured requests' results from `processes` client processes; `between(pids)` runs
    once every process has warmed up and before any measured request is sent, `after()` once
    the last one is answered."""
    if processes < 1:
        raise ValueError(f"processes must be >= 1, got {processes}")
    context = multiprocessing.get_context("spawn")  # no copy of the parent's loop or sockets
    warmed, go = context.Barrier(processes + 1), context.Barrier(processes + 1)
    results = context.Queue()
    shares = [ClientShare(base_url, model, api_key, warmup[i::processes], requests[i::processes],
                          share_load) for i, share_load in enumerate(split_load(load, processes))]
    children = [context.Process(target=_client_main, args=(share, warmed, go, results), daemon=True,
                                name=f"bench-client-{i}") for i, share in enumerate(shares)]
    for child in children:
        child.start()
    try:
        try:
            warmed.wait(_BARRIER_TIMEOUT_S)
            if between is not None:
                between([child.pid for child in children])
            go.wait(_BARRIER_TIMEOUT_S)
        except threading.BrokenBarrierError:  # a process failed (it says why) or timed out
            outcome = _next_result(results, children, wait_s=10.0)
            raise (outcome if isinstance(outcome, BaseException)
                   else RuntimeError("the client processes did not meet at the barrier")) from None
        runs = [_next_result(results, children) for _ in children]
        if after is not None:
            after()
    finally:
        warmed.abort()
        go.abort()
        for child in children:
            child.join(timeout=10)
            if child.is_alive():
                child.kill()
    failed = [run for run in runs if isinstance(run, BaseException)]
    if failed:
        raise RuntimeError(f"a client process failed: {failed[0]!r}")
    return BenchRun([result for run in runs for result in run.results],
                    max(run.duration_s for run in runs))


def _next_result(results: multiprocessing.Queue, children: list,
                 wait_s: float = _RESULT_TIMEOUT_S) -> BenchRun | BaseException:
    """The next process's run (or the error it sent); a RuntimeError if one died without
    sending anything or none came within `wait_s`."""
    waited = 0.0
    while True:
        try:
            return results.get(timeout=1.0)
        except queue.Empty:
            waited += 1.0
            dead = [child.name for child in children if child.exitcode not in (None, 0)]
            if dead or waited >= wait_s:
                raise RuntimeError(f"client processes {dead} exited without a result"
                                   if dead else "client processes sent no result") from None


def _client_main(share: ClientShare, warmed, go, results: multiprocessing.Queue) -> None:
    try:
        run = event_loop.run(_send_share(share, warmed, go))
    except BaseException as exc:  # reported to the parent, which raises it
        warmed.abort()
        go.abort()
        results.put(RuntimeError(f"{type(exc).__name__}: {exc}"))
        return
    results.put(run)


async def _send_share(share: ClientShare, warmed, go) -> BenchRun:
    from pagefleet.platform.bench.client import aiohttp_client

    async with aiohttp_client(share.base_url, share.model, share.api_key) as client:
        if share.warmup:
            await run_load(share.warmup, client.send, share.load)
        # Blocking the loop is fine here: nothing of this process is in flight between runs.
        warmed.wait(_BARRIER_TIMEOUT_S)
        go.wait(_BARRIER_TIMEOUT_S)
        return await run_load(share.requests, client.send, share.load)

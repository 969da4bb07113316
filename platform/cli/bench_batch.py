"""`pagefleet bench batch`: the Batch API on a private stack (redis-server, gateway, one warm
worker, the Celery batch worker), in one run:

1. throughput: N requests through `/v1/completions` all at once, then the same-sized N as one
   batch (`/v1/batches`), on the same worker;
2. priority: interactive TTFT p50/p95 of a Poisson stream of streamed requests, alone and
   while the batch runs (the batch is submitted first and the interactive stream starts once
   it is in progress).

Phase 1 also warms the worker, so phase 2's "alone" is not a cold start.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
from dataclasses import asdict, dataclass

import httpx

from pagefleet.platform.bench.batch import BatchBenchSettings, BatchClient, BatchResult
from pagefleet.platform.bench.client import CompletionsClient
from pagefleet.platform.bench.runner import BenchSummary, LoadSpec, run_load, summarize
from pagefleet.platform.cli import flags
from pagefleet.platform.protocol.workload import BenchRequest, WorkloadSpec, build_workload

_FLAGS = ("num_requests", "num_interactive", "interactive_rate", "input_len", "output_len",
          "interactive_output_len", "seed", "timeout_s")
_HELP = {
    "num_requests": "requests in the batch (and sent to /v1/completions for the comparison)",
    "num_interactive": "streamed interactive requests per TTFT phase",
    "interactive_rate": "interactive arrivals per second (Poisson)",
    "input_len": "prompt tokens of every request",
    "output_len": "output tokens of every batch request",
    "interactive_output_len": "output tokens of every interactive request",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "batch", help="Batch API throughput, and interactive TTFT with and without a running batch")
    parser.add_argument("--model", default=None, help="model name (default: the registry's first)")
    flags.add_registry_flag(parser)
    parser.add_argument("--redis-url", default=None, help="default: a private redis-server")
    flags.add_flags(parser, BatchBenchSettings, _FLAGS, help=_HELP)
    parser.add_argument("--json", default=None, help="write the results here")
    parser.set_defaults(func=run)


@dataclass(frozen=True, slots=True)
class BatchBenchReport:
    sync: BenchSummary  # the N requests through /v1/completions, all at once
    batch: BatchResult  # the same-sized N as one batch
    interactive_alone: BenchSummary
    interactive_with_batch: BenchSummary
    batch_running_throughout: bool  # the batch outlasted the interactive stream it slowed

    @property
    def batch_vs_sync(self) -> float:
        return self.batch.output_throughput / max(self.sync.output_throughput, 1e-9)


def run(args: argparse.Namespace) -> int:
    from pagefleet.platform.cli.bench_serve import warm_stack
    from pagefleet.platform.registry import default_registry_path, load_registry

    settings = flags.settings_from_args(BatchBenchSettings, args)
    registry = args.registry_path or str(default_registry_path())
    model = load_registry(registry).get_or_first(args.model).name
    with warm_stack(registry, model, args.redis_url, batch_worker=True) as stack:
        report = asyncio.run(measure(stack.base_url, model, settings))
    print(format_report(model, settings, report))
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"model": model, "settings": asdict(settings), **asdict(report),
                       "batch_output_throughput": report.batch.output_throughput,
                       "batch_vs_sync": report.batch_vs_sync}, out, indent=2, default=str)
    return 0


def _workload(settings: BatchBenchSettings, num: int, output_len: int, seed: int) -> list[BenchRequest]:
    return build_workload(WorkloadSpec(
        num_prompts=num, distribution="fixed", input_len=settings.input_len, output_len=output_len,
        max_input_len=settings.input_len, max_output_len=output_len, seed=seed))


async def measure(base_url: str, model: str, settings: BatchBenchSettings,
                  api_key: str | None = None) -> BatchBenchReport:
    s = settings
    sync_requests, batch_requests = (_workload(s, s.num_requests, s.output_len, s.seed + i)
                                     for i in (0, 1))
    alone_requests, with_batch_requests = (
        _workload(s, s.num_interactive, s.interactive_output_len, s.seed + i) for i in (2, 3))
    interactive_load = LoadSpec(request_rate=s.interactive_rate, seed=s.seed)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(timeout=httpx.Timeout(s.timeout_s), limits=limits) as http:
        completions = CompletionsClient(http, base_url, model, api_key)
        batches = BatchClient(http, base_url, api_key)
        sync = summarize(await run_load(sync_requests, completions.send, LoadSpec(request_rate=math.inf)))
        alone = summarize(await run_load(alone_requests, completions.send, interactive_load))
        started = asyncio.Event()
        batch_task = asyncio.create_task(batches.run(model, batch_requests, s.timeout_s, started))
        started_task = asyncio.create_task(started.wait())
        await asyncio.wait({batch_task, started_task}, return_when=asyncio.FIRST_COMPLETED)
        started_task.cancel()
        if batch_task.done():
            batch_task.result()  # a failed submission raises here
        with_batch = summarize(await run_load(with_batch_requests, completions.send, interactive_load))
        throughout = not batch_task.done()
        batch = await batch_task
    return BatchBenchReport(sync, batch, alone, with_batch, throughout)


def format_report(model: str, s: BatchBenchSettings, r: BatchBenchReport) -> str:
    lines = [
        f"==== {model}: {s.num_requests} requests of {s.input_len} + {s.output_len} tokens ====",
        "| path | status | completed / failed | duration (s) | output tok/s | req/s |",
        "|---|---|---:|---:|---:|---:|",
        f"| /v1/completions, all at once | - | {r.sync.completed} / {r.sync.failed} | "
        f"{r.sync.duration_s:.2f} | {r.sync.output_throughput:.2f} | {r.sync.request_throughput:.3f} |",
        f"| one batch, /v1/batches | {r.batch.status} | {r.batch.completed} / {r.batch.failed} | "
        f"{r.batch.duration_s:.2f} | {r.batch.output_throughput:.2f} | {r.batch.request_throughput:.3f} |",
        f"batch / sync output throughput: {r.batch_vs_sync:.3f}",
        "",
        f"==== interactive TTFT: {s.num_interactive} streamed requests of {s.input_len} + "
        f"{s.interactive_output_len} tokens at {s.interactive_rate}/s ====",
        "| interactive traffic | completed / failed | TTFT p50 (ms) | TTFT p95 (ms) | TTFT mean (ms) |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, summary in (("alone", r.interactive_alone), ("while the batch runs", r.interactive_with_batch)):
        lines.append(f"| {label} | {summary.completed} / {summary.failed} | {summary.ttft.p50:.1f} | "
                     f"{summary.ttft.p95:.1f} | {summary.ttft.mean:.1f} |")
    if not r.batch_running_throughout:
        lines.append("note: the batch finished before the interactive stream did; raise "
                     "--num-requests for a cleaner 'while the batch runs' figure")
    for summary in (r.sync, r.interactive_alone, r.interactive_with_batch):
        if summary.first_error:
            lines.append(f"first error: {summary.first_error}")
    return "\n".join(lines)

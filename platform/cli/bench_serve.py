"""`pagefleet bench serve`: latency and throughput of an OpenAI-compatible server over HTTP,
or with `--overhead` the platform's own cost: the same workload through gateway + Redis +
worker and straight into an in-process AsyncEngine, one after the other, in one run; with
`--synthetic-step-ms` both halves run the model-free synthetic engine at a GPU's step rate.

Only `--overhead` imports the engine (torch, unless synthetic), inside the command.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Awaitable, Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import redis.asyncio as aioredis

from pagefleet.platform.bench.client import aiohttp_client
from pagefleet.platform.bench.client_processes import run_http_load
from pagefleet.platform.bench.cpu import CpuMeter, child_pids, format_cores
from pagefleet.platform.bench.report import format_summary, overhead_table
from pagefleet.platform.bench.runner import (
    BenchRun,
    BenchSummary,
    LoadSpec,
    Percentiles,
    RequestResult,
    StreamTimer,
    run_load,
    summarize,
)
from pagefleet.platform.cli import flags
from pagefleet.platform.processes.children import start_child, stop_process, wait_until
from pagefleet.platform.processes.ports import free_port, wait_for_port
from pagefleet.platform.processes.redis_server import redis_server
from pagefleet.platform.protocol import event_loop, keys
from pagefleet.platform.protocol.ttft import take_samples
from pagefleet.platform.protocol.workload import BenchRequest, WorkloadSpec, build_workload

if TYPE_CHECKING:
    from pagefleet.platform.registry import ModelSpec
    from pagefleet.workers.runtime.engine_port import EngineClient

SYNTHETIC_MODEL = "synthetic"
SYNTHETIC_MAX_NUM_SEQS = 256  # EngineConfig's default, vLLM's too


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("serve", help="benchmark serving latency and throughput over HTTP")
    parser.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    parser.add_argument("--model", default=None, help="model name (default: the registry's first)")
    parser.add_argument("--api-key", default=None)
    load = parser.add_mutually_exclusive_group()
    load.add_argument("--request-rate", type=float, default=None,
                      help="Poisson arrivals per second (inf: all at once; the default)")
    load.add_argument("--concurrency", type=int, default=None, help="closed loop of C in flight")
    parser.add_argument("--num-prompts", type=int, default=100)
    parser.add_argument("--input-len", type=int, default=128, help="prompt tokens (mean if sharegpt)")
    parser.add_argument("--output-len", type=int, default=64, help="output tokens (mean if sharegpt)")
    parser.add_argument("--lengths", choices=("fixed", "sharegpt"), default="fixed",
                        help="fixed lengths, or ShareGPT-like lognormal ones")
    parser.add_argument("--max-total-len", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--warmup-prompts", type=int, default=32,
                        help="--overhead: each half first runs this many other prompts (another "
                             "seed, same lengths and load; at most --num-prompts), so kernel "
                             "compilation lands in neither measurement (0: one short request)")
    parser.add_argument("--json", default=None, help="write the summaries here")
    parser.add_argument("--client-processes", type=flags.positive_int, default=1, metavar="N",
                        help="HTTP load from N processes, each with 1/N of the requests and of "
                             "the load, so the client's own CPU does not cap the run")
    overhead = parser.add_argument_group("--overhead: platform vs in-process engine")
    overhead.add_argument("--overhead", action="store_true")
    flags.add_registry_flag(overhead)
    overhead.add_argument("--redis-url", default=None, help="default: a private redis-server")
    overhead.add_argument(flags.flag_name("synthetic_step_ms"), dest="synthetic_step_ms", type=float,
                          default=None, metavar="MS",
                          help="both halves on the model-free synthetic engine, one token per "
                               "request every MS ms (a GPU's step rate on any machine), through a "
                               f"private registry of one model, {SYNTHETIC_MODEL!r}")
    overhead.add_argument("--gateway-workers", type=flags.positive_int, default=1, metavar="N",
                          help="gateway processes on the one port (`pagefleet gateway --workers`)")
    overhead.add_argument("--engine-process", choices=("auto", "on", "off"), default="auto",
                          help="with --synthetic-step-ms: the worker's engine loop in its own "
                               "process (on), in a thread (off) or as the registry's default for "
                               "a CPU profile (auto: a thread); a registry model sets "
                               "engine_process itself. The in-process half is always one process")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.synthetic_step_ms is not None and (not args.overhead or args.registry_path or args.model):
        raise SystemExit("--synthetic-step-ms needs --overhead and writes its own registry (no "
                         "--registry or --model: give a registry model synthetic_step_ms instead)")
    if args.engine_process != "auto" and args.synthetic_step_ms is None:
        raise SystemExit("--engine-process goes with --synthetic-step-ms; for a registry model set "
                         "its engine_process in the registry")
    load = LoadSpec(request_rate=args.request_rate, concurrency=args.concurrency, seed=args.seed) \
        if args.request_rate is not None or args.concurrency is not None \
        else LoadSpec(request_rate=math.inf, seed=args.seed)
    workload = WorkloadSpec(num_prompts=args.num_prompts, distribution=args.lengths,
                            input_len=args.input_len, output_len=args.output_len,
                            max_input_len=args.max_total_len, max_output_len=args.max_total_len,
                            max_total_len=args.max_total_len, seed=args.seed)
    requests = build_workload(workload)
    if args.overhead:
        summaries = _run_overhead(args, requests, _warmup_requests(workload, requests, args.warmup_prompts),
                                  load)
    else:
        model = args.model or _registry_spec(args.registry_path, None).name
        summaries = {"server": _http_measure(args.base_url, model, args.api_key, requests, load,
                                             args.client_processes)}
        print(format_summary(f"{model} at {args.base_url}", summaries["server"]))
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"workload": asdict(workload), "load": asdict(load),
                       "warmup_prompts": args.warmup_prompts if args.overhead else 0,
                       **{k: v if isinstance(v, dict) else asdict(v) for k, v in summaries.items()}},
                      out, indent=2, default=str)
    return 0


def _warmup_requests(workload: WorkloadSpec, requests: list[BenchRequest],
                     num_prompts: int) -> list[BenchRequest]:
    """Other prompts of the same shape (no prefix-cache hits on the measured ones), or one
    two-token request. The first half of an overhead run used to meet the Triton compiler on a
    fresh GPU machine and leave its cache to the second: a first platform run measured 0.35x of
    the in-process engine where warm runs measured 0.67-0.70x (docs/benchmarks.md)."""
    if num_prompts < 0:
        raise SystemExit(f"--warmup-prompts must be at least 0, got {num_prompts}")
    if num_prompts == 0:
        return [BenchRequest(requests[0].prompt_token_ids, 2)]
    return build_workload(dataclasses.replace(workload, seed=workload.seed + 1,
                                              num_prompts=min(num_prompts, workload.num_prompts)))


def _registry_spec(path: str | None, model: str | None) -> ModelSpec:
    from pagefleet.platform.registry import load_registry

    return load_registry(path).get_or_first(model)


def _http_measure(base_url: str, model: str, api_key: str | None, requests: list[BenchRequest],
                  load: LoadSpec, processes: int, warmup: list[BenchRequest] | None = None,
                  cpu: CpuMeter | None = None, worker_ttft: list[float] | None = None,
                  redis_url: str | None = None) -> BenchSummary:
    """`_http_run` from this process, or from `processes` client processes
    (`bench.client_processes`), whose CPU the meter then counts as `client 0`, `client 1`..."""
    if processes == 1:
        return event_loop.run(_http_run(base_url, model, api_key, requests, load, warmup, cpu,
                                        worker_ttft, redis_url))

    def between(pids: list[int]) -> None:
        if redis_url is not None:
            event_loop.run(_worker_ttft_samples(redis_url, model))  # drop the warm-up's
        if cpu is not None:
            cpu.pids.update({f"client {number}": pid for number, pid in enumerate(pids)})
            cpu.start()

    def after() -> None:
        if cpu is not None:
            cpu.stop()
        if redis_url is not None and worker_ttft is not None:
            worker_ttft.extend(event_loop.run(_worker_ttft_samples(redis_url, model)))

    try:
        return summarize(run_http_load(base_url, model, api_key, requests, warmup or [], load,
                                       processes, between, after))
    except ValueError as exc:  # a load that cannot be split that way
        raise SystemExit(str(exc)) from None


async def _worker_ttft_samples(redis_url: str, model: str) -> list[float]:
    redis_client = aioredis.Redis.from_url(redis_url)
    try:
        return await take_samples(redis_client, model, keys.PRIORITY_INTERACTIVE)
    finally:
        await redis_client.aclose()


async def _http_run(base_url: str, model: str, api_key: str | None, requests: list[BenchRequest],
                    load: LoadSpec, warmup: list[BenchRequest] | None = None,
                    cpu: CpuMeter | None = None,
                    worker_ttft: list[float] | None = None, redis_url: str | None = None
                    ) -> BenchSummary:
    """With `redis_url`, the worker's TTFT samples of the measured requests (gateway enqueue to
    first token written, `protocol.ttft`) are appended to `worker_ttft`."""
    async with aiohttp_client(base_url, model, api_key) as client:
        if warmup:
            await run_load(warmup, client.send, load)
        if redis_url is not None:
            await _worker_ttft_samples(redis_url, model)  # drop the warm-up's
        summary = summarize(await _measured(run_load(requests, client.send, load), cpu))
        if redis_url is not None and worker_ttft is not None:
            worker_ttft.extend(await _worker_ttft_samples(redis_url, model))
        return summary


async def _measured(load: Awaitable[BenchRun], cpu: CpuMeter | None) -> BenchRun:
    if cpu is not None:
        cpu.start()
    try:
        return await load
    finally:
        if cpu is not None:
            cpu.stop()


def _run_overhead(args: argparse.Namespace, requests: list[BenchRequest], warmup: list[BenchRequest],
                  load: LoadSpec) -> dict[str, BenchSummary | dict]:
    from pagefleet.platform.registry import default_registry_path
    from pagefleet.workers.engine.gc_freeze import freeze_startup_heap, unfreeze_heap
    from pagefleet.workers.runtime.main import registry_engine_factory

    with contextlib.ExitStack() as files:
        registry = args.registry_path or str(default_registry_path())
        if args.synthetic_step_ms is not None:
            registry = files.enter_context(synthetic_registry(
                args.synthetic_step_ms, args.max_total_len,
                {"on": True, "off": False}.get(args.engine_process)))
        spec = _registry_spec(registry, args.model)
        worker_ttft: list[float] = []
        with warm_stack(registry, spec.name, args.redis_url,
                        gateway_workers=args.gateway_workers) as stack:
            platform_cpu = CpuMeter(stack.pids, self_name="client" if args.client_processes == 1
                                    else "bench parent")
            platform = _http_measure(stack.base_url, spec.name, None, requests, load,
                                     args.client_processes, warmup=warmup, cpu=platform_cpu,
                                     worker_ttft=worker_ttft, redis_url=stack.redis_url)
    print(format_summary(f"{spec.name} through gateway + Redis + worker", platform))
    print(format_cores("platform", platform_cpu.cores), flush=True)
    at_worker = Percentiles.of(worker_ttft)
    print(f"TTFT at the worker (gateway enqueue -> first token written, {len(worker_ttft)} "
          f"samples, ms): p50 {at_worker.p50:.1f} p90 {at_worker.p90:.1f}; the client's p50 "
          f"{platform.ttft.p50:.1f} adds HTTP in and results out", flush=True)
    direct_cpu = CpuMeter({}, self_name="client + engine")
    engine = registry_engine_factory(spec, engine_process=False)()  # the engine alone, one process
    freeze_startup_heap()  # as the worker does after loading its engine
    try:
        direct = event_loop.run(_engine_run(engine, requests, warmup, load, direct_cpu))
    finally:
        engine.shutdown()
        unfreeze_heap()
    print(format_summary(f"{spec.name} in-process {type(engine).__name__}", direct))
    print(format_cores("in-process", direct_cpu.cores))
    print("\n" + overhead_table(platform, direct))
    results: dict[str, BenchSummary | dict] = {
        "platform": platform, "engine": direct,
        "cpu_cores": {"platform": platform_cpu.cores, "engine": direct_cpu.cores},
        "worker_ttft": asdict(at_worker)}
    if spec.synthetic_step_ms is not None:  # did the in-process engine keep its pace?
        report = engine.step_report()
        print(f"synthetic engine in-process: {report.num_steps} steps, mean interval "
              f"{report.mean_step_ms:.2f} ms (target {spec.synthetic_step_ms:g} ms)")
        results["synthetic_engine"] = {"step_ms": spec.synthetic_step_ms, **asdict(report)}
    return results


@contextlib.contextmanager
def synthetic_registry(step_ms: float, max_model_len: int,
                       engine_process: bool | None = None) -> Iterator[str]:
    """A registry file of one synthetic model (a benchmark device, no weights), removed on exit."""
    import yaml

    model = {"synthetic_step_ms": step_ms, "engine_process": engine_process,
             "engine": {"max_model_len": max_model_len, "max_num_seqs": SYNTHETIC_MAX_NUM_SEQS}}
    with tempfile.TemporaryDirectory(prefix="pf-bench-registry-") as folder:
        path = f"{folder}/registry.yaml"
        with open(path, "w") as out:
            yaml.safe_dump({"models": {SYNTHETIC_MODEL: model}}, out)
        yield path


@dataclass(frozen=True, slots=True)
class WarmStack:
    base_url: str  # the gateway's /v1
    pids: dict[str, int]  # gateway, worker and redis-server (when it answers INFO)
    redis_url: str


@contextlib.contextmanager
def warm_stack(registry: str, model: str, redis_url: str | None,
               batch_worker: bool = False, gateway_workers: int = 1) -> Iterator[WarmStack]:
    """A private redis-server (unless `redis_url`), the gateway (`gateway_workers` processes)
    and one always-warm worker of `model` (and with `batch_worker` the Celery worker of
    /v1/batches), all stopped on exit; yields the gateway's base URL and the processes' ids
    once the worker is ready."""
    from pagefleet.platform.cli.up import start_batch_worker, start_gateway

    with contextlib.ExitStack() as stack:
        if not redis_url:
            workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="pf-bench-redis-"))
            redis_url = stack.enter_context(redis_server(workdir))
        port = free_port()
        gateway = start_gateway("127.0.0.1", port, registry, redis_url, gateway_workers)
        stack.callback(stop_process, gateway)
        worker = start_warm_worker(model, registry, redis_url)
        stack.callback(stop_process, worker, 60.0)
        if batch_worker:
            stack.callback(stop_process, start_batch_worker(registry, redis_url))
        wait_for_port(port, gateway, "the gateway")
        wait_for_ready_worker(redis_url, model, worker)
        pids = {"gateway": gateway.pid, "worker": worker.pid}
        if gateway_workers > 1:  # uvicorn's supervisor (idle) and the processes that serve
            wait_until(lambda: len(_spawned(gateway.pid)) >= gateway_workers, gateway,
                       lambda: f"the gateway did not start {gateway_workers} processes", 60.0)
            for number, child in enumerate(_spawned(gateway.pid)):
                pids[f"gateway {number}"] = child
        for number, child in enumerate(child_pids(worker.pid)):  # an engine core process
            pids["engine core" if number == 0 else f"engine core {number}"] = child
        redis_pid = _redis_pid(redis_url)
        if redis_pid is not None:
            pids["redis"] = redis_pid
        yield WarmStack(f"http://127.0.0.1:{port}/v1", pids, redis_url)


def _spawned(pid: int) -> list[int]:
    """`pid`'s children started by multiprocessing's spawn (not its resource tracker)."""
    spawned = []
    for child in child_pids(pid):
        try:
            with open(f"/proc/{child}/cmdline", "rb") as cmdline:
                if b"spawn_main" in cmdline.read():
                    spawned.append(child)
        except OSError:  # it exited meanwhile
            continue
    return spawned


def _redis_pid(redis_url: str) -> int | None:
    """redis-server's process id (from INFO), if it runs on this machine."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        return int(client.info("server")["process_id"])
    except (redis.RedisError, KeyError, ValueError):
        return None
    finally:
        client.close()


def start_warm_worker(model: str, registry: str, redis_url: str) -> subprocess.Popen:
    """A fixed, always-warm worker, so the measurement leaves scaling out (`pagefleet up`
    lets the controller start workers instead)."""
    return start_child([sys.executable, "-m", "pagefleet.platform.cli", "worker", "--model", model,
                        "--registry", registry, "--redis-url", redis_url])


def wait_for_ready_worker(redis_url: str, model: str, worker: subprocess.Popen,
                          timeout_s: float = 600.0) -> None:
    """Return once a worker of `model` says `ready` in its heartbeat; `SystemExit` as soon as
    `worker` exits instead (a model that fails to load must not hold a lent GPU for the whole
    timeout) or after `timeout_s`."""
    import redis

    from pagefleet.platform.protocol import decode_heartbeat, keys

    client = redis.Redis.from_url(redis_url)

    def ready() -> bool:
        return any(decode_heartbeat(raw).state == "ready"
                   for raw in client.hvals(keys.heartbeat_hash(model)))

    def failure() -> str:
        if worker.poll() is not None:
            return f"the worker of {model} exited with status {worker.returncode} before it was ready"
        return f"no worker of {model} became ready in {timeout_s:.0f} s"

    try:
        wait_until(ready, worker, failure, timeout_s)
    finally:
        client.close()


async def _engine_run(engine: EngineClient, requests: list[BenchRequest], warmup: list[BenchRequest],
                      load: LoadSpec, cpu: CpuMeter | None = None) -> BenchSummary:
    from pagefleet.platform.protocol import SamplingParams

    async def send(request: BenchRequest) -> RequestResult:
        timer = StreamTimer()
        params = SamplingParams(max_tokens=request.output_len, temperature=0.0, ignore_eos=True)
        async for delta in engine.add_request(uuid.uuid4().hex, request.prompt_token_ids, params):
            if delta.token_ids:
                timer.tokens(len(delta.token_ids))
        return timer.result(len(request.prompt_token_ids))

    await run_load(warmup, send, load)  # as on the platform
    return summarize(await _measured(run_load(requests, send, load), cpu))


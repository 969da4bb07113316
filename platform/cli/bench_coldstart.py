"""`pagefleet bench coldstart`: where the time to the first token goes when a model is at zero.

By default it runs the platform as `pagefleet up` does (a private redis-server, the gateway,
the controller with the local backend and its spare workers), waits until the model is at zero
and its spare (if any) has preloaded, sends one streaming completion of 8 tokens and prints the
timeline: request sent -> gateway wake -> controller decision -> worker spawned -> imports ->
tokenizer -> weights -> KV cache (-> memory profile, CUDA graphs) -> engine ready -> first pull
-> first token (worker) -> first token (client). Each run starts a fresh platform; `--runs N`
prints the median of each point.

`--in-process` measures a worker's readiness alone, without Redis, the gateway or the
controller: this process imports the engine, builds it and runs one request to its first
token. It is how GPU readiness is measured (e.g. Llama-3.1-8B shapes with dummy weights on one
H200: `--in-process --source llama-3.1-8b --load-format dummy`).

Only `--in-process` imports the engine (torch), inside the command.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import redis
import redis.asyncio as aioredis

from pagefleet.platform.bench.client import CompletionsClient
from pagefleet.platform.bench.coldstart import (
    ColdStart,
    TimelinePoint,
    format_cold_start,
    format_medians,
    platform_timeline,
)
from pagefleet.platform.cli import flags
from pagefleet.platform.processes.children import stop_process
from pagefleet.platform.processes.ports import free_port, wait_for_port
from pagefleet.platform.processes.redis_server import redis_server
from pagefleet.platform.protocol import keys
from pagefleet.platform.protocol.phases import PHASE_EVENT_FIELD, PhaseEvent, decode_phase_event
from pagefleet.platform.protocol.workload import BenchRequest

if TYPE_CHECKING:
    from pagefleet.platform.registry import ModelSpec

_PROMPT_IDS = list(range(100, 108))  # 8 prompt tokens, valid in any vocabulary the engine runs
_OUTPUT_LEN = 8
_SETUP_TIMEOUT_S = 600.0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("coldstart", help="the phases of a first request from zero replicas")
    parser.add_argument("--model", default=None, help="registry model (default: the first one)")
    flags.add_registry_flag(parser)
    parser.add_argument("--runs", type=int, default=1, help="fresh cold starts to measure")
    parser.add_argument("--json", type=Path, default=None, help="write the runs here")
    platform = parser.add_argument_group("platform (default)")
    platform.add_argument("--redis-url", default=None, help="default: a private redis-server")
    platform.add_argument("--spare-workers", type=int, default=1,
                          help="pre-imported spares per model (pagefleet up keeps 1; 0: bare spawn)")
    engine = parser.add_argument_group("--in-process: one worker's readiness, no Redis")
    engine.add_argument("--in-process", action="store_true")
    engine.add_argument("--source", default=None, help="engine model (default: the registry's)")
    engine.add_argument("--load-format", default=None, choices=["auto", "dummy"])
    engine.add_argument("--dtype", default=None)
    engine.add_argument("--device", default=None)
    engine.add_argument("--max-model-len", type=int, default=None)
    engine.add_argument("--max-num-seqs", type=int, default=None)
    engine.add_argument("--gpu-memory-utilization", type=float, default=None)
    engine.add_argument("--enforce-eager", action="store_true")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pagefleet.platform.registry import default_registry_path, load_registry

    if args.runs < 1:
        raise SystemExit("--runs must be at least 1")
    registry = args.registry_path or str(default_registry_path())
    spec = load_registry(registry).get_or_first(args.model)
    runs = []
    for index in range(args.runs):
        if not args.in_process:
            cold = _platform_run(args, spec, registry)
        elif args.runs == 1:
            cold = _in_process_run(args, spec)
        else:  # each run in a fresh process, or the later ones would find everything imported
            cold = _in_process_child(args, registry)
        runs.append(cold)
        print(format_cold_start(f"{spec.name} cold start {index + 1}/{args.runs} ({cold.mode})", cold),
              flush=True)
    if args.runs > 1:
        print(format_medians(runs))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"model": spec.name, "runs": [asdict(r) for r in runs]}, indent=2))
    return 0


def _platform_run(args: argparse.Namespace, spec: ModelSpec, registry: str) -> ColdStart:
    from pagefleet.platform.cli.up import DRAIN_TIMEOUT_S, start_controller, start_gateway

    if spec.scaling.min_replicas > 0:
        raise SystemExit(f"{spec.name} keeps {spec.scaling.min_replicas} replica(s) warm: a cold "
                         f"start needs min_replicas 0")
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pf-bench-coldstart-")))
        redis_url = args.redis_url or stack.enter_context(redis_server(workdir))
        client = redis.Redis.from_url(redis_url)
        stack.callback(client.close)
        port = free_port()
        gateway = start_gateway("127.0.0.1", port, registry, redis_url)
        stack.callback(stop_process, gateway)
        log = stack.enter_context(open(workdir / "controller.log", "wb"))
        controller = start_controller(registry, redis_url, spare_workers=args.spare_workers,
                                      stdout=log, stderr=subprocess.STDOUT)
        stack.callback(stop_process, controller, DRAIN_TIMEOUT_S + 30.0)
        wait_for_port(port, gateway, "the gateway")
        _wait(lambda: client.pubsub_numsub(keys.WAKE_CHANNEL)[0][1] >= 1, controller,
              "the controller's wake listener", workdir)
        if args.spare_workers:
            _wait(lambda: spec.name.encode() in client.hvals(keys.SPARE_WORKERS), controller,
                  "a preloaded spare worker", workdir)
        if client.hlen(keys.heartbeat_hash(spec.name)):
            raise SystemExit(f"{spec.name} already has workers; a cold start needs it at zero")
        base_url = f"http://127.0.0.1:{port}/v1"
        sent_at, first_token_at, wake_at, error = asyncio.run(_first_request(base_url, spec.name, redis_url))
        if error:
            raise SystemExit(f"the cold-start request failed: {error}\n{(workdir / 'controller.log').read_text()}")
        phases = _worker_phases(client, spec.name, sent_at)
        decision = _scale_up_decision(client, spec.name, sent_at)
    points = platform_timeline(sent_at, first_token_at, wake_at,
                               float(decision["at"]) if decision else None, phases)
    return ColdStart("platform", first_token_at - sent_at, points,
                     trigger=decision.get("trigger") if decision else None,
                     notes={"spare_workers": str(args.spare_workers)})


async def _first_request(base_url: str, model: str, redis_url: str) -> tuple[float, float, float | None, str | None]:
    """Send the request while listening for the gateway's wake; the times are wall clock."""
    listener = aioredis.Redis.from_url(redis_url)
    pubsub = listener.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(keys.WAKE_CHANNEL)

    async def wake_seen() -> float:
        while True:
            message = await pubsub.get_message(timeout=1.0)
            if message is not None and message["data"] in (model, model.encode()):
                return time.time()

    wake = asyncio.create_task(wake_seen())
    try:
        async with httpx.AsyncClient(timeout=httpx.Timeout(_SETUP_TIMEOUT_S)) as http:
            sent_at = time.time()
            result = await CompletionsClient(http, base_url, model).send(BenchRequest(_PROMPT_IDS, _OUTPUT_LEN))
        wake_at = wake.result() if wake.done() else None
        return sent_at, sent_at + result.ttft_s, wake_at, result.error
    finally:
        wake.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await wake
        await pubsub.aclose()
        await listener.aclose()


def _worker_phases(client: redis.Redis, model: str, since: float) -> list[PhaseEvent]:
    """The phases of the worker that served the request: the first to reach `first_token`."""
    events = [decode_phase_event(fields[PHASE_EVENT_FIELD.encode()])
              for _id, fields in client.xrange(keys.phase_stream(model))]
    events = [e for e in events if e.at >= since or e.phase == "spawned"]
    served = next((e.worker_id for e in events if e.phase == "first_token" and e.at >= since), None)
    return [e for e in events if e.worker_id == served]


def _scale_up_decision(client: redis.Redis, model: str, since: float) -> dict[str, Any] | None:
    for _id, fields in client.xrange(keys.SCALING_EVENTS):
        event = {k.decode(): v.decode() for k, v in fields.items()}
        if event["model"] == model and event["direction"] == "up" and float(event["at"]) >= since:
            return event
    return None


def _wait(condition: Any, controller: subprocess.Popen, what: str, workdir: Path) -> None:
    deadline = time.monotonic() + _SETUP_TIMEOUT_S
    while not condition():
        if controller.poll() is not None or time.monotonic() > deadline:
            log = (workdir / "controller.log").read_text(errors="replace")
            raise SystemExit(f"gave up waiting for {what}:\n{log}")
        time.sleep(0.05)  # polling a readiness condition with a deadline


def _in_process_child(args: argparse.Namespace, registry: str) -> ColdStart:
    command = [sys.executable, "-m", "pagefleet.platform.cli", "bench", "coldstart", "--in-process",
               "--registry", registry, "--runs", "1"]
    for flag, value in (("--model", args.model), ("--source", args.source),
                        ("--load-format", args.load_format), ("--dtype", args.dtype),
                        ("--device", args.device), ("--max-model-len", args.max_model_len),
                        ("--max-num-seqs", args.max_num_seqs),
                        ("--gpu-memory-utilization", args.gpu_memory_utilization)):
        if value is not None:
            command += [flag, str(value)]
    if args.enforce_eager:
        command.append("--enforce-eager")
    with tempfile.TemporaryDirectory(prefix="pf-bench-coldstart-") as workdir:
        out = Path(workdir) / "run.json"
        subprocess.run([*command, "--json", str(out)], check=True, stdout=subprocess.DEVNULL)
        run = json.loads(out.read_text())["runs"][0]
    return ColdStart(run["mode"], run["first_token_s"], [TimelinePoint(**p) for p in run["points"]],
                     run["trigger"], run["notes"])


def _in_process_run(args: argparse.Namespace, spec: ModelSpec) -> ColdStart:
    """Import, build and serve one request in this process, timing each phase."""
    from pagefleet.platform.protocol.phases import PhaseLog

    phases = PhaseLog()
    phases.mark("spawned")
    from pagefleet.platform.protocol.sampling import SamplingParams
    from pagefleet.workers.engine.config import EngineConfig
    from pagefleet.workers.engine.llm_engine import LLMEngine

    phases.mark("imports_done")
    overrides = {name: value for name, value in (
        ("load_format", args.load_format), ("dtype", args.dtype), ("device", args.device),
        ("max_model_len", args.max_model_len), ("max_num_seqs", args.max_num_seqs),
        ("gpu_memory_utilization", args.gpu_memory_utilization),
        ("enforce_eager", True if args.enforce_eager else None)) if value is not None}
    config = EngineConfig(model=args.source or spec.source, **{**spec.engine_kwargs(), **overrides})
    engine = LLMEngine(config)
    try:
        engine.add_request(uuid.uuid4().hex, _PROMPT_IDS,
                           SamplingParams(max_tokens=_OUTPUT_LEN, temperature=0.0, ignore_eos=True))
        while not any(delta.token_ids for delta in engine.step()):
            pass
        phases.mark("first_token")
    finally:
        engine.shutdown()
    marks = sorted([*phases.phases, *engine.phases.phases], key=lambda p: p.at)
    start = marks[0]
    points = [TimelinePoint(p.name, p.at - start.at, p.cpu_s - start.cpu_s) for p in marks]
    return ColdStart("in-process", points[-1].at_s, points,
                     notes={"source": config.model, "load_format": config.load_format,
                            "device": str(engine.runner.device), "dtype": str(engine.runner.dtype),
                            "num_kv_blocks": str(engine.runner.num_blocks)})

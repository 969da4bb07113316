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
import json
import subprocess
import sys
import tempfile
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pagefleet.platform.bench.coldstart import (
    OUTPUT_LEN,
    PROMPT_IDS,
    ColdStart,
    TimelinePoint,
    format_cold_start,
    format_medians,
)
from pagefleet.platform.cli import flags


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
    engine.add_argument("--source", default=None,
                        help="engine model (a folder, GGUF or preset); the registry is then not read")
    engine.add_argument("--load-format", default=None, choices=["auto", "dummy"])
    engine.add_argument("--dtype", default=None)
    engine.add_argument("--device", default=None)
    engine.add_argument("--max-model-len", type=int, default=None)
    engine.add_argument("--max-num-seqs", type=int, default=None)
    engine.add_argument("--gpu-memory-utilization", type=float, default=None)
    engine.add_argument("--enforce-eager", action="store_true")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.runs < 1:
        raise SystemExit("--runs must be at least 1")
    name, engine_kwargs, registry = _target(args)
    runs = []
    for index in range(args.runs):
        if not args.in_process:
            from pagefleet.platform.bench.coldstart_platform import platform_run
            from pagefleet.platform.registry import load_registry

            cold = platform_run(load_registry(registry).get_or_first(args.model), registry,
                                args.redis_url, args.spare_workers)
        elif args.runs == 1:
            cold = _in_process_run(args, engine_kwargs)
        else:  # each run in a fresh process, or the later ones would find everything imported
            cold = _in_process_child(args)
        runs.append(cold)
        print(format_cold_start(f"{name} cold start {index + 1}/{args.runs} ({cold.mode})", cold),
              flush=True)
    if args.runs > 1:
        print(format_medians(runs))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"model": name, "runs": [asdict(r) for r in runs]}, indent=2))
    return 0


def _target(args: argparse.Namespace) -> tuple[str, dict[str, Any], str | None]:
    """What to start: a registry model (its engine settings), or with `--in-process --source`
    an engine model with the engine's defaults, no registry read (a GPU host needs no YAML)."""
    if args.in_process and args.source:
        return args.source, {}, None
    from pagefleet.platform.registry import default_registry_path, load_registry

    registry = args.registry_path or str(default_registry_path())
    spec = load_registry(registry).get_or_first(args.model)
    return spec.name, {"model": spec.source, **spec.engine_kwargs()}, registry


def _engine_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {name: value for name, value in (
        ("model", args.source), ("load_format", args.load_format), ("dtype", args.dtype),
        ("device", args.device), ("max_model_len", args.max_model_len),
        ("max_num_seqs", args.max_num_seqs), ("gpu_memory_utilization", args.gpu_memory_utilization),
        ("enforce_eager", True if args.enforce_eager else None)) if value is not None}


def _in_process_child(args: argparse.Namespace) -> ColdStart:
    command = [sys.executable, "-m", "pagefleet.platform.cli.bench_coldstart", "--in-process", "--runs", "1"]
    if args.model:
        command += ["--model", args.model]
    if args.registry_path:
        command += ["--registry", args.registry_path]
    for name, value in _engine_overrides(args).items():
        flag = "--" + ("source" if name == "model" else name.replace("_", "-"))
        command += [flag] if value is True else [flag, str(value)]
    with tempfile.TemporaryDirectory(prefix="pf-bench-coldstart-") as workdir:
        out = Path(workdir) / "run.json"
        subprocess.run([*command, "--json", str(out)], check=True, stdout=subprocess.DEVNULL)
        run = json.loads(out.read_text())["runs"][0]
    return ColdStart(run["mode"], run["first_token_s"], [TimelinePoint(**p) for p in run["points"]],
                     run["trigger"], run["notes"])


def _in_process_run(args: argparse.Namespace, engine_kwargs: dict[str, Any]) -> ColdStart:
    """Import, build and serve one request in this process, timing each phase."""
    from pagefleet.platform.protocol.phases import PhaseLog

    phases = PhaseLog()
    phases.mark("spawned")
    from pagefleet.platform.protocol.sampling import SamplingParams
    from pagefleet.workers.engine.config import EngineConfig
    from pagefleet.workers.engine.llm_engine import LLMEngine

    phases.mark("imports_done")
    config = EngineConfig(**{**engine_kwargs, **_engine_overrides(args)})
    engine = LLMEngine(config)
    try:
        engine.add_request(uuid.uuid4().hex, PROMPT_IDS,
                           SamplingParams(max_tokens=OUTPUT_LEN, temperature=0.0, ignore_eos=True))
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
                            "num_kv_blocks": str(engine.runner.num_blocks),
                            "cuda_graphs": str(engine.runner.graphs is not None)})


def main(argv: list[str] | None = None) -> int:
    """`python -m pagefleet.platform.cli.bench_coldstart ARGS`: this command alone, without the
    other CLI commands' imports (a GPU host has no gateway dependencies)."""
    parser = argparse.ArgumentParser(prog="pagefleet bench")
    register(parser.add_subparsers())
    args = parser.parse_args(["coldstart", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

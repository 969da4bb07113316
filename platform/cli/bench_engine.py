"""`pagefleet bench engine`: offline engine throughput next to transformers, same run."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from pagefleet.platform.cli.flags import add_flags
from pagefleet.workers.engine.config import EngineConfig

if TYPE_CHECKING:  # the engine bench imports torch: only when a bench runs
    from pagefleet.workers.bench.engine_bench import EngineVariant


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("engine", help="offline throughput: pagefleet vs transformers")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--load-format", default="auto", choices=["auto", "dummy"])
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--num-prompts", type=int, default=64)
    parser.add_argument("--input-len", type=int, default=None, help="fixed; default ShareGPT-like")
    parser.add_argument("--output-len", type=int, default=None)
    parser.add_argument("--max-input-len", type=int, default=1024)
    parser.add_argument("--max-output-len", type=int, default=512)
    parser.add_argument("--shared-prefix-len", type=int, default=0,
                        help="tokens of a system prompt shared by every request")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-num-seqs", type=int, default=256)
    parser.add_argument("--max-num-batched-tokens", type=int, default=None)
    parser.add_argument("--max-model-len", type=int, default=None)
    parser.add_argument("--num-kv-blocks", type=int, default=None)
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    parser.add_argument("--no-prefix-caching", action="store_true")
    parser.add_argument("--enforce-eager", action="store_true")
    parser.add_argument("--tensor-parallel-size", type=int, default=1)
    parser.add_argument("--attention-backend", default=None, choices=["torch", "triton"])
    parser.add_argument("--async-scheduling", action=argparse.BooleanOptionalAction, default=None,
                        help="schedule the next step while one runs (default: on CUDA with one "
                             "rank); --no-async-scheduling postprocesses each step first (the old path)")
    parser.add_argument("--no-fused-layers", action="store_true",
                        help="torch ops for RMSNorm, RoPE and SiLU-and-mul instead of Triton kernels")
    parser.add_argument("--no-fused-fp8-quant", action="store_true",
                        help="with fp8 and fused layers: quantise activations in each matmul, not in "
                             "the RMSNorm / SiLU-and-mul kernel before it")
    parser.add_argument("--compare-fused-fp8-quant", action="store_true",
                        help="then the same requests through a second engine with --no-fused-fp8-quant "
                             "flipped (an A/B in one run)")
    parser.add_argument("--quantization", default=None, choices=["fp8", "int4", "int8"],
                        help="fp8: linear layers in fp8 e4m3 (per-channel weights, per-token activations); "
                             "int4: weight-only int4, group 128 (RTN, the w4a16 Triton GEMM); "
                             "int8: weight-only int8 per channel, CPU only (torch._weight_int8pack_mm)")
    parser.add_argument("--compare-quantization", default=None, choices=["none", "fp8", "int4", "int8"],
                        help="instead of the transformers baselines: a second engine with this "
                             "quantization in the same process, passes alternated A/B --repeat times")
    parser.add_argument("--hf", default="static,single",
                        help="transformers baselines to run: static,single or none")
    parser.add_argument("--hf-num-prompts", type=int, default=32)
    parser.add_argument("--hf-single-prompts", type=int, default=4,
                        help="requests for the one-at-a-time baseline")
    parser.add_argument("--hf-batch-size", type=int, default=16)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--constrained-fractions", default="",
                        help="extra runs with these shares of rows grammar-constrained, e.g. 0,0.5,1")
    parser.add_argument("--repeat", type=int, default=1,
                        help="measured passes of the same work with other token ids (the lower median is reported)")
    parser.add_argument("--breakdown", action="store_true",
                        help="first an instrumented pass that splits the time by phase")
    parser.add_argument("--compare-piecewise-graphs", action="store_true",
                        help="then the same requests through a second engine with --piecewise-graphs "
                             "flipped (an A/B in one run)")
    add_flags(parser, EngineConfig, ["swap_space", "preemption_mode", "kv_cache_dtype",
                                     "piecewise_graphs"], help={
        "piecewise_graphs": "CUDA graphs for steps of up to 512 tokens that are not decode-only "
                            "too, captured in pieces between the attention calls",
        "swap_space": "GiB of host memory for swapped-out KV blocks (0: always recompute)",
        "preemption_mode": "force swapping or recomputing preempted sequences (default: by cost)",
        "kv_cache_dtype": "auto: the model's dtype; fp8: e4m3, half the bytes of bf16 "
                          "(scales 1.0, values beyond +-448 saturate)",
    })
    parser.add_argument("--standby-cycles", type=int, default=0,
                        help="instead of throughput: time N sleep/wake cycles (standby)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pagefleet.platform.protocol.workload import WorkloadSpec
    from pagefleet.workers.bench.engine_bench import EngineBenchOptions, run_engine_bench

    max_len = args.max_input_len + args.max_output_len + args.shared_prefix_len
    engine = EngineConfig(
        model=args.model, load_format=args.load_format, dtype=args.dtype, device=args.device,
        max_num_seqs=args.max_num_seqs, max_num_batched_tokens=args.max_num_batched_tokens,
        max_model_len=args.max_model_len or max_len, num_kv_blocks=args.num_kv_blocks,
        gpu_memory_utilization=args.gpu_memory_utilization,
        enable_prefix_caching=not args.no_prefix_caching, enforce_eager=args.enforce_eager,
        tensor_parallel_size=args.tensor_parallel_size, attention_backend=args.attention_backend,
        seed=args.seed, async_scheduling=args.async_scheduling,
        fused_layers=False if args.no_fused_layers else None, quantization=args.quantization,
        fused_fp8_quant=not args.no_fused_fp8_quant,
        swap_space=args.swap_space, preemption_mode=args.preemption_mode,
        kv_cache_dtype=args.kv_cache_dtype, piecewise_graphs=args.piecewise_graphs,
    )
    if args.standby_cycles > 0:
        from pagefleet.workers.bench.standby_bench import run_standby_bench

        cycles = run_standby_bench(engine, args.standby_cycles, args.json)
        return 0 if all(cycle.same_tokens for cycle in cycles) else 1
    if (args.input_len is None) != (args.output_len is None):
        raise SystemExit("give both --input-len and --output-len, or neither (ShareGPT-like)")
    lengths = {} if args.input_len is None else {
        "distribution": "fixed", "input_len": args.input_len, "output_len": args.output_len}
    workload = WorkloadSpec(
        num_prompts=args.num_prompts, max_input_len=args.max_input_len,
        max_output_len=args.max_output_len, shared_prefix_len=args.shared_prefix_len,
        seed=args.seed, **lengths,
    )
    if args.compare_quantization is not None:
        from pagefleet.workers.bench.quantization_ab import run_quantization_ab

        candidate = None if args.compare_quantization == "none" else args.compare_quantization
        run_quantization_ab(engine, candidate, workload, args.repeat, args.json)
        return 0
    hf_modes = tuple(m for m in args.hf.split(",") if m and m != "none")
    run_engine_bench(EngineBenchOptions(
        engine, workload, hf_modes, hf_num_prompts=args.hf_num_prompts,
        hf_single_prompts=args.hf_single_prompts, hf_batch_size=args.hf_batch_size,
        json_path=args.json, breakdown=args.breakdown, repeat=args.repeat,
        constrained_fractions=_fractions(args.constrained_fractions),
        variants=_variants(args, engine),
    ))
    return 0


def _variants(args: argparse.Namespace, engine: EngineConfig) -> tuple[EngineVariant, ...]:
    """The engines to measure after the main one."""
    from pagefleet.workers.bench.engine_bench import EngineVariant

    variants = []
    if args.compare_fused_fp8_quant:
        if engine.quantization != "fp8" or engine.fused_layers is False:
            raise SystemExit("--compare-fused-fp8-quant needs --quantization fp8 and the fused layers")
        fused = not engine.fused_fp8_quant
        name = "pagefleet (fp8 quant fused)" if fused else "pagefleet (fp8 quant in matmul)"
        variants.append(EngineVariant(name, dataclasses.replace(engine, fused_fp8_quant=fused)))
    if args.compare_piecewise_graphs:
        piecewise = not engine.piecewise_graphs
        name = "pagefleet (piecewise graphs)" if piecewise else "pagefleet (mixed steps eager)"
        variants.append(EngineVariant(name, dataclasses.replace(engine, piecewise_graphs=piecewise)))
    return tuple(variants)


def _fractions(text: str) -> tuple[float, ...]:
    try:
        fractions = tuple(float(f) for f in text.split(",") if f.strip())
    except ValueError:
        raise SystemExit(f"--constrained-fractions takes numbers in [0, 1], got {text!r}") from None
    if any(not 0.0 <= f <= 1.0 for f in fractions):
        raise SystemExit(f"--constrained-fractions takes numbers in [0, 1], got {text!r}")
    return fractions

"""`pagefleet bench engine`: offline throughput of pagefleet's engine next to transformers.

Both run the same requests in the same process on the same device; transformers runs a
subset (it is slow) as static padded batches and one request at a time, and the report
compares throughputs (tokens per second), which do not depend on the subset size.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from pagefleet.kernels.bench import (
    measure_copy_gb_s,
    measure_fp8_matmul_tflop_s,
    measure_matmul_tflop_s,
)
from pagefleet.platform.protocol.sampling import SamplingParams, StructuredOutput
from pagefleet.platform.protocol.workload import BenchRequest, WorkloadSpec, build_workload
from pagefleet.workers.engine.config import EngineConfig
from pagefleet.workers.engine.gc_freeze import freeze_startup_heap, unfreeze_heap
from pagefleet.workers.engine.llm import LLM


@dataclass(frozen=True, slots=True)
class Throughput:
    system: str
    num_requests: int
    elapsed_s: float
    input_tokens: int
    output_tokens: int

    @property
    def requests_per_s(self) -> float:
        return self.num_requests / self.elapsed_s

    @property
    def output_tokens_per_s(self) -> float:
        return self.output_tokens / self.elapsed_s

    @property
    def total_tokens_per_s(self) -> float:
        return (self.input_tokens + self.output_tokens) / self.elapsed_s

    def row(self) -> str:
        return (f"{self.system:<28} {self.num_requests:>6} {self.elapsed_s:>9.2f} "
                f"{self.requests_per_s:>8.2f} {self.output_tokens_per_s:>11.1f} "
                f"{self.total_tokens_per_s:>11.1f}")


@dataclass(frozen=True, slots=True)
class EngineVariant:
    """Another engine configuration run on the same requests after the main one, so an A/B
    comparison (one switch flipped) is printed by one run on one machine."""

    name: str
    engine: EngineConfig


@dataclass(frozen=True, slots=True)
class EngineBenchOptions:
    engine: EngineConfig
    workload: WorkloadSpec
    hf_modes: tuple[str, ...] = ("static", "single")
    hf_num_prompts: int = 32  # requests for the static-batch baseline
    hf_single_prompts: int = 4  # requests run one at a time (slow: a few are enough for a rate)
    hf_batch_size: int = 16
    json_path: Path | None = None
    repeat: int = 1  # measured passes (same lengths, fresh token ids); the report keeps the lower median
    breakdown: bool = False
    constrained_fractions: tuple[float, ...] = ()  # extra runs with these shares of rows constrained
    variants: tuple[EngineVariant, ...] = ()  # engines measured after the main one, same requests


# Constrained rows follow a grammar that never completes (lower-case words), so they stay
# constrained for their whole output and the measurement is the mask's cost, token after token.
BENCH_GRAMMAR = StructuredOutput(kind="grammar", spec="root ::= [a-z ]*")


def constrained_rows(num_rows: int, fraction: float) -> list[bool]:
    """Which rows are constrained: `fraction` of them, spread evenly through the batch."""
    return [int((i + 1) * fraction) > int(i * fraction) for i in range(num_rows)]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(slots=True)
class StepBreakdown:
    """Where the engine's wall time goes, by phase; each phase ends with a device sync, so
    the split is exact (and the instrumented run loses the overlap a normal run has).

    Each graph (decode) step is also set against its floors: bytes (every weight read once and
    the KV cache of every sequence read once, at the card's measured copy bandwidth) and
    compute (the step's matmul and attention FLOPs at the measured matmul rate). A large batch
    of a big model is compute-bound, so its bytes ratio alone cannot reach 1; the roofline
    floor is the larger of the two, step by step."""

    copy_bytes_per_s: float = 0.0  # measured device copy bandwidth (bytes read + written)
    weight_bytes: int = 0  # bytes a decode step must read from the weights
    kv_bytes_per_token: int = 0
    matmul_flop_s: float = 0.0  # measured matmul rate of the weights' dtype (FP8 or bf16)
    matmul_flops_per_token: int = 0  # 2 x the weights' multiply-adds one token costs
    attention_flops_per_context_token: int = 0  # QK^T and PV, all layers and query heads
    graph_compute_floor_s: float = 0.0
    graph_roofline_s: float = 0.0
    large_graph_compute_floor_s: float = 0.0
    large_graph_roofline_s: float = 0.0
    graph_steps: int = 0
    eager_steps: int = 0
    piecewise_steps: int = 0  # mixed steps replayed in pieces (piecewise_graphs)
    graph_s: float = 0.0
    eager_s: float = 0.0
    piecewise_s: float = 0.0
    sample_s: float = 0.0
    graph_floor_s: float = 0.0
    large_graph_steps: int = 0  # decode batches of 128 sequences or more
    large_graph_s: float = 0.0
    large_graph_floor_s: float = 0.0

    def add_graph_step(self, elapsed_s: float, num_seqs: int, num_context_tokens: int) -> None:
        floor = 0.0
        if self.copy_bytes_per_s:
            floor = (self.weight_bytes + num_context_tokens * self.kv_bytes_per_token) / self.copy_bytes_per_s
        compute = 0.0
        if self.matmul_flop_s:
            compute = (num_seqs * self.matmul_flops_per_token
                       + num_context_tokens * self.attention_flops_per_context_token) / self.matmul_flop_s
        self.graph_steps += 1
        self.graph_s += elapsed_s
        self.graph_floor_s += floor
        self.graph_compute_floor_s += compute
        self.graph_roofline_s += max(floor, compute)
        if num_seqs >= 128:
            self.large_graph_steps += 1
            self.large_graph_s += elapsed_s
            self.large_graph_floor_s += floor
            self.large_graph_compute_floor_s += compute
            self.large_graph_roofline_s += max(floor, compute)

    def _roofline(self, steps: int, elapsed: float, compute: float, roofline: float) -> str:
        if not roofline:
            return ""
        return (f"; compute floor {1e3 * compute / steps:.2f} ms ({self.matmul_flop_s / 1e12:.0f} "
                f"TFLOP/s), roofline {1e3 * roofline / steps:.2f} ms (ratio {elapsed / roofline:.2f})")

    def report(self, total_s: float) -> str:
        other = total_s - self.graph_s - self.eager_s - self.piecewise_s - self.sample_s
        piecewise = (f"{self.piecewise_steps} piecewise-graph (mixed) steps {self.piecewise_s:.2f} s, "
                     if self.piecewise_steps else "")
        lines = [f"time: {self.graph_steps} graph steps {self.graph_s:.2f} s, {piecewise}{self.eager_steps} "
                 f"eager (prefill/mixed) steps {self.eager_s:.2f} s, sampling {self.sample_s:.2f} s, "
                 f"scheduler + bookkeeping {other:.2f} s (of {total_s:.2f} s)"]
        if self.graph_steps and self.graph_floor_s:
            lines.append(
                f"graph decode steps: {1e3 * self.graph_s / self.graph_steps:.2f} ms each vs a bytes "
                f"floor of {1e3 * self.graph_floor_s / self.graph_steps:.2f} ms (ratio "
                f"{self.graph_s / self.graph_floor_s:.2f}; copy {self.copy_bytes_per_s / 1e9:.0f} GB/s, "
                f"weights {self.weight_bytes / 2**30:.2f} GiB)"
                + self._roofline(self.graph_steps, self.graph_s, self.graph_compute_floor_s,
                                 self.graph_roofline_s))
        if self.large_graph_steps and self.large_graph_floor_s:
            lines.append(
                f"graph decode steps at batch >= 128: {self.large_graph_steps} steps, "
                f"{1e3 * self.large_graph_s / self.large_graph_steps:.2f} ms each vs bytes floor "
                f"{1e3 * self.large_graph_floor_s / self.large_graph_steps:.2f} ms "
                f"(ratio {self.large_graph_s / self.large_graph_floor_s:.2f})"
                + self._roofline(self.large_graph_steps, self.large_graph_s,
                                 self.large_graph_compute_floor_s, self.large_graph_roofline_s))
        return "\n".join(lines)


def _decode_weight_bytes(model: torch.nn.Module, tied: bool) -> int:
    """Bytes of the parameters a decode step reads: all of them, less an untied embedding
    table (a decode gathers a few of its rows). Mixture-of-experts weights count at their
    active share, top_k of num_experts (the dense-equivalent floor: a batch large enough to
    touch every expert reads them all, so its true floor lies above this one)."""
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    if (moe := model.arch.moe) is not None:
        experts = sum(p.numel() * p.element_size() for n, p in model.named_parameters() if ".experts." in n)
        total -= experts - experts * moe.top_k // moe.num_experts
    if not tied:
        embed = model.model.embed_tokens.weight
        total -= embed.numel() * embed.element_size()
    return total


def _matmul_flops_per_token(model: torch.nn.Module) -> int:
    """2 x the multiply-adds of one token through every linear layer (matrices of two or more
    dimensions, the untied embedding table left out: a token gathers one row of it). MoE
    experts count at their active share; packed int4 words count as one element (an
    undercount there)."""
    moe = model.arch.moe
    total = 0
    for name, param in model.named_parameters():
        if param.dim() < 2 or name.endswith("embed_tokens.weight"):
            continue
        count = param.numel()
        if moe is not None and ".experts." in name:
            count = count * moe.top_k // moe.num_experts
        total += count
    if model.arch.tie_word_embeddings:
        total += model.model.embed_tokens.weight.numel()
    return 2 * total


def _matmul_flop_s(device: torch.device, quantization: str | None) -> float:
    """The measured matmul rate of the weights' format on a GPU (0 elsewhere: no floor)."""
    if device.type != "cuda":
        return 0.0
    if quantization == "fp8":
        return measure_fp8_matmul_tflop_s(device) * 1e12
    return measure_matmul_tflop_s(device) * 1e12


def instrument(llm: LLM) -> StepBreakdown:
    """Wrap the runner and sampler of one engine with timers (benchmarks only)."""
    engine, runner = llm.engine, llm.engine.runner
    arch = engine.arch
    breakdown = StepBreakdown(
        copy_bytes_per_s=measure_copy_gb_s(runner.device) * 1e9 if runner.device.type == "cuda" else 0.0,
        weight_bytes=_decode_weight_bytes(runner.model, arch.tie_word_embeddings),
        kv_bytes_per_token=runner.bytes_per_block // runner.block_size,
        matmul_flop_s=_matmul_flop_s(runner.device, engine.config.quantization),
        matmul_flops_per_token=_matmul_flops_per_token(runner.model),
        attention_flops_per_context_token=4 * arch.num_layers * arch.num_heads * arch.head_dim,
    )
    execute, sample = runner.execute, engine.sampler.sample

    def timed_execute(output, in_flight=None):
        start = time.perf_counter()
        logits = execute(output, in_flight)
        _sync(runner.device)
        elapsed = time.perf_counter() - start
        num_seqs = len(output.scheduled)
        path = runner.forward_path(num_seqs, sum(item.num_new_tokens for item in output.scheduled))
        if path == "graph":
            context = sum(item.seq.num_computed_tokens + 1 for item in output.scheduled)
            breakdown.add_graph_step(elapsed, num_seqs, context)
        elif path == "piecewise":
            breakdown.piecewise_steps += 1
            breakdown.piecewise_s += elapsed
        else:
            breakdown.eager_steps += 1
            breakdown.eager_s += elapsed
        return logits

    def timed_sample(logits, seqs):
        start = time.perf_counter()
        result = sample(logits, seqs)
        _sync(runner.device)
        breakdown.sample_s += time.perf_counter() - start
        return result

    runner.execute = timed_execute
    engine.sampler.sample = timed_sample
    return breakdown


def warm_up(llm: LLM, requests: list[BenchRequest]) -> None:
    """Run other prompts (no prefix-cache hits for the measured ones) through prefill, mixed
    and decode steps, so kernel compilation and library heuristics stay out of the timing."""
    llm.generate([r.prompt_token_ids for r in requests],
                 SamplingParams(temperature=0, ignore_eos=True, max_tokens=8))


def bench_pagefleet(llm: LLM, requests: list[BenchRequest], breakdown: bool = False,
                    constrained: float | None = None) -> Throughput:
    """`constrained`: the share of rows decoded under `BENCH_GRAMMAR` (None: plain run)."""
    prompts = [r.prompt_token_ids for r in requests]
    rows = constrained_rows(len(requests), constrained or 0.0)
    params = [SamplingParams(temperature=0, ignore_eos=True, max_tokens=r.output_len,
                             structured_output=BENCH_GRAMMAR if row else None)
              for r, row in zip(requests, rows, strict=True)]
    timers = instrument(llm) if breakdown else None
    device = llm.engine.runner.device
    _sync(device)
    start = time.perf_counter()
    outputs = llm.generate(prompts, params)
    _sync(device)
    elapsed = time.perf_counter() - start
    produced = sum(len(o.outputs[0].token_ids) for o in outputs)
    if timers is not None:
        print(timers.report(elapsed))
    name = "pagefleet" if constrained is None else f"pagefleet ({constrained:.0%} constrained)"
    return Throughput(name, len(requests), elapsed, sum(len(p) for p in prompts), produced)


def load_hf_model(resolved, load_format: str, dtype: torch.dtype, device: torch.device):
    """The same architecture in transformers: real weights from the resolved folder, or a
    random model of the same config for dummy weights (the throughput does not care)."""
    from transformers import AutoModelForCausalLM

    if load_format == "dummy" or resolved.path is None:
        with device:  # initialise on the device: an 8B random init on a CPU takes minutes
            model = AutoModelForCausalLM.from_config(resolved.transformers_config(), dtype=dtype)
    else:
        model = AutoModelForCausalLM.from_pretrained(str(resolved.path), dtype=dtype)
    return model.to(device).eval()


@torch.inference_mode()
def bench_hf_static(model, requests: list[BenchRequest], batch_size: int, device: torch.device,
                    pad_id: int) -> Throughput:
    """Static batches, left-padded; a batch runs until its longest output is done."""
    _sync(device)
    start = time.perf_counter()
    produced = 0
    for i in range(0, len(requests), batch_size):
        batch = requests[i : i + batch_size]
        width = max(len(r.prompt_token_ids) for r in batch)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, r in enumerate(batch):
            ids[row, width - len(r.prompt_token_ids):] = torch.tensor(r.prompt_token_ids)
            mask[row, width - len(r.prompt_token_ids):] = 1
        longest = max(r.output_len for r in batch)
        model.generate(ids.to(device), attention_mask=mask.to(device), do_sample=False,
                       max_new_tokens=longest, min_new_tokens=longest, pad_token_id=pad_id)
        produced += sum(r.output_len for r in batch)  # only the tokens someone asked for
    _sync(device)
    elapsed = time.perf_counter() - start
    return Throughput(f"hf static (batch {batch_size})", len(requests), elapsed,
                      sum(len(r.prompt_token_ids) for r in requests), produced)


@torch.inference_mode()
def bench_hf_single(model, requests: list[BenchRequest], device: torch.device, pad_id: int) -> Throughput:
    _sync(device)
    start = time.perf_counter()
    for r in requests:
        ids = torch.tensor([r.prompt_token_ids], device=device)
        model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                       max_new_tokens=r.output_len, min_new_tokens=r.output_len, pad_token_id=pad_id)
    _sync(device)
    elapsed = time.perf_counter() - start
    return Throughput("hf one at a time", len(requests), elapsed,
                      sum(len(r.prompt_token_ids) for r in requests),
                      sum(r.output_len for r in requests))


def _workload_for(spec: WorkloadSpec, vocab_size: int) -> list[BenchRequest]:
    """`spec`'s requests with token ids inside this model's vocabulary (clear of its end)."""
    high = max(spec.token_id_low + 1, min(spec.token_id_high, vocab_size - 10))
    return build_workload(dataclasses.replace(spec, token_id_high=high))


def _shifted(requests: list[BenchRequest], offset: int) -> list[BenchRequest]:
    """The same work with every token id moved by `offset` (wrapping inside the ids the
    workload draws from), so a repeated pass finds nothing of the last one in the prefix cache."""
    if offset == 0:
        return requests
    low = min(min(r.prompt_token_ids) for r in requests)
    span = max(max(r.prompt_token_ids) for r in requests) - low + 1
    return [BenchRequest([low + (t - low + offset) % span for t in r.prompt_token_ids], r.output_len)
            for r in requests]


def _measured_passes(llm: LLM, options: EngineBenchOptions, requests: list[BenchRequest],
                     name: str = "pagefleet") -> list[Throughput]:
    """Warm up on other prompts, then `options.repeat` passes of `requests` (pass i > 0: the
    same lengths, other token ids)."""
    warm = dataclasses.replace(options.workload, seed=options.workload.seed + 1000,
                               num_prompts=min(64, options.workload.num_prompts))
    warm_up(llm, _workload_for(warm, llm.engine.arch.vocab_size))
    freeze_startup_heap()  # as the worker does: no full collection inside the measured steps
    passes = []
    for index in range(options.repeat):
        passes.append(dataclasses.replace(bench_pagefleet(llm, _shifted(requests, index)), system=name))
        print(f"pass {index + 1}: {passes[-1].row()}", flush=True)
    return passes


def _lower_median(passes: list[Throughput]) -> Throughput:
    return sorted(passes, key=lambda t: t.output_tokens_per_s)[(len(passes) - 1) // 2]


def _release(device: torch.device) -> None:
    """Give a deleted engine's KV cache and CUDA graphs back before the next one sizes its own
    (unfrozen first: `freeze_startup_heap` exempted the engine's cycles from collection)."""
    unfreeze_heap()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def bench_variant(variant: EngineVariant, options: EngineBenchOptions,
                  requests: list[BenchRequest]) -> Throughput:
    """A fresh engine (no prefix-cache hits from the main run) on the same requests."""
    llm = LLM(**dataclasses.asdict(variant.engine))
    result = _lower_median(_measured_passes(llm, options, requests, variant.name))
    print(f"{variant.name}: KV blocks {llm.engine.stats().num_kv_blocks}", flush=True)
    device = llm.engine.runner.device
    del llm
    _release(device)
    return result


def run_engine_bench(options: EngineBenchOptions) -> list[Throughput]:
    llm = LLM(**dataclasses.asdict(options.engine))
    requests = _workload_for(options.workload, llm.engine.arch.vocab_size)
    passes = _measured_passes(llm, options, requests)
    results = [_lower_median(passes)]
    if options.constrained_fractions:  # compile the grammar outside the timing
        llm.generate([requests[0].prompt_token_ids],
                     SamplingParams(max_tokens=2, ignore_eos=True, structured_output=BENCH_GRAMMAR))
    for k, fraction in enumerate(options.constrained_fractions):  # same lengths, no cache hits
        results.append(bench_pagefleet(llm, _shifted(requests, options.repeat + k), constrained=fraction))
        print(results[-1].row(), flush=True)
    if options.breakdown:  # an instrumented second pass on fresh prompts (no prefix-cache hits)
        fresh = dataclasses.replace(options.workload, seed=options.workload.seed + 1)
        bench_pagefleet(llm, _workload_for(fresh, llm.engine.arch.vocab_size), breakdown=True)
    stats = llm.engine.stats()
    device, dtype, resolved = llm.engine.runner.device, llm.engine.runner.dtype, llm.engine.resolved
    del llm  # give the KV cache and CUDA graphs back before the next engine or transformers
    _release(device)
    results.extend(bench_variant(variant, options, requests) for variant in options.variants)
    if options.hf_modes:
        model = load_hf_model(resolved, options.engine.load_format, dtype, device)
        subset = requests[: options.hf_num_prompts]
        pad_id = 0
        bench_hf_single(model, subset[:1], device, pad_id)  # warm-up
        if "static" in options.hf_modes:
            results.append(bench_hf_static(model, subset, options.hf_batch_size, device, pad_id))
        if "single" in options.hf_modes:
            results.append(bench_hf_single(model, requests[: options.hf_single_prompts], device, pad_id))
    _report(options, results, stats, device, passes)
    return results


def _report(options: EngineBenchOptions, results: list[Throughput], stats, device: torch.device,
            passes: list[Throughput]) -> None:
    ours = results[0]
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device: {card}; torch {torch.__version__}; model {options.engine.model} "
          f"({options.engine.load_format}); workload {options.workload}")
    print(f"{'system':<28} {'reqs':>6} {'time s':>9} {'req/s':>8} {'out tok/s':>11} {'tot tok/s':>11}")
    for result in results:
        print(result.row())
    for result in results[1:]:
        print(f"pagefleet / {result.system}: {ours.output_tokens_per_s / result.output_tokens_per_s:.1f}x "
              "output tokens/s")
    print(f"preemptions: {stats.num_preemptions_total} ({stats.num_swapped_out_total} swapped, "
          f"the rest recomputed); prefix-cache hit rate: "
          f"{stats.prefix_cache_hit_rate:.2%}; KV blocks: {stats.num_kv_blocks}")
    if options.json_path is not None:
        payload = {
            "device": card, "torch": torch.__version__, "model": options.engine.model,
            "engine": dataclasses.asdict(options.engine),
            "workload": dataclasses.asdict(options.workload),
            "results": [dict(dataclasses.asdict(r), output_tokens_per_s=r.output_tokens_per_s,
                             total_tokens_per_s=r.total_tokens_per_s,
                             requests_per_s=r.requests_per_s) for r in results],
            "pagefleet_passes_output_tokens_per_s": [p.output_tokens_per_s for p in passes],
        }
        options.json_path.write_text(json.dumps(payload, indent=2))

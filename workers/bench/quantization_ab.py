"""`pagefleet bench engine --compare-quantization Q`: two engines, one process, passes alternated.

On a shared machine the speed of a run drifts with whatever else runs, by more than the
difference being measured; two separate runs minutes apart compare the neighbours' load as
much as the engines. Here both engines are built in one process, warmed up, then measured
A, B, A, B ... on the same work (each pass with fresh token ids, so no prefix-cache hits), and
every pass is printed: the spread is visible, and each A/B pair was measured under nearly the
same load. The summary is the median of each side and the median of the per-pair ratios.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from dataclasses import dataclass
from pathlib import Path

import torch

from pagefleet.platform.protocol.workload import BenchRequest, WorkloadSpec
from pagefleet.workers.bench.engine_bench import (
    Throughput,
    _shifted,
    _workload_for,
    bench_pagefleet,
    warm_up,
)
from pagefleet.workers.engine.config import EngineConfig
from pagefleet.workers.engine.llm import LLM


@dataclass(frozen=True, slots=True)
class QuantizationAB:
    """Output tokens/s of every pass of both engines, in the order they ran."""

    baseline: str
    candidate: str
    baseline_tok_s: list[float]
    candidate_tok_s: list[float]

    @property
    def pair_ratios(self) -> list[float]:
        return [c / b for b, c in zip(self.baseline_tok_s, self.candidate_tok_s, strict=True)]

    def summary(self) -> str:
        ratios = self.pair_ratios
        return (f"{self.candidate} / {self.baseline}: median of per-pair ratios "
                f"{statistics.median(ratios):.2f}x (range {min(ratios):.2f}-{max(ratios):.2f}); "
                f"medians {statistics.median(self.candidate_tok_s):.1f} vs "
                f"{statistics.median(self.baseline_tok_s):.1f} output tok/s")


def _label(quantization: str | None) -> str:
    return quantization or "unquantised"


def run_quantization_ab(engine: EngineConfig, candidate: str | None, workload: WorkloadSpec,
                        repeat: int, json_path: Path | None = None) -> QuantizationAB:
    """Alternate `repeat` passes of `engine` (the baseline) and of the same engine with
    `quantization=candidate`; print each pass and the summary."""
    if repeat < 1:
        raise ValueError(f"repeat must be at least 1, got {repeat}")
    baseline = LLM(**dataclasses.asdict(engine))
    other = LLM(**dataclasses.asdict(dataclasses.replace(engine, quantization=candidate)))
    vocab = baseline.engine.arch.vocab_size
    requests = _workload_for(workload, vocab)
    warm = dataclasses.replace(workload, seed=workload.seed + 1000, num_prompts=min(64, workload.num_prompts))
    for llm in (baseline, other):
        warm_up(llm, _workload_for(warm, vocab))
    names = (_label(engine.quantization), _label(candidate))
    passes: tuple[list[float], list[float]] = ([], [])
    for index in range(repeat):
        work: list[BenchRequest] = _shifted(requests, index)
        for side, (name, llm) in enumerate(zip(names, (baseline, other), strict=True)):
            result: Throughput = bench_pagefleet(llm, work)
            passes[side].append(result.output_tokens_per_s)
            print(f"pass {index + 1} {name:<12} {result.row()}", flush=True)
    ab = QuantizationAB(names[0], names[1], *passes)
    device = baseline.engine.runner.device
    print(f"device: {device}; torch {torch.__version__}; intra-op threads {torch.get_num_threads()}; "
          f"model {engine.model}; workload {workload}")
    print(ab.summary())
    if json_path is not None:
        json_path.write_text(json.dumps({
            "device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "engine": dataclasses.asdict(engine), "workload": dataclasses.asdict(workload),
            **dataclasses.asdict(ab), "pair_ratios": ab.pair_ratios,
        }, indent=2))
    return ab

"""Benchmark workloads: prompts as random token ids with fixed or ShareGPT-like lengths.

Token-id prompts make input lengths exact on any OpenAI-compatible server (no tokenizer on the
client side). The ShareGPT-like option draws lengths from lognormal distributions fitted
loosely to that dataset's shape (long-tailed, median prompt ~ 4x the median answer), clipped
to the model's context.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BenchRequest:
    prompt_token_ids: list[int]
    output_len: int


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    """`distribution` is `fixed` (exactly input_len / output_len) or `sharegpt` (lognormal
    around those medians); `max_total_len` clips prompt + output to the model's context."""

    num_prompts: int
    input_len: int = 128
    output_len: int = 64
    distribution: str = "fixed"
    sigma: float = 0.8
    max_total_len: int = 2048
    token_id_low: int = 100
    token_id_high: int = 30000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_prompts < 1:
            raise ValueError(f"num_prompts must be at least 1, got {self.num_prompts}")
        if self.input_len < 1 or self.output_len < 1:
            raise ValueError("input_len and output_len must be at least 1")
        if self.distribution not in ("fixed", "sharegpt"):
            raise ValueError(f"distribution must be 'fixed' or 'sharegpt', got {self.distribution!r}")
        if self.input_len + self.output_len > self.max_total_len:
            raise ValueError(f"input_len + output_len exceeds max_total_len {self.max_total_len}")
        if not 0 <= self.token_id_low < self.token_id_high:
            raise ValueError("token ids must satisfy 0 <= low < high")
        if self.sigma <= 0:
            raise ValueError(f"sigma must be positive, got {self.sigma}")


def _lognormal_len(rng: random.Random, median: int, sigma: float, low: int, high: int) -> int:
    return max(low, min(high, round(median * rng.lognormvariate(0.0, sigma))))


def build_workload(spec: WorkloadSpec) -> list[BenchRequest]:
    """The same requests for the same spec (seeded), so two systems see identical work."""
    rng = random.Random(spec.seed)
    requests = []
    for _ in range(spec.num_prompts):
        if spec.distribution == "fixed":
            input_len, output_len = spec.input_len, spec.output_len
        else:
            output_len = _lognormal_len(rng, spec.output_len, spec.sigma, 1, spec.max_total_len // 2)
            input_len = _lognormal_len(rng, spec.input_len, spec.sigma, 1,
                                       spec.max_total_len - output_len)
        ids = [rng.randrange(spec.token_id_low, spec.token_id_high) for _ in range(input_len)]
        requests.append(BenchRequest(ids, output_len))
    return requests

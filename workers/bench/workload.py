"""Benchmark workloads: fixed lengths or a ShareGPT-like length distribution, made locally.

Prompts are random token ids and outputs run to an exact length (ignore_eos), so every
system under test does the same work whatever its numerics.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

SHAREGPT_MEAN_INPUT = 205
SHAREGPT_MEAN_OUTPUT = 170
SHAREGPT_SIGMA = 1.0


@dataclass(frozen=True, slots=True)
class BenchRequest:
    prompt_token_ids: list[int]
    output_len: int


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    num_prompts: int
    input_len: int | None = None  # None: ShareGPT-like lognormal lengths
    output_len: int | None = None
    max_input_len: int = 1024
    max_output_len: int = 512
    shared_prefix_len: int = 0  # a common "system prompt" in front of every prompt
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_prompts < 1:
            raise ValueError(f"num_prompts must be at least 1, got {self.num_prompts}")
        if (self.input_len is None) != (self.output_len is None):
            raise ValueError("give both --input-len and --output-len, or neither (ShareGPT-like)")


def _lognormal_length(rng: random.Random, mean: float, upper: int) -> int:
    mu = math.log(mean) - SHAREGPT_SIGMA**2 / 2  # so that the mean of the lognormal is `mean`
    return max(1, min(upper, round(rng.lognormvariate(mu, SHAREGPT_SIGMA))))


def make_workload(spec: WorkloadSpec, vocab_size: int) -> list[BenchRequest]:
    rng = random.Random(spec.seed)
    low, high = 10, max(11, vocab_size - 10)  # stay clear of special tokens at the ends
    prefix = [rng.randrange(low, high) for _ in range(spec.shared_prefix_len)]
    requests = []
    for _ in range(spec.num_prompts):
        if spec.input_len is None:
            input_len = _lognormal_length(rng, SHAREGPT_MEAN_INPUT, spec.max_input_len)
            output_len = _lognormal_length(rng, SHAREGPT_MEAN_OUTPUT, spec.max_output_len)
        else:
            input_len, output_len = spec.input_len, spec.output_len or 1
        body = [rng.randrange(low, high) for _ in range(input_len)]
        requests.append(BenchRequest(prefix + body, output_len))
    return requests

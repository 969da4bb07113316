"""Benchmark workloads: random token-id prompts with fixed or ShareGPT-like lengths.

One definition for both benchmarks, `pagefleet bench serve` (platform, over HTTP) and
`pagefleet bench engine` (workers, in process), so "ShareGPT-like" means the same lengths in
both reports. It lives in the protocol package because that is what both sides may import
(workers import only `protocol` and `registry`) and it must stay torch-free for the HTTP
benchmark; like the wire structs it is an agreement between the two sides, here on what load
they are measured with.

Token-id prompts make input lengths exact on any OpenAI-compatible server (no tokenizer on
the client side), and outputs run to an exact length (ignore_eos), so every system under test
does the same work whatever its numerics. ShareGPT-like lengths are lognormal with the
dataset's means (prompt 205, answer 170 tokens; sigma 1.0, long-tailed), clipped to the caps.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Literal

SHAREGPT_MEAN_INPUT = 205
SHAREGPT_MEAN_OUTPUT = 170
SHAREGPT_SIGMA = 1.0


@dataclass(frozen=True, slots=True)
class BenchRequest:
    prompt_token_ids: list[int]
    output_len: int


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    """`fixed`: exactly `input_len` / `output_len` tokens; `sharegpt`: lognormal lengths with
    those means. Prompt and output are capped by `max_input_len` / `max_output_len`, and their
    sum by `max_total_len` (the model's context) when set. `shared_prefix_len` tokens of a
    common "system prompt" go in front of every prompt, on top of its own length."""

    num_prompts: int
    distribution: Literal["fixed", "sharegpt"] = "sharegpt"
    input_len: int = SHAREGPT_MEAN_INPUT
    output_len: int = SHAREGPT_MEAN_OUTPUT
    max_input_len: int = 1024
    max_output_len: int = 512
    max_total_len: int | None = None
    shared_prefix_len: int = 0
    token_id_low: int = 10  # clear of the special tokens at the start of most vocabularies
    token_id_high: int = 30000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_prompts < 1:
            raise ValueError(f"num_prompts must be at least 1, got {self.num_prompts}")
        if self.distribution not in ("fixed", "sharegpt"):
            raise ValueError(f"distribution must be 'fixed' or 'sharegpt', got {self.distribution!r}")
        if self.input_len < 1 or self.output_len < 1:
            raise ValueError("input_len and output_len must be at least 1")
        if self.distribution == "fixed" and (self.input_len > self.max_input_len
                                             or self.output_len > self.max_output_len):
            raise ValueError("fixed input_len / output_len exceed max_input_len / max_output_len")
        if self.max_total_len is not None:
            lengths = self.input_len + self.output_len if self.distribution == "fixed" else 2
            if self.shared_prefix_len + lengths > self.max_total_len:
                raise ValueError(f"the requests do not fit max_total_len {self.max_total_len}")
        if self.shared_prefix_len < 0:
            raise ValueError(f"shared_prefix_len must not be negative, got {self.shared_prefix_len}")
        if not 0 <= self.token_id_low < self.token_id_high:
            raise ValueError("token ids must satisfy 0 <= low < high")


def _lognormal_length(rng: random.Random, mean: float, upper: int) -> int:
    mu = math.log(mean) - SHAREGPT_SIGMA**2 / 2  # so that the mean of the lognormal is `mean`
    return max(1, min(upper, round(rng.lognormvariate(mu, SHAREGPT_SIGMA))))


def build_workload(spec: WorkloadSpec) -> list[BenchRequest]:
    """The same requests for the same spec (seeded), so two systems see identical work."""
    rng = random.Random(spec.seed)

    def tokens(count: int) -> list[int]:
        return [rng.randrange(spec.token_id_low, spec.token_id_high) for _ in range(count)]

    prefix = tokens(spec.shared_prefix_len)
    total = spec.max_total_len - spec.shared_prefix_len if spec.max_total_len else None
    requests = []
    for _ in range(spec.num_prompts):
        if spec.distribution == "fixed":
            input_len, output_len = spec.input_len, spec.output_len
        else:
            output_len = _lognormal_length(rng, spec.output_len,
                                           spec.max_output_len if total is None
                                           else min(spec.max_output_len, total // 2))
            input_len = _lognormal_length(rng, spec.input_len,
                                          spec.max_input_len if total is None
                                          else min(spec.max_input_len, total - output_len))
        requests.append(BenchRequest(prefix + tokens(input_len), output_len))
    return requests

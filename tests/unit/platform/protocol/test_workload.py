"""The one benchmark workload: fixed lengths are exact, ShareGPT-like ones have the dataset's
shape and respect every cap, and a seed gives the same requests to both benchmarks."""

from __future__ import annotations

import statistics

import pytest

from pagefleet.platform.protocol.workload import (
    SHAREGPT_MEAN_INPUT,
    SHAREGPT_MEAN_OUTPUT,
    WorkloadSpec,
    build_workload,
)


def test_fixed_lengths_are_exact_and_share_the_prefix() -> None:
    requests = build_workload(WorkloadSpec(8, distribution="fixed", input_len=12, output_len=5,
                                           shared_prefix_len=4, token_id_low=3, token_id_high=9))
    assert [len(r.prompt_token_ids) for r in requests] == [16] * 8
    assert {r.output_len for r in requests} == {5}
    assert len({tuple(r.prompt_token_ids[:4]) for r in requests}) == 1
    assert all(3 <= t < 9 for r in requests for t in r.prompt_token_ids)


def test_sharegpt_like_lengths_have_the_dataset_means_and_a_long_tail() -> None:
    requests = build_workload(WorkloadSpec(4000, max_input_len=100_000, max_output_len=100_000))
    inputs = [len(r.prompt_token_ids) for r in requests]
    outputs = [r.output_len for r in requests]
    assert statistics.mean(inputs) == pytest.approx(SHAREGPT_MEAN_INPUT, rel=0.1)
    assert statistics.mean(outputs) == pytest.approx(SHAREGPT_MEAN_OUTPUT, rel=0.1)
    assert statistics.median(inputs) < SHAREGPT_MEAN_INPUT  # long-tailed: median below mean


def test_caps_hold_and_a_seed_repeats_the_workload() -> None:
    spec = WorkloadSpec(500, max_input_len=300, max_output_len=200, max_total_len=400,
                        shared_prefix_len=10, seed=7)
    requests = build_workload(spec)
    assert all(len(r.prompt_token_ids) <= 10 + 300 and r.output_len <= 200 for r in requests)
    assert all(len(r.prompt_token_ids) + r.output_len <= 400 for r in requests)
    assert build_workload(spec) == requests
    assert build_workload(WorkloadSpec(500, seed=8)) != requests


@pytest.mark.parametrize("kwargs", [
    {"num_prompts": 0}, {"num_prompts": 1, "distribution": "zipf"},
    {"num_prompts": 1, "distribution": "fixed", "input_len": 2000},
    {"num_prompts": 1, "distribution": "fixed", "input_len": 100, "output_len": 100, "max_total_len": 150},
    {"num_prompts": 1, "token_id_low": 5, "token_id_high": 5},
])
def test_bad_specs_are_rejected(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        WorkloadSpec(**kwargs)

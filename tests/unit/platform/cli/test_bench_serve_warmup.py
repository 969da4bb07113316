"""`bench serve --overhead` warms each half up on other prompts of the measured shape."""

from __future__ import annotations

import pytest

from pagefleet.platform.cli.bench_serve import _warmup_requests
from pagefleet.platform.protocol.workload import WorkloadSpec, build_workload


def _workload(num_prompts: int) -> WorkloadSpec:
    return WorkloadSpec(num_prompts=num_prompts, distribution="fixed", input_len=16, output_len=8,
                        max_input_len=64, max_output_len=64, max_total_len=128, seed=3)


def test_warmup_prompts_have_the_measured_shape_and_other_ids():
    workload = _workload(10)
    measured = build_workload(workload)
    warmup = _warmup_requests(workload, measured, 4)
    assert len(warmup) == 4
    assert {(len(r.prompt_token_ids), r.output_len) for r in warmup} == {(16, 8)}
    measured_prompts = {tuple(r.prompt_token_ids) for r in measured}
    assert not measured_prompts & {tuple(r.prompt_token_ids) for r in warmup}


def test_warmup_is_capped_by_the_workload_and_zero_means_one_short_request():
    workload = _workload(3)
    measured = build_workload(workload)
    assert len(_warmup_requests(workload, measured, 32)) == 3
    (single,) = _warmup_requests(workload, measured, 0)
    assert (single.prompt_token_ids, single.output_len) == (measured[0].prompt_token_ids, 2)
    with pytest.raises(SystemExit):
        _warmup_requests(workload, measured, -1)

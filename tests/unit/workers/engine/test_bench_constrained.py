"""`pagefleet bench engine --constrained-fractions`: which rows are constrained, and that a
constrained row runs its whole output under the never-ending bench grammar."""

from __future__ import annotations

import pytest

from pagefleet.platform.protocol.workload import BenchRequest
from pagefleet.workers.bench.engine_bench import bench_pagefleet, constrained_rows


@pytest.mark.parametrize(("num_rows", "fraction", "expected"), [
    (4, 0.0, [False] * 4),
    (4, 0.5, [False, True, False, True]),
    (4, 1.0, [True] * 4),
    (3, 1 / 3, [False, False, True]),
])
def test_constrained_rows_spread_evenly(num_rows: int, fraction: float, expected: list[bool]) -> None:
    assert constrained_rows(num_rows, fraction) == expected


def test_constrained_rows_produce_every_requested_token(llm) -> None:
    ids = llm.get_tokenizer().encode("Write a sentence about the sea.")
    requests = [BenchRequest(prompt_token_ids=ids[: 4 + i], output_len=6) for i in range(4)]
    result = bench_pagefleet(llm, requests, constrained=0.5)
    assert result.system == "pagefleet (50% constrained)"
    assert result.output_tokens == 24

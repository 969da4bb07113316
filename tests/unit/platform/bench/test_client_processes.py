"""The load generator split over processes: the shares add up to the load asked for, every
request comes back exactly once, and the parent's hooks run between warm-up and load."""

from __future__ import annotations

import math

import pytest

from pagefleet.platform.bench.client_processes import run_http_load, split_load
from pagefleet.platform.bench.runner import LoadSpec
from pagefleet.platform.processes.ports import free_port
from pagefleet.platform.protocol.workload import BenchRequest


def test_a_closed_loop_is_spread_evenly() -> None:
    shares = split_load(LoadSpec(concurrency=10, seed=5), 4)
    assert [share.concurrency for share in shares] == [3, 3, 2, 2]
    assert len({share.seed for share in shares}) == 4  # each process draws its own arrivals


def test_rates_add_up() -> None:
    shares = split_load(LoadSpec(request_rate=30.0), 3)
    assert [share.request_rate for share in shares] == [10.0, 10.0, 10.0]
    assert all(math.isinf(s.request_rate) for s in split_load(LoadSpec(request_rate=math.inf), 2))


def test_too_few_in_flight_for_the_processes() -> None:
    with pytest.raises(ValueError, match="concurrency of at least 3"):
        split_load(LoadSpec(concurrency=2), 3)


def test_every_request_comes_back_once_and_the_hooks_run_in_order() -> None:
    """Against a port nobody listens on each request fails fast, as a data point."""
    requests = [BenchRequest([number + 1] * (number + 1), 4) for number in range(7)]
    calls: list[object] = []
    run = run_http_load(f"http://127.0.0.1:{free_port()}/v1", "m", None, requests,
                        requests[:3], LoadSpec(concurrency=4), 2,
                        between=lambda pids: calls.append(sorted(pids)),
                        after=lambda: calls.append("after"))
    assert sorted(result.prompt_len for result in run.results) == list(range(1, 8))
    assert not any(result.ok for result in run.results)
    assert all("Connect" in result.error for result in run.results)
    assert len(calls) == 2 and len(set(calls[0])) == 2 and calls[1] == "after"
    assert run.duration_s > 0


def test_processes_must_be_positive() -> None:
    with pytest.raises(ValueError, match="processes"):
        run_http_load("http://127.0.0.1:1/v1", "m", None, [], [], LoadSpec(concurrency=1), 0)

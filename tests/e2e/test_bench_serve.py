"""`pagefleet bench serve` against the live stack: every request measured, numbers coherent."""

from __future__ import annotations

import json
import math
from pathlib import Path

from pagefleet.platform.cli import main
from tests.e2e.conftest import MODEL, Stack


def test_bench_serve_measures_every_request(stack: Stack, tmp_path: Path, capsys) -> None:
    out = tmp_path / "bench.json"
    assert main(["bench", "serve", "--base-url", stack.base_url, "--model", MODEL, "--num-prompts", "6",
                 "--input-len", "16", "--output-len", "4", "--lengths", "sharegpt",
                 "--concurrency", "3", "--max-total-len", "128", "--json", str(out)]) == 0
    summary = json.loads(out.read_text())["server"]
    assert (summary["completed"], summary["failed"]) == (6, 0), summary["first_error"]
    assert summary["output_throughput"] > 0 and summary["request_throughput"] > 0
    ttft, e2e = summary["ttft"], summary["e2e"]
    assert 0 < ttft["p50"] <= ttft["p99"] and ttft["mean"] <= e2e["mean"]
    assert not math.isnan(summary["itl"]["mean"])
    assert "TTFT" in capsys.readouterr().out

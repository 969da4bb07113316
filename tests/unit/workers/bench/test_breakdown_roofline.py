"""`bench engine --breakdown`'s floors: bytes and compute per graph step, and their roofline."""

from __future__ import annotations

from pathlib import Path

import pytest

from pagefleet.workers.bench.engine_bench import StepBreakdown, _matmul_flops_per_token
from pagefleet.workers.models.loader import build_model, resolve_model
from tests.unit.workers.models.tiny import TINY, VARIANTS, write_tiny_checkpoint


def test_each_step_takes_the_larger_floor():
    breakdown = StepBreakdown(copy_bytes_per_s=1e12, weight_bytes=10**9, kv_bytes_per_token=1000,
                              matmul_flop_s=1e14, matmul_flops_per_token=2 * 10**9,
                              attention_flops_per_context_token=10**4)
    breakdown.add_graph_step(0.020, num_seqs=256, num_context_tokens=100_000)  # compute-bound
    breakdown.add_graph_step(0.002, num_seqs=8, num_context_tokens=800)  # bytes-bound
    bytes_floors = [(10**9 + 100_000 * 1000) / 1e12, (10**9 + 800 * 1000) / 1e12]
    compute_floors = [(256 * 2e9 + 100_000 * 1e4) / 1e14, (8 * 2e9 + 800 * 1e4) / 1e14]
    assert breakdown.graph_floor_s == pytest.approx(sum(bytes_floors))
    assert breakdown.graph_compute_floor_s == pytest.approx(sum(compute_floors))
    assert breakdown.graph_roofline_s == pytest.approx(compute_floors[0] + bytes_floors[1])
    assert breakdown.large_graph_roofline_s == pytest.approx(compute_floors[0])
    report = breakdown.report(total_s=0.05)
    assert f"ratio {0.020 / compute_floors[0]:.2f})" in report.splitlines()[-1]


@pytest.mark.parametrize("variant", ["llama3-tied", "qwen2-bias"])
def test_matmul_flops_count_every_projection_once(tmp_path: Path, variant: str):
    folder = write_tiny_checkpoint(tmp_path / variant, variant, weights=False)
    model = build_model(resolve_model(str(folder), "dummy"), load_format="dummy")
    c = {**TINY, **VARIANTS[variant]}
    hidden, heads, kv_heads, head_dim = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]
    per_layer = (hidden * (heads + 2 * kv_heads) * head_dim  # q, k, v
                 + heads * head_dim * hidden  # o
                 + 3 * hidden * c["intermediate_size"])  # gate, up, down
    lm_head = c["vocab_size"] * hidden  # tied or not, the logits are one matmul with it
    assert _matmul_flops_per_token(model) == 2 * (c["num_hidden_layers"] * per_layer + lm_head)


def test_piecewise_steps_have_their_own_line_item():
    breakdown = StepBreakdown()
    breakdown.graph_steps, breakdown.graph_s = 10, 0.02
    breakdown.piecewise_steps, breakdown.piecewise_s = 4, 0.012
    breakdown.eager_steps, breakdown.eager_s = 1, 0.03
    first = breakdown.report(total_s=0.07).splitlines()[0]
    assert "4 piecewise-graph (mixed) steps 0.01 s, 1 eager" in first
    assert "scheduler + bookkeeping 0.01 s (of 0.07 s)" in first  # 0.07 - 0.02 - 0.012 - 0.03
    assert "piecewise" not in StepBreakdown().report(total_s=1.0)

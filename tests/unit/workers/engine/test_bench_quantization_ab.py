"""`pagefleet bench engine --compare-quantization`: both engines run every pass, alternated,
and the summary is read from those passes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pagefleet.platform.protocol.workload import WorkloadSpec
from pagefleet.workers.bench.quantization_ab import QuantizationAB, run_quantization_ab
from pagefleet.workers.engine.config import EngineConfig
from tests.unit.workers.models.tiny import write_tiny_checkpoint


def test_pair_ratios_and_summary_come_from_the_passes() -> None:
    ab = QuantizationAB("unquantised", "int8", [10.0, 20.0, 40.0], [15.0, 20.0, 30.0])
    assert ab.pair_ratios == [1.5, 1.0, 0.75]
    assert ab.summary() == ("int8 / unquantised: median of per-pair ratios 1.00x (range 0.75-1.50); "
                            "medians 20.0 vs 20.0 output tok/s")


def test_both_engines_run_every_pass(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    engine = EngineConfig(model=str(write_tiny_checkpoint(tmp_path / "m", "llama3-tied")),
                          max_model_len=64, num_kv_blocks=16)
    workload = WorkloadSpec(num_prompts=2, distribution="fixed", input_len=8, output_len=4, seed=0,
                            token_id_low=3, token_id_high=90)
    ab = run_quantization_ab(engine, "int8", workload, repeat=2, json_path=tmp_path / "ab.json")
    assert len(ab.baseline_tok_s) == len(ab.candidate_tok_s) == 2
    lines = [line.split()[:3] for line in capsys.readouterr().out.splitlines() if line.startswith("pass")]
    assert lines == [["pass", "1", "unquantised"], ["pass", "1", "int8"],
                     ["pass", "2", "unquantised"], ["pass", "2", "int8"]]
    saved = json.loads((tmp_path / "ab.json").read_text())
    assert saved["candidate"] == "int8" and saved["pair_ratios"] == ab.pair_ratios
    with pytest.raises(ValueError, match="repeat must be at least 1, got 0"):
        run_quantization_ab(engine, "int8", workload, repeat=0)

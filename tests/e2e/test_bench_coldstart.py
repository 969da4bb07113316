"""`pagefleet bench coldstart --in-process`: one worker's readiness, measured without Redis
(the mode the GPU figures come from), with every CPU phase present and in order."""

from __future__ import annotations

import json
from pathlib import Path

from pagefleet.platform.cli import main
from pagefleet.platform.protocol.phases import in_order


def test_in_process_cold_start_reports_every_phase_in_order(tmp_path: Path, capsys) -> None:
    out = tmp_path / "coldstart.json"
    assert main(["bench", "coldstart", "--in-process", "--max-model-len", "128", "--max-num-seqs", "2",
                 "--json", str(out)]) == 0
    [run] = json.loads(out.read_text())["runs"]
    names = [p["name"] for p in run["points"]]
    assert names == ["spawned", "imports_done", "tokenizer_loaded", "weights_loaded", "kv_allocated",
                     "engine_ready", "first_token"]
    assert in_order(names)
    times = [p["at_s"] for p in run["points"]]
    assert times == sorted(times) and run["first_token_s"] == times[-1] > 0
    assert run["notes"]["device"] == "cpu"
    assert "first token after" in capsys.readouterr().out

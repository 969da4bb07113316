"""`bench serve --overhead --synthetic-step-ms`: the whole measurement on the synthetic engine,
with its own redis-server, gateway and worker processes, and no model anywhere."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pagefleet.platform.cli import main

NUM_PROMPTS, OUTPUT_LEN, STEP_MS = 16, 8, 5.0


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("engine_process", "processes"), [("off", 1), ("on", 2)])
def test_both_halves_complete_every_request_with_its_tokens(tmp_path: Path, capsys, engine_process: str,
                                                            processes: int) -> None:
    """`processes`: of the gateway and of the HTTP client."""
    out = tmp_path / "synthetic.json"
    assert main(["bench", "serve", "--overhead", "--synthetic-step-ms", str(STEP_MS),
                 "--num-prompts", str(NUM_PROMPTS), "--concurrency", "4", "--input-len", "16",
                 "--output-len", str(OUTPUT_LEN), "--max-total-len", "64", "--json", str(out),
                 "--engine-process", engine_process, "--gateway-workers", str(processes),
                 "--client-processes", str(processes)]) == 0
    result = json.loads(out.read_text())
    for half in ("platform", "engine"):
        summary = result[half]
        assert (summary["completed"], summary["failed"]) == (NUM_PROMPTS, 0), summary["first_error"]
        output_tokens = summary["output_throughput"] * summary["duration_s"]
        assert round(output_tokens) == NUM_PROMPTS * OUTPUT_LEN, half
        assert 0 < summary["ttft"]["p50"] <= summary["e2e"]["p50"]
    assert set(result["cpu_cores"]["platform"]) >= {"client" if processes == 1 else "bench parent",
                                                    "gateway", "worker"}
    # The worker's engine loop in its own process (a child of the worker) or in a thread.
    assert ("engine core" in result["cpu_cores"]["platform"]) is (engine_process == "on")
    # Several gateway processes: each one's CPU is counted (uvicorn's supervisor as "gateway").
    # Several client processes: each one's too (this one only waits for them).
    for role in ("gateway", "client"):
        several = {f"{role} {number}" for number in range(processes)} if processes > 1 else set()
        assert {name for name in result["cpu_cores"]["platform"] if name.startswith(f"{role} ")} == several
    steps = result["synthetic_engine"]
    # 16 requests of 8 tokens, 4 at a time: at least 4 rounds of 8 steps, none before its deadline.
    assert steps["step_ms"] == STEP_MS and steps["num_steps"] >= NUM_PROMPTS // 4 * OUTPUT_LEN
    assert steps["mean_step_ms"] >= 0.9 * STEP_MS
    assert "in-process SyntheticEngine" in capsys.readouterr().out


def test_refuses_a_registry_beside_the_synthetic_one(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="writes its own registry"):
        main(["bench", "serve", "--overhead", "--synthetic-step-ms", "3",
              "--registry", str(tmp_path / "registry.yaml")])


def test_engine_process_goes_with_the_synthetic_engine_only() -> None:
    with pytest.raises(SystemExit, match="set its engine_process in the registry"):
        main(["bench", "serve", "--overhead", "--engine-process", "on"])

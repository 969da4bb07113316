"""`pagefleet bench engine --compare-fused-fp8-quant` / `--compare-piecewise-graphs`: a second
engine with the switch flipped runs the same requests in the same run, and its row sits beside
the main one."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import pytest

from pagefleet.platform.cli import bench_engine
from pagefleet.workers.engine.config import EngineConfig
from tests.unit.workers.models.tiny import write_tiny_checkpoint


def _parse(*flags: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    bench_engine.register(parser.add_subparsers())
    return parser.parse_args(["engine", *flags])


def test_compare_runs_the_flipped_engine_on_the_same_requests(tmp_path: Path, capsys) -> None:
    """On the CPU the fused layers need the Triton backend (the interpreter here)."""
    folder = write_tiny_checkpoint(tmp_path / "m", "llama3-tied")
    out = tmp_path / "bench.json"
    args = _parse("--model", str(folder), "--device", "cpu", "--attention-backend", "triton",
                  "--quantization", "fp8", "--compare-fused-fp8-quant", "--num-prompts", "3",
                  "--input-len", "6", "--output-len", "3", "--max-input-len", "8",
                  "--max-output-len", "4", "--max-model-len", "64", "--hf", "none", "--json", str(out))
    assert args.func(args) == 0
    results = json.loads(out.read_text())["results"]
    assert [r["system"] for r in results] == ["pagefleet", "pagefleet (fp8 quant in matmul)"]
    assert [r["output_tokens"] for r in results] == [9, 9]
    assert "pagefleet / pagefleet (fp8 quant in matmul):" in capsys.readouterr().out


@pytest.mark.parametrize("flags", [(), ("--quantization", "fp8", "--no-fused-layers")])
def test_compare_needs_fp8_and_the_fused_layers(flags: tuple[str, ...]) -> None:
    args = _parse("--compare-fused-fp8-quant", *flags)
    with pytest.raises(SystemExit, match="needs --quantization fp8"):
        args.func(args)


@pytest.mark.parametrize(("flags", "name", "piecewise"), [
    ((), "pagefleet (piecewise graphs)", True),
    (("--piecewise-graphs",), "pagefleet (mixed steps eager)", False),
])
def test_compare_piecewise_graphs_flips_the_switch(flags: tuple[str, ...], name: str, piecewise: bool) -> None:
    args = _parse("--compare-piecewise-graphs", *flags)
    engine = EngineConfig(piecewise_graphs=args.piecewise_graphs)
    [variant] = bench_engine._variants(args, engine)
    assert variant.name == name and variant.engine.piecewise_graphs is piecewise
    assert variant.engine == dataclasses.replace(engine, piecewise_graphs=piecewise)

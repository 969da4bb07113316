"""Int4 weight-only models: GPTQ and AWQ checkpoints (packed by the formats' own bit orders in
int4_pack.py) load into the w4a16 layout exactly, run close to their fake-quantised float
model, shard for tensor parallelism, and the engine generates from them; online RTN int4."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pagefleet.kernels.w4a16_gemm import dequantize_int4
from pagefleet.workers import LLM, SamplingParams
from pagefleet.workers.models.int4 import (
    convert_checkpoint,
    int4_format,
    online_group_size,
    quantize_int4_rtn,
)
from pagefleet.workers.models.loader import build_model, resolve_model
from pagefleet.workers.models.parallel import (
    ColumnParallelLinear,
    QuantizableLinear,
    RowParallelLinear,
    TensorParallel,
)
from tests.unit.workers.models.int4_pack import (
    awq_tensors,
    fake_quantize,
    gptq_tensors,
    write_int4_checkpoints,
)
from tests.unit.workers.models.test_fp8 import _logits

CASES = [("gptq", "llama3-tied", True), ("gptq", "qwen2-bias", False), ("awq", "llama3-tied", False)]
GPTQ = {"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": False, "sym": True}
PROMPTS = [[(13 * i + 7 * j) % 90 + 3 for j in range(3 + 11 * i)] for i in range(4)]  # vocab >= 96
AWQ = {"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True, "version": "gemm"}


def _dequantized(linear: QuantizableLinear) -> torch.Tensor:
    return dequantize_int4(linear.weight, linear.weight_scale, linear.weight_zero)


@pytest.fixture(scope="module", params=CASES, ids=lambda case: f"{case[0]}-{case[1]}-{'sym' if case[2] else 'asym'}")
def checkpoints(request, tmp_path_factory) -> tuple[Path, Path]:
    method, variant, symmetric = request.param
    return write_int4_checkpoints(tmp_path_factory.mktemp(method), variant, method, symmetric)


def test_checkpoint_loads_the_fake_quantised_weights_exactly(checkpoints) -> None:
    packed, restored = checkpoints
    model, reference = build_model(resolve_model(str(packed))), build_model(resolve_model(str(restored)))
    linears = dict(model.named_modules())
    pairs = [(name, m) for name, m in reference.named_modules() if isinstance(m, QuantizableLinear)]
    assert len(pairs) == 4 * model.arch.num_layers  # qkv, o, gate_up, down
    for name, float_linear in pairs:
        linear = linears[name]
        assert linear.weight.dtype == torch.int32 and linear.weight.shape[1] * 8 == float_linear.weight.shape[1]
        assert torch.equal(_dequantized(linear), float_linear.weight), name
    a, b = _logits(model), _logits(reference)
    assert torch.nn.functional.cosine_similarity(a, b, dim=-1).min() > 0.999


def _greedy(folder: Path, **engine_args) -> list[list[int]]:
    llm = LLM(model=str(folder), max_model_len=128, num_kv_blocks=32, **engine_args)
    try:
        params = SamplingParams(temperature=0, ignore_eos=True, max_tokens=8)
        return [o.outputs[0].token_ids for o in llm.generate(PROMPTS, params)]
    finally:
        llm.shutdown()


def test_engine_greedy_tokens_equal_the_fake_quantised_model(checkpoints) -> None:
    packed, restored = checkpoints
    want = _greedy(restored)
    assert len({tuple(tokens) for tokens in want}) > 1, "prompts must lead to different outputs"
    assert _greedy(packed) == want


def test_tensor_parallel_2_engine_equals_the_fake_quantised_model(tmp_path: Path) -> None:
    """Two gloo ranks, each converting the whole checkpoint and keeping its slice; groups of
    64 so each rank's half of o_proj's 128 inputs holds whole groups."""
    packed, restored = write_int4_checkpoints(tmp_path, "qwen2-bias", "awq", symmetric=False, group_size=64)
    assert _greedy(packed, tensor_parallel_size=2) == _greedy(restored)


def _converted(tensors: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    return dict(convert_checkpoint(tensors.items(), int4_format(config)))


def _random_weight(rows: int, cols: int, seed: int) -> torch.Tensor:
    return torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed)) * 0.02


@pytest.mark.parametrize("config", [GPTQ, AWQ], ids=["gptq", "awq"])
def test_tensor_parallel_ranks_keep_their_rows_and_input_groups(config: dict) -> None:
    """Column parallel: each part's output rows by rank; row parallel: whole input groups."""
    seed = torch.seed() % 2**31
    parts = [fake_quantize(_random_weight(rows, 256, seed + i), 128, symmetric=False)
             for i, rows in enumerate((64, 32))]
    wide = fake_quantize(_random_weight(24, 512, seed + 2), 128, symmetric=False)
    pack = (lambda p, q: gptq_tensors(p, q, 128)) if config is GPTQ else awq_tensors
    for rank in (0, 1):
        tp = TensorParallel(rank=rank, size=2)
        column = ColumnParallelLinear(256, [64, 32], False, tp)
        column.prepare_int4(128)
        for index, part in enumerate(parts):
            for name, tensor in _converted(pack("p", part), config).items():
                column.load_weight(name.removeprefix("p."), tensor, index)
        want = torch.cat([parts[0].restored[32 * rank:32 * rank + 32], parts[1].restored[16 * rank:16 * rank + 16]])
        assert torch.equal(_dequantized(column), want)
        row = RowParallelLinear(512, 24, False, tp)
        row.prepare_int4(128)
        for name, tensor in _converted(pack("p", wide), config).items():
            row.load_weight(name.removeprefix("p."), tensor, 0)
        assert torch.equal(_dequantized(row), wide.restored[:, 256 * rank:256 * rank + 256])


def test_row_parallel_slices_must_hold_whole_groups() -> None:
    row = RowParallelLinear(256, 24, False, TensorParallel(rank=0, size=4))
    with pytest.raises(ValueError, match="64 input features per rank are not divisible by int4 group size 128"):
        row.prepare_int4(128)


@pytest.mark.parametrize(("config", "message"), [
    ({**GPTQ, "desc_act": True}, "act-order"),
    ({**GPTQ, "group_size": -1}, "group_size -1"),
    ({**GPTQ, "bits": 8}, "bits 4"),
    ({**GPTQ, "checkpoint_format": "marlin"}, "checkpoint_format 'marlin'"),
    ({**GPTQ, "lm_head": True}, "quantised lm_head"),
    ({**AWQ, "version": "gemv"}, "version 'gemv'"),
    ({**AWQ, "quant_method": "bitsandbytes"}, "must be one of"),
])
def test_unsupported_int4_checkpoints_are_refused(config: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        int4_format(config)


def test_gptq_g_idx_that_reorders_groups_is_refused() -> None:
    g_idx = torch.arange(256, dtype=torch.int32).flip(0) // 128
    with pytest.raises(ValueError, match="act-order"):
        _converted({"p.g_idx": g_idx}, GPTQ)


def test_unknown_checkpoint_method_is_refused_at_load(tmp_path: Path) -> None:
    packed, _ = write_int4_checkpoints(tmp_path, "llama3-tied", "awq", symmetric=False)
    config = json.loads((packed / "config.json").read_text())
    config["quantization_config"]["quant_method"] = "exl2"
    (packed / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="checkpoint quantization 'exl2' is not supported"):
        build_model(resolve_model(str(packed)))


def test_rtn_quantisation_is_within_half_a_step() -> None:
    weight = _random_weight(16, 256, torch.seed() % 2**31) * torch.logspace(-2, 1, 16)[:, None]
    weight[0, :128] = 0  # an all-zero group keeps a finite scale
    int4 = quantize_int4_rtn(weight)
    restored = dequantize_int4(int4.qweight, int4.scales, int4.zeros)
    step = int4.scales.repeat_interleave(128, 1)
    assert torch.all((restored - weight).abs() <= step / 2 * (1 + 1e-6))
    assert torch.equal(restored[0, :128], torch.zeros(128))


def test_online_int4_quantises_every_projection_and_stays_close(tmp_path: Path) -> None:
    _, restored = write_int4_checkpoints(tmp_path, "qwen2-bias", "gptq", symmetric=True)
    resolved = resolve_model(str(restored))
    exact, int4 = build_model(resolved), build_model(resolved, quantization="int4")
    linears = [m for m in int4.modules() if isinstance(m, QuantizableLinear)]
    assert len(linears) == 4 * resolved.arch.num_layers
    assert all(m.weight.dtype == torch.int32 and m.weight_zero.shape == (m.weight.shape[0], m.weight.shape[1] // 16)
               for m in linears)
    a, b = _logits(exact), _logits(int4)
    assert not torch.equal(a, b)
    assert torch.nn.functional.cosine_similarity(a, b, dim=-1).min() > 0.99


def test_online_groups_are_128_unless_the_layer_is_narrower() -> None:
    assert [online_group_size(n) for n in (4096, 14336, 576, 96)] == [128, 128, 64, 32]
    with pytest.raises(ValueError, match="not divisible by any int4 group size"):
        online_group_size(72)

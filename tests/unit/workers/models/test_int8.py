"""Int8 weight-only layers on the CPU: rounding bounds, both matmul paths against the float
reference on fresh random inputs, online quantisation of a loaded model (head included), the
engine generating from it, and the combinations that are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from pagefleet.platform.registry.spec import EngineSettings
from pagefleet.workers import LLM, SamplingParams
from pagefleet.workers.engine.config import EngineConfig
from pagefleet.workers.models.int8 import (
    COMPUTE_DTYPE,
    GEMV_MAX_ROWS,
    INT8_MAX,
    dequantize_int8,
    int8_linear,
    int8_linear_ref,
    quantize_int8_rows,
)
from pagefleet.workers.models.loader import build_model, resolve_model
from pagefleet.workers.models.parallel import (
    ColumnParallelLinear,
    QuantizableLinear,
    TensorParallel,
)
from tests.unit.workers.models.test_fp8 import _logits
from tests.unit.workers.models.tiny import write_tiny_checkpoint

BF16_STEP = 2.0 ** -8  # bfloat16's relative spacing (8 significant bits)


def _generator() -> torch.Generator:
    return torch.Generator().manual_seed(torch.seed() % 2**31)


def test_quantisation_is_within_half_a_step_and_never_clips() -> None:
    generator = _generator()
    weight = torch.randn(9, 64, generator=generator) * torch.logspace(-4, 2, 9)[:, None]
    weight[0].zero_()  # an all-zero row keeps a finite scale
    quantized = quantize_int8_rows(weight)
    assert quantized.qweight.dtype == torch.int8 and quantized.scales.dtype == COMPUTE_DTYPE
    assert int(quantized.qweight.abs().max()) <= INT8_MAX
    scales = quantized.scales.float()
    assert torch.all(scales > 0) and torch.all(scales >= weight.abs().amax(-1) / INT8_MAX)
    error = (dequantize_int8(quantized) - weight).abs()
    assert torch.all(error <= scales[:, None] / 2 * (1 + 1e-6))
    assert torch.equal(quantized.qweight[0], torch.zeros(64, dtype=torch.int8))
    # Rounded up by at most one bfloat16 step: the rows still use nearly all 127 steps.
    assert torch.all(quantized.qweight[1:].abs().amax(-1) >= INT8_MAX - 1)


@pytest.mark.parametrize("rows", [1, 5, GEMV_MAX_ROWS, GEMV_MAX_ROWS + 1, 70], ids=lambda r: f"rows{r}")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_int8_linear_matches_the_float_reference(rows: int, dtype: torch.dtype) -> None:
    """Both paths (the int8 op up to GEMV_MAX_ROWS rows, a bfloat16 GEMM above) against the
    dequantised weight in float32; the only extra error is bfloat16 rounding."""
    generator = _generator()
    weight = torch.randn(40, 96, generator=generator) * 0.05
    bias = torch.randn(40, generator=generator).to(dtype)
    x = torch.randn(rows, 96, generator=generator).to(dtype)
    quantized = quantize_int8_rows(weight)
    out = int8_linear(x, quantized, bias)
    expected = int8_linear_ref(x, quantized, bias)
    assert out.shape == (rows, 40) and out.dtype == dtype
    relative = ((out.float() - expected.float()).norm() / expected.float().norm()).item()
    assert relative < 4 * BF16_STEP
    exact = x.float() @ weight.t() + bias.float()  # int8's own rounding on top
    assert ((out.float() - exact).norm() / exact.norm()).item() < 0.03


def test_int8_linear_keeps_leading_dimensions() -> None:
    generator = _generator()
    quantized = quantize_int8_rows(torch.randn(24, 32, generator=generator))
    x = torch.randn(2, 3, 32, generator=generator)
    out = int8_linear(x, quantized)
    assert out.shape == (2, 3, 24)
    torch.testing.assert_close(out, int8_linear_ref(x, quantized), rtol=4 * BF16_STEP, atol=1e-3)


def test_widths_the_op_cannot_read_are_refused() -> None:
    with pytest.raises(ValueError, match=r"int8 needs input features divisible by 16 .* got 24"):
        quantize_int8_rows(torch.randn(8, 24))
    with pytest.raises(ValueError, match=r"int8 weights must be 2-D \[out, in\], got shape \(8,\)"):
        quantize_int8_rows(torch.randn(8))
    layer = ColumnParallelLinear(40, [16], False, TensorParallel())
    with pytest.raises(ValueError, match="got 40"):
        layer.to_int8()


def test_int8_runs_on_the_cpu_only(tmp_path: Path) -> None:
    quantized = quantize_int8_rows(torch.randn(8, 16))
    with pytest.raises(ValueError, match="int8 weights run on the CPU only, got activations on meta"):
        int8_linear(torch.empty(2, 16, device="meta"), quantized)
    resolved = resolve_model(str(write_tiny_checkpoint(tmp_path / "m", "llama3-tied")))
    with pytest.raises(ValueError, match=r"quantization 'int8' runs on the CPU only .* not on meta"):
        build_model(resolved, device=torch.device("meta"), quantization="int8")


def test_int8_is_a_known_quantization_everywhere() -> None:
    assert EngineConfig(quantization="int8").quantization == "int8"
    assert EngineSettings(quantization="int8").as_engine_kwargs() == {"quantization": "int8"}
    with pytest.raises(ValueError, match="quantization must be one of"):
        EngineSettings(quantization="int2")


@pytest.mark.parametrize("variant", ["llama3-tied", "qwen2-bias"])
def test_online_int8_quantises_every_projection_and_the_head(tmp_path: Path, variant: str) -> None:
    resolved = resolve_model(str(write_tiny_checkpoint(tmp_path / "m", variant)))
    exact, int8 = build_model(resolved), build_model(resolved, quantization="int8")
    linears = [m for m in int8.modules() if isinstance(m, QuantizableLinear)]
    assert len(linears) == 4 * resolved.arch.num_layers  # qkv, o, gate_up, down
    assert all(m.weight.dtype == torch.int8 and m.weight_scale.shape == (m.weight.shape[0],) for m in linears)
    head = int8.lm_head
    assert head.int8_weight.dtype == torch.int8 and head.weight.dtype == torch.float32
    a, b = _logits(exact, num_tokens=GEMV_MAX_ROWS + 4), _logits(int8, num_tokens=GEMV_MAX_ROWS + 4)
    assert not torch.equal(a, b)
    assert torch.nn.functional.cosine_similarity(a, b, dim=-1).min() > 0.999
    # Few rows take the int8 head, more rows the float one: both close to the exact logits.
    hidden = torch.randn(3, resolved.arch.hidden_size, generator=_generator())
    few = int8.compute_logits(hidden)
    many = int8.compute_logits(hidden.repeat(GEMV_MAX_ROWS, 1))[:3]
    reference = exact.compute_logits(hidden)
    torch.testing.assert_close(many, reference, rtol=1e-5, atol=1e-6)  # the float head (BLAS may block differently)
    assert not torch.allclose(few, reference, rtol=1e-5, atol=1e-6)
    assert torch.nn.functional.cosine_similarity(few, reference, dim=-1).min() > 0.999


def _greedy(folder: Path, **engine_args) -> list[list[int]]:
    prompts = [[(13 * i + 7 * j) % 90 + 3 for j in range(3 + 11 * i)] for i in range(4)]
    llm = LLM(model=str(folder), max_model_len=128, num_kv_blocks=32, **engine_args)
    try:
        if engine_args.get("quantization") == "int8":
            assert llm.engine.runner.model.model.layers[0].mlp.down_proj.weight.dtype == torch.int8
        outputs = llm.generate(prompts, SamplingParams(temperature=0, ignore_eos=True, max_tokens=8))
    finally:
        llm.shutdown()
    assert all(o.outputs[0].finish_reason == "length" for o in outputs)
    return [o.outputs[0].token_ids for o in outputs]


def test_engine_generates_from_int8_weights_close_to_float32(tmp_path: Path) -> None:
    """The tiny random model's weights scaled up 4x, so its prompts lead to different tokens
    (at HF's 0.02 it says one token whatever the prompt); prefill runs the bfloat16 GEMM
    path (78 rows), decode the int8 op (4 rows). Greedy decoding may drift apart after a
    near-tie (it is not required equal, as with fp8), but every prompt's first token, taken
    from logits within int8's error of float32's, must match."""
    torch.manual_seed(0)  # the checkpoint's norm weights
    folder = write_tiny_checkpoint(tmp_path / "m", "llama3-tied", seed=3)
    tensors = load_file(folder / "model.safetensors")
    save_file({name: t if name.endswith("norm.weight") else t * 4 for name, t in tensors.items()},
              folder / "model.safetensors")
    want = _greedy(folder)
    assert len({tuple(tokens) for tokens in want}) > 1, "prompts must lead to different outputs"
    got = _greedy(folder, quantization="int8")
    assert all(len(tokens) == 8 for tokens in got)
    assert [tokens[0] for tokens in got] == [tokens[0] for tokens in want]

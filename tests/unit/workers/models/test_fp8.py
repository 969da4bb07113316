"""FP8 weights: quantisation error bounds, the float reference matmul, online quantisation of a
loaded model and FP8 checkpoints (weight + weight_scale) loaded as stored."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from pagefleet.workers.engine.config import EngineConfig
from pagefleet.workers.models.fp8 import (
    FP8_DTYPE,
    FP8_MAX,
    QuantizedActivation,
    fp8_linear,
    per_row_scale,
    quantize_rows,
)
from pagefleet.workers.models.loader import build_model, resolve_model
from pagefleet.workers.models.parallel import (
    ColumnParallelLinear,
    QuantizableLinear,
    TensorParallel,
)
from tests.unit.workers.models.tiny import write_tiny_checkpoint

E4M3_MANTISSA_BITS = 3
E4M3_SUBNORMAL_STEP = 2.0 ** -9


def _rows(seed: int, rows: int = 7, cols: int = 48) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, cols, generator=generator) * torch.logspace(-3, 2, rows)[:, None]
    x[0].zero_()  # an all-zero row keeps a finite scale
    return x


def test_quantize_rows_is_within_half_an_fp8_step_of_each_value():
    x = _rows(seed=torch.seed() % 2**31)
    values, scale = quantize_rows(x)
    assert values.dtype == FP8_DTYPE and scale.shape == (x.shape[0], 1)
    restored = values.float() * scale
    # Round to nearest: half a step of the value's binade, or of the subnormal range.
    bound = x.abs() * 2.0 ** -(E4M3_MANTISSA_BITS + 1) + scale * E4M3_SUBNORMAL_STEP / 2
    assert torch.all((restored - x).abs() <= bound * (1 + 1e-6))
    nonzero = x.abs().amax(-1) > 0
    assert torch.equal(values.float().abs().amax(-1)[nonzero], torch.full((int(nonzero.sum()),), FP8_MAX))


def test_fp8_linear_reference_multiplies_the_rounded_operands():
    generator = torch.Generator().manual_seed(torch.seed() % 2**31)
    x = torch.randn(5, 3, 32, generator=generator)
    weight = torch.randn(24, 32, generator=generator)
    bias = torch.randn(24, generator=generator)
    w_q, w_scale = quantize_rows(weight)
    out = fp8_linear(x, w_q, w_scale.view(-1), bias)
    assert out.shape == (5, 3, 24) and out.dtype == x.dtype
    x_q, x_scale = quantize_rows(x.reshape(-1, 32))
    expected = (x_q.float() * x_scale) @ (w_q.float() * w_scale).t() + bias
    torch.testing.assert_close(out.reshape(-1, 24), expected)
    exact = x @ weight.t() + bias  # FP8 keeps ~2 significant digits
    assert (out - exact).norm() / exact.norm() < 0.08


def test_per_row_scale_accepts_tensor_and_channel_scales_only():
    assert torch.equal(per_row_scale(torch.tensor(0.5), 3), torch.full((3,), 0.5))
    assert torch.equal(per_row_scale(torch.tensor([[1.0], [2.0]]), 2), torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="weight_scale must hold 1 or 4 values, got 3"):
        per_row_scale(torch.ones(3), 4)


def test_column_parallel_rank_keeps_its_rows_of_a_per_channel_scale():
    layer = ColumnParallelLinear(16, [8, 4], False, TensorParallel(rank=1, size=2))
    layer.prepare_fp8()
    layer.load_weight("weight_scale", torch.arange(8.0), shard_index=0)
    layer.load_weight("weight_scale", torch.tensor(9.0), shard_index=1)  # per tensor
    assert torch.equal(layer.weight_scale.data, torch.tensor([4.0, 5.0, 6.0, 7.0, 9.0, 9.0]))


def test_quantization_is_validated():
    with pytest.raises(ValueError, match="quantization must be one of"):
        EngineConfig(quantization="int3")


def _logits(model, num_tokens: int = 12) -> torch.Tensor:
    from pagefleet.workers.engine.model_runner import _single_sequence_metadata

    ids = torch.arange(3, 3 + num_tokens)
    cache = [(torch.zeros(2, 16, model.arch.num_kv_heads, model.arch.head_dim),) * 2
             for _ in range(model.arch.num_layers)]
    with torch.inference_mode():
        hidden = model(ids, torch.arange(num_tokens), cache,
                       _single_sequence_metadata(num_tokens, 16, torch.device("cpu")))
        return model.compute_logits(hidden)


def test_online_fp8_quantises_every_projection_and_stays_close(tmp_path: Path):
    resolved = resolve_model(str(write_tiny_checkpoint(tmp_path / "m", "qwen2-bias")))
    exact = build_model(resolved)
    fp8 = build_model(resolved, quantization="fp8")
    linears = [m for m in fp8.modules() if isinstance(m, QuantizableLinear)]
    assert len(linears) == 2 * resolved.arch.num_layers * 2  # qkv, o, gate_up, down
    assert all(m.weight.dtype == FP8_DTYPE and m.weight_scale.shape == (m.weight.shape[0],)
               for m in linears)
    assert fp8.lm_head.weight.dtype == torch.float32  # the head stays unquantised, as in vLLM
    a, b = _logits(exact), _logits(fp8)
    assert not torch.equal(a, b)
    assert torch.nn.functional.cosine_similarity(a, b, dim=-1).min() > 0.99


def test_fp8_checkpoint_loads_its_values_and_scales_as_stored(tmp_path: Path):
    """A checkpoint in the published FP8 layout: fp8 weights, a per-tensor `weight_scale`, an
    `input_scale` (ignored: activations are scaled per token) and `quantization_config`."""
    folder = write_tiny_checkpoint(tmp_path / "m", "llama3-tied")
    tensors = load_file(folder / "model.safetensors")
    stored: dict[str, torch.Tensor] = {}
    for name in [n for n in tensors if n.endswith("proj.weight")]:
        weight = tensors.pop(name)
        scale = weight.abs().max() / FP8_MAX
        stored[name] = tensors[name] = (weight / scale).to(FP8_DTYPE)
        tensors[name.replace(".weight", ".weight_scale")] = scale.reshape(())
        tensors[name.replace(".weight", ".input_scale")] = torch.tensor(1.0)
    save_file(tensors, folder / "model.safetensors")
    config = json.loads((folder / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "fp8", "activation_scheme": "dynamic"}
    (folder / "config.json").write_text(json.dumps(config))

    model = build_model(resolve_model(str(folder)))
    qkv = model.model.layers[1].self_attn.qkv_proj
    q_rows = stored["model.layers.1.self_attn.q_proj.weight"].shape[0]
    assert qkv.weight.dtype == FP8_DTYPE
    assert torch.equal(qkv.weight[:q_rows].view(torch.uint8),
                       stored["model.layers.1.self_attn.q_proj.weight"].view(torch.uint8))
    expected_scale = tensors["model.layers.1.self_attn.k_proj.weight_scale"]
    k_rows = stored["model.layers.1.self_attn.k_proj.weight"].shape[0]
    assert torch.equal(qkv.weight_scale[q_rows:q_rows + k_rows], expected_scale.expand(k_rows))
    assert torch.isfinite(_logits(model)).all()


def _projection_inputs(model) -> dict[str, type]:
    """What each projection of the first layer is called with, recorded by forward pre-hooks."""
    seen: dict[str, type] = {}
    layer = model.model.layers[0]
    for name in ("self_attn.qkv_proj", "self_attn.o_proj", "mlp.gate_up_proj", "mlp.down_proj"):
        def record(module, args, name=name):
            seen[name] = type(args[0])
        layer.get_submodule(name).register_forward_pre_hook(record)
    return seen


@pytest.mark.parametrize(("variant", "dtype"), [("llama3-tied", torch.float32), ("qwen3", torch.float32),
                                                ("qwen2-bias", torch.bfloat16)])
def test_fused_fp8_quant_hands_the_matmuls_the_same_bits(tmp_path: Path, variant: str, dtype: torch.dtype):
    """With fused layers (the Triton interpreter here), the RMSNorm and SiLU-and-mul kernels
    quantise for the qkv, gate/up and down projections, and o_proj still quantises its own
    input; the logits equal, bit for bit, those of the same model quantising in every matmul,
    through a prefill and a decode step on fresh random ids."""
    from tests.unit.workers.models.paged import PagedCache

    resolved = resolve_model(str(write_tiny_checkpoint(tmp_path / "m", variant)))
    kwargs = dict(dtype=dtype, quantization="fp8", fused_layers=True)
    models = [build_model(resolved, fused_fp8_quant=fused, **kwargs) for fused in (True, False)]
    inputs = [_projection_inputs(model) for model in models]
    ids = torch.randint(0, resolved.arch.vocab_size, (2, 19), generator=torch.Generator().manual_seed(torch.seed() % 2**31))
    caches = [PagedCache(resolved.arch, num_blocks=40, block_size=8, seed=3) for _ in models]
    for cache in caches:
        cache.kv_caches = [(k.to(dtype), v.to(dtype)) for k, v in cache.kv_caches]
    for steps in ({0: ids[0, :-1].tolist(), 1: ids[1, :7].tolist()}, {0: ids[0, -1:].tolist(), 1: ids[1, 7:8].tolist()}):
        logits = []
        for model, cache in zip(models, caches, strict=True):
            step = cache.step(steps)
            with torch.inference_mode():
                hidden = model(step.input_ids, step.positions, cache.kv_caches, step.metadata)
                logits.append(model.compute_logits(hidden))
        assert torch.isfinite(logits[0]).all()
        assert torch.equal(logits[0], logits[1])
    assert inputs[0] == {"self_attn.qkv_proj": QuantizedActivation, "self_attn.o_proj": torch.Tensor,
                         "mlp.gate_up_proj": QuantizedActivation, "mlp.down_proj": QuantizedActivation}
    assert set(inputs[1].values()) == {torch.Tensor}


def test_an_unquantised_layer_refuses_fp8_input():
    layer = ColumnParallelLinear(16, [8], False, TensorParallel())
    with pytest.raises(TypeError, match="cannot take fp8 input"):
        layer(QuantizedActivation.empty(2, 16, torch.float32, torch.device("cpu")))


def test_engine_greedy_tokens_with_fused_fp8_quant_equal_the_unfused_ones(tmp_path: Path):
    """The whole engine on the CPU: FP8 weights, fused layers in the Triton interpreter."""
    from pagefleet.workers import LLM, SamplingParams

    folder = str(write_tiny_checkpoint(tmp_path / "m", "llama3-tied"))
    prompts = [[(11 * i + 5 * j) % 90 + 3 for j in range(4 + 9 * i)] for i in range(4)]
    params = SamplingParams(temperature=0, ignore_eos=True, max_tokens=8)
    tokens = []
    for fused in (True, False):
        llm = LLM(model=folder, max_model_len=128, quantization="fp8", fused_layers=True, fused_fp8_quant=fused)
        assert llm.engine.runner.model.model.layers[0].mlp.down_proj.takes_quantized_input == fused
        tokens.append([o.outputs[0].token_ids for o in llm.generate(prompts, params)])
    assert tokens[0] == tokens[1]

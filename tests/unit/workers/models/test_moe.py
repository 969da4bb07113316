"""Mixtral and Qwen3-MoE through the whole engine: greedy tokens equal transformers' `generate`,
at tensor-parallel size 1 and 2 (gloo).

As in test_families, transformers builds each random model from a shrunk copy of the family's
real config and saves it, so the per-expert checkpoint names (`block_sparse_moe.experts.{j}.w1`,
`mlp.experts.{j}.gate_proj`) are the published ones. A large `initializer_range` makes both the
routing and the logits decisive, so one misrouted token or mis-stacked expert flips tokens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from pagefleet.platform.registry.loader import parse_registry
from pagefleet.workers import LLM, SamplingParams
from pagefleet.workers.models.arch import ModelArch
from pagefleet.workers.models.loader import build_model, hf_weight_shapes, resolve_model
from pagefleet.workers.models.moe import (
    MixtralForCausalLM,
    Qwen3MoeForCausalLM,
    SparseMoeBlock,
    select_experts,
)
from pagefleet.workers.models.parallel import TensorParallel
from tests.unit.workers.models.test_families import PROMPTS, SHARED, hf_greedy

MAX_TOKENS = 12
FAMILIES: dict[str, tuple[str, dict[str, Any], type]] = {
    # Mixtral shrunk: 8 experts, 2 per token (always renormalised), GQA.
    "mixtral": ("Mixtral", {"hidden_size": 128, "intermediate_size": 96, "num_local_experts": 8,
                            "num_experts_per_tok": 2, "num_attention_heads": 4,
                            "num_key_value_heads": 2, "rms_norm_eps": 1e-5, "sliding_window": None,
                            "tie_word_embeddings": False}, MixtralForCausalLM),
    # Qwen3-MoE shrunk: q/k norms, head_dim != hidden / heads, 3 of 6 experts *without*
    # renormalisation (norm_topk_prob false), expert width != the (unused) dense width.
    "qwen3-moe": ("Qwen3Moe", {"hidden_size": 128, "intermediate_size": 256,
                               "moe_intermediate_size": 64, "num_experts": 6,
                               "num_experts_per_tok": 3, "norm_topk_prob": False,
                               "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 48,
                               "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
                               "tie_word_embeddings": False}, Qwen3MoeForCausalLM),
}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request, tmp_path_factory) -> tuple[str, Path, Any]:
    import transformers

    prefix, values, _ = FAMILIES[request.param]
    config = getattr(transformers, f"{prefix}Config")(**SHARED, **values)
    torch.manual_seed(0)
    model = getattr(transformers, f"{prefix}ForCausalLM")(config).eval()
    folder = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(folder)
    return request.param, folder, model


def generate(folder: Path, **engine_args: Any) -> list[list[int]]:
    llm = LLM(model=str(folder), max_model_len=128, num_kv_blocks=32, **engine_args)
    params = SamplingParams(temperature=0, ignore_eos=True, max_tokens=MAX_TOKENS)
    try:
        return [o.outputs[0].token_ids for o in llm.generate(PROMPTS, params)]
    finally:
        llm.shutdown()


def test_engine_greedy_tokens_equal_transformers(family) -> None:
    name, folder, hf = family
    want = [hf_greedy(hf, prompt, MAX_TOKENS) for prompt in PROMPTS]
    assert len({tuple(w) for w in want}) == len(want), "prompts must lead to different outputs"
    resolved = resolve_model(str(folder))
    assert type(build_model(resolved, load_format="dummy")) is FAMILIES[name][2]
    assert generate(folder) == want


def test_tensor_parallel_2_equals_transformers(family) -> None:
    """Each of two gloo ranks holds half of every expert's intermediate dimension."""
    _, folder, hf = family
    want = [hf_greedy(hf, prompt, MAX_TOKENS) for prompt in PROMPTS]
    assert generate(folder, tensor_parallel_size=2) == want


def test_checkpoint_layout_is_the_familys(family) -> None:
    """The dummy loader generates exactly the per-expert layout transformers saved."""
    from safetensors import safe_open

    name, folder, _ = family
    with safe_open(folder / "model.safetensors", framework="pt") as f:
        saved = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    assert hf_weight_shapes(resolve_model(str(folder)).arch) == saved
    assert any(".block_sparse_moe.experts.0.w1." in k for k in saved) == (name == "mixtral")


def test_fused_kernel_path_equals_torch_path(family, generator) -> None:
    """The block on the Triton path (interpreter here, compiled on a GPU) against the loop."""
    _, folder, _ = family
    arch = resolve_model(str(folder)).arch
    blocks = [SparseMoeBlock(arch, TensorParallel(), fused) for fused in (False, True)]
    for block in blocks:
        for param in block.parameters():
            param.data.copy_(torch.randn(param.shape, generator=generator) * 0.1)
    blocks[1].load_state_dict(blocks[0].state_dict())
    x = torch.randn(9, arch.hidden_size, generator=generator)
    torch.testing.assert_close(blocks[1](x), blocks[0](x), rtol=1e-5, atol=1e-5)


def test_select_experts_renormalises_only_when_asked() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    probs = torch.softmax(logits, dim=-1)
    weights, ids = select_experts(logits, 2, renormalize=False)
    assert ids.tolist() == [[0, 1]]
    torch.testing.assert_close(weights, probs[:, :2])
    weights, _ = select_experts(logits, 2, renormalize=True)
    torch.testing.assert_close(weights, probs[:, :2] / probs[:, :2].sum())


def test_qwen3_moe_with_dense_layers_is_refused() -> None:
    from transformers import Qwen3MoeConfig

    config = Qwen3MoeConfig(num_hidden_layers=4, mlp_only_layers=[1], num_experts=4)
    with pytest.raises(ValueError, match="mlp_only_layers"):
        ModelArch.from_hf_config(config)


def test_registry_accepts_the_benchmark_preset() -> None:
    spec = parse_registry({"models": {"qwen3-30b-a3b": {"engine": {"load_format": "dummy"}}}}).get("qwen3-30b-a3b")
    arch = resolve_model(spec.source, spec.engine_kwargs()["load_format"]).arch
    assert (arch.model_type, arch.moe.num_experts, arch.moe.top_k) == ("qwen3_moe", 128, 8)


def test_breakdown_floor_counts_experts_at_their_active_share(family) -> None:
    """`bench engine --breakdown`'s weight bytes: everything but the untied embedding, with the
    experts scaled to top_k of num_experts (the dense-equivalent model)."""
    from pagefleet.workers.bench.engine_bench import _decode_weight_bytes

    _, folder, _ = family
    model = build_model(resolve_model(str(folder)), load_format="dummy")
    spec = model.arch.moe
    sizes = {name: p.numel() * p.element_size() for name, p in model.named_parameters()}
    experts = sum(size for name, size in sizes.items() if ".experts." in name)
    dense = sum(sizes.values()) - experts - sizes["model.embed_tokens.weight"]
    assert _decode_weight_bytes(model, tied=False) == dense + experts * spec.top_k // spec.num_experts


def test_stack_experts_waits_for_every_expert_in_any_order() -> None:
    """Shards may split a layer's experts and interleave layers; stacking keeps gate before up."""
    import random

    from pagefleet.workers.models.moe import stack_experts

    names = [(f"model.layers.{layer}.mlp.experts.{e}.{proj}.weight", torch.full((2, 3), 10.0 * e + i))
             for layer in range(2) for e in range(3)
             for i, proj in enumerate(("gate_proj", "up_proj", "down_proj"))]
    random.Random(0).shuffle(names)
    stacked = dict(stack_experts(3, [*names, ("model.norm.weight", torch.ones(3))]))
    assert sorted(stacked) == ["model.layers.0.mlp.experts.down_proj", "model.layers.0.mlp.experts.gate_up_proj",
                               "model.layers.1.mlp.experts.down_proj", "model.layers.1.mlp.experts.gate_up_proj",
                               "model.norm.weight"]
    gate_up = stacked["model.layers.1.mlp.experts.gate_up_proj"]  # [experts, 2 * rows, cols]
    assert gate_up[:, :2, 0].tolist() == [[0, 0], [10, 10], [20, 20]]
    assert gate_up[:, 2:, 0].tolist() == [[1, 1], [11, 11], [21, 21]]
    with pytest.raises(ValueError, match="lacks expert tensors"):
        list(stack_experts(3, names[:-1]))

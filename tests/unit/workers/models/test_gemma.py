"""Gemma 2 and Gemma 3 (text) through the whole engine: greedy tokens equal transformers'.

As in test_families, transformers builds each random model from a shrunk copy of the family's
real config and saves it. Sequences (up to 52 tokens) run far past the 8-token window, the
soft-caps are low enough to bend real scores, and a control run shows that dropping the
window or the caps changes transformers' own tokens, so each feature is needed to pass.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch

from pagefleet.platform.registry.loader import parse_registry
from pagefleet.workers import LLM, SamplingParams
from pagefleet.workers.models.arch import FULL, SLIDING, ModelArch
from pagefleet.workers.models.gemma import GemmaForCausalLM
from pagefleet.workers.models.loader import build_model, hf_weight_shapes, resolve_model
from tests.unit.workers.models.paged import PagedCache
from tests.unit.workers.models.test_families import MAX_TOKENS, PROMPTS, SHARED, hf_greedy

WINDOW = 8
# Gemma's own initializer range: with embeddings scaled by sqrt(hidden), test_families' 0.2
# collapses every continuation into one repeated token, where neither window nor caps matter.
GEMMA_INIT = {"initializer_range": 0.02}
SHRUNK = {"hidden_size": 128, "intermediate_size": 256, "num_attention_heads": 4,
          "num_key_value_heads": 2, "head_dim": 48, "rms_norm_eps": 1e-6, "pad_token_id": 0,
          "hidden_activation": "gelu_pytorch_tanh", "sliding_window": WINDOW}
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    # gemma-2-9b shrunk: sliding and global layers alternate, both soft-caps, a
    # query_pre_attn_scalar (32) that is not head_dim (48).
    "gemma2": ("Gemma2", {**SHRUNK, "layer_types": [SLIDING, FULL], "query_pre_attn_scalar": 32,
                          "attn_logit_softcapping": 5.0, "final_logit_softcapping": 4.0}),
    # Every layer windowed: the engine frees blocks that fall out of the window mid-sequence.
    "gemma2-all-sliding": ("Gemma2", {**SHRUNK, "layer_types": [SLIDING, SLIDING],
                                      "query_pre_attn_scalar": 48, "attn_logit_softcapping": 5.0,
                                      "final_logit_softcapping": 4.0}),
    # gemma-3-12b shrunk: per-head q/k norms, five local layers per global one (here two),
    # local RoPE base 1e4, global base 1e6 with linear scaling 8, no soft-caps.
    "gemma3": ("Gemma3Text", {
        **SHRUNK, "num_hidden_layers": 3, "layer_types": [SLIDING, SLIDING, FULL],
        "query_pre_attn_scalar": 48,
        "rope_parameters": {"full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
                            "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}}}),
}


def _hf_classes(variant: str) -> tuple[Any, Any]:
    import transformers

    prefix, _ = VARIANTS[variant]
    model_prefix = prefix.removesuffix("Text")  # Gemma3TextConfig builds Gemma3ForCausalLM
    return getattr(transformers, f"{prefix}Config"), getattr(transformers, f"{model_prefix}ForCausalLM")


def build_hf(variant: str, **overrides: Any) -> Any:
    """The random model; q/k projections scaled up so that attention scores reach the cap
    (and attention is peaked enough that the window changes what a query sees)."""
    config_cls, model_cls = _hf_classes(variant)
    values = {**SHARED, **GEMMA_INIT, **VARIANTS[variant][1], **overrides}
    torch.manual_seed(0)
    # Eager attention: transformers' SDPA path skips Gemma 2's attention soft-cap in some
    # releases (5.17 on the device machine), which would make the reference wrong, not us.
    model = model_cls(config_cls(**values, attn_implementation="eager")).eval()
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(8.0)
            layer.self_attn.k_proj.weight.mul_(8.0)
    return model


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def gemma(request, tmp_path_factory) -> tuple[str, Path, Any]:
    folder = tmp_path_factory.mktemp(request.param)
    model = build_hf(request.param)
    model.save_pretrained(folder)
    return request.param, folder, model


def test_engine_greedy_tokens_equal_transformers(gemma) -> None:
    name, folder, hf = gemma
    want = [hf_greedy(hf, prompt, MAX_TOKENS) for prompt in PROMPTS]
    assert len({tuple(w) for w in want}) == len(want), "prompts must lead to different outputs"
    entry = {"source": str(folder),
             "engine": {"max_model_len": 128, "num_kv_blocks": 64, "block_size": 4}}
    spec = parse_registry({"models": {name: entry}}).get(name)
    llm = LLM(model=spec.source, **spec.engine_kwargs())
    assert type(llm.engine.runner.model) is GemmaForCausalLM
    assert llm.engine.kv_cache.release_window == (WINDOW if name.endswith("all-sliding") else None)
    params = SamplingParams(temperature=0, ignore_eos=True, max_tokens=MAX_TOKENS)
    got = [o.outputs[0].token_ids for o in llm.generate(PROMPTS, params)]
    assert got == want


def test_window_and_caps_change_transformers_tokens(gemma) -> None:
    """The control: the same weights without the window (or the attention cap) generate
    other tokens, so the equality above depends on both being right. (The final cap is
    monotonic, so greedy tokens cannot see it: the logits test below does.)"""
    name, _, hf = gemma
    want = [hf_greedy(hf, prompt, MAX_TOKENS) for prompt in PROMPTS]
    changes: list[dict[str, Any]] = [{"sliding_window": 4096}]
    if name.startswith("gemma2"):
        changes.append({"attn_logit_softcapping": None})
    for change in changes:
        other = build_hf(name, **change)
        other.load_state_dict(hf.state_dict())
        assert [hf_greedy(other, prompt, MAX_TOKENS) for prompt in PROMPTS] != want, change


def test_prefill_logits_equal_transformers(gemma) -> None:
    """Logits of a 36-token prompt (past the window) on shuffled paged blocks: the final soft-cap
    shows here, and it bends them beyond the tolerance (uncapped logits would fail)."""
    _, folder, hf = gemma
    prompt = PROMPTS[-1]
    model = build_model(resolve_model(str(folder)))
    cache = PagedCache(model.arch, num_blocks=32, block_size=4)
    got = _logits(model, cache, {0: prompt})
    with torch.no_grad():
        want = hf(torch.tensor([prompt])).logits[0]
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    cap = model.arch.final_logit_softcapping
    if cap is not None:  # undo the cap: the uncapped logits would fail the comparison
        uncapped = cap * torch.atanh(got / cap)
        assert not torch.allclose(uncapped, want, rtol=1e-4, atol=1e-4), "the cap must show"


def test_triton_kernels_and_fused_rope_equal_the_torch_path(gemma) -> None:
    """The GPU path in the Triton interpreter: windowed, soft-capped kernels and the fused RoPE
    tables (two bases for Gemma 3) give the torch path's logits, prefill then decode."""
    from pagefleet.kernels.paged_decode_attention import DecodeConfig
    from pagefleet.kernels.paged_prefill_attention import PrefillConfig
    from pagefleet.workers.attention.triton_backend import TritonAttentionBackend

    _, folder, _ = gemma
    resolved = resolve_model(str(folder))
    triton_backend = TritonAttentionBackend(DecodeConfig(block_n=16, num_splits=2),
                                            PrefillConfig(block_m=16, block_n=16))
    plain = build_model(resolved)
    fused = build_model(resolved, attention=triton_backend, fused_layers=True)
    caches = [PagedCache(resolved.arch, num_blocks=40, block_size=4, seed=3) for _ in range(2)]
    prompts = {0: PROMPTS[-1], 1: PROMPTS[1]}
    for steps in (prompts, {0: [5], 1: [6]}, {0: [7], 1: [8]}):
        want, got = _logits(plain, caches[0], steps), _logits(fused, caches[1], steps)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def _logits(model: Any, cache: PagedCache, steps: dict[int, list[int]]) -> torch.Tensor:
    step = cache.step(steps)
    with torch.no_grad():
        return model.compute_logits(model(step.input_ids, step.positions, cache.kv_caches, step.metadata))


def test_checkpoint_layout_and_arch(gemma) -> None:
    from safetensors import safe_open

    name, folder, _ = gemma
    with safe_open(folder / "model.safetensors", framework="pt") as f:
        saved = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    arch = resolve_model(str(folder)).arch
    assert hf_weight_shapes(arch) == saved
    assert arch.sliding_window == WINDOW and arch.tie_word_embeddings
    assert arch.qk_norm == (name == "gemma3")
    if name == "gemma3":
        assert arch.rope_local_theta == 1e4 and arch.rope_theta == 1e6
        assert arch.rope_scaling == {"rope_type": "linear", "factor": 8.0}
        assert arch.attention_scale == 48**-0.5 and arch.final_logit_softcapping is None
    assert isinstance(build_model(resolve_model(str(folder)), load_format="dummy"), GemmaForCausalLM)


def test_arch_refuses_inconsistent_layer_types() -> None:
    base = ModelArch(num_layers=2, hidden_size=8, intermediate_size=8, num_heads=2,
                     num_kv_heads=1, head_dim=4, vocab_size=10)
    with pytest.raises(ValueError, match="entries for 2 layers"):
        dataclasses.replace(base, layer_types=(SLIDING,), sliding_window=4)
    with pytest.raises(ValueError, match="sliding_window"):
        dataclasses.replace(base, layer_types=(SLIDING, FULL))
    with pytest.raises(ValueError, match="unknown layer types"):
        dataclasses.replace(base, layer_types=("chunked_attention", FULL), sliding_window=4)
    assert dataclasses.replace(base, layer_types=(SLIDING, FULL), sliding_window=4).kv_release_window is None
    assert dataclasses.replace(base, layer_types=(SLIDING, SLIDING), sliding_window=4).kv_release_window == 4


@pytest.mark.parametrize("preset", ["gemma-2-9b", "gemma-3-12b"])
def test_registry_accepts_gemma_presets_for_benchmarks(preset) -> None:
    spec = parse_registry({"models": {preset: {"engine": {"load_format": "dummy"}}}}).get(preset)
    arch = resolve_model(spec.source, spec.engine_kwargs()["load_format"]).arch
    assert arch.model_type == ("gemma2" if preset.startswith("gemma-2") else "gemma3_text")
    assert SLIDING in arch.layer_types and FULL in arch.layer_types


def test_tensor_parallel_2_equals_transformers(tmp_path) -> None:
    """Gemma 3 over two gloo ranks (its q/k norms whole on each, heads split): the same tokens."""
    hf = build_hf("gemma3")
    hf.save_pretrained(tmp_path)
    want = [hf_greedy(hf, prompt, MAX_TOKENS) for prompt in PROMPTS]
    llm = LLM(model=str(tmp_path), max_model_len=128, num_kv_blocks=64, block_size=4,
              tensor_parallel_size=2)
    try:
        assert llm.engine.runner.num_kv_heads == 1
        params = SamplingParams(temperature=0, ignore_eos=True, max_tokens=MAX_TOKENS)
        got = [o.outputs[0].token_ids for o in llm.generate(PROMPTS, params)]
    finally:
        llm.shutdown()
    assert got == want

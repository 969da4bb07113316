"""Model resolution: presets, folders, hub ids, dummy weights and the precise errors."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from pagefleet.workers.models.arch import ModelArch
from pagefleet.workers.models.loader import build_model, load_tokenizer, resolve_model
from pagefleet.workers.models.presets import PRESETS, preset_arch, preset_config
from tests.unit.workers.models.tiny import tiny_config, write_tiny_checkpoint


def test_presets_have_real_shapes_and_no_tokenizer() -> None:
    small, big = resolve_model("llama-3.2-1b", "dummy"), resolve_model("llama-3.1-8b", "dummy")
    assert (small.arch.num_layers, small.arch.hidden_size, small.arch.num_kv_heads) == (16, 2048, 8)
    assert (big.arch.num_layers, big.arch.hidden_size, big.arch.intermediate_size) == (32, 4096, 14336)
    for resolved in (small, big):
        assert resolved.arch.vocab_size == 128256
        assert resolved.arch.rope_scaling["rope_type"] == "llama3"
        assert resolved.path is None and resolved.tokenizer_source is None
        assert load_tokenizer(resolved) is None
    assert small.arch.tie_word_embeddings and not big.arch.tie_word_embeddings
    smol = resolve_model("smollm2-135m", "dummy")
    assert (smol.arch.num_heads, smol.arch.num_kv_heads, smol.arch.head_dim) == (9, 3, 64)


def test_8b_preset_builds_with_full_shapes_on_meta_device() -> None:
    """Shapes of the real 8B model without allocating it: parameters live on the meta device."""
    resolved = resolve_model("llama-3.1-8b", "dummy")
    model = build_model(resolved, dtype=torch.bfloat16, device=torch.device("meta"), load_format="dummy")
    attn = model.model.layers[0].self_attn
    assert attn.qkv_proj.weight.shape == ((32 + 2 * 8) * 128, 4096)
    assert model.model.layers[31].mlp.gate_up_proj.weight.shape == (2 * 14336, 4096)
    assert model.lm_head.weight.shape == (128256, 4096)
    assert model.lm_head.weight is not model.model.embed_tokens.weight
    total = sum(p.numel() for p in model.parameters())
    assert 8.0e9 < total < 8.1e9
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())


def test_dummy_weights_are_seeded_and_finite(tmp_path: Path) -> None:
    resolved = resolve_model(str(write_tiny_checkpoint(tmp_path / "c", "llama3-tied", weights=False)), "dummy")
    a = build_model(resolved, load_format="dummy", seed=3)
    b = build_model(resolved, load_format="dummy", seed=3)
    c = build_model(resolved, load_format="dummy", seed=4)
    wa, wb, wc = (m.model.layers[1].mlp.down_proj.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
    assert all(torch.isfinite(p).all() for p in a.parameters())


def test_folder_without_weights_needs_dummy(tmp_path: Path) -> None:
    folder = write_tiny_checkpoint(tmp_path / "c", "qwen2-bias", weights=False)
    with pytest.raises(ValueError, match=r"no \*\.safetensors weights"):
        resolve_model(str(folder))
    resolved = resolve_model(str(folder), "dummy")
    assert resolved.arch.attention_bias and resolved.tokenizer_source is None
    with pytest.raises(ValueError, match="has no weights; use load_format='dummy'"):
        build_model(resolve_model("llama-3.2-1b", "dummy"), load_format="auto")


@pytest.mark.parametrize(
    ("model", "load_format", "message"),
    [
        ("llama-3.2-1b", "auto", "preset 'llama-3.2-1b' has no weights"),
        ("./no/such/folder", "auto", "unknown model './no/such/folder'"),
        ("not a model", "auto", "unknown model 'not a model'"),
        ("smollm2-135m-instruct", "pt", "load_format must be one of"),
    ],
)
def test_unknown_models_raise_precise_errors(model: str, load_format: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resolve_model(model, load_format)


def test_non_gguf_file_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(ValueError, match=r"is a file but not a \.gguf"):
        resolve_model(str(tmp_path / "weights.bin"))


def test_hub_id_resolves_from_local_cache_offline(tmp_path: Path, monkeypatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    repo = tmp_path / "models--acme--tiny"
    write_tiny_checkpoint(repo / "snapshots" / ("a" * 40), "mistral")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    resolved = resolve_model("acme/tiny")
    assert resolved.path == repo / "snapshots" / ("a" * 40)
    assert resolved.arch.num_layers == 2
    with pytest.raises(ValueError, match="'acme/missing' is neither in the local Hugging Face cache"):
        resolve_model("acme/missing")


def test_arch_reads_v4_and_v5_rope_spellings() -> None:
    arch = ModelArch.from_hf_config(tiny_config("llama3-tied"))  # v5: rope_parameters
    assert arch.rope_scaling["factor"] == 4.0 and arch.rope_theta == 10000.0
    v4 = SimpleNamespace(**{**tiny_config("llama3-tied").to_dict(), "rope_parameters": None,
                            "rope_theta": 5e5, "rope_scaling": {**arch.rope_scaling, "factor": 8.0}})
    v4_arch = ModelArch.from_hf_config(v4)
    assert v4_arch.rope_theta == 5e5 and v4_arch.rope_scaling["factor"] == 8.0
    assert ModelArch.from_hf_config(tiny_config("qwen2-bias")).attention_bias


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_reads_as_its_family_config_class_reads_it(name: str) -> None:
    """A preset resolves without transformers, yet means what the family's config class (with
    its defaults and derived fields, e.g. Gemma's layer types) makes of the same values."""
    from transformers import AutoConfig

    resolved = resolve_model(name, "dummy")
    assert resolved.hf_config is None
    assert resolved.arch == preset_arch(name) == ModelArch.from_hf_config(preset_config(name))
    values = {k: v for k, v in PRESETS[name].items() if k != "layer_types"}  # the class derives them
    derived = AutoConfig.for_model(values.pop("model_type"), **values)
    assert resolved.arch == ModelArch.from_hf_config(derived)
    assert resolved.transformers_config().model_type == resolved.arch.model_type


def test_arch_rejects_bad_tensor_parallel_sizes() -> None:
    arch = ModelArch.from_hf_config(tiny_config("mistral"))  # 4 heads, 2 KV heads
    assert arch.num_kv_heads_per_rank(2) == 1
    with pytest.raises(ValueError, match=r"num_kv_heads \(2\) is not divisible by tensor_parallel_size \(4\)"):
        arch.num_kv_heads_per_rank(4)
    with pytest.raises(ValueError, match="multiple of num_kv_heads"):
        ModelArch(num_layers=1, hidden_size=8, intermediate_size=8, num_heads=3, num_kv_heads=2,
                  head_dim=4, vocab_size=10)


@pytest.mark.parametrize(("name", "model_cls", "billions"), [
    ("qwen3-8b", "Qwen3ForCausalLM", (8.1, 8.3)),
    ("phi-3-mini", "Phi3ForCausalLM", (3.8, 3.9)),
    ("phi-4", "Phi3ForCausalLM", (14.6, 14.8)),
])
def test_family_presets_build_their_class_at_real_size(name, model_cls, billions) -> None:
    """Dummy presets of other families go through their own config class and model class."""
    resolved = resolve_model(name, "dummy")
    assert resolved.transformers_config().model_type == resolved.arch.model_type
    model = build_model(resolved, dtype=torch.bfloat16, device=torch.device("meta"), load_format="dummy")
    assert type(model).__name__ == model_cls
    total = sum(p.numel() for p in model.parameters())
    assert billions[0] * 1e9 < total < billions[1] * 1e9


def test_phi3_long_context_rope_is_refused_and_partial_rotary_read_in_both_spellings() -> None:
    from transformers import Phi3Config

    longrope = Phi3Config(rope_scaling={"type": "longrope", "short_factor": [1.0] * 48,
                                        "long_factor": [1.0] * 48, "original_max_position_embeddings": 4096},
                          max_position_embeddings=131072)
    with pytest.raises(ValueError, match=r"'longrope'.*not supported"):
        ModelArch.from_hf_config(longrope)
    v5 = ModelArch.from_hf_config(tiny_config("phi3"))
    assert (v5.head_dim, v5.rotary_dim) == (16, 8)
    v4 = SimpleNamespace(**{**tiny_config("phi3").to_dict(), "rope_parameters": None,
                            "rope_scaling": None, "partial_rotary_factor": 0.75})
    assert ModelArch.from_hf_config(v4).rotary_dim == 12
    with pytest.raises(ValueError, match="even rotary_dim"):
        ModelArch(num_layers=1, hidden_size=8, intermediate_size=8, num_heads=1, num_kv_heads=1,
                  head_dim=8, vocab_size=10, partial_rotary_factor=0.4)

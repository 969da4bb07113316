"""Qwen3 and Phi-3 through the whole engine: greedy tokens equal transformers' `generate`.

Each model is built by transformers itself from a shrunk copy of the family's real config and
saved with `save_pretrained`, so the checkpoint names, fused tensors and config spellings are
the ones real checkpoints use (nothing is downloaded). `initializer_range` is large so logits
are decisive and one wrong layer flips tokens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from pagefleet.platform.registry.loader import parse_registry
from pagefleet.workers import LLM, SamplingParams
from pagefleet.workers.models.loader import build_model, resolve_model
from pagefleet.workers.models.phi3 import Phi3ForCausalLM
from pagefleet.workers.models.qwen3 import Qwen3ForCausalLM

MAX_TOKENS = 16
SHARED = {"vocab_size": 512, "num_hidden_layers": 2, "max_position_embeddings": 256,
          "initializer_range": 0.2, "bos_token_id": 1, "eos_token_id": 2}
FAMILIES: dict[str, tuple[str, dict[str, Any], type]] = {
    # Qwen3-8B shrunk: GQA, head_dim (48) != hidden / heads (32), untied head, theta 1e6.
    "qwen3": ("Qwen3", {"hidden_size": 128, "intermediate_size": 256, "num_attention_heads": 4,
                        "num_key_value_heads": 2, "head_dim": 48, "rms_norm_eps": 1e-6,
                        "rope_theta": 1000000.0, "tie_word_embeddings": False}, Qwen3ForCausalLM),
    # Phi-3-mini shrunk: fused qkv_proj / gate_up_proj, as many KV heads as query heads.
    "phi3": ("Phi3", {"hidden_size": 128, "intermediate_size": 256, "num_attention_heads": 4,
                      "num_key_value_heads": 4, "rms_norm_eps": 1e-5, "pad_token_id": 0,
                      "sliding_window": None, "tie_word_embeddings": False}, Phi3ForCausalLM),
    # Phi-4-mini shrunk: grouped KV heads, tied embeddings, RoPE on 3/4 of each head.
    "phi4-mini": ("Phi3", {"hidden_size": 128, "intermediate_size": 256, "num_attention_heads": 4,
                           "num_key_value_heads": 2, "rms_norm_eps": 1e-5, "pad_token_id": 0,
                           "partial_rotary_factor": 0.75, "sliding_window": None,
                           "tie_word_embeddings": True}, Phi3ForCausalLM),
}
PROMPTS = [[(13 * i + 7 * j) % 500 + 3 for j in range(3 + 11 * i)] for i in range(4)]


def save_hf_model(folder: Path, family: str) -> Any:
    """transformers builds the random model from the family's config class and saves it."""
    import transformers

    prefix, values, _ = FAMILIES[family]
    config = getattr(transformers, f"{prefix}Config")(**SHARED, **values)
    torch.manual_seed(0)
    model = getattr(transformers, f"{prefix}ForCausalLM")(config).eval()
    model.save_pretrained(folder)
    return model


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request, tmp_path_factory) -> tuple[str, Path, Any]:
    folder = tmp_path_factory.mktemp(request.param)
    return request.param, folder, save_hf_model(folder, request.param)


def hf_greedy(model: Any, prompt: list[int], max_tokens: int) -> list[int]:
    model.generation_config.eos_token_id = None  # our side ignores EOS too: compare all tokens
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                             max_new_tokens=max_tokens, do_sample=False,
                             pad_token_id=0)
    return out[0, len(prompt):].tolist()


def test_engine_greedy_tokens_equal_transformers(family) -> None:
    """Built as a worker builds it: from a registry entry whose `source` is the saved folder."""
    name, folder, hf = family
    want = [hf_greedy(hf, prompt, MAX_TOKENS) for prompt in PROMPTS]
    assert len({tuple(w) for w in want}) == len(want), "prompts must lead to different outputs"
    entry = {"source": str(folder), "engine": {"max_model_len": 128, "num_kv_blocks": 32}}
    spec = parse_registry({"models": {name: entry}}).get(name)
    llm = LLM(model=spec.source, **spec.engine_kwargs())
    assert type(llm.engine.runner.model) is FAMILIES[name][2]
    params = SamplingParams(temperature=0, ignore_eos=True, max_tokens=MAX_TOKENS)
    got = [o.outputs[0].token_ids for o in llm.generate(PROMPTS, params)]
    assert got == want


def test_checkpoint_layout_is_the_familys(family) -> None:
    """The saved tensors are what the family's real checkpoints hold (fused for Phi, q/k norms
    for Qwen3), and the dummy loader generates that same layout."""
    from safetensors import safe_open

    from pagefleet.workers.models.loader import hf_weight_shapes

    name, folder, _ = family
    with safe_open(folder / "model.safetensors", framework="pt") as f:
        saved = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    resolved = resolve_model(str(folder))
    assert hf_weight_shapes(resolved.arch) == saved
    fused = any(".qkv_proj." in k for k in saved)
    assert fused == name.startswith("phi")
    assert any(".q_norm." in k for k in saved) == (name == "qwen3")
    assert isinstance(build_model(resolved, load_format="dummy"), FAMILIES[name][2])


@pytest.mark.parametrize("preset", ["qwen3-8b", "phi-3-mini", "phi-4"])
def test_registry_accepts_family_presets_for_benchmarks(preset) -> None:
    """A registry entry naming a family preset with dummy weights resolves to that family."""
    spec = parse_registry({"models": {preset: {"engine": {"load_format": "dummy"}}}}).get(preset)
    resolved = resolve_model(spec.source, spec.engine_kwargs()["load_format"])
    assert resolved.arch.model_type == ("qwen3" if preset.startswith("qwen") else "phi3")

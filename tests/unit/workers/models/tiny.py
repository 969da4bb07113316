"""Tiny Llama-family (and Qwen3, Phi-3) checkpoints written to disk, so tests exercise the real loading path fast."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from pagefleet.workers.models.arch import ModelArch
from pagefleet.workers.models.loader import dummy_weights

TINY = {
    "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 101,
    "max_position_embeddings": 256, "rms_norm_eps": 1e-6, "bos_token_id": 1, "eos_token_id": 2,
}
VARIANTS: dict[str, dict[str, Any]] = {
    "llama3-tied": {
        "model_type": "llama", "tie_word_embeddings": True, "rope_theta": 10000.0,
        "rope_scaling": {"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
    },
    "qwen2-bias": {"model_type": "qwen2", "tie_word_embeddings": False, "vocab_size": 96},
    "mistral": {"model_type": "mistral", "tie_word_embeddings": False, "sliding_window": None},
    # head_dim 24 != hidden / heads (16): Qwen3's q/k norms are per head_dim, not per hidden.
    "qwen3": {"model_type": "qwen3", "tie_word_embeddings": True, "head_dim": 24},
    # fused qkv_proj / gate_up_proj names and half the head rotated (Phi-4-mini style partial RoPE).
    "phi3": {"model_type": "phi3", "tie_word_embeddings": False, "partial_rotary_factor": 0.5,
             "pad_token_id": 0, "sliding_window": None},
}


def tiny_config(variant: str) -> Any:
    from transformers import AutoConfig

    values = {**TINY, **VARIANTS[variant]}
    return AutoConfig.for_model(values.pop("model_type"), **values)


def write_tiny_checkpoint(folder: Path, variant: str, weights: bool = True, seed: int = 0) -> Path:
    """config.json (+ model.safetensors of seeded random weights) in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    config = tiny_config(variant)
    config.save_pretrained(folder)
    if weights:
        arch = ModelArch.from_hf_config(config)
        tensors = dict(dummy_weights(arch, seed, torch.float32, torch.device("cpu")))
        # Non-trivial norms, so a norm weight loaded into the wrong place shows up.
        for name, tensor in tensors.items():
            if name.endswith("norm.weight"):
                tensor.uniform_(0.5, 1.5)
        save_file(tensors, folder / "model.safetensors")
    return folder

"""Named model shapes for `load_format="dummy"`: benchmark real architectures without weights.

Plain data in Hugging Face config.json spelling, so a preset goes through exactly the same
`LlamaConfig` -> `ModelArch` path as a real checkpoint.
"""

from __future__ import annotations

from typing import Any

_LLAMA3_TOKENS = {"bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009]}


def _llama3(hidden: int, intermediate: int, layers: int, heads: int, head_dim: int,
            rope_factor: float, tied: bool) -> dict[str, Any]:
    """A Llama 3.x shape: 8 KV heads, the 128k vocabulary, llama3 rope scaling."""
    return {
        "model_type": "llama", "hidden_size": hidden, "intermediate_size": intermediate,
        "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": 8,
        "head_dim": head_dim, "vocab_size": 128256, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
        "rope_scaling": {"rope_type": "llama3", "factor": rope_factor, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
        "max_position_embeddings": 131072, "tie_word_embeddings": tied, **_LLAMA3_TOKENS,
    }


PRESETS: dict[str, dict[str, Any]] = {
    "llama-3.2-1b": _llama3(2048, 8192, 16, 32, 64, rope_factor=32.0, tied=True),
    "llama-3.1-8b": _llama3(4096, 14336, 32, 32, 128, rope_factor=8.0, tied=False),
    # tensor parallelism benchmarks: 141 GB of bf16 weights
    "llama-3.1-70b": _llama3(8192, 28672, 80, 64, 128, rope_factor=8.0, tied=False),
    "smollm2-135m": {
        "model_type": "llama", "hidden_size": 576, "intermediate_size": 1536,
        "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
        "head_dim": 64, "vocab_size": 49152, "rms_norm_eps": 1e-5, "rope_theta": 100000.0,
        "max_position_embeddings": 8192, "tie_word_embeddings": True,
        "bos_token_id": 1, "eos_token_id": 2,
    },
}


def preset_config(name: str) -> Any:
    """A transformers LlamaConfig for a preset name (KeyError-free: callers check `PRESETS`)."""
    from transformers import LlamaConfig

    values = dict(PRESETS[name])
    values.pop("model_type")
    return LlamaConfig(**values)

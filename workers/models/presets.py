"""Named model shapes for `load_format="dummy"`: benchmark real architectures without weights.

Plain data in Hugging Face config.json spelling, so a preset goes through exactly the same
config class (`AutoConfig.for_model(model_type)`) -> `ModelArch` -> model class path as a real
checkpoint of its family.
"""

from __future__ import annotations

from typing import Any

_LLAMA3_TOKENS = {"bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009]}

PRESETS: dict[str, dict[str, Any]] = {
    "llama-3.2-1b": {
        "model_type": "llama", "hidden_size": 2048, "intermediate_size": 8192,
        "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8,
        "head_dim": 64, "vocab_size": 128256, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
        "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
        "max_position_embeddings": 131072, "tie_word_embeddings": True, **_LLAMA3_TOKENS,
    },
    "llama-3.1-8b": {
        "model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336,
        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
        "head_dim": 128, "vocab_size": 128256, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
        "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
        "max_position_embeddings": 131072, "tie_word_embeddings": False, **_LLAMA3_TOKENS,
    },
    "llama-3.1-70b": {  # tensor parallelism benchmarks: 141 GB of bf16 weights
        "model_type": "llama", "hidden_size": 8192, "intermediate_size": 28672,
        "num_hidden_layers": 80, "num_attention_heads": 64, "num_key_value_heads": 8,
        "head_dim": 128, "vocab_size": 128256, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
        "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
        "max_position_embeddings": 131072, "tie_word_embeddings": False, **_LLAMA3_TOKENS,
    },
    "smollm2-135m": {
        "model_type": "llama", "hidden_size": 576, "intermediate_size": 1536,
        "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
        "head_dim": 64, "vocab_size": 49152, "rms_norm_eps": 1e-5, "rope_theta": 100000.0,
        "max_position_embeddings": 8192, "tie_word_embeddings": True,
        "bos_token_id": 1, "eos_token_id": 2,
    },
    "qwen3-8b": {  # per-head q/k norms; 36 layers of 32 x 128 query heads on a 4096 hidden
        "model_type": "qwen3", "hidden_size": 4096, "intermediate_size": 12288,
        "num_hidden_layers": 36, "num_attention_heads": 32, "num_key_value_heads": 8,
        "head_dim": 128, "vocab_size": 151936, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
        "max_position_embeddings": 40960, "tie_word_embeddings": False,
        "bos_token_id": 151643, "eos_token_id": 151645,
    },
    "phi-3-mini": {  # Phi-3-mini-4k-instruct: fused checkpoint tensors, MHA (32 KV heads)
        "model_type": "phi3", "hidden_size": 3072, "intermediate_size": 8192,
        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
        "vocab_size": 32064, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        # its 2047-token sliding window caps the context at 2047 (where it equals full attention)
        "max_position_embeddings": 4096, "sliding_window": 2047, "tie_word_embeddings": False,
        "bos_token_id": 1, "eos_token_id": 32000, "pad_token_id": 32000,
    },
    "phi-4": {  # Phi-4 (14B): the phi3 architecture with GQA, 40 x 128 heads on a 5120 hidden
        "model_type": "phi3", "hidden_size": 5120, "intermediate_size": 17920,
        "num_hidden_layers": 40, "num_attention_heads": 40, "num_key_value_heads": 10,
        "vocab_size": 100352, "rms_norm_eps": 1e-5, "rope_theta": 250000.0,
        "max_position_embeddings": 16384, "sliding_window": None, "tie_word_embeddings": False,
        "bos_token_id": 100257, "eos_token_id": 100265, "pad_token_id": 100349,
    },
}


def preset_config(name: str) -> Any:
    """The family's transformers config for a preset name (callers check `PRESETS` first)."""
    from transformers import AutoConfig

    values = dict(PRESETS[name])
    return AutoConfig.for_model(values.pop("model_type"), **values)

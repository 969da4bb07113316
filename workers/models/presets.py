"""Named model shapes for `load_format="dummy"`: benchmark real architectures without weights.

Plain data in Hugging Face config.json spelling, complete enough that `ModelArch` reads it
directly (`preset_arch`): a cold start of a preset never imports transformers, whose import
alone is most of a dummy 8B worker's readiness (7.6 of 13.9 s on the H200, issue 15). The
family's config class (`preset_config`, `AutoConfig.for_model(model_type)`) gives the same
`ModelArch` (a test holds every preset to that), so a preset still means what a real checkpoint
of its family means; it is built only where a transformers model is wanted (the engine bench's
baseline).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from pagefleet.workers.models.arch import FULL, SLIDING, ModelArch

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


def _gemma_layer_types(num_layers: int, pattern: int) -> list[str]:
    """Every `pattern`-th layer global, the others windowed: what Gemma's config classes derive
    when `layer_types` is absent, written out so that the preset is complete without them."""
    return [FULL if (i + 1) % pattern == 0 else SLIDING for i in range(num_layers)]


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
    "qwen3-30b-a3b": {  # Qwen3-30B-A3B: 128 experts of 768, 8 per token (3.3B of 30.5B active)
        "model_type": "qwen3_moe", "hidden_size": 2048, "intermediate_size": 6144,
        "moe_intermediate_size": 768, "num_experts": 128, "num_experts_per_tok": 8,
        "norm_topk_prob": True, "decoder_sparse_step": 1, "mlp_only_layers": [],
        "num_hidden_layers": 48, "num_attention_heads": 32, "num_key_value_heads": 4,
        "head_dim": 128, "vocab_size": 151936, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
        "max_position_embeddings": 40960, "tie_word_embeddings": False,
        "bos_token_id": 151643, "eos_token_id": 151645,
    },
    "mixtral-8x7b": {  # Mixtral-8x7B-v0.1: 8 experts of 14336, 2 per token (93 GB of bf16)
        "model_type": "mixtral", "hidden_size": 4096, "intermediate_size": 14336,
        "num_local_experts": 8, "num_experts_per_tok": 2, "num_hidden_layers": 32,
        "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 32000,
        "rms_norm_eps": 1e-5, "rope_theta": 1000000.0, "max_position_embeddings": 32768,
        "sliding_window": None, "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2,
    },
    "gemma-2-9b": {  # sliding (4096) and global layers alternate; attention and final soft-caps
        "model_type": "gemma2", "hidden_size": 3584, "intermediate_size": 14336,
        "num_hidden_layers": 42, "num_attention_heads": 16, "num_key_value_heads": 8,
        "head_dim": 256, "vocab_size": 256000, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
        "max_position_embeddings": 8192, "sliding_window": 4096, "query_pre_attn_scalar": 256,
        "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0,
        "hidden_activation": "gelu_pytorch_tanh", "tie_word_embeddings": True,
        "bos_token_id": 2, "eos_token_id": [1, 107], "pad_token_id": 0,
        "layer_types": _gemma_layer_types(42, pattern=2),
    },
    "gemma-3-12b": {  # text tower: 5 local (1024-token window) layers per global one, q/k norms
        "model_type": "gemma3_text", "hidden_size": 3840, "intermediate_size": 15360,
        "num_hidden_layers": 48, "num_attention_heads": 16, "num_key_value_heads": 8,
        "head_dim": 256, "vocab_size": 262208, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
        "rope_local_base_freq": 10000.0, "rope_scaling": {"rope_type": "linear", "factor": 8.0},
        "max_position_embeddings": 131072, "sliding_window": 1024, "sliding_window_pattern": 6,
        "query_pre_attn_scalar": 256, "hidden_activation": "gelu_pytorch_tanh",
        "tie_word_embeddings": True, "bos_token_id": 2, "eos_token_id": [1, 106], "pad_token_id": 0,
        "layer_types": _gemma_layer_types(48, pattern=6),
    },
}


def preset_arch(name: str) -> ModelArch:
    """The preset's `ModelArch`, read from its config.json spelling without transformers."""
    return ModelArch.from_hf_config(SimpleNamespace(**PRESETS[name]))


def preset_config(name: str) -> Any:
    """The family's transformers config for a preset name (callers check `PRESETS` first)."""
    from transformers import AutoConfig

    values = dict(PRESETS[name])
    return AutoConfig.for_model(values.pop("model_type"), **values)

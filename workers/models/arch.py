"""The handful of numbers that define a dense decoder, read once from a Hugging Face config.

One dataclass covers the Llama family and its near relatives (Qwen3's per-head q/k norm, Phi-3's
partial rotary, Gemma 2/3's windowed layers and soft-capping): the differences are a few flags
here, and the model classes read them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pagefleet.workers.models.moe_spec import MOE_MODEL_TYPES, MoeSpec

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "phi3", "gemma2", "gemma3_text",
                         *MOE_MODEL_TYPES)
GEMMA_TYPES = ("gemma2", "gemma3_text")
SLIDING, FULL = "sliding_attention", "full_attention"  # HF's `layer_types` values
_SLIDING_TYPES = ("mistral", "phi3", "mixtral")  # models whose configs apply `sliding_window` to every layer
_LLAMA3_ROPE_KEYS = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")


@dataclass(frozen=True, slots=True)
class ModelArch:
    """Shapes and constants of a Llama-style decoder (Llama 2/3, Mistral, Qwen2/3, Phi-3, SmolLM2).

    The engine sizes its KV cache from this and the model is built from it, so it is the only
    place that knows how the various config.json spellings map to one meaning.
    """

    num_layers: int
    hidden_size: int
    intermediate_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None  # llama3 (see _LLAMA3_ROPE_KEYS) or linear scaling
    max_position_embeddings: int = 2048
    tie_word_embeddings: bool = False
    attention_bias: bool = False  # Qwen2: bias on q/k/v projections
    eos_token_ids: list[int] = field(default_factory=list)
    bos_token_id: int | None = None
    model_type: str = "llama"  # picks the model class (see loader.MODEL_CLASSES)
    qk_norm: bool = False  # Qwen3: RMSNorm over each q and k head before RoPE
    partial_rotary_factor: float = 1.0  # Phi-3/4: RoPE rotates only the first part of each head
    moe: MoeSpec | None = None  # Mixtral, Qwen3-MoE: sparse expert MLPs (see moe.py)
    # Gemma 2/3: a sliding layer's query sees the last `sliding_window` keys, itself included.
    sliding_window: int | None = None
    layer_types: tuple[str, ...] = ()  # SLIDING or FULL per layer; empty: every layer is FULL
    attn_logit_softcapping: float | None = None  # scores -> cap * tanh(scores / cap)
    final_logit_softcapping: float | None = None  # the same on the output logits
    query_pre_attn_scalar: float | None = None  # scores scale by its -1/2 power, not head_dim's
    rope_local_theta: float | None = None  # Gemma 3: RoPE base of the sliding layers

    def __post_init__(self) -> None:
        for name in ("num_layers", "hidden_size", "intermediate_size", "num_heads",
                     "num_kv_heads", "head_dim", "vocab_size", "max_position_embeddings"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})"
            )
        if self.head_dim % 2:
            raise ValueError(f"head_dim must be even for rotary embeddings, got {self.head_dim}")
        if not 0 < self.partial_rotary_factor <= 1 or self.rotary_dim < 2 or self.rotary_dim % 2:
            raise ValueError(
                f"partial_rotary_factor {self.partial_rotary_factor} gives rotary_dim "
                f"{self.rotary_dim}; it must be in (0, 1] and give an even rotary_dim"
            )
        self._check_layer_types()
        if self.rope_scaling is not None:
            if self.rope_scaling.get("rope_type") == "linear":
                if float(self.rope_scaling.get("factor", 0)) <= 0:
                    raise ValueError(f"linear rope scaling needs a positive factor: {self.rope_scaling}")
                return
            if self.rope_scaling.get("rope_type") != "llama3":
                raise ValueError(f"only llama3 and linear rope scaling are supported, got {self.rope_scaling}")
            missing = [k for k in _LLAMA3_ROPE_KEYS if k not in self.rope_scaling]
            if missing:
                raise ValueError(f"llama3 rope_scaling lacks {missing}: {self.rope_scaling}")

    def _check_layer_types(self) -> None:
        if not self.layer_types:
            return
        if len(self.layer_types) != self.num_layers:
            raise ValueError(f"layer_types has {len(self.layer_types)} entries for {self.num_layers} layers")
        unknown = set(self.layer_types) - {SLIDING, FULL}
        if unknown:
            raise ValueError(f"unknown layer types {sorted(unknown)}; expected {SLIDING!r} or {FULL!r}")
        if SLIDING in self.layer_types and (self.sliding_window is None or self.sliding_window < 1):
            raise ValueError(f"sliding layers need a sliding_window of at least 1, got {self.sliding_window}")

    def layer_window(self, layer: int) -> int | None:
        """The window of layer `layer`, or None where it attends to the whole sequence."""
        if self.layer_types and self.layer_types[layer] == SLIDING:
            return self.sliding_window
        return None

    @property
    def kv_release_window(self) -> int | None:
        """The window after which a sequence's KV blocks are dead in every layer, or None.

        Only a model whose layers are all windowed ever stops reading a block: one full layer
        reads the whole sequence, and the cache is one block table shared by all layers.
        """
        if self.layer_types and all(kind == SLIDING for kind in self.layer_types):
            return self.sliding_window
        return None

    @property
    def attention_scale(self) -> float:
        return (self.query_pre_attn_scalar or self.head_dim) ** -0.5

    @property
    def rotary_dim(self) -> int:
        """Leading dimensions of each head that RoPE rotates (all of them unless partial)."""
        return int(self.head_dim * self.partial_rotary_factor)

    def num_heads_per_rank(self, tp_size: int) -> int:
        """Query heads each tensor-parallel rank holds."""
        if self.num_heads % tp_size:
            raise ValueError(
                f"num_heads ({self.num_heads}) is not divisible by tensor_parallel_size ({tp_size})"
            )
        return self.num_heads // tp_size

    def num_kv_heads_per_rank(self, tp_size: int) -> int:
        """KV heads each rank holds, which is what the engine's KV cache must be shaped for.

        KV heads are split, never replicated: a tensor-parallel size that does not divide
        num_kv_heads is rejected here rather than silently duplicating cache memory.
        """
        if self.num_kv_heads % tp_size:
            raise ValueError(
                f"num_kv_heads ({self.num_kv_heads}) is not divisible by tensor_parallel_size "
                f"({tp_size}); choose a tensor_parallel_size that divides it"
            )
        return self.num_kv_heads // tp_size

    @classmethod
    def from_hf_config(cls, cfg: Any) -> ModelArch:
        """Accepts a transformers PretrainedConfig (v4 or v5 spelling of rope settings)."""
        model_type = getattr(cfg, "model_type", None)
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(
                f"model_type {model_type!r} is not supported; supported: {SUPPORTED_MODEL_TYPES}"
            )
        num_heads = cfg.num_attention_heads
        num_kv_heads = getattr(cfg, "num_key_value_heads", None) or num_heads
        gemma = _gemma_fields(cfg) if model_type in GEMMA_TYPES else {}
        rope_theta, rope_scaling, rotary_factor = _rope_settings(cfg, gemma.pop("rope_parameters", None))
        max_positions = cfg.max_position_embeddings
        # Sliding-window attention equals full attention while sequences fit in the window, so
        # capping the length keeps Mistral-v0.1-style models exact without a windowed kernel.
        window = getattr(cfg, "sliding_window", None)
        if window and (model_type in _SLIDING_TYPES or getattr(cfg, "use_sliding_window", False)):
            max_positions = min(max_positions, window)
        eos = getattr(cfg, "eos_token_id", None)
        return cls(
            num_layers=cfg.num_hidden_layers,
            hidden_size=cfg.hidden_size,
            intermediate_size=cfg.intermediate_size,
            num_heads=num_heads,
            num_kv_heads=num_kv_heads,
            head_dim=getattr(cfg, "head_dim", None) or cfg.hidden_size // num_heads,
            vocab_size=cfg.vocab_size,
            rms_norm_eps=float(cfg.rms_norm_eps),
            rope_theta=rope_theta,
            rope_scaling=rope_scaling,
            max_position_embeddings=max_positions,
            tie_word_embeddings=bool(getattr(cfg, "tie_word_embeddings", False)),
            attention_bias=model_type == "qwen2" or bool(getattr(cfg, "attention_bias", False)),
            eos_token_ids=[] if eos is None else list(eos) if isinstance(eos, list | tuple) else [eos],
            bos_token_id=getattr(cfg, "bos_token_id", None),
            model_type=model_type,
            qk_norm=model_type in ("qwen3", "qwen3_moe", "gemma3_text"),
            partial_rotary_factor=rotary_factor,
            moe=MoeSpec.from_hf_config(cfg) if model_type in MOE_MODEL_TYPES else None,
            **gemma,
        )


def _gemma_fields(cfg: Any) -> dict[str, Any]:
    """Gemma 2/3's extra constants (and the rope parameters of its global layers).

    Gemma 3 keeps one rope dict per layer type (v5) or `rope_local_base_freq` beside the global
    `rope_theta`/`rope_scaling` (v4); Gemma 2 has one rope for every layer.
    """
    activation = getattr(cfg, "hidden_activation", None) or getattr(cfg, "hidden_act", None)
    if activation != "gelu_pytorch_tanh":
        raise ValueError(f"Gemma's MLP is GeGLU with gelu_pytorch_tanh, got {activation!r}")
    if getattr(cfg, "use_bidirectional_attention", False):
        raise ValueError("use_bidirectional_attention (embedding Gemma) is not supported")
    params = getattr(cfg, "rope_parameters", None) or {}
    local = getattr(cfg, "rope_local_base_freq", None)
    if FULL in params:
        local = params.get(SLIDING, {}).get("rope_theta", local)
        params = params[FULL]
    elif local is not None:
        params = None  # v4 Gemma 3: the usual attributes describe the global layers
    layer_types = tuple(cfg.layer_types or ())
    return {
        "rope_parameters": params,
        "sliding_window": cfg.sliding_window if SLIDING in layer_types else None,
        "layer_types": layer_types,
        "attn_logit_softcapping": getattr(cfg, "attn_logit_softcapping", None),
        "final_logit_softcapping": getattr(cfg, "final_logit_softcapping", None),
        "query_pre_attn_scalar": float(cfg.query_pre_attn_scalar),
        "rope_local_theta": None if local is None else float(local),
    }


def _rope_settings(
    cfg: Any, params: dict[str, Any] | None = None,
) -> tuple[float, dict[str, Any] | None, float]:
    """(theta, llama3 or linear scaling or None, partial rotary factor).

    transformers v5 folds rope_theta, rope_scaling and Phi's partial_rotary_factor into
    `rope_parameters`; v4 keeps them as separate attributes. `params` overrides where the
    config holds several (Gemma 3: the global layers' dict).
    """
    params = params or getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}
    theta = params.get("rope_theta", getattr(cfg, "rope_theta", None) or 10000.0)
    factor = params.get("partial_rotary_factor", getattr(cfg, "partial_rotary_factor", None))
    factor = 1.0 if factor is None else float(factor)
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type == "default":
        return float(theta), None, factor
    if rope_type in ("su", "longrope"):
        raise ValueError(
            f"rope_type {rope_type!r} (Phi-3 128k / Phi-4 long-context scaling) is not supported; "
            "use a checkpoint without rope_scaling (e.g. the 4k-context variant)"
        )
    if rope_type == "linear":
        return float(theta), {"rope_type": "linear", "factor": float(params["factor"])}, factor
    if rope_type != "llama3":
        raise ValueError(f"rope_type {rope_type!r} is not supported (only default, linear and llama3)")
    scaling = {k: params[k] for k in _LLAMA3_ROPE_KEYS if k in params}
    return float(theta), {"rope_type": "llama3", **scaling}, factor

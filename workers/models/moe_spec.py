"""The routing numbers of a sparse mixture-of-experts decoder, read from its HF config.

Kept apart from `arch.py` (which holds one of these) so the dense families' dataclass stays
about attention and shapes; `moe.py` builds the layers from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MOE_MODEL_TYPES = ("mixtral", "qwen3_moe")


@dataclass(frozen=True, slots=True)
class MoeSpec:
    """Every layer's MLP is `num_experts` SwiGLU experts of which each token uses `top_k`.

    `renormalize`: the top-k softmax probabilities are rescaled to sum to one (Mixtral always;
    Qwen3-MoE when `norm_topk_prob`).
    """

    num_experts: int
    top_k: int
    expert_intermediate_size: int
    renormalize: bool

    def __post_init__(self) -> None:
        if self.num_experts < 1 or self.expert_intermediate_size < 1:
            raise ValueError(f"num_experts and expert_intermediate_size must be at least 1: {self}")
        if not 1 <= self.top_k <= self.num_experts:
            raise ValueError(f"top_k ({self.top_k}) must be between 1 and num_experts ({self.num_experts})")

    @classmethod
    def from_hf_config(cls, cfg: Any) -> MoeSpec:
        """Mixtral's or Qwen3-MoE's config (transformers v4 `num_experts` or v5 `num_local_experts`)."""
        num_experts = getattr(cfg, "num_local_experts", None) or getattr(cfg, "num_experts", None)
        if cfg.model_type == "mixtral":
            return cls(num_experts, cfg.num_experts_per_tok, cfg.intermediate_size, renormalize=True)
        if getattr(cfg, "mlp_only_layers", None) or getattr(cfg, "decoder_sparse_step", 1) != 1:
            raise ValueError(
                "Qwen3-MoE configs with dense layers (mlp_only_layers or decoder_sparse_step != 1) "
                "are not supported; every layer must be sparse, as in the published models"
            )
        return cls(num_experts, cfg.num_experts_per_tok, cfg.moe_intermediate_size,
                   renormalize=bool(cfg.norm_topk_prob))

"""What a query may see and how its scores are capped: one definition for every attention
reference (the kernels' torch references and the torch backend), so they cannot disagree."""

from __future__ import annotations

import torch


def visible_keys(q_pos: torch.Tensor, k_pos: torch.Tensor, sliding_window: int | None) -> torch.Tensor:
    """Causal visibility, cut to the last `sliding_window` keys (the query's own included),
    the rule of Hugging Face's sliding-window mask. Broadcasts `q_pos` against `k_pos`."""
    visible = k_pos <= q_pos
    if sliding_window is not None:
        visible = visible & (k_pos > q_pos - sliding_window)
    return visible


def soft_cap(scores: torch.Tensor, softcap: float | None) -> torch.Tensor:
    """Gemma 2's logit soft-capping, `cap * tanh(x / cap)`: scores stay within (-cap, cap)."""
    return scores if softcap is None else softcap * torch.tanh(scores / softcap)


def check_window_and_cap(sliding_window: int | None, softcap: float | None) -> None:
    """Launchers refuse a window or cap that could only be a mistake."""
    if sliding_window is not None and sliding_window < 1:
        raise ValueError(f"sliding_window must be at least 1 (or None), got {sliding_window}")
    if softcap is not None and softcap <= 0:
        raise ValueError(f"softcap must be positive (or None), got {softcap}")



def first_visible_key(seq_len: int, query_len: int, sliding_window: int | None) -> int:
    """The earliest key any of a sequence's `query_len` newest queries sees; keys before it
    are dead for this step and every later one."""
    if sliding_window is None:
        return 0
    return max(0, seq_len - query_len - sliding_window + 1)

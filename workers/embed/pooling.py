"""Pooling hidden states into one vector per input, and the normalisation after it.

The modes are sentence-transformers' (its `1_Pooling/config.json` names them): `mean` over
the real tokens (BERT sentence embedders such as all-MiniLM-L6-v2), `cls` (the first token)
and `last` (the final token: decoder embedding models such as Qwen3-Embedding, whose last
position is the only one that has attended to the whole input).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F

Pooling = Literal["mean", "cls", "last"]
_ST_MODES: dict[str, Pooling] = {
    "pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls", "pooling_mode_lasttoken": "last",
}


def pool_padded(hidden: torch.Tensor, mask: torch.Tensor, mode: Pooling) -> torch.Tensor:
    """hidden `[B, L, H]`, mask `[B, L]` (1 for real tokens, right padding) -> `[B, H]` float32."""
    hidden = hidden.float()
    if mode == "cls":
        return hidden[:, 0]
    if mode == "last":
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), mask.sum(1) - 1]
    weights = mask.to(hidden.dtype).unsqueeze(-1)  # [B, L, 1]
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


def pool_flat(hidden: torch.Tensor, starts: list[int], mode: Pooling) -> torch.Tensor:
    """hidden `[T, H]` of inputs laid back to back (input i is rows `starts[i]:starts[i+1]`)
    -> `[B, H]` float32: the layout the decoders in workers/models produce."""
    hidden = hidden.float()
    bounds = list(itertools.pairwise(starts))
    if mode == "cls":
        return hidden[[start for start, _ in bounds]]
    if mode == "last":
        return hidden[[end - 1 for _, end in bounds]]
    return torch.stack([hidden[start:end].mean(0) for start, end in bounds])


def finish(vectors: torch.Tensor, dimensions: list[int | None]) -> list[torch.Tensor]:
    """Cut each row to its requested Matryoshka `dimensions` (None: whole), then L2-normalise
    (OpenAI's embeddings are unit vectors): the cut comes first, so a shortened vector is a
    unit vector too."""
    return [F.normalize(row if size is None else row[:size], dim=-1)
            for row, size in zip(vectors, dimensions, strict=True)]


def pooling_of(folder: Path | None, default: Pooling) -> Pooling:
    """The mode a sentence-transformers folder declares (its Pooling module), else `default`."""
    if folder is None or not (folder / "modules.json").is_file():
        return default
    for module in json.loads((folder / "modules.json").read_text()):
        if module.get("type", "").endswith("Pooling"):
            config = json.loads((folder / module.get("path", "") / "config.json").read_text())
            chosen = [mode for key, mode in _ST_MODES.items() if config.get(key)]
            if len(chosen) != 1:
                raise ValueError(f"{folder}: unsupported pooling configuration {config}")
            return chosen[0]
    return default

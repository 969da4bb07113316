"""Session fixtures: the default model converted once, and its HF reference loaded once (slow)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from pagefleet.workers.models.loader import DEFAULT_MODEL, ResolvedModel, resolve_model
from pagefleet.workers.models.sources import default_gguf_path


@pytest.fixture(scope="session")
def gguf_cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gguf-cache")


@pytest.fixture(scope="session")
def default_resolved(gguf_cache_root: Path) -> ResolvedModel:
    return resolve_model(DEFAULT_MODEL, cache_dir=gguf_cache_root)


@pytest.fixture(scope="session")
def hf_reference() -> Any:
    """transformers' own GGUF loader: independent dequantization, un-permutation and forward."""
    from transformers import AutoModelForCausalLM

    path = default_gguf_path()
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    return model.eval()

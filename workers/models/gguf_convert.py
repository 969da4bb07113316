"""GGUF -> Hugging Face safetensors folder, converted once and cached for fast cold starts.

Dequantizing a GGUF costs seconds to minutes; loading float32 safetensors is a memory map.
The cache folder is keyed by the GGUF's absolute path, size and mtime, and is written in a
temporary sibling then renamed into place, so a crash never leaves a folder that looks
complete: a cache folder either exists whole or not at all.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

# GGUF architectures whose tensors follow Llama naming; only "llama" carries llama.cpp's
# rotary row permutation of Q and K (qwen2 was exported without it).
_ARCHITECTURES = ("llama", "qwen2")
_LAYER_NAMES = {
    "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_GLOBAL_NAMES = {
    "token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head",
}


def default_cache_root() -> Path:
    """`$PAGEFLEET_CACHE/gguf`, else `~/.cache/pagefleet/gguf`."""
    base = os.environ.get("PAGEFLEET_CACHE") or Path.home() / ".cache" / "pagefleet"
    return Path(base) / "gguf"


def cache_dir_for(gguf_path: Path, cache_root: Path) -> Path:
    """Where the converted folder of this exact file (path, size, mtime) lives."""
    path = gguf_path.resolve()
    stat = path.stat()
    key = hashlib.sha256(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_root / f"{path.stem}-{key}"


def convert_gguf(gguf_path: Path, cache_root: Path | None = None) -> Path:
    """Return the HF-style folder for `gguf_path`, converting it first if not cached yet."""
    target = cache_dir_for(gguf_path, cache_root or default_cache_root())
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        _write_hf_folder(gguf_path.resolve(), tmp)
        try:
            tmp.rename(target)
        except OSError:
            if not target.is_dir():  # not a lost race with another converter: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _write_hf_folder(gguf_path: Path, out: Path) -> None:
    from safetensors.torch import save_file
    from transformers import AutoConfig, AutoTokenizer

    save_file(dict(gguf_tensors(gguf_path)), out / "model.safetensors", metadata={"format": "pt"})
    AutoConfig.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name).save_pretrained(out)
    AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name).save_pretrained(out)


def gguf_tensors(gguf_path: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """Dequantized float32 tensors under HF Llama names, Q/K rows back in HF order."""
    import gguf

    reader = gguf.GGUFReader(gguf_path)
    arch = reader.fields["general.architecture"].contents()
    if arch not in _ARCHITECTURES:
        raise ValueError(f"GGUF architecture {arch!r} is not supported; supported: {_ARCHITECTURES}")
    num_heads = reader.fields[f"{arch}.attention.head_count"].contents()
    kv_field = reader.fields.get(f"{arch}.attention.head_count_kv")
    num_kv_heads = num_heads if kv_field is None else kv_field.contents()
    for tensor in reader.tensors:
        if tensor.name == "rope_freqs.weight":
            raise ValueError(
                f"{gguf_path.name} stores llama3 rope scaling as rope_freqs, which the config "
                "conversion loses; use the Hugging Face safetensors checkpoint instead"
            )
        name = hf_tensor_name(tensor.name)
        weights = gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
        if arch == "llama" and ".q_proj." in name:
            weights = unpermute_rotary(weights, num_heads)
        elif arch == "llama" and ".k_proj." in name:
            weights = unpermute_rotary(weights, num_kv_heads)
        yield name, torch.from_numpy(np.ascontiguousarray(weights))


def hf_tensor_name(gguf_name: str) -> str:
    """`blk.3.attn_q.weight` -> `model.layers.3.self_attn.q_proj.weight`."""
    stem, _, suffix = gguf_name.rpartition(".")
    parts = stem.split(".")
    if len(parts) == 3 and parts[0] == "blk" and parts[2] in _LAYER_NAMES:
        return f"model.layers.{parts[1]}.{_LAYER_NAMES[parts[2]]}.{suffix}"
    if stem in _GLOBAL_NAMES:
        return f"{_GLOBAL_NAMES[stem]}.{suffix}"
    raise ValueError(f"unknown GGUF tensor {gguf_name!r}")


def unpermute_rotary(weights: np.ndarray, num_heads: int) -> np.ndarray:
    """Undo llama.cpp's Q/K row order.

    llama.cpp interleaves each head's rows so rotary pairs (i, i + head_dim/2) become adjacent
    (2i, 2i+1): per head, rows are reshaped `[2, head_dim/2] -> [head_dim/2, 2]`. Reversing
    that reshape restores HF's rotate-half layout.
    """
    rest = weights.shape[1:]
    half = weights.shape[0] // num_heads // 2
    return weights.reshape(num_heads, half, 2, *rest).swapaxes(1, 2).reshape(weights.shape)

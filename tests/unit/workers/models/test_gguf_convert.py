"""GGUF conversion: converted once, reused on the next start, never half-written."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from pagefleet.workers.models import gguf_convert
from pagefleet.workers.models.gguf_convert import cache_dir_for, hf_tensor_name, unpermute_rotary
from pagefleet.workers.models.loader import DEFAULT_MODEL, ResolvedModel, resolve_model
from pagefleet.workers.models.sources import default_gguf_path


def llama_cpp_permute(weights: np.ndarray, num_heads: int) -> np.ndarray:
    """What llama.cpp's convert_hf_to_gguf.py does to Q/K rows (the operation we undo)."""
    half = weights.shape[0] // num_heads // 2
    return weights.reshape(num_heads, 2, half, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


@pytest.mark.parametrize("shape", [(3 * 8, 5), (2 * 4,)])
def test_unpermute_inverts_llama_cpp_permutation(shape: tuple[int, ...]) -> None:
    num_heads = 3 if shape[0] == 24 else 2
    hf = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    permuted = llama_cpp_permute(hf, num_heads)
    assert not np.array_equal(permuted, hf)
    assert np.array_equal(unpermute_rotary(permuted, num_heads), hf)


def test_tensor_names_map_to_hf() -> None:
    assert hf_tensor_name("blk.12.attn_q.weight") == "model.layers.12.self_attn.q_proj.weight"
    assert hf_tensor_name("blk.0.attn_k.bias") == "model.layers.0.self_attn.k_proj.bias"
    assert hf_tensor_name("blk.3.ffn_norm.weight") == "model.layers.3.post_attention_layernorm.weight"
    assert hf_tensor_name("token_embd.weight") == "model.embed_tokens.weight"
    assert hf_tensor_name("output.weight") == "lm_head.weight"
    with pytest.raises(ValueError, match=r"unknown GGUF tensor 'blk\.0\.ssm_conv1d\.weight'"):
        hf_tensor_name("blk.0.ssm_conv1d.weight")


def test_converted_folder_is_a_complete_hf_checkpoint(default_resolved: ResolvedModel) -> None:
    folder = default_resolved.path
    assert folder is not None and folder.name.startswith("SmolLM2-135M-Instruct")
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in folder.iterdir()}
    assert json.loads((folder / "config.json").read_text())["num_hidden_layers"] == 30
    assert default_resolved.tokenizer_source == str(folder)
    assert default_resolved.arch.tie_word_embeddings


def test_second_resolve_reuses_cache(default_resolved, gguf_cache_root, monkeypatch) -> None:
    folder = default_resolved.path
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}

    def must_not_convert(*args: object) -> None:
        raise AssertionError("converted again although the cache is complete")

    monkeypatch.setattr(gguf_convert, "_write_hf_folder", must_not_convert)
    again = resolve_model(DEFAULT_MODEL, cache_dir=gguf_cache_root)
    assert again.path == folder
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == stamps


def test_crash_mid_conversion_leaves_no_cache(tmp_path: Path, monkeypatch) -> None:
    gguf_path = default_gguf_path()
    target = cache_dir_for(gguf_path, tmp_path)
    real_tensors = gguf_convert.gguf_tensors

    def crash_after_some_tensors(*args: object):
        for i, item in enumerate(real_tensors(*args)):
            assert not target.exists(), "final folder must appear only when complete"
            if i == 3:
                raise RuntimeError("simulated crash")
            yield item

    monkeypatch.setattr(gguf_convert, "gguf_tensors", crash_after_some_tensors)
    with pytest.raises(RuntimeError, match="simulated crash"):
        resolve_model(str(gguf_path), cache_dir=tmp_path)
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []  # the partial folder was removed too


def test_cache_key_follows_file_identity(tmp_path: Path) -> None:
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"v1")
    first = cache_dir_for(gguf, tmp_path / "cache")
    assert cache_dir_for(gguf, tmp_path / "cache") == first
    stat = gguf.stat()
    os.utime(gguf, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert cache_dir_for(gguf, tmp_path / "cache") != first

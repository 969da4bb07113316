"""Our Llama against Hugging Face transformers, through a real (scattered) paged KV cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from pagefleet.workers.models.arch import ModelArch
from pagefleet.workers.models.llama import LlamaForCausalLM, rope_inv_freq
from pagefleet.workers.models.loader import (
    ResolvedModel,
    build_model,
    load_tokenizer,
    resolve_model,
)
from tests.unit.workers.models.paged import PagedCache, Step
from tests.unit.workers.models.tiny import VARIANTS, tiny_config, write_tiny_checkpoint

PROMPTS = [
    "Hi there!",
    "The capital of France is",
    "Write a haiku about paged attention, continuous batching and the smell of warm GPUs "
    "in a data centre at night, then explain each line.",
]
ATOL = 2e-3


@pytest.fixture(scope="module")
def model(default_resolved: ResolvedModel) -> LlamaForCausalLM:
    return build_model(default_resolved, dtype=torch.float32, device=torch.device("cpu"))


@pytest.fixture(scope="module")
def prompt_ids(default_resolved: ResolvedModel) -> list[list[int]]:
    tokenizer = load_tokenizer(default_resolved)
    ids = [tokenizer(p)["input_ids"] for p in PROMPTS]
    assert len({len(i) for i in ids}) == len(ids), "prompts must differ in length"
    assert min(map(len, ids)) >= 3, "chunked test splits every prompt into three parts"
    return ids


@pytest.fixture(scope="module")
def prompt_hf_logits(prompt_ids, hf_reference) -> list[torch.Tensor]:
    return [hf_logits(hf_reference, ids) for ids in prompt_ids]


def hf_logits(hf_model: Any, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return hf_model(torch.tensor([ids])).logits[0].float()  # [len, vocab]


def run(model: LlamaForCausalLM, cache: PagedCache, step: Step) -> torch.Tensor:
    with torch.no_grad():
        return model.compute_logits(model(step.input_ids, step.positions, cache.kv_caches, step.metadata))


def assert_close(ours: torch.Tensor, ref: torch.Tensor) -> None:
    assert ours.dtype == torch.float32
    assert (ours - ref).abs().max().item() < ATOL
    top2 = ref.topk(2, dim=-1).values
    decisive = (top2[:, 0] - top2[:, 1]) > ATOL  # ignore near ties, where argmax may flip
    assert decisive.any()
    assert torch.equal(ours.argmax(-1)[decisive], ref.argmax(-1)[decisive])


def test_prefill_batch_matches_hf(model, prompt_ids, prompt_hf_logits) -> None:
    cache = PagedCache(model.arch, num_blocks=64, block_size=4)
    logits = run(model, cache, cache.step(dict(enumerate(prompt_ids))))
    start = 0
    for ids, ref in zip(prompt_ids, prompt_hf_logits, strict=True):
        assert_close(logits[start:start + len(ids)], ref)
        start += len(ids)


def test_chunked_prefill_then_decode_matches_hf(model, prompt_ids, prompt_hf_logits) -> None:
    """Prefix chunk, middle chunk, then the last token alone as a decode step (query_len 1)."""
    cache = PagedCache(model.arch, num_blocks=64, block_size=4, seed=1)
    splits = [len(ids) // 2 for ids in prompt_ids]  # prefix lengths, all >= 1
    run(model, cache, cache.step({s: ids[:k] for s, (ids, k) in enumerate(zip(prompt_ids, splits, strict=True))}))
    middle = run(model, cache, cache.step({s: ids[k:-1] for s, (ids, k) in enumerate(zip(prompt_ids, splits, strict=True))}))
    decode = run(model, cache, cache.step({s: ids[-1:] for s, ids in enumerate(prompt_ids)}))
    ref_middle = [ref[k:-1] for ref, k in zip(prompt_hf_logits, splits, strict=True)]
    assert_close(middle, torch.cat(ref_middle))
    assert_close(decode, torch.stack([ref[-1] for ref in prompt_hf_logits]))


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_tiny_variants_match_hf(tmp_path: Path, variant: str) -> None:
    """Qwen2 qkv bias, llama3 rope scaling, untied heads: checked on tiny safetensors folders."""
    from transformers import AutoModelForCausalLM

    folder = write_tiny_checkpoint(tmp_path / variant, variant)
    resolved = resolve_model(str(folder))
    ours = build_model(resolved)
    hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    ids = torch.randint(0, resolved.arch.vocab_size, (90,), generator=torch.Generator().manual_seed(0))
    cache = PagedCache(resolved.arch, num_blocks=40, block_size=8)
    logits = run(ours, cache, cache.step({0: ids.tolist()}))
    assert_close(logits, hf_logits(hf, ids.tolist()))


def test_llama3_rope_scaling_changes_only_low_frequencies() -> None:
    arch = ModelArch.from_hf_config(tiny_config("llama3-tied"))
    plain = ModelArch.from_hf_config(tiny_config("mistral"))
    scaled, base = rope_inv_freq(arch), rope_inv_freq(plain)
    assert scaled[0] == base[0]  # shortest wavelength untouched
    assert torch.isclose(scaled[-1], base[-1] / arch.rope_scaling["factor"])


def test_bfloat16_model_gives_bfloat16_logits(default_resolved) -> None:
    """The head's output is not widened (the sampler widens only what computes with it)."""
    bf16 = build_model(default_resolved, dtype=torch.bfloat16)
    assert bf16.model.layers[0].self_attn.qkv_proj.weight.dtype == torch.bfloat16
    cache = PagedCache(default_resolved.arch, num_blocks=8, block_size=4)
    cache.kv_caches = [(k.bfloat16(), v.bfloat16()) for k, v in cache.kv_caches]
    logits = run(bf16, cache, cache.step({0: [1, 2, 3, 4, 5]}))
    assert logits.dtype == torch.bfloat16 and logits.shape == (5, default_resolved.arch.vocab_size)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_fused_layers_equal_torch_layers(tmp_path: Path, variant: str) -> None:
    """The Triton residual+RMSNorm, RoPE and SiLU-and-mul path (the interpreter in CI) computes
    the same logits as the torch layers, through prefill then decode on fresh random ids."""
    folder = write_tiny_checkpoint(tmp_path / variant, variant)
    resolved = resolve_model(str(folder))
    plain, fused = build_model(resolved), build_model(resolved, fused_layers=True)
    assert fused.model.layers[0].mlp.fused and not plain.model.layers[0].mlp.fused
    ids = torch.randint(0, resolved.arch.vocab_size, (2, 23), generator=torch.Generator().manual_seed(7))
    caches = [PagedCache(resolved.arch, num_blocks=40, block_size=8, seed=3) for _ in range(2)]
    prefill = {0: ids[0, :-1].tolist(), 1: ids[1, :9].tolist()}
    decode = {0: ids[0, -1:].tolist(), 1: ids[1, 9:10].tolist()}
    for steps in (prefill, decode):
        want = run(plain, caches[0], caches[0].step(steps))
        got = run(fused, caches[1], caches[1].step(steps))
        assert (got - want).abs().max().item() < 1e-4
        assert torch.equal(got.argmax(-1), want.argmax(-1))

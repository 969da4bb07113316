"""The engine's greedy tokens equal transformers' on the default model, however it batches."""

from __future__ import annotations

import pytest

from pagefleet.workers import LLM, SamplingParams

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a small village by the sea, there lived an old fisherman who",
    "1, 2, 3, 4,",
    "Kubernetes is",
    "The three primary colours are red, blue and yellow. Mixing red and blue gives purple; "
    "mixing blue and yellow gives green; mixing red and yellow gives",
    "Q: What is the boiling point of water at sea level?\nA:",
    "import torch\nimport torch.nn as nn\n\nclass MLP(nn.Module):\n    def __init__(self",
    "Hello",
]
MAX_TOKENS = 24
SYSTEM = (
    "You are a careful assistant for a cloud platform team. You answer in short sentences, you "
    "never invent facts, and when you are unsure you say so plainly. Keep answers under fifty words. "
)


@pytest.fixture(scope="module")
def expected(hf_reference) -> dict[str, list[int]]:
    tokenizer = hf_reference.tokenizer
    return {p: hf_reference.greedy(tokenizer.encode(p), MAX_TOKENS) for p in PROMPTS}


GREEDY = SamplingParams(temperature=0, max_tokens=MAX_TOKENS)


def _generate(llm: LLM, prompts: list[str]) -> dict[str, list[int]]:
    outputs = llm.generate(prompts, GREEDY)
    return {p: out.outputs[0].token_ids for p, out in zip(prompts, outputs, strict=True)}


def test_batched_greedy_equals_transformers(expected):
    llm = LLM(max_model_len=512)
    assert _generate(llm, PROMPTS) == expected


def test_preemption_keeps_tokens_identical(expected):
    # 12 blocks of 16 tokens cannot hold nine sequences at once: the scheduler must preempt.
    llm = LLM(max_model_len=192, num_kv_blocks=12, enable_prefix_caching=False)
    assert _generate(llm, PROMPTS) == expected
    assert llm.engine.scheduler.num_preemptions > 0


def test_chunked_prefill_keeps_tokens_identical(expected):
    llm = LLM(max_model_len=512, max_num_batched_tokens=8)
    assert _generate(llm, PROMPTS) == expected


def test_prefix_cache_hits_keep_tokens_identical(hf_reference):
    tokenizer = hf_reference.tokenizer
    prompts = [SYSTEM + question for question in ("What is a pod?", "What is a node?", "Why Redis?")]
    want = {p: hf_reference.greedy(tokenizer.encode(p), 12) for p in prompts}
    llm = LLM(max_model_len=512)
    params = SamplingParams(temperature=0, max_tokens=12)
    first = llm.generate(prompts[0], params)[0]
    assert first.outputs[0].token_ids == want[prompts[0]]
    hits_before = llm.engine.kv_cache.num_prefix_hit_tokens
    rest = llm.generate(prompts[1:], params)
    assert llm.engine.kv_cache.num_prefix_hit_tokens > hits_before
    assert all(out.num_cached_tokens > 0 for out in rest)
    assert {p: o.outputs[0].token_ids for p, o in zip(prompts[1:], rest, strict=True)} == {
        p: want[p] for p in prompts[1:]
    }


def test_prompt_logprobs_equal_transformers_log_softmax(hf_reference):
    """Each prompt token's logprob (and the top alternatives) is transformers' log-softmax at
    the position before it, also when the prompt's prefix is already cached."""
    import torch

    prompt = PROMPTS[5]
    ids = hf_reference.tokenizer.encode(prompt)
    with torch.inference_mode():
        reference = hf_reference.model(torch.tensor([ids])).logits[0].float().log_softmax(-1)
    llm = LLM(max_model_len=512)
    params = SamplingParams(temperature=0, max_tokens=2, prompt_logprobs=3)
    for _ in range(2):  # the second time the prefix cache holds the prompt
        [out] = llm.generate(prompt, params)
        assert out.prompt_logprobs[0] is None and len(out.prompt_logprobs) == len(ids)
        for position, entry in enumerate(out.prompt_logprobs[1:], start=1):
            row = reference[position - 1]
            assert entry.token_id == ids[position]
            assert entry.logprob == pytest.approx(row[ids[position]].item(), abs=2e-3)
            top = row.topk(3)
            assert [t.token_id for t in entry.top] == top.indices.tolist()
            assert [t.logprob for t in entry.top] == pytest.approx(top.values.tolist(), abs=2e-3)

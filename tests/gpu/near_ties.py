"""Greedy outputs compared up to near-ties: where two paths that compute the same function in
different orders (CUDA graphs vs eager, a GPU kernel vs the CPU reference) pick different tokens,
the step must have been a near-tie by the other path's own numbers, and up to there both paths
must report the same log-probabilities.

Token equality alone is fragile on random small models: bf16 logits of magnitude ~8 are ~0.03
apart at best, and degenerate repeating outputs keep two candidates nearly tied for many steps,
so a reduction-order difference flips a token and the rest of the sequence follows it. A broken
kernel or stale graph input moves logits by whole nats, far past these tolerances."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from pagefleet.platform.protocol.messages import TokenLogprob


def first_divergence(a: Sequence[int], b: Sequence[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y), len(a))


def assert_same_up_to_near_ties(reference: list[list[TokenLogprob]], other: list[list[TokenLogprob]],
                                tolerance: float) -> None:
    """`reference` and `other`: per prompt, each sampled token's logprob with its top
    alternatives (SamplingParams(logprobs=k)). Before the first differing token the logprobs
    agree within `tolerance`; at it, `other`'s token is within `tolerance` of the reference's
    best (and listed among its top alternatives)."""
    for prompt, (want, got) in enumerate(zip(reference, other, strict=True)):
        split = first_divergence([t.token_id for t in want], [t.token_id for t in got])
        for step in range(split):
            assert abs(want[step].logprob - got[step].logprob) <= tolerance, (prompt, step, want[step], got[step])
        if split < len(want):
            alternatives = {top.token_id: top.logprob for top in want[split].top}
            chosen = got[split].token_id
            assert chosen in alternatives, (prompt, split, got[split], want[split])
            assert want[split].logprob - alternatives[chosen] <= tolerance, (prompt, split, want[split], chosen)


def assert_greedy_near_argmax(model: torch.nn.Module, prompt: list[int], sampled: list[TokenLogprob],
                              tolerance: float) -> None:
    """Teacher-force `model` (a transformers causal LM, on the CPU) on `prompt` plus the engine's
    greedy tokens: every token must be the reference's argmax up to `tolerance`, with the
    reference's logprob. Checks every step, not only those before a first flip."""
    tokens = prompt + [t.token_id for t in sampled]
    with torch.no_grad():
        logits = model(torch.tensor([tokens])).logits[0, len(prompt) - 1:-1].double()
    logprobs = torch.log_softmax(logits, dim=-1)
    for step, token in enumerate(sampled):
        best = logprobs[step].max().item()
        want = logprobs[step, token.token_id].item()
        assert best - want <= tolerance, (step, token, best, want)
        assert abs(token.logprob - want) <= tolerance, (step, token, want)

"""Sampler masks and seeding on synthetic logits (no model needed)."""

from __future__ import annotations

import torch

from pagefleet.platform.protocol.sampling import SamplingParams
from pagefleet.workers.engine.sampler import Sampler, _apply_top_k_top_p_min_p
from pagefleet.workers.engine.sequence import Sequence

VOCAB = 50


def _seq(params: SamplingParams, choice_index: int = 0, outputs: list[int] | None = None) -> Sequence:
    return Sequence("r", choice_index, [1, 2, 3], params, 16, output_token_ids=list(outputs or []))


def _logits(rows: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(rows, VOCAB, generator=torch.Generator().manual_seed(seed)) * 3


def test_top_k_keeps_exactly_k_tokens():
    logits = _logits(2)
    params = [SamplingParams(top_k=5), SamplingParams(top_k=1)]
    masked = _apply_top_k_top_p_min_p(logits, params, torch.device("cpu"))
    assert torch.isfinite(masked[0]).sum() == 5
    assert torch.isfinite(masked[1]).sum() == 1
    assert set(torch.isfinite(masked[0]).nonzero().flatten().tolist()) == set(
        logits[0].topk(5).indices.tolist()
    )


def test_top_p_keeps_smallest_nucleus():
    logits = _logits(1, seed=3)
    masked = _apply_top_k_top_p_min_p(logits, [SamplingParams(top_p=0.5)], torch.device("cpu"))
    probs = logits[0].softmax(-1)
    kept = torch.isfinite(masked[0])
    assert probs[kept].sum() >= 0.5
    # dropping the least likely kept token would fall under the threshold
    assert probs[kept].sum() - probs[kept].min() < 0.5


def test_min_p_drops_tokens_under_fraction_of_max():
    logits = _logits(1, seed=4)
    masked = _apply_top_k_top_p_min_p(logits, [SamplingParams(min_p=0.2)], torch.device("cpu"))
    probs = logits[0].softmax(-1)
    assert torch.equal(torch.isfinite(masked[0]), probs >= 0.2 * probs.max())


def test_seeded_rows_ignore_batch_neighbours():
    sampler = Sampler([0], torch.device("cpu"), seed=0)
    logits = _logits(3, seed=5)
    seeded = _seq(SamplingParams(temperature=1.0, seed=42))
    alone = sampler(logits[1:2], [seeded]).token_ids
    crowd = [_seq(SamplingParams(temperature=1.0)), seeded, _seq(SamplingParams(temperature=0.7))]
    together = sampler(logits, crowd).token_ids
    assert together[1] == alone[0]


def test_sampling_follows_the_distribution():
    sampler = Sampler([0], torch.device("cpu"), seed=1)
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1] + [1e-9] * (VOCAB - 3)]))
    counts = torch.zeros(VOCAB)
    seqs = [_seq(SamplingParams(temperature=1.0))] * 400
    for token in sampler(logits.expand(400, -1), seqs).token_ids:
        counts[token] += 1
    assert counts[3:].sum() == 0
    assert abs(counts[0] / 400 - 0.7) < 0.08


def test_greedy_takes_argmax_and_penalties_change_it():
    sampler = Sampler([0], torch.device("cpu"), seed=0)
    logits = torch.zeros(1, VOCAB)
    logits[0, 7] = 2.0
    logits[0, 8] = 1.9
    assert sampler(logits, [_seq(SamplingParams(temperature=0))]).token_ids == [7]
    penalised = _seq(SamplingParams(temperature=0, frequency_penalty=0.5), outputs=[7])
    assert sampler(logits, [penalised]).token_ids == [8]
    repeated = _seq(SamplingParams(temperature=0, repetition_penalty=1.5), outputs=[7])
    assert sampler(logits, [repeated]).token_ids == [8]


def test_min_tokens_masks_eos_and_stop_tokens():
    sampler = Sampler([0], torch.device("cpu"), seed=0)
    logits = torch.zeros(1, VOCAB)
    logits[0, 0] = 5.0  # EOS
    logits[0, 9] = 4.0  # a stop token id
    params = SamplingParams(temperature=0, min_tokens=2, stop_token_ids=[9])
    assert sampler(logits, [_seq(params)]).token_ids not in ([0], [9])
    assert sampler(logits, [_seq(params, outputs=[3, 4])]).token_ids == [0]


def test_logprobs_report_sampled_token_and_top_k():
    sampler = Sampler([0], torch.device("cpu"), seed=0)
    logits = _logits(1, seed=6)
    out = sampler(logits, [_seq(SamplingParams(temperature=0, logprobs=3))])
    lp = out.logprobs[0]
    reference = logits[0].log_softmax(-1)
    assert lp.top_token_ids == reference.topk(3).indices.tolist()
    assert abs(lp.logprob - reference[out.token_ids[0]].item()) < 1e-5


def test_bf16_logits_compute_in_float32():
    """The LM head hands over logits in the model's dtype: greedy rows take their argmax as
    they are (the same as after widening), edits and softmax run on float32 values."""
    sampler = Sampler([0], torch.device("cpu"), seed=0)
    logits = _logits(4, seed=7).to(torch.bfloat16)
    greedy = [_seq(SamplingParams(temperature=0)) for _ in range(4)]
    assert sampler(logits, greedy).token_ids == logits.float().argmax(-1).tolist()
    # 1.995 is a float32 value only: in bf16 it would round to a tie that index 7 wins.
    edited = torch.zeros(1, VOCAB, dtype=torch.bfloat16)
    edited[0, 7] = 1.9921875
    edited[0, 8] = 2.0
    penalised = _seq(SamplingParams(temperature=0, frequency_penalty=0.005), outputs=[8])
    assert sampler(edited, [penalised]).token_ids == [8]
    out = sampler(logits[:1], [_seq(SamplingParams(temperature=0, logprobs=2))])
    reference = logits[0].float().log_softmax(-1)
    assert abs(out.logprobs[0].logprob - reference[out.token_ids[0]].item()) < 1e-6

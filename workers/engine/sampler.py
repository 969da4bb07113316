"""Turns one step's logits into next tokens, per-row sampling parameters and all.

The only host synchronisation is reading the chosen ids (and logprobs when asked for).
Random draws use the exponential-race trick (argmax of p / q with q ~ Exp(1)), which samples
exactly from p; a seeded row draws its noise from a generator keyed by (seed, choice index,
output position), so its tokens do not depend on which other requests share the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pagefleet.workers.engine.sequence import Sequence

_SEED_MASK = (1 << 63) - 1


@dataclass(frozen=True, slots=True)
class SampledLogprobs:
    """Log-probability of the sampled token and the top alternatives (raw model distribution)."""

    logprob: float
    top_token_ids: list[int]
    top_logprobs: list[float]


@dataclass(frozen=True, slots=True)
class SamplerOutput:
    token_ids: list[int]
    logprobs: list[SampledLogprobs | None]


class Sampler:
    def __init__(self, stop_token_ids: list[int], device: torch.device, seed: int) -> None:
        self.eos_token_ids = stop_token_ids
        self.device = device
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)

    def __call__(self, logits: torch.Tensor, seqs: list[Sequence]) -> SamplerOutput:
        # logits: [num_seqs, vocab] float32
        raw_logits = logits
        if any(_has_penalties(seq) for seq in seqs):
            logits = self._apply_penalties(logits.clone(), seqs)
        if any(seq.num_output_tokens < seq.params.min_tokens for seq in seqs):
            logits = self._mask_stop_tokens(logits if logits is not raw_logits else logits.clone(), seqs)
        token_ids = self._choose(logits, seqs)
        logprobs = self._logprobs(raw_logits, token_ids, seqs)
        return SamplerOutput(token_ids.tolist(), logprobs)

    def _choose(self, logits: torch.Tensor, seqs: list[Sequence]) -> torch.Tensor:
        chosen = logits.argmax(dim=-1)
        random_rows = [i for i, seq in enumerate(seqs) if not seq.params.greedy]
        if not random_rows:
            return chosen
        rows = torch.tensor(random_rows, device=self.device)
        params = [seqs[i].params for i in random_rows]
        temperature = torch.tensor([p.temperature for p in params], device=self.device)
        scaled = logits[rows] / temperature[:, None]
        scaled = _apply_top_k_top_p_min_p(scaled, params, self.device)
        probs = scaled.softmax(dim=-1)
        noise = self._exponential_noise(probs.shape, [seqs[i] for i in random_rows])
        chosen[rows] = (probs / noise).argmax(dim=-1)
        return chosen

    def _exponential_noise(self, shape: torch.Size, seqs: list[Sequence]) -> torch.Tensor:
        noise = torch.empty(shape, device=self.device).exponential_(generator=self.generator)
        for row, seq in enumerate(seqs):
            if seq.params.seed is not None:
                key = hash((seq.params.seed, seq.choice_index, seq.num_output_tokens)) & _SEED_MASK
                generator = torch.Generator(device=self.device)
                generator.manual_seed(key)
                noise[row].exponential_(generator=generator)
        return noise.clamp_min_(1e-20)

    def _apply_penalties(self, logits: torch.Tensor, seqs: list[Sequence]) -> torch.Tensor:
        for row, seq in enumerate(seqs):
            p = seq.params
            if not _has_penalties(seq):
                continue
            if p.repetition_penalty != 1.0:
                seen = torch.tensor(seq.prompt_token_ids + seq.output_token_ids, device=self.device)
                values = logits[row, seen]
                logits[row, seen] = torch.where(
                    values > 0, values / p.repetition_penalty, values * p.repetition_penalty
                )
            if seq.output_token_ids and (p.presence_penalty or p.frequency_penalty):
                counts = torch.bincount(
                    torch.tensor(seq.output_token_ids, device=self.device), minlength=logits.shape[1]
                ).to(logits.dtype)
                logits[row] -= p.frequency_penalty * counts + p.presence_penalty * (counts > 0)
        return logits

    def _mask_stop_tokens(self, logits: torch.Tensor, seqs: list[Sequence]) -> torch.Tensor:
        for row, seq in enumerate(seqs):
            if seq.num_output_tokens < seq.params.min_tokens:
                stop_ids = list(seq.params.stop_token_ids or ())
                if not seq.params.ignore_eos:
                    stop_ids += self.eos_token_ids
                if stop_ids:
                    logits[row, stop_ids] = float("-inf")
        return logits

    def _logprobs(
        self, raw_logits: torch.Tensor, token_ids: torch.Tensor, seqs: list[Sequence]
    ) -> list[SampledLogprobs | None]:
        rows = [i for i, seq in enumerate(seqs) if seq.params.logprobs is not None]
        result: list[SampledLogprobs | None] = [None] * len(seqs)
        if not rows:
            return result
        index = torch.tensor(rows, device=self.device)
        logprobs = raw_logits[index].log_softmax(dim=-1)
        num_top = max(seqs[i].params.logprobs or 0 for i in rows)
        top_values, top_ids = logprobs.topk(max(num_top, 1), dim=-1)
        sampled = logprobs.gather(1, token_ids[index][:, None]).squeeze(1)
        top_values_l, top_ids_l, sampled_l = top_values.tolist(), top_ids.tolist(), sampled.tolist()
        for j, row in enumerate(rows):
            k = seqs[row].params.logprobs or 0
            result[row] = SampledLogprobs(sampled_l[j], top_ids_l[j][:k], top_values_l[j][:k])
        return result


def _has_penalties(seq: Sequence) -> bool:
    p = seq.params
    return p.repetition_penalty != 1.0 or p.presence_penalty != 0.0 or p.frequency_penalty != 0.0


def _apply_top_k_top_p_min_p(logits: torch.Tensor, params: list, device: torch.device) -> torch.Tensor:
    """Mask tokens outside top-k, outside the top-p nucleus, or under min_p * max prob."""
    if all(p.top_k == 0 and p.top_p >= 1.0 and p.min_p == 0.0 for p in params):
        return logits
    vocab = logits.shape[-1]
    top_k = torch.tensor([p.top_k if p.top_k > 0 else vocab for p in params], device=device)
    top_p = torch.tensor([p.top_p for p in params], device=device)
    min_p = torch.tensor([p.min_p for p in params], device=device)
    sorted_logits, sorted_ids = logits.sort(dim=-1, descending=True)
    ranks = torch.arange(vocab, device=device)
    mask = ranks[None, :] >= top_k[:, None]
    sorted_logits = sorted_logits.masked_fill(mask, float("-inf"))
    probs = sorted_logits.softmax(dim=-1)
    mask |= (probs.cumsum(dim=-1) - probs) > top_p[:, None]
    mask |= probs < min_p[:, None] * probs[:, :1]
    sorted_logits = sorted_logits.masked_fill(mask, float("-inf"))
    return torch.empty_like(logits).scatter_(-1, sorted_ids, sorted_logits)

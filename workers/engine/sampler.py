"""Turns one step's logits into next tokens, per-row sampling parameters and all.

`sample` leaves the chosen ids on the device (the next step can read them there) and starts
one asynchronous copy to pinned host memory; `DeviceSample.to_host` waits for that copy alone,
never for the whole stream, so the host can read step N while step N+1 runs.
Random draws use the exponential-race trick (argmax of p / q with q ~ Exp(1)), which samples
exactly from p; a seeded row draws its noise from a generator keyed by (seed, choice index,
output position), so its tokens do not depend on which other requests share the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pagefleet.workers.engine.pinned import PinnedRing
from pagefleet.workers.engine.sequence import Sequence
from pagefleet.workers.engine.structured import apply_grammar_masks

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


@dataclass(frozen=True, slots=True)
class _LogprobTensors:
    rows: list[int]  # rows of the batch that asked for logprobs
    num_top: list[int]  # how many alternatives each of those rows asked for
    sampled: torch.Tensor  # [len(rows)] float32, on the host once ready
    top_values: torch.Tensor  # [len(rows), max top]
    top_ids: torch.Tensor


@dataclass(frozen=True, slots=True)
class DeviceSample:
    """One step's choices: `token_ids` on the device, host copies in flight until `ready`."""

    token_ids: torch.Tensor  # [num_seqs] int64, device
    host_token_ids: torch.Tensor  # the same ids, copied asynchronously (pinned on CUDA)
    logprobs: _LogprobTensors | None
    ready: torch.cuda.Event | None  # recorded after the copies; None on the CPU

    def to_host(self) -> SamplerOutput:
        if self.ready is not None:
            self.ready.synchronize()
        token_ids = self.host_token_ids.tolist()
        result: list[SampledLogprobs | None] = [None] * len(token_ids)
        lp = self.logprobs
        if lp is not None:
            sampled, values, ids = lp.sampled.tolist(), lp.top_values.tolist(), lp.top_ids.tolist()
            for j, (row, k) in enumerate(zip(lp.rows, lp.num_top, strict=True)):
                result[row] = SampledLogprobs(sampled[j], ids[j][:k], values[j][:k])
        return SamplerOutput(token_ids, result)


class Sampler:
    def __init__(self, stop_token_ids: list[int], device: torch.device, seed: int) -> None:
        self.eos_token_ids = stop_token_ids
        self.device = device
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)
        # Up to 4 copies a step, read back one step later (two steps overlap at most).
        self._host_copies = PinnedRing(slots=16)

    def __call__(self, logits: torch.Tensor, seqs: list[Sequence]) -> SamplerOutput:
        return self.sample(logits, seqs).to_host()

    def sample(self, logits: torch.Tensor, seqs: list[Sequence]) -> DeviceSample:
        """Choose one token per row without waiting for the device. `seqs[i]` holds the
        tokens before the one being chosen (penalties read their values, so a caller with a
        token still in flight must settle it first: `needs_token_values`)."""
        # logits: [num_seqs, vocab] in the model's dtype; greedy rows take their argmax as
        # they are, everything that computes with the values (edits, softmax) widens first.
        raw_logits = logits
        has_bias = any(seq.params.logit_bias for seq in seqs)
        has_penalties = any(_has_penalties(seq) for seq in seqs)
        has_min_tokens = any(seq.num_output_tokens < seq.params.min_tokens for seq in seqs)
        constrained = [row for row, seq in enumerate(seqs) if seq.grammar is not None]
        if has_bias or has_penalties or has_min_tokens or constrained:
            # once; every edit below is in place (logprobs read raw)
            logits = raw_logits.to(torch.float32, copy=True)
        if has_bias:
            self._apply_logit_bias(logits, seqs)
        if has_penalties:
            self._apply_penalties(logits, seqs)
        if has_min_tokens:
            self._mask_stop_tokens(logits, seqs)
        if constrained:
            apply_grammar_masks(logits, constrained, [seqs[row].grammar for row in constrained])
        token_ids = self._choose(logits, seqs)
        logprobs = self._logprobs(raw_logits, token_ids, seqs)
        if self.device.type != "cuda":
            return DeviceSample(token_ids, token_ids, logprobs, None)
        to_host = self._host_copies.to_host
        host_ids = to_host(token_ids)
        if logprobs is not None:
            logprobs = _LogprobTensors(
                logprobs.rows, logprobs.num_top, to_host(logprobs.sampled),
                to_host(logprobs.top_values), to_host(logprobs.top_ids),
            )
        return DeviceSample(token_ids, host_ids, logprobs, self._host_copies.fence)

    def _choose(self, logits: torch.Tensor, seqs: list[Sequence]) -> torch.Tensor:
        chosen = logits.argmax(dim=-1)
        random_rows = [i for i, seq in enumerate(seqs) if not seq.params.greedy]
        if not random_rows:
            return chosen
        rows = torch.tensor(random_rows, device=self.device)
        params = [seqs[i].params for i in random_rows]
        temperature = torch.tensor([p.temperature for p in params], device=self.device)
        scaled = logits[rows].float() / temperature[:, None]
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

    def _apply_logit_bias(self, logits: torch.Tensor, seqs: list[Sequence]) -> torch.Tensor:
        """OpenAI's logit_bias: each listed token's logit moves by its value (+-100 in effect
        forces or forbids it); ids were checked against the vocabulary on admission."""
        rows: list[int] = []
        cols: list[int] = []
        values: list[float] = []
        for row, seq in enumerate(seqs):
            for token_id, value in (seq.params.logit_bias or {}).items():
                rows.append(row)
                cols.append(token_id)
                values.append(value)
        index = (torch.tensor(rows, device=self.device), torch.tensor(cols, device=self.device))
        logits.index_put_(index, torch.tensor(values, dtype=logits.dtype, device=self.device),
                          accumulate=True)
        return logits

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
    ) -> _LogprobTensors | None:
        rows = [i for i, seq in enumerate(seqs) if seq.params.logprobs is not None]
        if not rows:
            return None
        index = torch.tensor(rows, device=self.device)
        logprobs = raw_logits[index].float().log_softmax(dim=-1)
        num_top = [seqs[i].params.logprobs or 0 for i in rows]
        top_values, top_ids = logprobs.topk(max(max(num_top), 1), dim=-1)
        sampled = logprobs.gather(1, token_ids[index][:, None]).squeeze(1)
        return _LogprobTensors(rows, num_top, sampled, top_values, top_ids)


def needs_token_values(seq: Sequence) -> bool:
    """Whether sampling this sequence reads the values of its earlier tokens: penalties do,
    and so does a grammar, whose matcher must have accepted every earlier token."""
    return seq.grammar is not None or _has_penalties(seq)


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

"""Log-probabilities of a prompt's own tokens (vLLM's `prompt_logprobs`, and `echo` with
`logprobs`), from one extra forward pass over the prompt.

Why a separate pass rather than the scheduled prefill: prefix caching skips the prompt tokens
it finds cached and chunked prefill splits the rest across steps, so the batched step does not
see every prompt position; a request that asks for prompt logprobs pays one more prefill
instead of every request paying for the bookkeeping. The pass runs on a scratch KV cache of
its own (`ModelRunner.forward_prompt`), so the shared cache and the scheduler never see it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from pagefleet.platform.protocol.messages import TokenLogprob, TopLogprob

_ROWS_PER_CHUNK = 256  # logits rows materialised at once: [256, vocab] float32


@torch.inference_mode()
def prompt_logprobs(hidden: torch.Tensor, compute_logits: Callable[[torch.Tensor], torch.Tensor],
                    prompt_ids: list[int], num_top: int,
                    token_text: Callable[[int], str]) -> list[TokenLogprob]:
    """`hidden` `[num_tokens, hidden_size]`: row i predicts prompt token i + 1. One entry per
    prompt token, with `num_top` alternatives; nothing predicts the first, so entry 0 only
    names it (logprob 0, no alternatives) and is answered as null."""
    targets = torch.tensor(prompt_ids[1:], dtype=torch.long, device=hidden.device)
    entries = [TokenLogprob(prompt_ids[0], token_text(prompt_ids[0]), 0.0, [])]
    for start in range(0, len(targets), _ROWS_PER_CHUNK):
        chunk = targets[start:start + _ROWS_PER_CHUNK]
        logprobs = compute_logits(hidden[start:start + len(chunk)]).float().log_softmax(dim=-1)
        chosen = logprobs.gather(1, chunk[:, None]).squeeze(1).tolist()
        top_values, top_ids = logprobs.topk(max(num_top, 1), dim=-1)
        for row, (token_id, logprob) in enumerate(zip(chunk.tolist(), chosen, strict=True)):
            top = [TopLogprob(t, token_text(t), v) for t, v in
                   zip(top_ids[row, :num_top].tolist(), top_values[row, :num_top].tolist(), strict=True)]
            entries.append(TokenLogprob(token_id, token_text(token_id), logprob, top))
    return entries

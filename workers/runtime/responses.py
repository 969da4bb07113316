"""OpenAI response objects for finished async jobs, built from a request's transcript.

The gateway builds the same shapes for its synchronous endpoints; a job's `result` must equal
what `/v1/chat/completions` or `/v1/completions` would have answered for the same request.
"""

from __future__ import annotations

from typing import Any

from pagefleet.platform.protocol import FinalEvent, RequestEnvelope, TokenLogprob
from pagefleet.workers.runtime.transcript import Choice, Transcript


def _bytes(token: str) -> list[int]:
    return list(token.encode("utf-8", errors="replace"))


def chat_logprobs(logprobs: list[TokenLogprob]) -> dict[str, Any]:
    return {"content": [
        {"token": lp.token, "logprob": lp.logprob, "bytes": _bytes(lp.token),
         "top_logprobs": [{"token": t.token, "logprob": t.logprob, "bytes": _bytes(t.token)}
                          for t in lp.top]}
        for lp in logprobs]}


def completion_logprobs(logprobs: list[TokenLogprob]) -> dict[str, Any]:
    offsets, position = [], 0
    for lp in logprobs:
        offsets.append(position)
        position += len(lp.token)
    return {
        "tokens": [lp.token for lp in logprobs],
        "token_logprobs": [lp.logprob for lp in logprobs],
        "top_logprobs": [{t.token: t.logprob for t in lp.top} for lp in logprobs],
        "text_offset": offsets,
    }


def _chat_choice(index: int, choice: Choice, finish_reason: str) -> dict[str, Any]:
    return {
        "index": index,
        "message": {"role": "assistant", "content": choice.text},
        "logprobs": chat_logprobs(choice.logprobs) if choice.logprobs is not None else None,
        "finish_reason": finish_reason,
    }


def _completion_choice(index: int, choice: Choice, finish_reason: str) -> dict[str, Any]:
    return {
        "index": index,
        "text": choice.text,
        "logprobs": completion_logprobs(choice.logprobs) if choice.logprobs is not None else None,
        "finish_reason": finish_reason,
    }


def openai_response(envelope: RequestEnvelope, transcript: Transcript, final: FinalEvent) -> dict:
    """The `chat.completion` or `text_completion` object for a finished request."""
    chat = envelope.kind == "chat"
    build = _chat_choice if chat else _completion_choice
    return {
        "id": envelope.job_id or envelope.request_id,  # the gateway's response id for a job
        "object": "chat.completion" if chat else "text_completion",
        "created": int(envelope.created_at),
        "model": envelope.model,
        "choices": [build(i, c, reason) for i, (c, reason)
                    in enumerate(zip(transcript.choices, final.finish_reasons, strict=True))],
        "usage": {"prompt_tokens": final.usage.prompt_tokens,
                  "completion_tokens": final.usage.completion_tokens,
                  "total_tokens": final.usage.total_tokens},
    }

"""OpenAI response objects (`chat.completion`, `text_completion` and their stream chunks) and
the pure functions that build them from the protocol's events.

One definition for both sides that answer a request: the gateway for synchronous and
streaming requests, the worker for async jobs, whose `result` must equal what the synchronous
endpoint would have answered. Torch-free (msgspec only), so the gateway can import it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import msgspec

from pagefleet.platform.protocol.messages import RequestEnvelope, TokenLogprob, Usage


class CompletionLogprobs(msgspec.Struct):
    tokens: list[str]
    token_logprobs: list[float | None]  # None: an echoed first prompt token (nothing predicts it)
    top_logprobs: list[dict[str, float] | None] | None
    text_offset: list[int]


class PromptLogprob(msgspec.Struct):
    """vLLM's shape of one prompt logprob (`prompt_logprobs` maps token id -> this)."""

    logprob: float
    rank: int | None
    decoded_token: str


PromptLogprobs = list[dict[str, PromptLogprob] | None]


class CompletionChoice(msgspec.Struct, omit_defaults=True):
    """The last three fields are vLLM's extensions, left out unless asked for."""

    index: int
    text: str
    logprobs: CompletionLogprobs | None
    finish_reason: str | None
    prompt_logprobs: PromptLogprobs | None = None
    prompt_token_ids: list[int] | None = None
    token_ids: list[int] | None = None


class _Response(msgspec.Struct):
    """What every response object and stream chunk starts with."""

    id: str
    created: int
    model: str


class Completion(_Response):
    choices: list[CompletionChoice]
    usage: Usage | None = None
    object: Literal["text_completion"] = "text_completion"


class TopLogprobOut(msgspec.Struct):
    token: str
    logprob: float
    bytes: list[int] | None


class ChatTokenLogprob(msgspec.Struct):
    token: str
    logprob: float
    bytes: list[int] | None
    top_logprobs: list[TopLogprobOut]


class ChatLogprobs(msgspec.Struct):
    content: list[ChatTokenLogprob] | None


class FunctionCall(msgspec.Struct):
    name: str
    arguments: str  # JSON text, as OpenAI sends it


class ToolCall(msgspec.Struct):
    id: str
    function: FunctionCall
    type: Literal["function"] = "function"


class AssistantMessage(msgspec.Struct, omit_defaults=True):
    """`tool_calls` is left out when there are none; `content` is null beside tool calls."""

    role: Literal["assistant"]
    content: str | None
    tool_calls: list[ToolCall] | None = None


class FunctionDelta(msgspec.Struct, omit_defaults=True):
    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(msgspec.Struct, omit_defaults=True):
    """A piece of a streamed tool call: the first of a call carries its id, type and name."""

    index: int
    function: FunctionDelta
    id: str | None = None
    type: Literal["function"] | None = None


class ChatChoice(msgspec.Struct, omit_defaults=True):
    index: int
    message: AssistantMessage
    logprobs: ChatLogprobs | None
    finish_reason: str | None
    prompt_logprobs: PromptLogprobs | None = None
    prompt_token_ids: list[int] | None = None
    token_ids: list[int] | None = None


class ChatCompletion(_Response):
    choices: list[ChatChoice]
    usage: Usage | None = None
    object: Literal["chat.completion"] = "chat.completion"


class ChatDelta(msgspec.Struct, omit_defaults=True):
    role: str | None = None
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChatChunkChoice(msgspec.Struct):
    index: int
    delta: ChatDelta
    logprobs: ChatLogprobs | None = None
    finish_reason: str | None = None


class ChatCompletionChunk(_Response):
    choices: list[ChatChunkChoice]
    usage: Usage | None = None
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"


# OpenAI streams completions as `text_completion` objects of the very same shape (the SDK
# parses both with its `Completion` type), so a chunk is a `Completion`.
CompletionChunk = Completion


@dataclass(frozen=True, slots=True)
class PromptPart:
    """What a choice says about its prompt: text echoed before its own (completions' `echo`),
    the prompt's ids (`return_token_ids`) and logprobs (entry 0 only names the first token),
    and whether the request asked for `prompt_logprobs` (echo may need them without)."""

    echo: str | None = None
    token_ids: list[int] | None = None
    logprobs: list[TokenLogprob] | None = None
    report_logprobs: bool = False


@dataclass(frozen=True, slots=True)
class FinishedChoice:
    """One choice of a finished request: its text, its token logprobs (None when the request
    did not ask for them) and why it stopped; with tool calls parsed out of the text, `text`
    is what remains as content (None: nothing)."""

    text: str | None
    logprobs: list[TokenLogprob] | None
    finish_reason: str | None
    tool_calls: list[ToolCall] | None = None
    token_ids: list[int] | None = None  # return_token_ids
    prompt: PromptPart | None = None


def token_bytes(token: str) -> list[int]:
    """UTF-8 bytes of a token text; a lone surrogate becomes `?` rather than an error."""
    return list(token.encode("utf-8", errors="replace"))


def chat_logprobs(logprobs: list[TokenLogprob]) -> ChatLogprobs:
    return ChatLogprobs(content=[
        ChatTokenLogprob(token=lp.token, logprob=lp.logprob, bytes=token_bytes(lp.token),
                         top_logprobs=[TopLogprobOut(token=t.token, logprob=t.logprob,
                                                     bytes=token_bytes(t.token)) for t in lp.top])
        for lp in logprobs
    ])


def completion_logprobs(logprobs: list[TokenLogprob], chars_before: int = 0) -> CompletionLogprobs:
    """OpenAI's legacy shape; `text_offset` counts characters of the choice's token texts.
    With `logprobs: 0` (no alternatives) each position's dict holds the sampled token, as
    vLLM answers, rather than nothing."""
    offsets = []
    position = chars_before
    for lp in logprobs:
        offsets.append(position)
        position += len(lp.token)
    return CompletionLogprobs(
        tokens=[lp.token for lp in logprobs],
        token_logprobs=[lp.logprob for lp in logprobs],
        top_logprobs=[{t.token: t.logprob for t in lp.top} if lp.top else {lp.token: lp.logprob}
                      for lp in logprobs],
        text_offset=offsets,
    )


def prompt_part(envelope: RequestEnvelope, token_ids: list[int] | None,
                logprobs: list[TokenLogprob] | None) -> PromptPart | None:
    """What the choices of `envelope` say about its prompt, from what its worker sent."""
    echo = envelope.prompt if envelope.echo and isinstance(envelope.prompt, str) else None
    report = envelope.params.prompt_logprobs is not None
    if echo is None and not envelope.return_token_ids and not report:
        return None
    return PromptPart(echo, token_ids if envelope.return_token_ids else None, logprobs, report)


def vllm_prompt_logprobs(entries: list[TokenLogprob]) -> PromptLogprobs:
    """vLLM's `prompt_logprobs`: null for the first token, then token id -> logprob, rank
    (1 for the most likely; null when the token is not among the alternatives) and text."""
    result: PromptLogprobs = [None]
    for entry in entries[1:]:
        ranks = {t.token_id: rank for rank, t in enumerate(entry.top, start=1)}
        position = {str(t.token_id): PromptLogprob(t.logprob, ranks[t.token_id], t.token) for t in entry.top}
        position[str(entry.token_id)] = PromptLogprob(entry.logprob, ranks.get(entry.token_id), entry.token)
        result.append(position)
    return result


def echoed_logprobs(prompt: list[TokenLogprob], generated: list[TokenLogprob]) -> CompletionLogprobs:
    """Completions' logprobs with `echo`: the prompt's tokens first, the first one without a
    logprob, as vLLM answers."""
    logprobs = completion_logprobs([*prompt, *generated])
    logprobs.token_logprobs[0] = None
    if logprobs.top_logprobs is not None:
        logprobs.top_logprobs[0] = None
    return logprobs


def extensions(prompt: PromptPart | None, token_ids: list[int] | None = None) -> dict:
    """vLLM's extension fields of a choice (None: left out); a stream's opening chunk has only
    the prompt's."""
    prompt = prompt or PromptPart()
    return {"prompt_logprobs": vllm_prompt_logprobs(prompt.logprobs)
            if prompt.report_logprobs and prompt.logprobs else None,
            "prompt_token_ids": prompt.token_ids, "token_ids": token_ids}


def chat_completion(response_id: str, created: int, model: str,
                    choices: Sequence[FinishedChoice], usage: Usage) -> ChatCompletion:
    return ChatCompletion(id=response_id, created=created, model=model, usage=usage, choices=[
        ChatChoice(index=i, message=AssistantMessage("assistant", c.text, c.tool_calls),
                   logprobs=None if c.logprobs is None else chat_logprobs(c.logprobs),
                   finish_reason=c.finish_reason, **extensions(c.prompt, c.token_ids))
        for i, c in enumerate(choices)])


def _completion_choice(i: int, c: FinishedChoice) -> CompletionChoice:
    echo = c.prompt.echo if c.prompt is not None else None
    logprobs = None
    if c.logprobs is not None:
        logprobs = (echoed_logprobs(c.prompt.logprobs, c.logprobs)
                    if echo is not None and c.prompt.logprobs else completion_logprobs(c.logprobs))
    return CompletionChoice(index=i, text=(echo or "") + (c.text or ""), logprobs=logprobs,
                            finish_reason=c.finish_reason, **extensions(c.prompt, c.token_ids))


def completion(response_id: str, created: int, model: str,
               choices: Sequence[FinishedChoice], usage: Usage) -> Completion:
    return Completion(id=response_id, created=created, model=model, usage=usage,
                      choices=[_completion_choice(i, c) for i, c in enumerate(choices)])

"""Result events -> OpenAI response objects and stream chunks (pure, no I/O).

Events of sub-request k (the k-th prompt) land on choice `k * n + index`. A delta whose
`offset` is behind what a choice already holds is a replay (a resumed worker or a re-read) and
is dropped, so clients see each token once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial

from pagefleet.platform.gateway.completions.params import PreparedRequest
from pagefleet.platform.gateway.delivery import SourcedEvent
from pagefleet.platform.protocol import DeltaEvent, ErrorEvent, FinalEvent, TokenLogprob, Usage
from pagefleet.platform.protocol.embeddings import EmbeddingList, embedding_list
from pagefleet.platform.protocol.openai import (
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatDelta,
    Completion,
    CompletionChoice,
    CompletionChunk,
    FinishedChoice,
    PromptPart,
    chat_completion,
    chat_logprobs,
    completion,
    completion_logprobs,
    echoed_logprobs,
    extensions,
    prompt_part,
)
from pagefleet.platform.protocol.tool_parsers import StreamPiece, ToolCallStream, finished_choice
from pagefleet.platform.protocol.tools import call_id

WholeResponse = ChatCompletion | Completion | EmbeddingList  # what a request that does not stream gets


@dataclass(slots=True)
class ChoiceState:
    texts: list[str] = field(default_factory=list)
    num_tokens: int = 0
    num_chars: int = 0  # of token texts streamed so far, for completions' text_offset
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None
    tools: ToolCallStream | None = None  # chat with tools: splits text into content and calls
    token_ids: list[int] = field(default_factory=list)


class ResultAccumulator:
    """Collects the events of all sub-requests of one HTTP request."""

    def __init__(self, prepared: PreparedRequest) -> None:
        self.prepared = prepared
        num_choices = prepared.n * len(prepared.envelopes)
        self.tool_spec = prepared.envelopes[0].tools if prepared.kind == "chat" else None
        self.choices = [ChoiceState(tools=None if self.tool_spec is None else ToolCallStream(
                            self.tool_spec, self._call_ids(i))) for i in range(num_choices)]
        self.usage = Usage(prompt_tokens=0, completion_tokens=0, total_tokens=0)
        self.num_prompt_tokens: dict[int, int] = {}  # per sub-request, from its deltas
        self.prompt_token_ids: dict[int, list[int]] = {}  # per sub-request, when asked for
        self.prompt_logprobs: dict[int, list[TokenLogprob]] = {}
        self.embeddings: list[bytes | None] = [None] * len(prepared.envelopes)  # embedding requests

    def choice_index(self, source: int, index: int) -> int:
        return source * self.prepared.n + index

    def add_delta(self, source: int, delta: DeltaEvent) -> DeltaEvent | None:
        """Record a delta; returns it, or None when it replays tokens already held."""
        index = self.choice_index(source, delta.index)
        if not 0 <= delta.index < self.prepared.n:
            return None
        state = self.choices[index]
        if delta.offset < state.num_tokens:
            return None
        if delta.num_prompt_tokens is not None:
            self.num_prompt_tokens[source] = delta.num_prompt_tokens
        if delta.prompt_token_ids is not None:
            self.prompt_token_ids[source] = delta.prompt_token_ids
        if delta.prompt_logprobs is not None:
            self.prompt_logprobs[source] = delta.prompt_logprobs
        state.texts.append(delta.text)
        state.token_ids.extend(delta.token_ids)
        state.num_tokens = delta.offset + len(delta.token_ids)
        state.logprobs.extend(delta.logprobs or [])
        if delta.finish_reason is not None:
            state.finish_reason = delta.finish_reason
        return delta

    def record_deltas(self, batch: Sequence[SourcedEvent]) -> list[SourcedEvent]:
        """Record the deltas of a batch in order (`add_delta`); returns the batch without the
        replays, and without what follows an error (the stream ends there)."""
        kept = []
        for item in batch:
            if isinstance(item.event, DeltaEvent):
                if self.add_delta(item.source, item.event) is not None:
                    kept.append(item)
                continue
            kept.append(item)
            if isinstance(item.event, ErrorEvent):
                break
        return kept

    def add_final(self, source: int, final: FinalEvent) -> list[int]:
        """Record a final event; returns the choices it finished that no delta had finished."""
        newly_finished = []
        for i, reason in enumerate(final.finish_reasons[: self.prepared.n]):
            state = self.choices[self.choice_index(source, i)]
            if state.finish_reason is None:
                state.finish_reason = reason
                newly_finished.append(self.choice_index(source, i))
        if final.embedding is not None:
            self.embeddings[source] = final.embedding
        self.usage = Usage(
            prompt_tokens=self.usage.prompt_tokens + final.usage.prompt_tokens,
            completion_tokens=self.usage.completion_tokens + final.usage.completion_tokens,
            total_tokens=self.usage.total_tokens + final.usage.total_tokens,
        )
        return newly_finished

    # ---- whole responses ------------------------------------------------------------------

    def chat_completion(self) -> ChatCompletion:
        p = self.prepared
        return chat_completion(p.response_id, p.created, p.model, self._finished(), self.usage)

    def completion(self) -> Completion:
        p = self.prepared
        return completion(p.response_id, p.created, p.model, self._finished(), self.usage)

    def _call_ids(self, index: int) -> partial[str]:
        return partial(call_id, self.prepared.response_id, index)

    def _prompt_part(self, source: int) -> PromptPart | None:
        return prompt_part(self.prepared.envelopes[source], self.prompt_token_ids.get(source),
                           self.prompt_logprobs.get(source))

    def _finished(self) -> list[FinishedChoice]:
        p = self.prepared
        return [finished_choice("".join(s.texts), s.logprobs if p.logprobs else None,
                                s.finish_reason, self.tool_spec, self._call_ids(i),
                                s.token_ids if p.envelopes[0].return_token_ids else None,
                                self._prompt_part(i // p.n))
                for i, s in enumerate(self.choices)]

    def embedding_list(self) -> EmbeddingList:
        """Input k's vector at index k; a final without one (an aborted input) is a bug upstream."""
        p = self.prepared
        if any(vector is None for vector in self.embeddings):
            raise RuntimeError(f"{p.response_id}: an input ended without an embedding")
        return embedding_list(p.model, self.embeddings, self.usage.prompt_tokens, p.encoding_format)

    def response(self) -> WholeResponse:
        if self.prepared.kind == "embedding":
            return self.embedding_list()
        return self.chat_completion() if self.prepared.kind == "chat" else self.completion()

    # ---- stream chunks --------------------------------------------------------------------

    def first_chunks(self) -> list[ChatCompletionChunk]:
        """Chat streams open every choice with the assistant role, as OpenAI does."""
        if self.prepared.kind != "chat":
            return []
        return [self._chat_chunk(ChatChunkChoice(index=i, delta=ChatDelta(role="assistant", content="")))
                for i in range(len(self.choices))]

    def delta_chunks(self, source: int, delta: DeltaEvent) -> list[ChatCompletionChunk | CompletionChunk]:
        """The chunks of a delta already recorded by `add_delta` (none while a tool call is
        being held back), or of several recorded ones merged (`merge_delta`)."""
        index = self.choice_index(source, delta.index)
        p = self.prepared
        if p.kind == "chat":
            logprobs = chat_logprobs(delta.logprobs or []) if p.logprobs else None
            tools = self.choices[index].tools
            if tools is None:
                return [self._chat_chunk(ChatChunkChoice(index=index, delta=ChatDelta(content=delta.text),
                                                         logprobs=logprobs,
                                                         finish_reason=delta.finish_reason))]
            piece = tools.feed(delta.text)
            reason = delta.finish_reason
            if reason is not None:
                rest = tools.finish()
                piece = StreamPiece(piece.content + rest.content, piece.calls + rest.calls)
                reason = tools.finish_reason(reason)
            if not (piece.content or piece.calls or reason or logprobs):
                return []
            return [self._chat_chunk(ChatChunkChoice(index=index, delta=_piece_delta(piece),
                                                     logprobs=logprobs, finish_reason=reason))]
        chunks = self._echo_chunks(source, index) if delta.offset == 0 else []
        state = self.choices[index]
        logprobs = completion_logprobs(delta.logprobs or [], state.num_chars) if p.logprobs else None
        state.num_chars += sum(len(lp.token) for lp in delta.logprobs or [])
        token_ids = list(delta.token_ids) if p.envelopes[source].return_token_ids else None
        return [*chunks, self._completion_chunk(CompletionChoice(
            index=index, text=delta.text, logprobs=logprobs, finish_reason=delta.finish_reason,
            token_ids=token_ids))]

    def _echo_chunks(self, source: int, index: int) -> list[CompletionChunk]:
        """A streamed choice opens with its prompt when asked (echo, prompt ids or logprobs),
        as vLLM streams it: one chunk before the first generated text."""
        prompt = self._prompt_part(source)
        if prompt is None:
            return []
        logprobs = None
        if prompt.echo is not None and self.prepared.logprobs and prompt.logprobs:
            logprobs = echoed_logprobs(prompt.logprobs, [])
            self.choices[index].num_chars += sum(len(lp.token) for lp in prompt.logprobs)
        choice = CompletionChoice(index=index, text=prompt.echo or "", logprobs=logprobs,
                                  finish_reason=None, **extensions(prompt))
        return [self._completion_chunk(choice)]

    def finish_chunks(self, index: int) -> list[ChatCompletionChunk | CompletionChunk]:
        """The chunks that finish a choice: what a tool-call stream still held, then the reason."""
        reason = self.choices[index].finish_reason
        if self.prepared.kind != "chat":
            return [self._completion_chunk(CompletionChoice(index=index, text="", logprobs=None,
                                                            finish_reason=reason))]
        chunks: list[ChatCompletionChunk | CompletionChunk] = []
        tools = self.choices[index].tools
        if tools is not None:
            piece = tools.finish()
            if piece.content or piece.calls:
                chunks.append(self._chat_chunk(ChatChunkChoice(index=index, delta=_piece_delta(piece))))
            reason = tools.finish_reason(reason)
        chunks.append(self._chat_chunk(ChatChunkChoice(index=index, delta=ChatDelta(), finish_reason=reason)))
        return chunks

    def usage_chunk(self) -> ChatCompletionChunk | CompletionChunk:
        p = self.prepared
        cls = ChatCompletionChunk if p.kind == "chat" else CompletionChunk
        return cls(id=p.response_id, created=p.created, model=p.model, choices=[], usage=self.usage)

    def running_usage(self) -> Usage | None:
        """Usage so far, for every chunk of a stream with `continuous_usage_stats`."""
        if not self.prepared.continuous_usage:
            return None
        prompt = sum(self.num_prompt_tokens.values())
        completion = sum(state.num_tokens for state in self.choices)
        return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)

    def _chat_chunk(self, choice: ChatChunkChoice) -> ChatCompletionChunk:
        p = self.prepared
        return ChatCompletionChunk(id=p.response_id, created=p.created, model=p.model, choices=[choice],
                                   usage=self.running_usage())

    def _completion_chunk(self, choice: CompletionChoice) -> CompletionChunk:
        p = self.prepared
        return CompletionChunk(id=p.response_id, created=p.created, model=p.model, choices=[choice],
                               usage=self.running_usage())



def _piece_delta(piece: StreamPiece) -> ChatDelta:
    return ChatDelta(content=piece.content or None, tool_calls=piece.calls or None)

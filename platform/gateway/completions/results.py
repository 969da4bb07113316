"""Result events -> OpenAI response objects and stream chunks (pure, no I/O).

Events of sub-request k (the k-th prompt) land on choice `k * n + index`. A delta whose
`offset` is behind what a choice already holds is a replay (a resumed worker or a re-read) and
is dropped, so clients see each token once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pagefleet.platform.gateway.completions.params import PreparedRequest
from pagefleet.platform.protocol import DeltaEvent, FinalEvent, TokenLogprob, Usage
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
    chat_completion,
    chat_logprobs,
    completion,
    completion_logprobs,
)


@dataclass(slots=True)
class ChoiceState:
    texts: list[str] = field(default_factory=list)
    num_tokens: int = 0
    num_chars: int = 0  # of token texts, for completions' text_offset
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None


class ResultAccumulator:
    """Collects the events of all sub-requests of one HTTP request."""

    def __init__(self, prepared: PreparedRequest) -> None:
        self.prepared = prepared
        num_choices = prepared.n * len(prepared.envelopes)
        self.choices = [ChoiceState() for _ in range(num_choices)]
        self.usage = Usage(prompt_tokens=0, completion_tokens=0, total_tokens=0)
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
        state.texts.append(delta.text)
        state.num_tokens = delta.offset + len(delta.token_ids)
        state.logprobs.extend(delta.logprobs or [])
        state.num_chars += sum(len(lp.token) for lp in delta.logprobs or [])
        if delta.finish_reason is not None:
            state.finish_reason = delta.finish_reason
        return delta

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

    def _finished(self) -> list[FinishedChoice]:
        return [FinishedChoice("".join(s.texts), s.logprobs if self.prepared.logprobs else None,
                               s.finish_reason) for s in self.choices]

    def embedding_list(self) -> EmbeddingList:
        """Input k's vector at index k; a final without one (an aborted input) is a bug upstream."""
        p = self.prepared
        if any(vector is None for vector in self.embeddings):
            raise RuntimeError(f"{p.response_id}: an input ended without an embedding")
        return embedding_list(p.model, self.embeddings, self.usage.prompt_tokens, p.encoding_format)

    def response(self) -> ChatCompletion | Completion | EmbeddingList:
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

    def delta_chunk(self, source: int, delta: DeltaEvent) -> ChatCompletionChunk | CompletionChunk:
        """The chunk of a delta already recorded by `add_delta`."""
        index = self.choice_index(source, delta.index)
        p = self.prepared
        if p.kind == "chat":
            logprobs = chat_logprobs(delta.logprobs or []) if p.logprobs else None
            return self._chat_chunk(ChatChunkChoice(index=index, delta=ChatDelta(content=delta.text),
                                                    logprobs=logprobs,
                                                    finish_reason=delta.finish_reason))
        chars_before = self.choices[index].num_chars - sum(len(lp.token) for lp in delta.logprobs or [])
        logprobs = completion_logprobs(delta.logprobs or [], chars_before) if p.logprobs else None
        return self._completion_chunk(CompletionChoice(index=index, text=delta.text, logprobs=logprobs,
                                                       finish_reason=delta.finish_reason))

    def finish_chunk(self, index: int) -> ChatCompletionChunk | CompletionChunk:
        reason = self.choices[index].finish_reason
        if self.prepared.kind == "chat":
            return self._chat_chunk(ChatChunkChoice(index=index, delta=ChatDelta(), finish_reason=reason))
        return self._completion_chunk(CompletionChoice(index=index, text="", logprobs=None,
                                                       finish_reason=reason))

    def usage_chunk(self) -> ChatCompletionChunk | CompletionChunk:
        p = self.prepared
        cls = ChatCompletionChunk if p.kind == "chat" else CompletionChunk
        return cls(id=p.response_id, created=p.created, model=p.model, choices=[], usage=self.usage)

    def _chat_chunk(self, choice: ChatChunkChoice) -> ChatCompletionChunk:
        p = self.prepared
        return ChatCompletionChunk(id=p.response_id, created=p.created, model=p.model, choices=[choice])

    def _completion_chunk(self, choice: CompletionChoice) -> CompletionChunk:
        p = self.prepared
        return CompletionChunk(id=p.response_id, created=p.created, model=p.model, choices=[choice])


"""Coalescing a request's queued events: what a client assembles from the chunks is the same
however the events were batched (several sources, several choices, replays, logprobs, tool
calls), and a batch of many deltas streams as one chunk per choice."""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from pagefleet.platform.gateway.completions.coalesce import coalesce
from pagefleet.platform.gateway.completions.params import PreparedRequest
from pagefleet.platform.gateway.completions.results import ResultAccumulator
from pagefleet.platform.gateway.completions.service import batch_chunks
from pagefleet.platform.gateway.delivery import SourcedEvent
from pagefleet.platform.gateway.errors import ErrorBody
from pagefleet.platform.protocol import (
    DeltaEvent,
    ErrorEvent,
    FinalEvent,
    RequestEnvelope,
    ResultEvent,
    SamplingParams,
    TokenLogprob,
    Usage,
)
from pagefleet.platform.protocol.deltas import merge_delta
from pagefleet.platform.protocol.tools import ToolSpec

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


def prepared(kind: str, n: int, num_prompts: int, logprobs: bool = False,
             tools: ToolSpec | None = None, return_token_ids: bool = False) -> PreparedRequest:
    envelopes = [RequestEnvelope(request_id=f"r-{k}", model="m", kind=kind, params=SamplingParams(n=n),
                                 prompt="p" if kind == "completion" else None,
                                 messages=[{"role": "user", "content": "p"}] if kind == "chat" else None,
                                 created_at=1.0, tools=tools, return_token_ids=return_token_ids)
                 for k in range(num_prompts)]
    return PreparedRequest(response_id="r", model="m", kind=kind, envelopes=envelopes, n=n, created=1,
                           stream=True, include_usage=False, logprobs=logprobs)


def delta(index: int, offset: int, texts: Sequence[str], finish: str | None = None) -> DeltaEvent:
    return DeltaEvent(index=index, offset=offset, token_ids=list(range(offset, offset + len(texts))),
                      text="".join(texts), finish_reason=finish,
                      logprobs=[TokenLogprob(token_id=offset + j, token=t, logprob=-0.5)
                                for j, t in enumerate(texts)])


def final(n: int, num_tokens: int) -> FinalEvent:
    return FinalEvent(finish_reasons=["length"] * n, usage=Usage(1, n * num_tokens, 1 + n * num_tokens))


def stream(request: PreparedRequest, batches: Sequence[Sequence[SourcedEvent]]) -> tuple[list, ResultAccumulator]:
    """What the gateway streams for these batches (as `CompletionService._chunks` makes it)."""
    accumulator = ResultAccumulator(request)
    chunks: list = list(accumulator.first_chunks())
    for batch in batches:
        chunks += batch_chunks(accumulator, coalesce(accumulator.record_deltas(batch)))
    return chunks, accumulator


def client_view(chunks: list) -> dict[int, dict]:
    """Per choice, what a client assembles: text, tool calls, logprob tokens and offsets, token
    ids, finish reason."""
    view: dict[int, dict] = {}
    for chunk in chunks:
        assert not isinstance(chunk, ErrorBody)
        for choice in msgspec.to_builtins(chunk)["choices"]:
            v = view.setdefault(choice["index"], {"text": "", "calls": {}, "tokens": [], "offsets": [],
                                                  "ids": [], "finish": None})
            logprobs = choice.get("logprobs")
            if "delta" in choice:
                v["text"] += choice["delta"].get("content") or ""
                for call in choice["delta"].get("tool_calls") or []:
                    known = v["calls"].setdefault(call["index"], {"id": None, "name": "", "arguments": ""})
                    known["id"] = call.get("id") or known["id"]
                    known["name"] += call["function"].get("name") or ""
                    known["arguments"] += call["function"].get("arguments") or ""
                v["tokens"] += [lp["token"] for lp in (logprobs or {}).get("content") or []]
            else:
                v["text"] += choice["text"]
                v["tokens"] += (logprobs or {}).get("tokens", [])
                v["offsets"] += (logprobs or {}).get("text_offset", [])
                v["ids"] += choice.get("token_ids") or []
            if choice["finish_reason"] is not None:
                assert v["finish"] is None, "a choice finished twice"
                v["finish"] = choice["finish_reason"]
    return view


def test_coalesce_folds_per_source_and_choice_in_arrival_order() -> None:
    batch = [SourcedEvent(0, delta(0, 0, ["a"])), SourcedEvent(0, delta(1, 0, ["x"])),
             SourcedEvent(1, delta(0, 0, ["p"])), SourcedEvent(1, final(1, 1)),
             SourcedEvent(0, delta(0, 1, ["b"])), SourcedEvent(0, delta(1, 1, ["y"], "length")),
             SourcedEvent(0, delta(0, 2, ["c"], "length")), SourcedEvent(0, final(2, 3))]
    assert coalesce(batch) == [SourcedEvent(0, delta(0, 0, ["a", "b", "c"], "length")),
                               SourcedEvent(0, delta(1, 0, ["x", "y"], "length")),
                               SourcedEvent(1, delta(0, 0, ["p"])), SourcedEvent(1, final(1, 1)),
                               SourcedEvent(0, final(2, 3))]


@st.composite
def sourced_events(draw: st.DrawFn) -> list[SourcedEvent]:
    events = []
    for _ in range(draw(st.integers(0, 30))):
        source, index = draw(st.integers(0, 2)), draw(st.integers(0, 1))
        if draw(st.integers(0, 9)) == 0:
            events.append(SourcedEvent(source, final(2, 1)))
        else:
            offset = draw(st.integers(0, 4))
            events.append(SourcedEvent(source, delta(index, offset, ["t"] * draw(st.integers(0, 2)),
                                                     draw(st.sampled_from([None, None, "stop"])))))
    return events


@given(sourced_events())
def test_coalesce_is_merge_delta_applied_to_each_source(batch: list[SourcedEvent]) -> None:
    result = coalesce(batch)
    for source in {item.source for item in batch}:
        expected: list[ResultEvent] = []
        for item in batch:
            if item.source == source:
                if isinstance(item.event, DeltaEvent):
                    merge_delta(expected, item.event)
                else:
                    expected.append(item.event)
        assert [item.event for item in result if item.source == source] == expected


def test_a_repeat_before_new_tokens_loses_none_of_them() -> None:
    """A worker retrying a pipeline that partly reached Redis writes a delta twice; folding the
    repeat with the next delta would make one that starts behind, dropped whole."""
    request = prepared("completion", n=1, num_prompts=1)
    first, second = delta(0, 0, ["a"]), delta(0, 1, ["b"], "length")
    batch = [SourcedEvent(0, first), SourcedEvent(0, first), SourcedEvent(0, second),
             SourcedEvent(0, final(1, 2))]
    chunks, accumulator = stream(request, [batch])
    assert client_view(chunks)[0]["text"] == "ab"
    assert accumulator.completion().choices[0].text == "ab"


def test_many_queued_deltas_stream_as_one_chunk_per_choice() -> None:
    request = prepared("chat", n=2, num_prompts=2, logprobs=True)
    events = []
    for source in range(2):
        for step in range(20):
            events += [SourcedEvent(source, delta(i, step, [f" w{source}{i}{step}"],
                                                  "length" if step == 19 else None)) for i in range(2)]
        events.append(SourcedEvent(source, final(2, 20)))
    one_by_one, _ = stream(request, [[e] for e in events])
    at_once, _ = stream(request, [events])
    assert client_view(at_once) == client_view(one_by_one)
    assert client_view(at_once)[3]["text"] == "".join(f" w11{step}" for step in range(20))
    content = [c for c in at_once if c.choices[0].delta.content]
    assert len(content) == 4 and len(one_by_one) - len(at_once) == 4 * 19


def test_an_error_ends_the_batch() -> None:
    request = prepared("completion", n=1, num_prompts=2)
    batch = [SourcedEvent(0, delta(0, 0, ["a"])), SourcedEvent(1, ErrorEvent(type="x", message="boom")),
             SourcedEvent(0, delta(0, 1, ["b"]))]
    chunks, _ = stream(request, [batch])
    assert [c.choices[0].text for c in chunks[:-1]] == ["a"]
    assert isinstance(chunks[-1], ErrorBody) and chunks[-1].message == "boom"


@st.composite
def worker_output(draw: st.DrawFn) -> tuple[list[SourcedEvent], dict[int, list[str]]]:
    """What 2 prompts x 2 choices' workers write (a few tokens a delta, a retried pipeline now and
    then), interleaved across the two result streams, and each choice's tokens."""
    per_source: list[list[SourcedEvent]] = []
    tokens: dict[int, list[str]] = {}
    for source in range(2):
        lengths = [draw(st.integers(1, 8)) for _ in range(2)]
        events: list[SourcedEvent] = []
        offsets = [0, 0]
        while offsets != lengths:
            index = draw(st.sampled_from([i for i in range(2) if offsets[i] < lengths[i]]))
            size = draw(st.integers(1, lengths[index] - offsets[index]))
            texts = [f" t{source}{index}{j}" for j in range(offsets[index], offsets[index] + size)]
            finish = "length" if offsets[index] + size == lengths[index] else None
            events.append(SourcedEvent(source, delta(index, offsets[index], texts, finish)))
            offsets[index] += size
            if draw(st.integers(0, 4)) == 0:  # the pipeline failed after Redis took it: sent again
                start = draw(st.integers(0, len(events) - 1))
                events += events[start:]
        events.append(SourcedEvent(source, final(2, 0)))
        per_source.append(events)
        for index in range(2):
            tokens[source * 2 + index] = [f" t{source}{index}{j}" for j in range(lengths[index])]
    merged: list[SourcedEvent] = []
    while any(per_source):
        source = draw(st.sampled_from([s for s in range(2) if per_source[s]]))
        merged.append(per_source[source].pop(0))
    return merged, tokens


def batched(draw: st.DrawFn, events: list[SourcedEvent]) -> list[list[SourcedEvent]]:
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(events) - 1)), max_size=len(events)))))
    bounds = [0, *cuts, len(events)]
    return [events[a:b] for a, b in itertools.pairwise(bounds) if events[a:b]]


@settings(max_examples=60, deadline=None)
@given(worker_output(), st.sampled_from(["chat", "completion"]), st.data())
def test_any_batching_streams_every_token_once_in_order(
        output: tuple[list[SourcedEvent], dict[int, list[str]]], kind: str, data: st.DataObject) -> None:
    events, tokens = output
    request = prepared(kind, n=2, num_prompts=2, logprobs=True, return_token_ids=True)
    one_by_one, whole_reference = stream(request, [[e] for e in events])
    chunks, whole = stream(request, batched(data.draw, events))
    view = client_view(chunks)
    assert view == client_view(one_by_one)
    for choice, texts in tokens.items():
        assert view[choice]["text"] == "".join(texts)
        assert view[choice]["tokens"] == texts and view[choice]["finish"] == "length"
        if kind == "completion":
            assert view[choice]["ids"] == list(range(len(texts)))
            assert view[choice]["offsets"] == [sum(map(len, texts[:j])) for j in range(len(texts))]
    response = whole.response()
    assert msgspec.to_builtins(response) == msgspec.to_builtins(whole_reference.response())


def test_tool_calls_stream_the_same_however_batched() -> None:
    tools = ToolSpec(tools=[WEATHER])
    request = prepared("chat", n=1, num_prompts=1, tools=tools)
    texts = ["Let me", " check.", "\n<tool_call>", '\n{"name": "get_weather", ',
             '"arguments": {"city": ', '"Paris"}}', "\n</tool_call>"]
    events = [SourcedEvent(0, delta(0, j, [t], "stop" if j == len(texts) - 1 else None))
              for j, t in enumerate(texts)]
    events.append(SourcedEvent(0, FinalEvent(finish_reasons=["stop"], usage=Usage(1, 7, 8))))
    one_by_one, _ = stream(request, [[e] for e in events])
    for batches in ([events], [events[:3], events[3:]], [events[:5], events[5:6], events[6:]]):
        chunks, whole = stream(request, batches)
        view = client_view(chunks)
        assert view == client_view(one_by_one)
        assert view[0]["text"] == "Let me check.\n" and view[0]["finish"] == "tool_calls"
        (call,) = view[0]["calls"].values()
        assert call["name"] == "get_weather" and json.loads(call["arguments"]) == {"city": "Paris"}
        assert whole.chat_completion().choices[0].message.tool_calls[0].function.name == "get_weather"

"""Chat chunks -> `response.*` events (responses/events.py): item boundaries, numbering and
failures, on chunk sequences the live tests cannot script (content before a call)."""

from __future__ import annotations

import msgspec
import pytest

from pagefleet.platform.gateway.errors import ErrorBody
from pagefleet.platform.gateway.responses.conversation import ItemIds
from pagefleet.platform.gateway.responses.events import ResponseEvents, encode_events
from pagefleet.platform.gateway.responses.schemas import (
    FunctionCallItem,
    MessageItem,
    ResponseObject,
)
from pagefleet.platform.protocol.openai import (
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatDelta,
    FunctionDelta,
    ToolCallDelta,
)

IDS = ItemIds("s")
OPENING = ResponseObject(id="resp_1", created_at=0, model="m", status="in_progress", output=[],
                         usage=None, tools=[], tool_choice="auto", parallel_tool_calls=True)


def chunk(content: str | None = None, calls: list[ToolCallDelta] | None = None) -> ChatCompletionChunk:
    return ChatCompletionChunk(id="resp_1", created=0, model="m", choices=[
        ChatChunkChoice(index=0, delta=ChatDelta(content=content, tool_calls=calls))])


def call(index: int, arguments: str, name: str | None = None) -> ToolCallDelta:
    first = name is not None
    return ToolCallDelta(index=index, id=f"call_{index}" if first else None,
                         type="function" if first else None,
                         function=FunctionDelta(name=name, arguments=arguments))


def test_content_then_calls_close_each_item_before_the_next() -> None:
    events = ResponseEvents(OPENING, IDS)
    made = [*events.start(), *events.feed(chunk(content="")),  # the role chunk: nothing
            *events.feed(chunk(content="Let me")), *events.feed(chunk(content=" check.")),
            *events.feed(chunk(calls=[call(0, '{"a":', "f"), call(1, "{}", "g")])),
            *events.feed(chunk(calls=[call(1, "")]))]
    final = msgspec.structs.replace(OPENING, status="completed")
    made += events.finish(final)
    assert [(e["type"], e.get("output_index")) for e in made] == [
        ("response.created", None), ("response.in_progress", None),
        ("response.output_item.added", 0), ("response.content_part.added", 0),
        ("response.output_text.delta", 0), ("response.output_text.delta", 0),
        ("response.output_text.done", 0), ("response.content_part.done", 0),
        ("response.output_item.done", 0),
        ("response.output_item.added", 1), ("response.function_call_arguments.delta", 1),
        ("response.function_call_arguments.done", 1), ("response.output_item.done", 1),
        ("response.output_item.added", 2), ("response.function_call_arguments.delta", 2),
        ("response.function_call_arguments.done", 2), ("response.output_item.done", 2),
        ("response.completed", None)]
    assert [e["sequence_number"] for e in made] == list(range(len(made)))
    done = [e["item"] for e in made if e["type"] == "response.output_item.done"]
    assert done == [
        MessageItem(id=IDS.message(), content=done[0].content),
        FunctionCallItem(id=IDS.function_call(0), call_id="call_0", name="f", arguments='{"a":'),
        FunctionCallItem(id=IDS.function_call(1), call_id="call_1", name="g", arguments="{}")]
    assert done[0].content[0].text == "Let me check."
    added = made[2]["item"]
    assert added.status == "in_progress" and added.content == []  # a snapshot, not the live item
    assert made[-1]["response"] is final


def test_a_failure_keeps_what_was_sent_and_maps_the_code() -> None:
    events = ResponseEvents(OPENING, IDS)
    events.start()
    events.feed(chunk(content=" half"))
    error, failed = events.fail(ErrorBody(message="too long", type="invalid_request_error",
                                          code="context_length_exceeded"))
    assert (error["type"], error["code"], error["message"]) == ("error", "context_length_exceeded", "too long")
    response = failed["response"]
    assert failed["type"] == "response.failed" and response.status == "failed"
    assert response.error == {"code": "invalid_prompt", "message": "too long"}
    [item] = response.output
    assert item.status == "incomplete" and item.content[0].text == " half"
    timeout = ResponseEvents(OPENING, IDS).fail(ErrorBody(message="late", type="timeout"))[1]
    assert timeout["response"].error["code"] == "server_error"


def test_arguments_before_their_call_are_a_bug_not_an_event() -> None:
    with pytest.raises(ValueError, match="came before the call"):
        ResponseEvents(OPENING, IDS).feed(chunk(calls=[call(0, "{}")]))


def test_encoded_events_are_named_server_sent_events() -> None:
    events = ResponseEvents(OPENING, IDS)
    body = encode_events(events.start())
    first, second, rest = body.split(b"\n\n", 2)
    assert first.startswith(b"event: response.created\ndata: {")
    assert second.startswith(b"event: response.in_progress\ndata: {")
    assert rest == b""

"""The typed `response.*` server-sent events of a streamed response (pure, no I/O).

`ResponseEvents` turns the chat chunks of the one choice a response is served as (the same
chunks a chat stream sends, as the worker's tokens arrive) into OpenAI's event sequence:
created, in_progress; per output item added, content part added, text or argument deltas,
done; then completed (or incomplete), each with an increasing `sequence_number`. Text goes out
token by token. Tool calls go out as the chat stream releases them: a named `tool_choice`
streams its arguments as they come, `auto` and `required` calls only once the answer has
ended (the chat stream holds them until they parse), each as one arguments delta.

A failure after the stream has begun ends it with an `error` event and `response.failed`
(holding what was sent so far), never with a stream that just stops.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import msgspec

from pagefleet.platform.gateway.errors import ErrorBody
from pagefleet.platform.gateway.responses.conversation import ItemIds
from pagefleet.platform.gateway.responses.schemas import (
    FunctionCallItem,
    MessageItem,
    OutputItem,
    OutputText,
    ResponseObject,
)
from pagefleet.platform.protocol.openai import ChatCompletionChunk, ToolCallDelta

# Error types -> OpenAI's `response.error.code` words (else `server_error`); our own code
# stays on the `error` event.
_FAILED_CODES = {"invalid_request_error": "invalid_prompt", "rate_limit_error": "rate_limit_exceeded"}


@dataclass(slots=True)
class _OpenItem:
    """The output item being streamed: a message (`text`) or a function call (`text` holds
    its arguments so far). The text is kept in pieces, joined when read: `+=` on an
    attribute would copy all of it for every delta, O(n^2) over a long answer."""

    index: int
    item_id: str
    kind: Literal["message", "function_call"]
    pieces: list[str] = field(default_factory=list)
    name: str = ""
    call_id: str = ""

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    def item(self, status: str) -> OutputItem:
        if self.kind == "message":
            return MessageItem(id=self.item_id, content=[OutputText(self.text)], status=status)
        return FunctionCallItem(id=self.item_id, call_id=self.call_id, name=self.name,
                                arguments=self.text, status=status)


class ResponseEvents:
    """The events of one streamed response, numbered in the order they are made."""

    def __init__(self, opening: ResponseObject, ids: ItemIds) -> None:
        """`opening` is the response as `in_progress` (no output yet); `ids` name its items,
        the same ids the stored response gets."""
        self.opening = opening
        self.ids = ids
        self.closed: list[OutputItem] = []
        self.open: _OpenItem | None = None
        self.num_events = 0

    def start(self) -> list[dict]:
        return [self._event("response.created", response=self.opening),
                self._event("response.in_progress", response=self.opening)]

    def feed(self, chunk: ChatCompletionChunk) -> list[dict]:
        """Events for one chat chunk (none for the role, finish and usage chunks)."""
        events: list[dict] = []
        for choice in chunk.choices:
            if choice.delta.content:
                events += self._text(choice.delta.content)
            for call in choice.delta.tool_calls or []:
                events += self._call(call)
        return events

    def finish(self, response: ResponseObject) -> list[dict]:
        """Close the open item and end with the finished (and stored) response."""
        kind = "response.incomplete" if response.status == "incomplete" else "response.completed"
        return [*self._close(), self._event(kind, response=response)]

    def fail(self, error: ErrorBody) -> list[dict]:
        """End a stream that failed after it began: the error as it is, then the response as
        failed with the items sent so far (the one cut short marked incomplete)."""
        output = [*self.closed, *([self.open.item("incomplete")] if self.open else [])]
        failed = msgspec.structs.replace(self.opening, status="failed", output=output, error={
            "code": _FAILED_CODES.get(error.type, "server_error"), "message": error.message})
        return [self._event("error", code=error.code, message=error.message, param=error.param),
                self._event("response.failed", response=failed)]

    # ---- items ---------------------------------------------------------------------------

    def _text(self, text: str) -> list[dict]:
        events: list[dict] = []
        item = self.open
        if item is None or item.kind != "message":
            events += self._close()
            item = self.open = _OpenItem(len(self.closed), self.ids.message(), "message")
            events += [self._event("response.output_item.added", output_index=item.index,
                                   item=MessageItem(id=item.item_id, content=[], status="in_progress")),
                       self._event("response.content_part.added", **_where(item), content_index=0,
                                   part=OutputText(""))]
        item.pieces.append(text)
        events.append(self._event("response.output_text.delta", **_where(item), content_index=0,
                                  delta=text, logprobs=[]))
        return events

    def _call(self, call: ToolCallDelta) -> list[dict]:
        """The first delta of a call carries its id and name; later ones only arguments."""
        events: list[dict] = []
        item = self.open
        if call.id is not None:
            events += self._close()
            item = self.open = _OpenItem(len(self.closed), self.ids.function_call(call.index),
                                         "function_call", name=call.function.name or "", call_id=call.id)
            events.append(self._event("response.output_item.added", output_index=item.index,
                                      item=item.item("in_progress")))
        if item is None or item.kind != "function_call":
            raise ValueError(f"arguments of tool call {call.index} came before the call")
        arguments = call.function.arguments or ""
        if arguments:
            item.pieces.append(arguments)
            events.append(self._event("response.function_call_arguments.delta", **_where(item),
                                      delta=arguments))
        return events

    def _close(self) -> list[dict]:
        item = self.open
        if item is None:
            return []
        where = _where(item)
        done = item.item("completed")
        if isinstance(done, MessageItem):
            part = done.content[0]
            events = [self._event("response.output_text.done", **where, content_index=0,
                                  text=part.text, logprobs=[]),
                      self._event("response.content_part.done", **where, content_index=0, part=part)]
        else:
            events = [self._event("response.function_call_arguments.done", **where,
                                  name=done.name, arguments=done.arguments)]
        events.append(self._event("response.output_item.done", output_index=item.index, item=done))
        self.closed.append(done)
        self.open = None
        return events

    def _event(self, kind: str, **fields: object) -> dict:
        event = {"type": kind, "sequence_number": self.num_events, **fields}
        self.num_events += 1
        return event


def _where(item: _OpenItem) -> dict:
    return {"item_id": item.item_id, "output_index": item.index}


def encode_events(events: list[dict]) -> bytes:
    return b"".join(b"event: " + event["type"].encode() + b"\ndata: " + msgspec.json.encode(event)
                    + b"\n\n" for event in events)

"""The typed `response.*` server-sent events of a streamed response.

The events follow a finished answer: the response is generated whole, then streamed as
OpenAI's event sequence (created, in_progress, per output item added / deltas / done,
completed), so SDK stream helpers work unchanged; text is not yet sent token by token.
"""

from __future__ import annotations

from collections.abc import Iterator

import msgspec

from pagefleet.platform.gateway.responses.schemas import (
    FunctionCallItem,
    MessageItem,
    ResponseObject,
)


def response_events(response: ResponseObject) -> Iterator[dict]:
    opening = msgspec.structs.replace(response, status="in_progress", output=[], usage=None)
    yield {"type": "response.created", "response": opening}
    yield {"type": "response.in_progress", "response": opening}
    for index, item in enumerate(response.output):
        where = {"item_id": item.id, "output_index": index}
        if isinstance(item, MessageItem):
            yield {"type": "response.output_item.added", "output_index": index,
                   "item": msgspec.structs.replace(item, content=[], status="in_progress")}
            for part_index, part in enumerate(item.content):
                at = {**where, "content_index": part_index}
                yield {"type": "response.content_part.added", **at,
                       "part": msgspec.structs.replace(part, text="")}
                yield {"type": "response.output_text.delta", **at, "delta": part.text, "logprobs": []}
                yield {"type": "response.output_text.done", **at, "text": part.text, "logprobs": []}
                yield {"type": "response.content_part.done", **at, "part": part}
        elif isinstance(item, FunctionCallItem):
            yield {"type": "response.output_item.added", "output_index": index,
                   "item": msgspec.structs.replace(item, arguments="", status="in_progress")}
            yield {"type": "response.function_call_arguments.delta", **where, "delta": item.arguments}
            yield {"type": "response.function_call_arguments.done", **where, "name": item.name,
                   "arguments": item.arguments}
        yield {"type": "response.output_item.done", "output_index": index, "item": item}
    done = "response.incomplete" if response.status == "incomplete" else "response.completed"
    yield {"type": done, "response": response}


def sse_events(response: ResponseObject) -> Iterator[bytes]:
    for number, event in enumerate(response_events(response)):
        event["sequence_number"] = number
        yield b"event: " + event["type"].encode() + b"\ndata: " + msgspec.json.encode(event) + b"\n\n"

"""Tool-call parsing and streaming: each format whole, and streamed in every split the text can
come in, must give the same calls and content."""

from __future__ import annotations

import json

import pytest

from pagefleet.platform.protocol.tool_parsers import (
    ToolCallStream,
    finished_choice,
    parse_hermes,
    parse_llama3_json,
    parse_output,
)
from pagefleet.platform.protocol.tools import ToolSpec, call_id, forced_output

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
TIME = {"type": "function", "function": {"name": "get_time"}}


def spec(**kwargs) -> ToolSpec:
    return ToolSpec(tools=[WEATHER, TIME], **kwargs)


def ids(k: int) -> str:
    return f"call_{k}"


def test_hermes_calls_after_content() -> None:
    text = ('Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
            '</tool_call>\n<tool_call>{"name": "get_time", "arguments": {}}</tool_call>')
    parsed = parse_hermes(text)
    assert parsed.content == "Let me check.\n"
    assert [(c.name, json.loads(c.arguments)) for c in parsed.calls] == [
        ("get_weather", {"city": "Paris"}), ("get_time", {})]


def test_hermes_unclosed_last_call_and_bad_json() -> None:
    assert parse_hermes('<tool_call>{"name": "get_time", "arguments": {}}').calls[0].name == "get_time"
    broken = "<tool_call>{not json}</tool_call>"
    assert parse_hermes(broken).calls == [] and parse_hermes(broken).content == broken
    assert parse_hermes("just text").content == "just text"


def test_llama3_json_one_or_several_calls() -> None:
    parsed = parse_llama3_json('<|python_tag|>{"name": "get_weather", "parameters": {"city": "Oslo"}}; '
                               '{"name": "get_time", "parameters": {}}')
    assert parsed.content is None
    assert [(c.name, json.loads(c.arguments)) for c in parsed.calls] == [
        ("get_weather", {"city": "Oslo"}), ("get_time", {})]
    assert parse_llama3_json("Hello {there}").calls == []
    assert parse_llama3_json('{"no_name": 1}').content == '{"no_name": 1}'


def test_without_parallel_calls_only_the_first_counts() -> None:
    text = ('<tool_call>{"name": "get_time", "arguments": {}}</tool_call>'
            '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>')
    assert [c.name for c in parse_output(text, spec()).calls] == ["get_time", "get_weather"]
    assert [c.name for c in parse_output(text, spec(parallel=False)).calls] == ["get_time"]


def test_named_and_required_outputs() -> None:
    named = parse_output('{"city": "Rome"}', spec(choice="named", name="get_weather"))
    assert [(c.name, c.arguments) for c in named.calls] == [("get_weather", '{"city": "Rome"}')]
    required = parse_output('[{"name": "get_time", "parameters": {}}]', spec(choice="required"))
    assert [(c.name, c.arguments) for c in required.calls] == [("get_time", "{}")]
    assert parse_output("[oops", spec(choice="required")).content == "[oops"


def test_forced_output_schemas() -> None:
    named = forced_output(spec(choice="named", name="get_weather"))
    assert json.loads(named.spec) == WEATHER["function"]["parameters"]
    required = json.loads(forced_output(spec(choice="required", parallel=False)).spec)
    assert required["maxItems"] == 1 and required["minItems"] == 1
    names = [item["properties"]["name"]["enum"] for item in required["items"]["anyOf"]]
    assert names == [["get_weather"], ["get_time"]]
    assert forced_output(spec()) is None
    with pytest.raises(ValueError, match="not in tools"):
        spec(choice="named", name="nope")


def test_finished_choice_reports_tool_calls() -> None:
    text = '<tool_call>{"name": "get_time", "arguments": {}}</tool_call>'
    choice = finished_choice(text, None, "stop", spec(), ids)
    assert choice.text is None and choice.finish_reason == "tool_calls"
    assert choice.tool_calls[0].id == "call_0" and choice.tool_calls[0].function.name == "get_time"
    assert finished_choice(text, None, "length", spec(), ids).finish_reason == "length"
    assert finished_choice("plain", None, "stop", spec(), ids).tool_calls is None
    assert finished_choice(text, None, "stop", None, ids).text == text


def test_call_ids_are_stable_and_distinct() -> None:
    assert call_id("r", 0, 0) == call_id("r", 0, 0)
    assert len({call_id("r", 0, 0), call_id("r", 0, 1), call_id("r", 1, 0)}) == 3


def stream_all(text: str, tool_spec: ToolSpec, size: int) -> tuple[str, dict[int, dict], str | None]:
    """Feed `text` in pieces of `size` characters; reassemble as the openai SDK does."""
    stream = ToolCallStream(tool_spec, ids)
    content, calls = "", {}
    pieces = [stream.feed(text[i:i + size]) for i in range(0, len(text), size)] + [stream.finish()]
    for piece in pieces:
        content += piece.content
        for delta in piece.calls:
            call = calls.setdefault(delta.index, {"id": None, "name": "", "arguments": ""})
            call["id"] = delta.id or call["id"]
            call["name"] += delta.function.name or ""
            call["arguments"] += delta.function.arguments or ""
    return content, calls, stream.finish_reason("stop")


@pytest.mark.parametrize("size", [1, 2, 5, 1000])
@pytest.mark.parametrize(("text", "tool_spec"), [
    ('I will look.<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>', spec()),
    ("No tools needed, <tool_ but not a call.", spec()),
    (' \n<tool_call>{"name": "get_time", "arguments": {}}</tool_call>', spec()),
    ("  ", spec()),
    ('{"name": "get_weather", "parameters": {"city": "Lima"}}', spec(parser="llama3_json")),
    ("  plain llama answer", spec(parser="llama3_json")),
    ('{"city": "Rome"}', spec(choice="named", name="get_weather")),
    ('[{"name": "get_time", "parameters": {}}]', spec(choice="required")),
])
def test_streaming_reassembles_to_the_whole_answer(text: str, tool_spec: ToolSpec, size: int) -> None:
    whole = finished_choice(text, None, "stop", tool_spec, ids)
    content, calls, reason = stream_all(text, tool_spec, size)
    expected_calls = {k: {"id": c.id, "name": c.function.name, "arguments": c.function.arguments}
                      for k, c in enumerate(whole.tool_calls or [])}
    assert calls == expected_calls
    assert content == (whole.text or "")
    assert reason == whole.finish_reason


def test_auto_streams_content_before_the_call_starts() -> None:
    stream = ToolCallStream(spec(), ids)
    assert stream.feed("Hello <tool").content == "Hello "
    assert stream.feed("_call>{").content == ""  # held: a call has started
    assert stream.feed("x").content == ""

"""Model output -> OpenAI `tool_calls`, whole or as stream deltas (pure, torch-free).

Formats, chosen per model in the registry (`tool_parser`):
- `hermes` (Hermes, Qwen 2/2.5/3, and the fallback rendering for templates without tools):
  `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, any number, after optional text;
- `llama3_json` (Llama 3.x): the whole output is `{"name": ..., "parameters": {...}}`, several
  separated by `;`, optionally after `<|python_tag|>`.
A named `tool_choice` decodes the arguments object itself and `required` a JSON array of
`{"name", "parameters"}` (tools.forced_output), whatever the model's format. Output that does
not parse as calls is returned as content, never dropped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from pagefleet.platform.protocol.messages import TokenLogprob
from pagefleet.platform.protocol.openai import (
    FinishedChoice,
    FunctionCall,
    FunctionDelta,
    PromptPart,
    ToolCall,
    ToolCallDelta,
)
from pagefleet.platform.protocol.tools import ToolSpec

HERMES_START = "<tool_call>"
_HERMES_CALL = re.compile(r"<tool_call>(.*?)(?:</tool_call>|$)", re.DOTALL)
_PYTHON_TAG = "<|python_tag|>"


@dataclass(frozen=True, slots=True)
class ParsedCall:
    name: str
    arguments: str  # JSON text


@dataclass(frozen=True, slots=True)
class ParsedOutput:
    content: str | None
    calls: list[ParsedCall]


def _call(obj: object, arguments_key: str) -> ParsedCall | None:
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return None
    arguments = obj.get(arguments_key, obj.get("arguments", obj.get("parameters", {})))
    if isinstance(arguments, str):  # some models write the arguments as JSON text already
        return ParsedCall(obj["name"], arguments)
    return ParsedCall(obj["name"], json.dumps(arguments, ensure_ascii=False))


def _content(text: str) -> str | None:
    return text if text.strip() else None


def parse_hermes(text: str) -> ParsedOutput:
    start = text.find(HERMES_START)
    if start == -1:
        return ParsedOutput(_content(text), [])
    calls = []
    for match in _HERMES_CALL.finditer(text, start):
        try:
            call = _call(json.loads(match.group(1)), "arguments")
        except ValueError:
            call = None
        if call is None:
            return ParsedOutput(_content(text), [])
        calls.append(call)
    return ParsedOutput(_content(text[:start]), calls)


def parse_llama3_json(text: str) -> ParsedOutput:
    body = text.strip().removeprefix(_PYTHON_TAG).strip()
    if not body.startswith("{"):
        return ParsedOutput(_content(text), [])
    decoder = json.JSONDecoder()
    calls, position = [], 0
    while position < len(body):
        try:
            obj, position = decoder.raw_decode(body, position)
        except ValueError:
            return ParsedOutput(_content(text), [])
        call = _call(obj, "parameters")
        if call is None:
            return ParsedOutput(_content(text), [])
        calls.append(call)
        position = len(body) - len(body[position:].lstrip().removeprefix(";").lstrip())
    return ParsedOutput(None, calls)


def parse_required(text: str) -> ParsedOutput:
    try:
        items = json.loads(text)
    except ValueError:
        return ParsedOutput(_content(text), [])
    calls = [_call(item, "parameters") for item in items] if isinstance(items, list) else [None]
    if not calls or None in calls:
        return ParsedOutput(_content(text), [])
    return ParsedOutput(None, calls)  # type: ignore[arg-type]  # None ruled out above


def parse_output(text: str, spec: ToolSpec) -> ParsedOutput:
    """Without parallel calls only the first call of an `auto` answer counts (`required`
    is held to one by its grammar)."""
    if spec.choice == "named":
        return ParsedOutput(None, [ParsedCall(spec.name or "", text)])
    if spec.choice == "required":
        return parse_required(text)
    parsed = parse_hermes(text) if spec.parser == "hermes" else parse_llama3_json(text)
    return parsed if spec.parallel else ParsedOutput(parsed.content, parsed.calls[:1])


def tool_calls(parsed: ParsedOutput, ids: Callable[[int], str]) -> list[ToolCall] | None:
    return [ToolCall(id=ids(k), function=FunctionCall(name=c.name, arguments=c.arguments))
            for k, c in enumerate(parsed.calls)] or None


def finish_reason(reason: str | None, num_calls: int) -> str | None:
    """OpenAI's `tool_calls` when a choice that stopped by itself called tools."""
    return "tool_calls" if num_calls and reason == "stop" else reason


def finished_choice(text: str, logprobs: list[TokenLogprob] | None, reason: str | None,
                    spec: ToolSpec | None, ids: Callable[[int], str],
                    token_ids: list[int] | None = None, prompt: PromptPart | None = None) -> FinishedChoice:
    """A finished choice as answered: with `spec`, its tool calls parsed out of the text."""
    parsed = parse_output(text, spec) if spec is not None else None
    if parsed is None or not parsed.calls:
        return FinishedChoice(text, logprobs, reason, None, token_ids, prompt)
    return FinishedChoice(parsed.content, logprobs, finish_reason(reason, len(parsed.calls)),
                          tool_calls(parsed, ids), token_ids, prompt)


@dataclass(slots=True)
class StreamPiece:
    """What a choice's stream may send now: content text and tool-call deltas."""

    content: str = ""
    calls: list[ToolCallDelta] = field(default_factory=list)


class ToolCallStream:
    """Splits one choice's streamed text into content and tool-call deltas.

    A named choice streams its arguments as they come. `auto` streams content until the
    start of a call (a possible start is held back until it is told apart), then holds the
    rest and parses it at the end; `required` holds everything. Calls that end up unparsable
    are sent as content, so the stream and the whole answer agree.
    """

    def __init__(self, spec: ToolSpec, ids: Callable[[int], str]) -> None:
        """`ids(k)` is the id of the choice's k-th call (tools.call_id)."""
        self.spec = spec
        self.ids = ids
        self.text = ""
        self.num_sent = 0  # characters of `text` sent as content (or named-call arguments)
        self.holding = spec.choice == "required"
        self.num_calls = 0  # calls sent so far

    def finish_reason(self, reason: str | None) -> str | None:
        return finish_reason(reason, self.num_calls)

    def feed(self, text: str) -> StreamPiece:
        self.text += text
        if self.spec.choice == "named":
            return self._named_arguments()
        if self.holding:
            return StreamPiece()
        start, keep = self._call_start()
        self.holding = start is not None
        end = start if start is not None else len(self.text) - keep
        if self.num_sent == 0 and not self.text[:end].strip():
            return StreamPiece()  # leading whitespace: content only if text follows
        piece = StreamPiece(content=self.text[self.num_sent:end])
        self.num_sent = max(self.num_sent, end)
        return piece

    def finish(self) -> StreamPiece:
        """The rest, once the choice has finished."""
        if self.spec.choice == "named":
            return self._named_arguments()
        parsed = parse_output(self.text, self.spec)
        if not parsed.calls:
            piece = StreamPiece(content=self.text[self.num_sent:])
            self.num_sent = len(self.text)
            return piece
        head = parsed.content or ""
        piece = StreamPiece(content=head[self.num_sent:])
        self.num_calls = len(parsed.calls)
        piece.calls = [ToolCallDelta(index=k, id=self.ids(k), type="function",
                                     function=FunctionDelta(name=c.name, arguments=c.arguments))
                       for k, c in enumerate(parsed.calls)]
        return piece

    def _named_arguments(self) -> StreamPiece:
        arguments = self.text[self.num_sent:]
        first = self.num_sent == 0
        if not arguments and not first:
            return StreamPiece()
        self.num_sent = len(self.text)
        self.num_calls = 1
        if first:
            return StreamPiece(calls=[ToolCallDelta(index=0, id=self.ids(0), type="function",
                                                    function=FunctionDelta(name=self.spec.name,
                                                                           arguments=arguments))])
        return StreamPiece(calls=[ToolCallDelta(index=0, function=FunctionDelta(arguments=arguments))])

    def _call_start(self) -> tuple[int | None, int]:
        """Where a call starts in the unsent text (None: not yet), and how many trailing
        characters to hold back because they may begin one."""
        if self.spec.parser == "llama3_json":
            if self.text[:self.num_sent].strip():
                return None, 0  # llama3 calls are the whole output: content came first
            lead = self.text.lstrip()
            if lead.startswith(("{", _PYTHON_TAG)):
                return self.num_sent, 0
            if _PYTHON_TAG.startswith(lead):
                return None, len(self.text) - self.num_sent
            return None, 0
        start = self.text.find(HERMES_START, self.num_sent)
        if start != -1:
            return start, 0
        for keep in range(min(len(HERMES_START) - 1, len(self.text) - self.num_sent), 0, -1):
            if HERMES_START.startswith(self.text[-keep:]):
                return None, keep
        return None, 0

"""Tool calling on the wire: what a chat request asked of its tools, and the grammars that
enforce `required` and named choices.

The gateway builds a `ToolSpec` from `tools` / `tool_choice` and puts it in the envelope; the
worker renders `tools` through the chat template; both sides parse the output with the same
`spec` (tool_parsers.py), so a job's result equals the synchronous answer. `tool_choice:
none` sends no spec at all: the model neither sees nor calls tools. Torch-free.
"""

from __future__ import annotations

import hashlib
import json
from typing import Literal

import msgspec

from pagefleet.platform.protocol.sampling import StructuredOutput

ToolParserName = Literal["hermes", "llama3_json"]
ToolChoiceMode = Literal["auto", "required", "named"]
TOOL_PARSERS: tuple[ToolParserName, ...] = ("hermes", "llama3_json")
DEFAULT_TOOL_PARSER: ToolParserName = "hermes"


class ToolSpec(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """`tools` as OpenAI's tool objects (`{"type": "function", "function": {...}}`), how the
    model must use them, and which output format `auto` parses (the registry's choice)."""

    tools: list[dict]
    choice: ToolChoiceMode = "auto"
    name: str | None = None  # the function a named choice forces
    parser: ToolParserName = DEFAULT_TOOL_PARSER
    parallel: bool = True

    def __post_init__(self) -> None:
        names = function_names(self.tools)
        if self.choice == "named" and self.name not in names:
            raise ValueError(f"tool_choice names function {self.name!r}, which is not in tools")


def function_names(tools: list[dict]) -> list[str]:
    return [tool["function"]["name"] for tool in tools]


def parameters_schema(tools: list[dict], name: str) -> dict:
    """The JSON schema of a function's arguments (any object when it declares none)."""
    for tool in tools:
        if tool["function"]["name"] == name:
            return tool["function"].get("parameters") or {"type": "object"}
    raise ValueError(f"no function named {name!r}")


def forced_output(spec: ToolSpec) -> StructuredOutput | None:
    """The grammar that makes even a small model call a tool: a named choice's output is the
    function's arguments object; `required` is a JSON array of `{"name", "parameters"}` calls
    (one at most without parallel calls), as vLLM does. `auto` constrains nothing."""
    if spec.choice == "named":
        schema = parameters_schema(spec.tools, spec.name or "")
    elif spec.choice == "required":
        calls = [{"type": "object", "properties": {
                      "name": {"type": "string", "enum": [name]},
                      "parameters": parameters_schema(spec.tools, name)},
                  "required": ["name", "parameters"]}
                 for name in function_names(spec.tools)]
        schema = {"type": "array", "minItems": 1, "items": {"anyOf": calls}}
        if not spec.parallel:
            schema["maxItems"] = 1
    else:
        return None
    return StructuredOutput(kind="json_schema",
                            spec=json.dumps(schema, sort_keys=True, separators=(",", ":")))


def call_id(response_id: str, choice_index: int, call_index: int) -> str:
    """A tool call's id, derived rather than random so that a job's result, a resumed stream
    and the synchronous answer name the same call the same way."""
    digest = hashlib.sha256(f"{response_id}:{choice_index}:{call_index}".encode()).hexdigest()
    return f"call_{digest[:24]}"

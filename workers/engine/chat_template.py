"""Chat prompts -> token ids through the model's chat template, with tools.

A template that knows tools (it mentions `tools`) gets them as transformers' `tools=` and the
assistant's `tool_calls` with their arguments as objects, as the template authors expect. A
template that does not (SmolLM2's, for one) would silently drop them, so the tools are
described in the system message and past calls and results written in the Hermes format that
the `hermes` parser reads back: the model is told what it may call either way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

_HERMES_SYSTEM = (
    "You may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
    "{tools}\n</tools>\n\n"
    "For each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{{"name": <function-name>, "arguments": <args-json-object>}}\n</tool_call>'
)


@dataclass(frozen=True, slots=True)
class ChatPrompt:
    """Messages as dicts (role, content, name, tool_calls, tool_call_id) and how to render them."""

    messages: list[dict[str, Any]]
    tools: list[dict] | None = None
    add_generation_prompt: bool = True
    continue_final_message: bool = False


def render_chat(tokenizer: Any, prompt: ChatPrompt) -> list[int]:
    knows_tools = "tools" in (tokenizer.chat_template or "")
    try:
        if knows_tools:
            messages, tools = [_structured_calls(m) for m in prompt.messages], prompt.tools
        else:
            messages, tools = _hermes_messages(prompt.messages, prompt.tools), None
        ids = tokenizer.apply_chat_template(
            messages, tools=tools, add_generation_prompt=prompt.add_generation_prompt,
            continue_final_message=prompt.continue_final_message, tokenize=True)
    except Exception as exc:  # jinja2 errors, missing keys, odd shapes: the request is at fault
        raise ValueError(f"could not apply the chat template: {exc}") from exc
    if isinstance(ids, dict) or hasattr(ids, "input_ids"):
        ids = ids["input_ids"]
    return list(ids)


def _clean(message: dict[str, Any]) -> dict[str, Any]:
    """Unset optional keys left out, so templates' `is defined` tests read them right."""
    return {k: v for k, v in message.items() if v is not None or k == "content"}


def _arguments(text_or_obj: Any) -> Any:
    if isinstance(text_or_obj, str):
        try:
            return json.loads(text_or_obj)
        except ValueError:
            return text_or_obj
    return text_or_obj


def _structured_calls(message: dict[str, Any]) -> dict[str, Any]:
    message = _clean(message)
    if message.get("tool_calls"):
        message["tool_calls"] = [
            {**call, "function": {**call["function"],
                                  "arguments": _arguments(call["function"].get("arguments"))}}
            for call in message["tool_calls"]]
    return message


def _hermes_messages(messages: list[dict[str, Any]], tools: list[dict] | None) -> list[dict[str, Any]]:
    out = []
    for message in map(_clean, messages):
        if message.get("tool_calls"):
            calls = "".join(
                "\n<tool_call>\n" + json.dumps({"name": c["function"]["name"],
                                               "arguments": _arguments(c["function"].get("arguments"))})
                + "\n</tool_call>" for c in message.pop("tool_calls"))
            message["content"] = ((message.get("content") or "") + calls).lstrip("\n")
        elif message["role"] == "tool":
            message = {"role": "tool", "content": f"<tool_response>\n{message.get('content') or ''}\n</tool_response>"}
        out.append(message)
    if tools:
        system = _HERMES_SYSTEM.format(tools="\n".join(json.dumps(t) for t in tools))
        if out and out[0]["role"] == "system":
            out[0] = {**out[0], "content": f"{out[0].get('content') or ''}\n\n{system}".lstrip()}
        else:
            out.insert(0, {"role": "system", "content": system})
    return out

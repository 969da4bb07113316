"""Chat prompts with tools through the default model's real tokenizer: its template knows no
tools, so they are written in the Hermes format; a template that knows tools gets them."""

from __future__ import annotations

import copy

import pytest

from pagefleet.workers.engine.chat_template import ChatPrompt, render_chat
from pagefleet.workers.models.loader import load_tokenizer, resolve_model

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}}}}
CONVERSATION = [
    {"role": "user", "content": "Weather in Paris?", "name": None},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function",
         "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
    {"role": "tool", "content": "sunny", "tool_call_id": "call_1"},
]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(resolve_model("smollm2-135m-instruct"))


def text_of(tokenizer, prompt: ChatPrompt) -> str:
    return tokenizer.decode(render_chat(tokenizer, prompt))


def test_tools_without_template_support_are_written_in_hermes_format(tokenizer) -> None:
    text = text_of(tokenizer, ChatPrompt(copy.deepcopy(CONVERSATION), tools=[WEATHER]))
    assert "<tools>" in text and '"name": "get_weather"' in text
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>' in text
    assert "<tool_response>\nsunny\n</tool_response>" in text
    assert text.endswith("<|im_start|>assistant\n")
    assert "You are a helpful AI assistant" not in text  # our system message replaced the default


def test_continue_final_message_leaves_the_assistant_turn_open(tokenizer) -> None:
    messages = [{"role": "user", "content": "Count"}, {"role": "assistant", "content": "1, 2,"}]
    text = text_of(tokenizer, ChatPrompt(messages, add_generation_prompt=False,
                                         continue_final_message=True))
    assert text.endswith("<|im_start|>assistant\n1, 2,")
    closed = text_of(tokenizer, ChatPrompt(messages, add_generation_prompt=False))
    assert closed.endswith("1, 2,<|im_end|>\n")


def test_a_template_that_knows_tools_gets_them_with_object_arguments(tokenizer) -> None:
    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.chat_template = (
        "{% for t in tools %}TOOL {{ t.function.name }}|{% endfor %}"
        "{% for m in messages %}{{ m.role }}:{% if m.tool_calls %}"
        "{% for c in m.tool_calls %}CALL {{ c.function.name }} {{ c.function.arguments.city }}"
        "{% endfor %}{% else %}{{ m.content }}{% endif %}|{% endfor %}")
    text = text_of(tokenizer, ChatPrompt(copy.deepcopy(CONVERSATION), tools=[WEATHER]))
    assert text == "TOOL get_weather|user:Weather in Paris?|assistant:CALL get_weather Paris|tool:sunny|"


def test_a_template_error_is_a_value_error(tokenizer) -> None:
    with pytest.raises(ValueError, match="chat template"):
        render_chat(tokenizer, ChatPrompt([{"role": "user", "content": "a"}],
                                          add_generation_prompt=True, continue_final_message=True))


@pytest.mark.parametrize("messages", [[{"role": "user"}, {"content": 3}], [{"role": "assistant", "tool_calls": [{}]}]])
def test_malformed_messages_are_value_errors(tokenizer, messages) -> None:
    with pytest.raises(ValueError, match="chat template"):
        render_chat(tokenizer, ChatPrompt(messages, tools=[WEATHER]))

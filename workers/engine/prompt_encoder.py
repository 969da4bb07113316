"""Prompts to token ids, for the engine and for the callers that tokenise before it.

Tokenising (and the chat template) runs off the engine loop: a prompt of megabytes takes
seconds to encode, and in the engine loop that would freeze every other stream. `PromptEncoder`
runs it in a one-thread executor of the caller's process (the worker's, when the engine runs in
its own process) and hands the engine token ids. The tokenizer may then be used by two threads
(encoding here, incremental decoding in the engine); Hugging Face fast tokenizers allow that as
long as nobody changes their truncation/padding settings, which nothing here does.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pagefleet.workers.engine.chat_template import ChatPrompt, render_chat
from pagefleet.workers.engine.errors import PromptTooLargeError

Prompt = str | list[int] | list[dict] | ChatPrompt

MAX_CHARS_PER_TOKEN = 32
"""Characters one token can stand for, at most, in any prompt worth tokenising.

Real text averages 3-5 characters per token and the longest tokens of common vocabularies
(runs of spaces, `=====`) hold 16-30, so a prompt with more than `max_model_len * 32`
characters cannot fit the context whatever the tokenizer does. Refusing it before encoding
bounds the tokeniser's work per request by the model's context instead of by the body size.
"""


def prompt_chars(prompt: Prompt) -> int:
    """Characters of text in a prompt: the string, or every string inside chat messages."""
    if isinstance(prompt, str):
        return len(prompt)
    total = 0
    pending: list[Any] = [prompt.messages if isinstance(prompt, ChatPrompt) else prompt]
    while pending:  # iterative: message content may nest (parts lists), never recurse on input
        item = pending.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return total


def is_token_ids(prompt: Prompt) -> bool:
    return isinstance(prompt, list) and all(isinstance(t, int) for t in prompt)


def encode_prompt(tokenizer: Any | None, vocab_size: int, prompt: Prompt) -> list[int]:
    """Token ids of a prompt: ids as given (checked against the vocabulary), text encoded,
    messages through the chat template. Raises ValueError for anything else."""
    if is_token_ids(prompt):
        if not prompt:
            raise ValueError("prompt must not be empty")
        if any(t < 0 or t >= vocab_size for t in prompt):
            raise ValueError(f"prompt token ids must be in [0, {vocab_size})")
        return list(prompt)
    if tokenizer is None:
        raise ValueError("this model has no tokenizer: pass prompt token ids")
    if isinstance(prompt, str):
        if not prompt:
            raise ValueError("prompt must not be empty")
        return tokenizer.encode(prompt)
    if isinstance(prompt, list) and prompt and all(isinstance(m, dict) for m in prompt):
        prompt = ChatPrompt(prompt)
    if isinstance(prompt, ChatPrompt):
        return render_chat(tokenizer, prompt)
    raise ValueError("prompt must be a string, a list of token ids or a list of chat messages")


class PromptEncoder:
    """Encodes prompts in its own thread, refusing text too long for the context unread."""

    def __init__(self, tokenizer: Any | None, vocab_size: int, max_model_len: int) -> None:
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.max_model_len = max_model_len
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pagefleet-tokenize")

    @property
    def max_prompt_chars(self) -> int:
        return self.max_model_len * MAX_CHARS_PER_TOKEN

    async def encode(self, prompt: Prompt) -> list[int]:
        """Token ids of a prompt, encoded off the caller's loop; too much text is refused first
        with `PromptTooLargeError` (see `MAX_CHARS_PER_TOKEN`). Ids pass as given: the engine
        checks their range."""
        if is_token_ids(prompt):
            return prompt
        num_chars = prompt_chars(prompt)
        if num_chars > self.max_prompt_chars:
            raise PromptTooLargeError(num_chars, self.max_prompt_chars, self.max_model_len)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, encode_prompt, self.tokenizer,
                                          self.vocab_size, prompt)

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)

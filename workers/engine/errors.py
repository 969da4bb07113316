"""Precise exceptions for input the engine refuses."""

from __future__ import annotations


class PromptTooLongError(ValueError):
    """The prompt plus max_tokens does not fit the model's context (`max_model_len`)."""

    def __init__(self, num_prompt_tokens: int, max_tokens: int, max_model_len: int) -> None:
        self.num_prompt_tokens = num_prompt_tokens
        self.max_tokens = max_tokens
        self.max_model_len = max_model_len
        super().__init__(
            f"This model's maximum context length is {max_model_len} tokens. However, you requested "
            f"{num_prompt_tokens + max_tokens} tokens ({num_prompt_tokens} in the prompt, "
            f"{max_tokens} for the completion). Please reduce the prompt or max_tokens."
        )


class DuplicateRequestError(ValueError):
    """A request id that is already running was submitted again."""

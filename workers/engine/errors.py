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


class PromptTooLargeError(PromptTooLongError):
    """The prompt's text is so long that it cannot fit `max_model_len`, refused before tokenising.

    A subclass of `PromptTooLongError` so that callers map both to `context_length_exceeded`;
    token counts are unknown here because the point is not to spend the tokeniser on it.
    """

    def __init__(self, num_prompt_chars: int, max_prompt_chars: int, max_model_len: int) -> None:
        self.num_prompt_chars = num_prompt_chars
        self.max_prompt_chars = max_prompt_chars
        self.max_model_len = max_model_len
        ValueError.__init__(
            self,
            f"This model's maximum context length is {max_model_len} tokens. However, your prompt "
            f"has {num_prompt_chars} characters, more than the {max_prompt_chars} characters any "
            f"{max_model_len}-token prompt could hold. Please reduce the prompt.",
        )


class InvalidParameterError(ValueError):
    """A sampling parameter the engine cannot honour for this model (a token id outside its
    vocabulary, a grammar that does not compile); `param` names the request field."""

    def __init__(self, message: str, param: str) -> None:
        self.param = param
        super().__init__(message)


class EngineBusyError(RuntimeError):
    """The engine was asked to sleep while requests are running or waiting."""

    def __init__(self, num_requests: int) -> None:
        self.num_requests = num_requests
        super().__init__(f"cannot sleep while {num_requests} request(s) are unfinished: "
                         "finish or abort them first")


class EngineAsleepError(RuntimeError):
    """A request reached an engine that is asleep (standby); wake it first."""

    def __init__(self) -> None:
        super().__init__("the engine is asleep (standby): call wake() before adding requests")


class EngineGoneError(RuntimeError):
    """The engine's process exited under a running request: the request did not fail on its
    own, so a worker leaves it pending for another worker to resume instead of answering it."""

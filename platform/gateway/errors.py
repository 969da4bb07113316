"""OpenAI-shaped errors: one exception type for the gateway, and handlers that turn every
failure (ours or Litestar's) into `{"error": {"message", "type", "param", "code"}}`.

The official clients map the HTTP status to a typed exception and show `error.message`, so
the status and the shape matter more than the wording.
"""

from __future__ import annotations

import logging
import re

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

_TYPES_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
    504: "timeout_error",
}


class ErrorBody(msgspec.Struct):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(msgspec.Struct):
    error: ErrorBody


def error_specs(descriptions: dict[int, str]) -> dict[int, ResponseSpec]:
    """OpenAPI entries for a route's error statuses, all in OpenAI's error shape."""
    return {status: ResponseSpec(ErrorResponse, description=text) for status, text in descriptions.items()}


class OpenAIError(Exception):
    """An error the client should see as-is; `headers` carry e.g. Retry-After."""

    def __init__(self, status: int, message: str, *, type: str | None = None,
                 param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = ErrorBody(message=message, type=type or error_type(status), param=param,
                              code=code)
        self.headers = headers or {}


_UNKNOWN_FIELD = re.compile(r"Object contains unknown field `([^`]*)`")


def error_type(status: int) -> str:
    return _TYPES_BY_STATUS.get(status, "server_error" if status >= 500 else "invalid_request_error")


def bad_request(message: str, param: str | None = None, code: str | None = None) -> OpenAIError:
    return OpenAIError(400, message, param=param, code=code)


def model_not_found(model: str) -> OpenAIError:
    return OpenAIError(404, f"The model `{model}` does not exist.", type="invalid_request_error",
                       param="model", code="model_not_found")


def prompt_too_long(max_model_len: int, size: str, param: str) -> OpenAIError:
    return OpenAIError(400, f"This model's maximum context length is {max_model_len} tokens, and "
                       f"the prompt ({size}) cannot fit in it. Please reduce the prompt.",
                       param=param, code="context_length_exceeded")


def queue_unavailable() -> OpenAIError:
    """Redis is down or unreachable: nothing can be queued or read; retrying later is right."""
    return OpenAIError(503, "the request queue is unavailable; retry later", type="server_error",
                       code="queue_unavailable", headers={"Retry-After": "1"})


def error_response(status: int, body: ErrorBody, headers: dict[str, str] | None = None) -> Response:
    return Response(ErrorResponse(error=body), status_code=status, headers=headers or {})


def handle_openai_error(_: Request, exc: OpenAIError) -> Response:
    return error_response(exc.status, exc.body, exc.headers)


def handle_http_exception(_: Request, exc: HTTPException) -> Response:
    """Litestar's own errors: malformed JSON and schema violations (400), 404/405, 413."""
    status = exc.status_code
    param = None
    message = exc.detail
    if isinstance(exc, ValidationException) and isinstance(exc.extra, list) and exc.extra:
        first = exc.extra[0]
        if isinstance(first, dict):
            param = first.get("key") or None
            message = f"{exc.detail}: {first.get('message', '')}".rstrip(": ")
            unknown = _UNKNOWN_FIELD.search(first.get("message", ""))
            if unknown is not None:  # OpenAI's wording and the field's full path as param
                param = unknown[1] if param in (None, "data") else f"{param}.{unknown[1]}"
                message = f"Unrecognized request argument supplied: {param}"
    headers = dict(exc.headers or {})
    return error_response(status, ErrorBody(message=message, type=error_type(status), param=param),
                          headers)


def handle_redis_error(_: Request, exc: RedisError) -> Response:
    """Redis down or overloaded: the gateway cannot queue or read, which is not a bug here."""
    logger.warning("redis error in the gateway: %s", exc)
    error = queue_unavailable()
    return error_response(error.status, error.body, error.headers)


def handle_unexpected(_: Request, exc: Exception) -> Response:
    logger.exception("unhandled error in the gateway", exc_info=exc)
    return error_response(500, ErrorBody(message="internal server error", type="server_error"))


def exception_handlers() -> dict[type[Exception], object]:
    return {
        OpenAIError: handle_openai_error,
        HTTPException: handle_http_exception,
        RedisError: handle_redis_error,
        Exception: handle_unexpected,
    }

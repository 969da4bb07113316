"""One line of a batch input file -> a prepared request, or the reason it cannot run (pure).

The same checks as the synchronous endpoints (`prepare_chat` / `prepare_completion`), so a
line that would get a 400 there lands in the error file here with the same message. Preparing
is deterministic for a given line and batch, so a retried step that prepares a line again
gets the same request ids.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from pagefleet.platform.batch.records import BatchRecord, request_id
from pagefleet.platform.gateway.completions.params import (
    PreparedRequest,
    RequestContext,
    prepare_chat,
    prepare_completion,
)
from pagefleet.platform.gateway.completions.schemas import ChatCompletionRequest, CompletionRequest
from pagefleet.platform.gateway.errors import OpenAIError

MAX_CHOICES = 64


@dataclass(frozen=True, slots=True)
class BatchLine:
    line: int
    custom_id: str
    prepared: PreparedRequest


@dataclass(frozen=True, slots=True)
class BadLine:
    line: int
    custom_id: str | None
    code: str
    message: str
    param: str | None = None


def parse_line(raw: bytes, line: int, batch: BatchRecord, models: frozenset[str]) -> BatchLine | BadLine:
    try:
        item = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        return BadLine(line, None, "invalid_json", f"line {line} is not valid JSON: {exc}")
    if not isinstance(item, dict):
        return BadLine(line, None, "invalid_request", f"line {line} is not a JSON object")
    custom_id = item.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return BadLine(line, None, "missing_required_parameter",
                       "custom_id must be a non-empty string", "custom_id")
    if item.get("method") != "POST":
        return BadLine(line, custom_id, "invalid_method", "method must be POST", "method")
    if item.get("url") != batch.endpoint:
        return BadLine(line, custom_id, "invalid_url",
                       f"url must be the batch's endpoint {batch.endpoint}, got {item.get('url')!r}",
                       "url")
    body = item.get("body")
    if not isinstance(body, dict):
        return BadLine(line, custom_id, "invalid_request", "body must be a JSON object", "body")
    is_chat = batch.endpoint == "/v1/chat/completions"
    try:
        request = msgspec.convert(body, ChatCompletionRequest if is_chat else CompletionRequest)
    except msgspec.ValidationError as exc:
        return BadLine(line, custom_id, "invalid_request", f"invalid body: {exc}", "body")
    if request.model not in models:
        return BadLine(line, custom_id, "model_not_found",
                       f"The model `{request.model}` does not exist.", "body.model")
    if request.stream:
        return BadLine(line, custom_id, "invalid_request", "batch requests cannot stream",
                       "body.stream")
    context = RequestContext(response_id=request_id(batch.id, line), owner=batch.owner,
                             created_at=float(batch.created_at), deadline=None,
                             max_choices=MAX_CHOICES)
    try:
        prepared = prepare_chat(request, context) if is_chat else prepare_completion(request, context)
    except OpenAIError as exc:
        return BadLine(line, custom_id, exc.body.code or "invalid_request", exc.body.message,
                       exc.body.param)
    return BatchLine(line, custom_id, prepared)


def output_line(batch_id: str, line: int, custom_id: str | None, *, status_code: int | None = None,
                body: dict | None = None, error: dict | None = None) -> bytes:
    """One line of an output or error file, in OpenAI's shape."""
    response = None
    if status_code is not None:
        response = {"status_code": status_code, "request_id": request_id(batch_id, line),
                    "body": body}
    return msgspec.json.encode({"id": f"batch_req_{batch_id.removeprefix('batch_')}_{line}",
                                "custom_id": custom_id, "response": response, "error": error})

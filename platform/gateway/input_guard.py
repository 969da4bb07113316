"""Checks on a request body before Litestar parses it: media type, JSON depth, integer range.

Run as the app's `before_request` hook (after the API key guard, before the body is decoded),
so hostile bodies get a 4xx without reaching a decoder that would recurse 100k deep or an
encoder that cannot hold a 70-bit integer:

- POST bodies must be `application/json` (415 otherwise): a web page can then not post to an
  open local gateway with a form or text/plain body, which browsers send without a preflight.
  A route that takes another media type names it in its `opt` (`BODY_MEDIA_TYPE`: the
  /v1/files upload is multipart, bounded by its router's body limit and behind the API key);
  a POST without a body (a cancel) has nothing to check;
- arrays and objects nested deeper than `max_json_depth` are refused (400);
- every integer literal, in any field or anywhere in a job body, must fit a signed 64-bit
  integer (400): the wire format (msgpack) and the engine cannot carry more.

Strings are removed first (C-speed regex), so brackets and digits inside them do not count.
"""

from __future__ import annotations

import re
from itertools import accumulate

import anyio
from litestar import Request

from pagefleet.platform.gateway.errors import OpenAIError, bad_request

INT_MIN, INT_MAX = -(2**63), 2**63 - 1
BODY_MEDIA_TYPE = "body_media_type"  # route opt: the one non-JSON media type a route accepts
_JSON_MEDIA_TYPE = "application/json"
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
# An integer literal too long to be sure it fits: 19+ digits not part of a fraction/exponent.
_LONG_INT = re.compile(rb"(?<![\d.eE+-])-?\d{19,}(?![\d.eE])")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_THREAD_ABOVE_BYTES = 64 * 1024


def unsupported_media_type(media_type: str) -> OpenAIError:
    return OpenAIError(415, f"Content-Type must be application/json, got {media_type or 'none'!r}.",
                       code="unsupported_media_type")


def json_too_deep(body: bytes, max_depth: int) -> bool:
    """Whether arrays/objects nest deeper than `max_depth` (strings already removed).

    The bracket skeleton becomes signed steps (+1 open, -1 close) and the running sum is the
    depth: `accumulate` and `max` run in C, so a 4 MB body costs no per-byte Python loop.
    """
    if body.count(b"[") + body.count(b"{") <= max_depth:
        return False
    steps = body.translate(None, _NOT_BRACKETS).translate(_STEPS)
    return max(accumulate(memoryview(steps).cast("b"))) > max_depth


def out_of_range_int(body: bytes) -> str | None:
    """The first integer literal outside the signed 64-bit range (strings removed), if any."""
    for match in _LONG_INT.finditer(body):
        literal = match.group()
        # Over 19 digits cannot fit (and int() of thousands of digits is refused by Python).
        if len(literal.lstrip(b"-")) > 19 or not INT_MIN <= int(literal) <= INT_MAX:
            return literal.decode()
    return None


def check_json_body(body: bytes, max_depth: int) -> None:
    """Raise a 400 for a body nested too deep or holding an integer out of range."""
    structure = _STRING.sub(b'""', body)
    if json_too_deep(structure, max_depth):
        raise bad_request(f"JSON nested deeper than {max_depth} levels is not accepted.")
    number = out_of_range_int(structure)
    if number is not None:
        shown = number if len(number) <= 40 else f"{number[:20]}...({len(number)} digits)"
        raise bad_request(f"Integer {shown} is out of range: integers must fit in 64 bits "
                          f"[{INT_MIN}, {INT_MAX}].", code="integer_out_of_range")


async def check_body(request: Request) -> None:
    """The `before_request` hook: POST bodies must be JSON of bounded depth and integer size."""
    if request.method != "POST" or not _has_body(request):
        return
    media_type = request.content_type[0].lower()
    if media_type != _JSON_MEDIA_TYPE:
        if media_type == request.route_handler.opt.get(BODY_MEDIA_TYPE):
            return
        raise unsupported_media_type(media_type)
    body = await request.body()
    max_depth = request.app.state.settings.max_json_depth
    if len(body) > _THREAD_ABOVE_BYTES:  # megabytes of regex work stay off the event loop
        await anyio.to_thread.run_sync(check_json_body, body, max_depth)
    else:
        check_json_body(body, max_depth)


def _has_body(request: Request) -> bool:
    headers = request.headers
    return "transfer-encoding" in headers or headers.get("content-length", "0") != "0"

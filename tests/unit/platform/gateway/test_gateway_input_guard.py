from __future__ import annotations

import pytest

from pagefleet.platform.gateway.errors import OpenAIError
from pagefleet.platform.gateway.input_guard import (
    _STRING,
    INT_MAX,
    INT_MIN,
    check_json_body,
    json_too_deep,
)


@pytest.mark.parametrize(("body", "depth", "too_deep"), [
    (b"[]", 1, False),
    (b"[[]]", 1, True),
    (b"[[],[[]],{}]" * 20, 2, True),
    (b"[[],[[]],{}]" * 20, 3, False),
    (b'{"a": "[[[[[[[[[[[["}', 1, False),  # brackets inside strings are text
    (b"[" * 100_000 + b"]" * 100_000, 32, True),
])
def test_json_depth(body: bytes, depth: int, too_deep: bool) -> None:
    assert json_too_deep(check_strings_removed(body), depth) is too_deep


def check_strings_removed(body: bytes) -> bytes:
    return _STRING.sub(b'""', body)


@pytest.mark.parametrize("body", [
    f'{{"seed": {INT_MAX}, "x": {INT_MIN}}}'.encode(),
    b'{"t": 1.00000000000000000000001, "e": 1e400}',  # floats are not integers
    b'{"s": "99999999999999999999999999"}',  # digits in a string are text
    b'{"escaped": "a\\"99999999999999999999999999"}',
])
def test_in_range_bodies_pass(body: bytes) -> None:
    check_json_body(body, 32)


@pytest.mark.parametrize("body", [
    f'{{"seed": {INT_MAX + 1}}}'.encode(),
    f'{{"body": {{"deep": [{INT_MIN - 1}]}}}}'.encode(),
    b'[' + b"9" * 5000 + b"]",
])
def test_out_of_range_integers_are_400(body: bytes) -> None:
    with pytest.raises(OpenAIError) as info:
        check_json_body(body, 32)
    assert info.value.status == 400 and info.value.body.code == "integer_out_of_range"

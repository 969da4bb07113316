"""The embedding vector's wire form and the envelope's rules for embedding requests."""

from __future__ import annotations

import struct

import pytest

from pagefleet.platform.protocol import RequestEnvelope, SamplingParams, decode_envelope, encode
from pagefleet.platform.protocol.embeddings import pack_vector, unpack_vector


def test_pack_is_little_endian_float32_and_round_trips() -> None:
    values = [0.1, -2.5, 3.0e-8, 1.0]
    packed = pack_vector(values)
    assert packed == struct.pack("<4f", *values)
    assert unpack_vector(packed) == list(struct.unpack("<4f", packed))


def test_unpack_refuses_a_partial_float() -> None:
    with pytest.raises(ValueError, match="not a float32 vector"):
        unpack_vector(b"\x00" * 6)


def _envelope(**fields) -> RequestEnvelope:
    return RequestEnvelope(request_id="r", model="m", params=SamplingParams(), created_at=1.0, **fields)


def test_embedding_envelopes_round_trip_with_dimensions() -> None:
    envelope = _envelope(kind="embedding", prompt=[1, 2, 3], dimensions=8)
    assert decode_envelope(encode(envelope)) == envelope


@pytest.mark.parametrize("fields", [
    {"kind": "embedding"},  # no input
    {"kind": "embedding", "prompt": "x", "messages": [{"role": "user", "content": "x"}]},
    {"kind": "embedding", "prompt": "x", "dimensions": 0},
    {"kind": "completion", "prompt": "x", "dimensions": 8},  # dimensions only for embeddings
])
def test_invalid_embedding_envelopes_are_refused(fields) -> None:
    with pytest.raises(ValueError):
        _envelope(**fields)

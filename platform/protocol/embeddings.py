"""OpenAI's embedding response (`object: list` of `embedding`s) and the vector's wire form.

A worker packs each vector as little-endian float32 bytes (`pack_vector`); the gateway turns
those bytes into the JSON the client asked for: a list of floats, or base64 of the very same
bytes (OpenAI's `encoding_format: base64` is little-endian float32, which the SDKs decode with
`numpy.frombuffer(..., dtype="float32")`). Torch-free and numpy-free, so the gateway can import it.
"""

from __future__ import annotations

import base64
import sys
from array import array
from collections.abc import Sequence
from typing import Literal

import msgspec

EncodingFormat = Literal["float", "base64"]


def pack_vector(values: Sequence[float]) -> bytes:
    """Little-endian float32 bytes of `values` (the protocol's one vector encoding)."""
    packed = array("f", values)
    if sys.byteorder == "big":
        packed.byteswap()
    return packed.tobytes()


def unpack_vector(data: bytes) -> list[float]:
    """The floats of `pack_vector`'s bytes; a length that is not a whole number of float32s
    is a corrupt event, not something to guess around."""
    if len(data) % 4:
        raise ValueError(f"an embedding of {len(data)} bytes is not a float32 vector")
    values = array("f")
    values.frombytes(data)
    if sys.byteorder == "big":
        values.byteswap()
    return values.tolist()


class Embedding(msgspec.Struct):
    index: int
    embedding: list[float] | str  # str: base64 of the little-endian float32 bytes
    object: Literal["embedding"] = "embedding"


class EmbeddingUsage(msgspec.Struct):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(msgspec.Struct):
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage
    object: Literal["list"] = "list"


def embedding_list(model: str, vectors: Sequence[bytes], prompt_tokens: int,
                   encoding_format: EncodingFormat) -> EmbeddingList:
    """The response body for `vectors[i]` (packed) being input i's embedding."""
    def encode(vector: bytes) -> list[float] | str:
        if encoding_format == "base64":
            return base64.b64encode(vector).decode("ascii")
        return unpack_vector(vector)

    return EmbeddingList(
        data=[Embedding(index=i, embedding=encode(v)) for i, v in enumerate(vectors)],
        model=model, usage=EmbeddingUsage(prompt_tokens=prompt_tokens, total_tokens=prompt_tokens))

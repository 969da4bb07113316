"""OpenAI's embeddings request body.

`input` takes OpenAI's four shapes: a string, a list of strings, a list of token ids, a list
of token id lists. Unknown fields are a 400 naming them, as on the other endpoints.
"""

from __future__ import annotations

import msgspec

from pagefleet.platform.gateway.completions.schemas import Int64, Prompt
from pagefleet.platform.protocol.embeddings import EncodingFormat


class EmbeddingRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    model: str
    input: Prompt
    encoding_format: EncodingFormat | None = None
    dimensions: Int64 | None = None
    user: str | None = None

"""The streaming client counts what the server generated: token ids where it returns them
(one chunk may carry several), else one token per chunk with text; prompt and finish chunks
carry neither and count nothing."""

from __future__ import annotations

import asyncio
import json

import httpx

from pagefleet.platform.bench.client import CompletionsClient
from pagefleet.platform.protocol.workload import BenchRequest


def _send(chunks: list[dict]) -> tuple[dict, object]:
    """Stream `chunks` as server-sent events; return the request body and the result."""
    seen: dict = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.update(json.loads(request.content))
        lines = [f"data: {json.dumps(chunk)}\n\n" for chunk in chunks] + ["data: [DONE]\n\n"]
        return httpx.Response(200, content="".join(lines).encode(),
                              headers={"content-type": "text/event-stream"})

    async def run() -> object:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            client = CompletionsClient(http, "http://test/v1", "m")
            return await client.send(BenchRequest([1, 2, 3], 4))

    return seen, asyncio.run(run())


def _choice(**fields: object) -> dict:
    return {"choices": [{"index": 0, "finish_reason": None, **fields}]}


def test_counts_token_ids_even_with_empty_text() -> None:
    body, result = _send([
        _choice(text="", prompt_token_ids=[1, 2, 3]),  # the opening prompt chunk
        _choice(text="", token_ids=[7]),
        _choice(text="", token_ids=[8, 9]),
        _choice(text="", token_ids=[10]),
        {"choices": [{"index": 0, "text": "", "finish_reason": "length"}]},
        {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}},
    ])
    assert body["return_token_ids"] is True and body["ignore_eos"] is True
    assert result.ok and result.output_tokens == 4
    assert len(result.itl_s) == 2  # three chunks with tokens: two gaps


def test_falls_back_to_text_without_token_ids() -> None:
    _, result = _send([_choice(text="a"), _choice(text=""), _choice(text="b"), _choice(text="c")])
    assert result.ok and result.output_tokens == 3 and len(result.itl_s) == 2


def test_a_stream_without_tokens_fails() -> None:
    _, result = _send([_choice(text=""), _choice(text="", token_ids=[])])
    assert not result.ok and result.error == "no tokens"

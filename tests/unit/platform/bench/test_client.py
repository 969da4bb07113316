"""The streaming clients count what the server generated: token ids where it returns them
(one chunk may carry several), else one token per chunk with text; prompt and finish chunks
carry neither and count nothing. Both transports (httpx against a mock transport, aiohttp
against a local aiohttp server) read the same events the same way."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import httpx
import pytest
from aiohttp import web

from pagefleet.platform.bench.client import AiohttpCompletionsClient, CompletionsClient
from pagefleet.platform.protocol.workload import BenchRequest

REQUEST = BenchRequest([1, 2, 3], 4)


def _body(chunks: list[dict]) -> bytes:
    return "".join([f"data: {json.dumps(chunk)}\n\n" for chunk in chunks] + ["data: [DONE]\n\n"]).encode()


async def _over_httpx(chunks: list[dict], seen: dict) -> object:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.update(json.loads(request.content))
        return httpx.Response(200, content=_body(chunks), headers={"content-type": "text/event-stream"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        return await CompletionsClient(http, "http://test/v1", "m").send(REQUEST)


async def _over_aiohttp(chunks: list[dict], seen: dict) -> object:
    async def handler(request: web.Request) -> web.Response:
        seen.update(await request.json())
        return web.Response(body=_body(chunks), content_type="text/event-stream")

    app = web.Application()
    app.router.add_post("/v1/completions", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as session:
            return await AiohttpCompletionsClient(session, f"http://127.0.0.1:{port}/v1", "m").send(REQUEST)
    finally:
        await runner.cleanup()


@pytest.fixture(params=["httpx", "aiohttp"])
def transport(request):
    return {"httpx": _over_httpx, "aiohttp": _over_aiohttp}[request.param]


def _send(chunks: list[dict], transport) -> tuple[dict, object]:
    """Stream `chunks` as server-sent events; return the request body and the result."""
    seen: dict = {}
    return seen, asyncio.run(transport(chunks, seen))


def _choice(**fields: object) -> dict:
    return {"choices": [{"index": 0, "finish_reason": None, **fields}]}


def test_counts_token_ids_even_with_empty_text(transport) -> None:
    body, result = _send([
        _choice(text="", prompt_token_ids=[1, 2, 3]),  # the opening prompt chunk
        _choice(text="", token_ids=[7]),
        _choice(text="", token_ids=[8, 9]),
        _choice(text="", token_ids=[10]),
        {"choices": [{"index": 0, "text": "", "finish_reason": "length"}]},
        {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}},
    ], transport)
    assert body["return_token_ids"] is True and body["ignore_eos"] is True
    assert result.ok and result.output_tokens == 4
    assert len(result.itl_s) == 2  # three chunks with tokens: two gaps


def test_falls_back_to_text_without_token_ids(transport) -> None:
    _, result = _send([_choice(text="a"), _choice(text=""), _choice(text="b"), _choice(text="c")],
                      transport)
    assert result.ok and result.output_tokens == 3 and len(result.itl_s) == 2


def test_a_stream_without_tokens_fails(transport) -> None:
    _, result = _send([_choice(text=""), _choice(text="", token_ids=[])], transport)
    assert not result.ok and result.error == "no tokens"


def test_an_error_chunk_fails_the_request(transport) -> None:
    _, result = _send([_choice(text="", token_ids=[7]), {"error": {"message": "boom"}}], transport)
    assert not result.ok and "boom" in result.error

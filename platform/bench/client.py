"""Streaming `/v1/completions` over HTTP, for any OpenAI-compatible server.

Sends token-id prompts with `ignore_eos` (vLLM's extra) so every request produces exactly
its output length, and `stream_options.include_usage` to take the token count from the server.
Asks for `return_token_ids` (vLLM's extra too) and counts a chunk's token ids where the server
sends them, as the in-process side of `bench serve --overhead` counts its deltas' ids; a chunk
without them counts as one token if it has text. Counting text alone would time no token at
all for a model without a tokenizer (the dummy-weight presets stream empty text).

Two transports read the same events (`StreamReading`): httpx (`CompletionsClient`, also used
by the batch and cold-start benchmarks) and aiohttp (`AiohttpCompletionsClient`, the serving
benchmark's load generator, as vLLM's benchmark uses). A load generator's own cost lands in
every latency it measures; measured on the CPU machine, httpx spent ~3.3 ms of CPU per
streamed request (its connection pool and h11), several times what aiohttp spends.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from pagefleet.platform.bench.runner import RequestResult, StreamTimer
from pagefleet.platform.protocol.workload import BenchRequest


def request_body(model: str, request: BenchRequest, temperature: float) -> dict[str, Any]:
    return {"model": model, "prompt": request.prompt_token_ids,
            "max_tokens": request.output_len, "temperature": temperature,
            "ignore_eos": True, "return_token_ids": True, "stream": True,
            "stream_options": {"include_usage": True}}


class StreamReading:
    """What one request's server-sent events said so far; `line` takes each line of the body."""

    def __init__(self, request: BenchRequest) -> None:
        self.request = request
        self.timer = StreamTimer()
        self.usage_tokens: int | None = None
        self.error: str | None = None
        self.done = False

    def line(self, line: str) -> None:
        if self.done or self.error is not None or not line.startswith("data:"):
            return
        data = line[5:].strip()
        if data == "[DONE]":
            self.done = True
            return
        chunk = json.loads(data)
        if chunk.get("error"):
            self.error = str(chunk["error"])
            return
        num_tokens = _chunk_tokens(chunk.get("choices") or [])
        if num_tokens:
            self.timer.tokens(num_tokens)
        if chunk.get("usage"):
            self.usage_tokens = chunk["usage"]["completion_tokens"]

    def result(self) -> RequestResult:
        if self.error is not None:
            return failed(self.request, self.error)
        return self.timer.result(len(self.request.prompt_token_ids), self.usage_tokens)


def failed(request: BenchRequest, error: str) -> RequestResult:
    return RequestResult(False, len(request.prompt_token_ids), 0, 0.0, [], 0.0, error)


class _Endpoint:
    """Where requests go and what they say, whatever carries them."""

    def __init__(self, base_url: str, model: str, api_key: str | None, temperature: float) -> None:
        self.url = base_url.rstrip("/") + "/completions"
        self.model = model
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.temperature = temperature


class CompletionsClient(_Endpoint):
    """Over an `httpx.AsyncClient`."""

    def __init__(self, http: httpx.AsyncClient, base_url: str, model: str,
                 api_key: str | None = None, temperature: float = 0.0) -> None:
        super().__init__(base_url, model, api_key, temperature)
        self.http = http

    async def send(self, request: BenchRequest) -> RequestResult:
        reading = StreamReading(request)
        body = request_body(self.model, request, self.temperature)
        async with self.http.stream("POST", self.url, json=body, headers=self.headers) as response:
            if response.status_code != 200:
                text = (await response.aread()).decode(errors="replace")[:300]
                return failed(request, f"HTTP {response.status_code}: {text}")
            async for line in response.aiter_lines():
                reading.line(line)
                if reading.done or reading.error is not None:
                    break
        return reading.result()


class AiohttpCompletionsClient(_Endpoint):
    """Over an `aiohttp.ClientSession`; reads each body to its end, so the connection goes
    back to the session's pool instead of being closed."""

    def __init__(self, session: Any, base_url: str, model: str, api_key: str | None = None,
                 temperature: float = 0.0) -> None:
        super().__init__(base_url, model, api_key, temperature)
        self.session = session

    async def send(self, request: BenchRequest) -> RequestResult:
        reading = StreamReading(request)
        body = request_body(self.model, request, self.temperature)
        async with self.session.post(self.url, json=body, headers=self.headers) as response:
            if response.status != 200:
                text = (await response.read()).decode(errors="replace")[:300]
                return failed(request, f"HTTP {response.status}: {text}")
            async for raw in response.content:
                reading.line(raw.decode())
        return reading.result()


@contextlib.asynccontextmanager
async def aiohttp_client(base_url: str, model: str, api_key: str | None
                         ) -> AsyncIterator[AiohttpCompletionsClient]:
    """An `AiohttpCompletionsClient` over its own session, with as many connections as
    requests in flight (a load generator's pool must never be what queues them)."""
    import aiohttp

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=600.0)) as session:
        yield AiohttpCompletionsClient(session, base_url, model, api_key)


def _chunk_tokens(choices: list[dict]) -> int:
    """Generated tokens in a chunk: its token ids if sent, else one if it has text."""
    if not choices:
        return 0
    token_ids = choices[0].get("token_ids")
    if token_ids is not None:
        return len(token_ids)
    return 1 if choices[0].get("text") else 0

"""Streaming `/v1/completions` over HTTP (httpx), for any OpenAI-compatible server.

Sends token-id prompts with `ignore_eos` (vLLM's extra) so every request produces exactly
its output length, and `stream_options.include_usage` to take the token count from the server.
Asks for `return_token_ids` (vLLM's extra too) and counts a chunk's token ids where the server
sends them, as the in-process side of `bench serve --overhead` counts its deltas' ids; a chunk
without them counts as one token if it has text. Counting text alone would time no token at
all for a model without a tokenizer (the dummy-weight presets stream empty text).
"""

from __future__ import annotations

import json

import httpx

from pagefleet.platform.bench.runner import RequestResult, StreamTimer
from pagefleet.platform.protocol.workload import BenchRequest


class CompletionsClient:
    def __init__(self, http: httpx.AsyncClient, base_url: str, model: str,
                 api_key: str | None = None, temperature: float = 0.0) -> None:
        self.http = http
        self.url = base_url.rstrip("/") + "/completions"
        self.model = model
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.temperature = temperature

    async def send(self, request: BenchRequest) -> RequestResult:
        body = {"model": self.model, "prompt": request.prompt_token_ids,
                "max_tokens": request.output_len, "temperature": self.temperature,
                "ignore_eos": True, "return_token_ids": True, "stream": True,
                "stream_options": {"include_usage": True}}
        timer = StreamTimer()
        usage_tokens = None
        async with self.http.stream("POST", self.url, json=body, headers=self.headers) as response:
            if response.status_code != 200:
                text = (await response.aread()).decode(errors="replace")[:300]
                return RequestResult(False, len(request.prompt_token_ids), 0, 0.0, [], 0.0,
                                     f"HTTP {response.status_code}: {text}")
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                if chunk.get("error"):
                    return RequestResult(False, len(request.prompt_token_ids), 0, 0.0, [], 0.0,
                                         str(chunk["error"]))
                num_tokens = _chunk_tokens(chunk.get("choices") or [])
                if num_tokens:
                    timer.tokens(num_tokens)
                if chunk.get("usage"):
                    usage_tokens = chunk["usage"]["completion_tokens"]
        return timer.result(len(request.prompt_token_ids), usage_tokens)


def _chunk_tokens(choices: list[dict]) -> int:
    """Generated tokens in a chunk: its token ids if sent, else one if it has text."""
    if not choices:
        return 0
    token_ids = choices[0].get("token_ids")
    if token_ids is not None:
        return len(token_ids)
    return 1 if choices[0].get("text") else 0

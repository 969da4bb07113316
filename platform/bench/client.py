"""Streaming `/v1/completions` over HTTP (httpx), for any OpenAI-compatible server.

Sends token-id prompts with `ignore_eos` (vLLM's extra) so every request produces exactly
its output length, and `stream_options.include_usage` to take the token count from the server.
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
                "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
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
                choices = chunk.get("choices") or []
                if choices and choices[0].get("text"):
                    timer.tokens(1)
                if chunk.get("usage"):
                    usage_tokens = chunk["usage"]["completion_tokens"]
        return timer.result(len(request.prompt_token_ids), usage_tokens)

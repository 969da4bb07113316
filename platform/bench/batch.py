"""Running one Batch API batch over HTTP and measuring it, for `pagefleet bench batch`.

The batch's lines are the same token-id, exact-length (`ignore_eos`) completions the other
benchmarks send, so its throughput compares with the same requests sent to `/v1/completions`.
Its time runs from `POST /v1/batches` to the poll that first sees `completed`; the output
tokens are the sum of the output file's `usage.completion_tokens`.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass

import httpx

from pagefleet.platform.batch.settings import require_positive
from pagefleet.platform.protocol.workload import BenchRequest

POLL_S = 0.25
TERMINAL = ("completed", "failed", "expired", "cancelled")


@dataclass(frozen=True, slots=True)
class BatchBenchSettings:
    """`pagefleet bench batch`: `num_requests` requests of exactly `input_len` + `output_len`
    tokens, once through `/v1/completions` all at once and once as one batch; meanwhile
    `num_interactive` streamed requests arriving at `interactive_rate` per second (Poisson),
    once alone and once while the batch runs. Each phase draws its own prompts (from `seed`),
    so no phase is helped by the prefix cache of another."""

    # the batch, and as many requests through /v1/completions
    num_requests: int = 64
    input_len: int = 64  # every request's, interactive ones too
    output_len: int = 32
    # the interactive stream, alone and while the batch runs
    num_interactive: int = 16
    interactive_rate: float = 2.0
    interactive_output_len: int = 16

    seed: int = 0
    timeout_s: float = 1800.0

    def __post_init__(self) -> None:
        require_positive(self, but=("seed",))


@dataclass(frozen=True, slots=True)
class BatchResult:
    status: str
    num_requests: int
    completed: int
    failed: int
    duration_s: float
    output_tokens: int

    @property
    def request_throughput(self) -> float:
        return self.completed / max(self.duration_s, 1e-9)

    @property
    def output_throughput(self) -> float:
        return self.output_tokens / max(self.duration_s, 1e-9)


def batch_input(model: str, requests: list[BenchRequest]) -> bytes:
    """A JSONL input file: one `/v1/completions` line per request, `custom_id` = its index."""
    return b"".join(json.dumps({
        "custom_id": str(i), "method": "POST", "url": "/v1/completions",
        "body": {"model": model, "prompt": r.prompt_token_ids, "max_tokens": r.output_len,
                 "temperature": 0.0, "ignore_eos": True}}).encode() + b"\n"
        for i, r in enumerate(requests))


class BatchClient:
    def __init__(self, http: httpx.AsyncClient, base_url: str, api_key: str | None = None) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    async def _call(self, method: str, path: str, **kwargs) -> httpx.Response:
        response = await self.http.request(method, f"{self.base_url}{path}", headers=self.headers,
                                           **kwargs)
        if response.status_code != 200:
            raise RuntimeError(f"{method} {path}: HTTP {response.status_code}: {response.text[:300]}")
        return response

    async def submit(self, model: str, requests: list[BenchRequest]) -> str:
        """Upload the input file and create the batch; returns the batch id."""
        upload = await self._call("POST", "/files", data={"purpose": "batch"},
                                  files={"file": ("bench.jsonl", batch_input(model, requests))})
        batch = await self._call("POST", "/batches", json={
            "input_file_id": upload.json()["id"], "endpoint": "/v1/completions",
            "completion_window": "24h"})
        return batch.json()["id"]

    async def retrieve(self, batch_id: str) -> dict:
        return (await self._call("GET", f"/batches/{batch_id}")).json()

    async def wait_for(self, batch_id: str, statuses: tuple[str, ...], timeout_s: float) -> dict:
        deadline = time.monotonic() + timeout_s
        while (batch := await self.retrieve(batch_id))["status"] not in statuses:
            if time.monotonic() > deadline:
                raise TimeoutError(f"batch {batch_id} still {batch['status']} after {timeout_s:.0f} s")
            await asyncio.sleep(POLL_S)  # polling the batch, as a client does
        return batch

    async def output_tokens(self, file_id: str | None) -> int:
        if file_id is None:
            return 0
        content = await self._call("GET", f"/files/{file_id}/content")
        return sum(json.loads(line)["response"]["body"]["usage"]["completion_tokens"]
                   for line in content.text.splitlines() if line)

    async def delete_files(self, batch: dict) -> None:
        """The bench's files go once measured (they would otherwise wait out the retention)."""
        for key in ("input_file_id", "output_file_id", "error_file_id"):
            if batch.get(key):
                await self.http.delete(f"{self.base_url}/files/{batch[key]}", headers=self.headers)

    async def run(self, model: str, requests: list[BenchRequest], timeout_s: float,
                  started: asyncio.Event | None = None) -> BatchResult:
        """Submit, wait until done (setting `started` once the batch is in progress), measure."""
        began = time.perf_counter()
        batch_id = await self.submit(model, requests)
        if started is not None:
            await self.wait_for(batch_id, ("in_progress", *TERMINAL), timeout_s)
            started.set()
        batch = await self.wait_for(batch_id, TERMINAL, timeout_s)
        duration = time.perf_counter() - began
        counts = batch["request_counts"]
        tokens = await self.output_tokens(batch.get("output_file_id"))
        await self.delete_files(batch)
        return BatchResult(batch["status"], len(requests), counts["completed"], counts["failed"],
                           duration, tokens)

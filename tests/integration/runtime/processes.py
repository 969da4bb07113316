"""Real `pagefleet worker` processes for integration and e2e tests, plus request helpers.

Each test module serves its own registry model name (all backed by the embedded SmolLM2), so
modules sharing the session's redis-server never see each other's queues or workers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import redis
import yaml

from pagefleet.platform.protocol import (
    DeltaEvent,
    ErrorEvent,
    FinalEvent,
    RequestEnvelope,
    ResultEvent,
    SamplingParams,
    decode_event,
    decode_heartbeat,
    encode,
    keys,
)

SOURCE = "smollm2-135m-instruct"
READY_TIMEOUT_S = 240.0  # model load on a busy 2-core CI machine
RESULT_TIMEOUT_S = 240.0


def write_registry(path: Path, models: dict[str, dict]) -> Path:
    """A registry of `name -> engine settings`, every model backed by the embedded SmolLM2."""
    path.write_text(yaml.safe_dump({"models": {
        name: {"source": SOURCE, "engine": engine} for name, engine in models.items()}}))
    return path


@dataclass
class WorkerProcess:
    """One `pagefleet worker` child process, its log in a file for failure reports."""

    model: str
    registry: Path
    redis_url: str
    log_path: Path
    worker_id: str = field(default_factory=lambda: f"test-{uuid.uuid4().hex[:8]}")
    metrics_port: int | None = None
    dead_after_s: float = 3.0
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None

    def start(self) -> WorkerProcess:
        command = [sys.executable, "-m", "pagefleet.platform.cli", "worker", "--model", self.model,
                   "--registry", str(self.registry), "--redis-url", self.redis_url,
                   "--worker-id", self.worker_id, "--dead-after", str(self.dead_after_s)]
        if self.metrics_port is not None:
            command += ["--metrics-port", str(self.metrics_port), "--metrics-host", "127.0.0.1"]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                         env={**os.environ, "OMP_NUM_THREADS": "1", **self.env})
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def wait_ready(self, client: redis.Redis, timeout_s: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            raw = client.hget(keys.heartbeat_hash(self.model), self.worker_id)
            if raw is not None and decode_heartbeat(raw).state == "ready":
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker {self.worker_id} not ready:\n{self.log()}")
            time.sleep(0.1)  # polling the heartbeat with a deadline

    def terminate(self, timeout_s: float = 120.0) -> int:
        """SIGTERM (drain) and wait; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout_s)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def envelope(model: str, *, prompt: str | list[int] | None = None, messages: list[dict] | None = None,
             job_id: str | None = None, deadline: float | None = None, **params) -> RequestEnvelope:
    params.setdefault("temperature", 0.0)
    params.setdefault("max_tokens", 8)
    kind = "chat" if messages is not None else "completion"
    return RequestEnvelope(request_id=f"req-{uuid.uuid4().hex}", model=model, kind=kind,
                           params=SamplingParams(**params), prompt=prompt, messages=messages,
                           created_at=time.time(), deadline=deadline, job_id=job_id)


def enqueue(client: redis.Redis, env: RequestEnvelope, priority: int = keys.PRIORITY_INTERACTIVE) -> str:
    stream = keys.request_stream(env.model, priority)
    try:
        client.xgroup_create(stream, keys.CONSUMER_GROUP, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise
    client.xadd(stream, {keys.ENTRY_REQUEST_ID: env.request_id, keys.ENTRY_ENVELOPE: encode(env)})
    return env.request_id


def read_until_done(client: redis.Redis, request_id: str,
                    timeout_s: float = RESULT_TIMEOUT_S) -> list[ResultEvent]:
    """Every event of a request up to and including its final or error event."""
    events: list[ResultEvent] = []
    last_id = "0"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        reply = client.xread({keys.result_stream(request_id): last_id}, block=1000)
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                last_id = entry_id
                events.append(decode_event(fields[keys.ENTRY_EVENT.encode()]))
                if isinstance(events[-1], FinalEvent | ErrorEvent):
                    return events
    raise TimeoutError(f"no final event for {request_id} after {timeout_s} s: {events}")


def choice_texts(events: list[ResultEvent], n: int = 1) -> list[str]:
    texts = [""] * n
    for event in events:
        if isinstance(event, DeltaEvent):
            texts[event.index] += event.text
    return texts


def assert_well_formed(events: list[ResultEvent], n: int = 1) -> FinalEvent:
    """Offsets of every choice are contiguous from 0, each choice ends once, a final closes it."""
    offsets = [0] * n
    finished = [False] * n
    for event in events[:-1]:
        assert isinstance(event, DeltaEvent), event
        assert not finished[event.index], f"delta after the end of choice {event.index}"
        assert event.offset == offsets[event.index], (event, offsets)
        offsets[event.index] += len(event.token_ids)
        finished[event.index] = event.finish_reason is not None
    final = events[-1]
    assert isinstance(final, FinalEvent), final
    assert all(finished), finished
    assert final.usage.completion_tokens == sum(offsets)
    assert final.usage.total_tokens == final.usage.prompt_tokens + final.usage.completion_tokens
    return final

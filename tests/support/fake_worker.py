"""FakeEchoWorker: a stand-in for the real worker runtime, for gateway tests only.

It speaks the wire protocol exactly (XREADGROUP on `pf:q:{model}:{0,1}`, events on
`pf:r:{id}`, cancel flags and pub/sub, job records) but generates by echoing the prompt's
words instead of running a model, so gateway tests are fast and their expectations follow
from the prompt:

- choice i emits words[(i + j) % len(words)] as token j (text " word", id crc32(word) % 50000);
- usage counts one prompt token per word; prompt + max_tokens over `max_model_len` is a 400
  `context_length_exceeded` error event;
- stop strings end a choice before the stop string (finish "stop"), else finish "length";
- a prompt containing the word `[hold]` emits one token per choice, then waits until the
  request is cancelled (or `release()`), and ends with finish reason "abort".
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
import zlib

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from pagefleet.platform.gateway.completions.params import PreparedRequest
from pagefleet.platform.gateway.completions.results import ResultAccumulator
from pagefleet.platform.protocol import (
    DeltaEvent,
    ErrorEvent,
    FinalEvent,
    RequestEnvelope,
    TokenLogprob,
    TopLogprob,
    Usage,
    decode_envelope,
    decode_job,
    encode,
    keys,
)

HOLD = "[hold]"


def prompt_words(envelope: RequestEnvelope) -> list[str]:
    if envelope.kind == "chat":
        text = " ".join(m.content for m in envelope.messages or [] if isinstance(m.content, str))
        return text.split() or ["empty"]
    if isinstance(envelope.prompt, str):
        return envelope.prompt.split() or ["empty"]
    return [f"t{token_id}" for token_id in envelope.prompt or []] or ["empty"]


def token_id(word: str) -> int:
    return zlib.crc32(word.encode()) % 50_000


def choice_tokens(words: list[str], choice: int, max_tokens: int, stop: list[str],
                  stop_token_ids: list[int]) -> tuple[list[tuple[int, str]], str]:
    """(token id, text) pairs of one choice and its finish reason."""
    tokens: list[tuple[int, str]] = []
    text = ""
    for j in range(max_tokens):
        word = words[(choice + j) % len(words)]
        if token_id(word) in stop_token_ids:
            return tokens, "stop"
        piece = f" {word}"
        for s in stop:
            cut = (text + piece).find(s)
            if cut != -1:
                keep = (text + piece)[:cut][len(text):]
                if keep:
                    tokens.append((token_id(word), keep))
                return tokens, "stop"
        tokens.append((token_id(word), piece))
        text += piece
    return tokens, "length"


class FakeEchoWorker:
    """Runs in its own thread and event loop; `start()` / `stop()` from the test."""

    def __init__(self, redis_url: str, model: str, *, max_model_len: int = 64,
                 retention_s: float = 300.0) -> None:
        self.redis_url = redis_url
        self.model = model
        self.max_model_len = max_model_len
        self.retention_ms = int(retention_s * 1000)
        self.consumer = f"fake-{uuid.uuid4().hex[:8]}"
        self.aborted: set[str] = set()  # request ids it ended because they were cancelled
        self.aborted_changed = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self._cancel_events: dict[str, asyncio.Event] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> FakeEchoWorker:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def wait_aborted(self, request_id: str, timeout: float = 30.0) -> bool:
        with self.aborted_changed:
            return self.aborted_changed.wait_for(lambda: request_id in self.aborted, timeout)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        redis = aioredis.Redis.from_url(self.redis_url)
        streams = {keys.request_stream(self.model, p): ">" for p in (0, 1)}
        for stream in streams:
            try:
                await redis.xgroup_create(stream, keys.CONSUMER_GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        pubsub = redis.pubsub()
        await pubsub.subscribe(keys.cancel_channel(self.model))
        tasks: set[asyncio.Task] = set()
        listener = asyncio.create_task(self._listen(pubsub))
        while not self._stop.is_set():
            reply = await redis.xreadgroup(keys.CONSUMER_GROUP, self.consumer, streams,
                                           count=64, block=100)
            for stream, entries in reply or []:
                for entry_id, fields in entries:
                    task = asyncio.create_task(self._handle(redis, stream, entry_id, fields))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
        for event in self._cancel_events.values():
            event.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        listener.cancel()
        await pubsub.aclose()
        await redis.aclose()

    async def _listen(self, pubsub: aioredis.client.PubSub) -> None:
        async for message in pubsub.listen():
            if message["type"] == "message":
                self._cancel_event(message["data"].decode()).set()

    def _cancel_event(self, request_id: str) -> asyncio.Event:
        return self._cancel_events.setdefault(request_id, asyncio.Event())

    async def _write(self, redis: aioredis.Redis, request_id: str, event: msgspec.Struct) -> None:
        stream = keys.result_stream(request_id)
        await redis.xadd(stream, {keys.ENTRY_EVENT: encode(event)})
        await redis.pexpire(stream, self.retention_ms)

    async def _handle(self, redis: aioredis.Redis, stream: bytes, entry_id: bytes, fields: dict) -> None:
        envelope = decode_envelope(fields[keys.ENTRY_ENVELOPE.encode()])
        try:
            if not await redis.exists(keys.cancel_flag(envelope.request_id)):
                await self._generate(redis, envelope)
        finally:
            await redis.xack(stream, keys.CONSUMER_GROUP, entry_id)

    async def _generate(self, redis: aioredis.Redis, envelope: RequestEnvelope) -> None:
        params = envelope.params
        words = prompt_words(envelope)
        max_tokens = params.max_tokens or max(1, self.max_model_len - len(words))
        if len(words) + max_tokens > self.max_model_len:
            error = ErrorEvent(type="invalid_request_error", code="context_length_exceeded",
                               param="messages" if envelope.kind == "chat" else "prompt", status=400,
                               message=f"This model's maximum context length is {self.max_model_len} "
                                       f"tokens; the request needs {len(words) + max_tokens}.")
            await self._write(redis, envelope.request_id, error)
            await self._finish_job(redis, envelope, [], error)
            return
        await self._update_job(redis, envelope, status="running", started_at=time.time())
        choices = [choice_tokens(words, i, max_tokens, params.stop or [], params.stop_token_ids or [])
                   for i in range(params.n)]
        events: list[msgspec.Struct] = []
        cancel = self._cancel_event(envelope.request_id)
        hold = HOLD in words
        done_steps = 0
        aborted = False
        for j in range(max(len(tokens) for tokens, _ in choices)):
            if hold and j == 1:
                await cancel.wait()
            if cancel.is_set():
                aborted = True
                break
            for i, (tokens, reason) in enumerate(choices):
                if j >= len(tokens):
                    continue
                tid, text = tokens[j]
                delta = DeltaEvent(index=i, offset=j, token_ids=[tid], text=text,
                                   logprobs=self._logprobs(tid, text, params.logprobs),
                                   finish_reason=reason if j == len(tokens) - 1 else None)
                events.append(delta)
                await self._write(redis, envelope.request_id, delta)
            done_steps = j + 1
            await asyncio.sleep(0)
        if aborted:
            with self.aborted_changed:
                self.aborted.add(envelope.request_id)
                self.aborted_changed.notify_all()
        reasons = ["abort" if aborted and len(tokens) > done_steps else reason
                   for tokens, reason in choices]
        completion_tokens = sum(min(len(tokens), done_steps) for tokens, _ in choices)
        final = FinalEvent(finish_reasons=reasons, usage=Usage(
            prompt_tokens=len(words), completion_tokens=completion_tokens,
            total_tokens=len(words) + completion_tokens))
        events.append(final)
        await self._write(redis, envelope.request_id, final)
        await self._finish_job(redis, envelope, events, None)

    @staticmethod
    def _logprobs(tid: int, text: str, num_top: int | None) -> list[TokenLogprob] | None:
        if num_top is None:
            return None
        top = [TopLogprob(token_id=tid, token=text, logprob=-0.5)]
        top += [TopLogprob(token_id=tid + k, token=f"{text}#{k}", logprob=-1.0 - k) for k in range(1, num_top)]
        return [TokenLogprob(token_id=tid, token=text, logprob=-0.5, top=top[:num_top])]

    async def _update_job(self, redis: aioredis.Redis, envelope: RequestEnvelope, **changes) -> None:
        if envelope.job_id is None:
            return
        key = keys.job_hash(envelope.job_id)
        raw = await redis.hget(key, "record")
        if raw is None:
            return
        record = decode_job(raw)
        if record.status == "cancelled":
            return
        await redis.hset(key, "record", encode(msgspec.structs.replace(record, **changes)))
        await redis.pexpire(key, self.retention_ms)

    async def _finish_job(self, redis: aioredis.Redis, envelope: RequestEnvelope,
                          events: list[msgspec.Struct], error: ErrorEvent | None) -> None:
        if envelope.job_id is None:
            return
        if error is not None:
            await self._update_job(redis, envelope, status="failed", finished_at=time.time(),
                                   error={"message": error.message, "type": error.type,
                                          "param": error.param, "code": error.code})
            return
        prepared = PreparedRequest(
            response_id=envelope.job_id, model=envelope.model, kind=envelope.kind,
            envelopes=[envelope], n=envelope.params.n, created=int(envelope.created_at),
            stream=False, include_usage=False, logprobs=envelope.params.logprobs is not None)
        accumulator = ResultAccumulator(prepared)
        for event in events:
            if isinstance(event, DeltaEvent):
                accumulator.add_delta(0, event)
            elif isinstance(event, FinalEvent):
                accumulator.add_final(0, event)
        await self._update_job(redis, envelope, status="succeeded", finished_at=time.time(),
                               result=msgspec.to_builtins(accumulator.response()))

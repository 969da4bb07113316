"""One request from pulled entry to acknowledged final event.

Order of writes is the recovery contract: deltas, then the final (or error) event, then the
job record, then XACK. A worker dying anywhere in between leaves the entry pending; whoever
claims it replays the result stream and continues from exactly where the writes stopped.

A Redis outage is not a failure of the request: every Redis step here is retried with back-off
until Redis answers again (the result writer buffers deltas meanwhile), so a request running
through an outage finishes normally, and a job never ends `failed` because Redis blinked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from pagefleet.platform.protocol import DeltaEvent, ErrorEvent, FinalEvent, ResultEvent, Usage, keys
from pagefleet.platform.protocol.messages import ChatOptions, input_param
from pagefleet.platform.protocol.resilience import RedisOutages, retry_transient
from pagefleet.platform.protocol.ttft import record_ttft
from pagefleet.workers.engine.chat_template import ChatPrompt
from pagefleet.workers.engine.errors import (
    EngineGoneError,
    InvalidParameterError,
    PromptTooLongError,
)
from pagefleet.workers.runtime.engine_port import EmbeddingClient, EngineClient, EnginePrompt
from pagefleet.workers.runtime.jobs import JobUpdater
from pagefleet.workers.runtime.metrics import RuntimeMetrics
from pagefleet.workers.runtime.phases import PhaseRecorder
from pagefleet.workers.runtime.responses import openai_response
from pagefleet.workers.runtime.results import ResultWriter, read_results
from pagefleet.workers.runtime.streams import PulledEntry, RequestQueues
from pagefleet.workers.runtime.transcript import Transcript

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ActiveRequest:
    entry: PulledEntry
    claimed: bool
    n: int  # choices of this request (sequences it runs in the engine)
    cancelled: bool = False
    aborted: bool = False
    replay: list[ResultEvent] = field(default_factory=list)


def _error_for(exc: ValueError, kind: str) -> ErrorEvent:
    if isinstance(exc, PromptTooLongError):
        return ErrorEvent(type="invalid_request_error", code="context_length_exceeded",
                          param=input_param(kind), message=str(exc),
                          status=400)
    return ErrorEvent(type="invalid_request_error", message=str(exc), status=400,
                      param=getattr(exc, "param", None))


def _prompt(entry: PulledEntry) -> EnginePrompt:
    envelope = entry.envelope
    if envelope.kind != "chat":
        return envelope.prompt
    messages = [msgspec.to_builtins(m) for m in envelope.messages]
    if envelope.tools is None and envelope.chat_options is None:
        return messages
    options = envelope.chat_options or ChatOptions()
    return ChatPrompt(messages, tools=envelope.tools.tools if envelope.tools else None,
                      add_generation_prompt=options.add_generation_prompt,
                      continue_final_message=options.continue_final_message)


class Executor:
    """Runs admitted requests concurrently on the engine and owns the set of active requests."""

    def __init__(self, engine: EngineClient, redis: aioredis.Redis, queues: RequestQueues,
                 writer: ResultWriter, jobs: JobUpdater, metrics: RuntimeMetrics,
                 outages: RedisOutages, phases: PhaseRecorder | None = None) -> None:
        self.engine = engine
        self.phases = phases
        self.outages = outages
        self.redis = redis
        self.queues = queues
        self.writer = writer
        self.jobs = jobs
        self.metrics = metrics
        self.active: dict[str, ActiveRequest] = {}
        self.changed = asyncio.Event()  # set whenever a request ends: capacity may have freed
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def num_active_seqs(self) -> int:
        return sum(r.n for r in self.active.values())

    async def start(self, entries: list[PulledEntry], claimed: bool = False) -> None:
        """Admit entries: register them (so cancels find them), check cancel flags, run them."""
        if not entries:
            return
        if self.phases is not None and not self.phases.reached("first_pull"):
            self.phases.mark("first_pull")
            self.phases.publish_soon(self.redis)
        fresh = []
        for entry in entries:
            if entry.request_id in self.active:  # already ours (a duplicate claim): just ack
                await self.queues.ack(entry)
                continue
            n = entry.envelope.params.n if entry.envelope else 1
            self.active[entry.request_id] = ActiveRequest(entry, claimed, n)
            fresh.append(self.active[entry.request_id])
        # Flags read with the entries (`RequestQueues.read_available`) need no round trip;
        # claimed entries come without them.
        unread = [r for r in fresh if r.entry.flagged is None]
        for request, flagged in zip(unread, await self.cancel_flags([r.entry.request_id for r in unread]),
                                    strict=True):
            request.cancelled = request.cancelled or flagged
        for request in fresh:
            request.cancelled = request.cancelled or bool(request.entry.flagged)
            if request.claimed:
                request_id = request.entry.request_id
                request.replay = await retry_transient(
                    lambda request_id=request_id: read_results(self.redis, request_id),
                    self.outages, "replaying a result stream")
            task = asyncio.create_task(self._serve(request), name=f"request-{request.entry.request_id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def cancel_flags(self, request_ids: list[str]) -> list[bool]:
        """Whether each request has its cancel flag set (retried through outages)."""
        async def read() -> list[bool]:
            async with self.redis.pipeline(transaction=False) as pipe:
                for request_id in request_ids:
                    pipe.exists(keys.cancel_flag(request_id))
                return [bool(flag) for flag in await pipe.execute()]
        return await retry_transient(read, self.outages, "reading cancel flags") if request_ids else []

    async def recheck_cancels(self) -> None:
        """Cancel active requests flagged while the cancel channel was down (a publish made
        while this worker was not subscribed is lost; the flag is not)."""
        request_ids = list(self.active)
        for request_id, flagged in zip(request_ids, await self.cancel_flags(request_ids), strict=True):
            if flagged:
                self.cancel(request_id)

    async def _record_ttft(self, entry: PulledEntry, first_token_at: float) -> None:
        """The console's TTFT history (`protocol.ttft`): best effort, never a request's failure."""
        try:
            await record_ttft(self.redis, entry.envelope.model, keys.stream_priority(entry.stream),
                              first_token_at - entry.envelope.created_at, first_token_at)
        except RedisError as exc:
            log.debug("TTFT sample of %s not recorded: %s", entry.request_id, exc)

    def cancel(self, request_id: str) -> None:
        request = self.active.get(request_id)
        if request is None:
            return
        request.cancelled = True
        if not request.aborted:
            request.aborted = True
            self.engine.abort(request_id)

    async def wait_idle(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _serve(self, request: ActiveRequest) -> None:
        entry = request.entry
        try:
            await self._run(request)
        except EngineGoneError as exc:  # as if this worker had crashed: another one resumes it
            log.error("request %s left pending for another worker: %s", entry.request_id, exc)
        except Exception as exc:
            log.exception("request %s failed in the runtime", entry.request_id)
            await self._fail(request, exc)
        finally:
            self.active.pop(entry.request_id, None)
            self.changed.set()

    async def _fail(self, request: ActiveRequest, exc: Exception) -> None:
        """Best effort: answer 500 and ack, so the entry does not sit pending on a live worker.
        If Redis is unreachable this fails too and the entry waits for a claim."""
        entry = request.entry
        error = ErrorEvent(type="server_error", message=f"the worker failed: {exc}", status=500)
        try:
            await asyncio.wait_for(self.writer.finish(entry.request_id, error), timeout=10)
            if entry.envelope is not None and entry.envelope.job_id:
                await self.jobs.mark_finished(entry.envelope.job_id, None, {
                    "type": error.type, "message": error.message, "status": error.status})
            await self.queues.ack(entry)
        except (RedisError, TimeoutError) as write_error:
            log.error("could not report the failure of %s: %s", entry.request_id, write_error)

    async def _run(self, request: ActiveRequest) -> None:
        entry = request.entry
        envelope = entry.envelope
        if envelope is None:
            error = ErrorEvent(type="invalid_request_error", message=entry.error or "bad entry", status=400)
            await self.writer.finish(entry.request_id, error, ack=(entry.stream, entry.entry_id))
            return
        transcript = Transcript(envelope.params.n)
        for event in request.replay:
            transcript.add(event)
        if not transcript.done:
            self.metrics.queue_time.observe(max(0.0, time.time() - envelope.created_at))
            if envelope.job_id and not request.cancelled:
                await retry_transient(lambda: self.jobs.mark_running(envelope.job_id),
                                      self.outages, "marking a job running")
            terminal = await self._terminal_event(request, transcript)
            transcript.add(terminal)
            ack = None if envelope.job_id else (entry.stream, entry.entry_id)
            await self.writer.finish(entry.request_id, terminal, ack=ack)
            if not envelope.job_id:
                return
        if envelope.job_id:
            await self._finish_job(request, transcript)
        await retry_transient(lambda: self.queues.ack(entry), self.outages, "acking a request")

    async def _terminal_event(self, request: ActiveRequest, transcript: Transcript) -> ResultEvent:
        envelope = request.entry.envelope
        if request.cancelled:
            return transcript.final_event()
        if envelope.deadline is not None and time.time() >= envelope.deadline:
            return _deadline_error()
        remaining = None if envelope.deadline is None else envelope.deadline - time.time()
        try:
            async with asyncio.timeout(remaining):
                if envelope.kind == "embedding":
                    return await self._embed(request)
                await self._generate(request, transcript)
        except TimeoutError:
            self.engine.abort(envelope.request_id)
            return _deadline_error()
        except ValueError as exc:
            return _error_for(exc, envelope.kind)
        return transcript.final_event()

    async def _generate(self, request: ActiveRequest, transcript: Transcript) -> None:
        envelope = request.entry.envelope
        request_id = envelope.request_id
        first_token_at: float | None = None
        tokens_before = transcript.num_completion_tokens
        stream = self.engine.add_request(request_id, _prompt(request.entry), envelope.params,
                                         resume=transcript.resume_tokens())
        async with contextlib.aclosing(stream):  # leaving early aborts the engine request
            async for delta in stream:
                if request.cancelled and not request.aborted:
                    request.aborted = True  # the cancel arrived before the engine knew the request
                    self.engine.abort(request_id)
                transcript.num_prompt_tokens = delta.num_prompt_tokens
                event = DeltaEvent(index=delta.index, offset=delta.offset,
                                   token_ids=list(delta.token_ids), text=delta.text,
                                   logprobs=delta.logprobs, finish_reason=delta.finish_reason,
                                   num_prompt_tokens=delta.num_prompt_tokens,
                                   prompt_logprobs=delta.prompt_logprobs,
                                   prompt_token_ids=delta.prompt_token_ids if envelope.return_token_ids else None)
                if transcript.add(event):
                    self.writer.emit(request_id, event)
                    if first_token_at is None and event.token_ids:
                        first_token_at = time.time()
                        self._first_token(first_token_at)
                        if not request.claimed:
                            self.metrics.ttft.observe(first_token_at - envelope.created_at)
                if transcript.all_finished:
                    # A resumed choice that had already finished would otherwise keep generating.
                    break
        done_at = time.time()
        self.metrics.e2e.observe(done_at - envelope.created_at)
        if first_token_at is not None and not request.claimed:
            await self._record_ttft(request.entry, first_token_at)
        generated = transcript.num_completion_tokens - tokens_before
        if first_token_at is not None and generated > 1:
            self.metrics.tpot.observe((done_at - first_token_at) / (generated - 1))

    async def _embed(self, request: ActiveRequest) -> FinalEvent:
        """One input's vector on the final event (an embedding has no deltas)."""
        envelope = request.entry.envelope
        if not isinstance(self.engine, EmbeddingClient):
            raise InvalidParameterError("this model does not serve embeddings", "model")
        result = await self.engine.embed(envelope.request_id, envelope.prompt, envelope.dimensions)
        self.metrics.e2e.observe(time.time() - envelope.created_at)
        if result is None:  # aborted
            return FinalEvent(finish_reasons=["abort"], usage=Usage(0, 0, 0))
        tokens = result.num_prompt_tokens
        return FinalEvent(finish_reasons=["stop"], usage=Usage(tokens, 0, tokens),
                          embedding=result.embedding)

    def _first_token(self, at: float) -> None:
        if self.phases is not None and not self.phases.reached("first_token"):
            self.phases.mark("first_token", at)
            self.phases.publish_soon(self.redis)

    async def _finish_job(self, request: ActiveRequest, transcript: Transcript) -> None:
        envelope = request.entry.envelope
        terminal = transcript.terminal
        if isinstance(terminal, ErrorEvent):
            error = {"type": terminal.type, "code": terminal.code, "message": terminal.message,
                     "param": terminal.param, "status": terminal.status}
            outcome = (None, error)
        elif isinstance(terminal, FinalEvent) and "abort" not in terminal.finish_reasons:
            outcome = (openai_response(envelope, transcript, terminal), None)
        else:
            return
        await retry_transient(lambda: self.jobs.mark_finished(envelope.job_id, *outcome),
                              self.outages, "recording a job's outcome")
        # an aborted job was cancelled by the gateway, which owns the `cancelled` state


def _deadline_error() -> ErrorEvent:
    return ErrorEvent(type="timeout", code="deadline_exceeded", status=504,
                      message="the request's deadline passed before it finished")

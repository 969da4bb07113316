"""The engine loop in its own process (an engine core), so it does not share a GIL with the
worker's event loop.

In one process the engine thread and the worker's loop (Redis writes, the HTTP of webhooks,
metrics) take turns on one GIL: on an H100 a 1B model's engine loop alone needs about a core,
and the worker process topped out at 0.93 of one, giving 0.67-0.70x of the engine's throughput
(docs/benchmarks.md, 2026-12-07). Here the same `EngineLoop` (or the benchmarks'
`SyntheticLoop`) runs in a child process and the worker keeps only the cheap ends: tokenising
and, per step, one message to decode and fan out to the requests' streams.

Wire: a socket pair, length-prefixed msgpack frames (msgspec). The worker sends the pickled
`CoreSpec` first (our own child, started from our own code), then `AddMsg`/`AbortMsg`/`StopMsg`;
the core answers `ReadyMsg` (or `BuildFailedMsg`) once built, then one `StepMsg` per step with
every delta of the step and the stats after it, `StatsMsg` when only the stats changed,
`RefusedMsg` for input it refuses, `FailedMsg` when a step failed. The core exits when told to
stop or when the worker's end of the socket closes (the worker died); the worker fails every
open stream when the core's end closes (the core died) and reports it through `wait_exit`.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import pickle
import queue
import signal
import socket
import struct
import subprocess
import sys
import threading
import traceback
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import msgspec

from pagefleet.platform.protocol.phases import Phase, PhaseLog
from pagefleet.platform.protocol.sampling import SamplingParams
from pagefleet.workers.engine.errors import (
    DuplicateRequestError,
    EngineGoneError,
    InvalidParameterError,
    PromptTooLargeError,
    PromptTooLongError,
)
from pagefleet.workers.engine.outputs import EngineStats, RequestDelta
from pagefleet.workers.engine.prompt_encoder import Prompt, PromptEncoder
from pagefleet.workers.engine.thread_bridge import (
    Abort,
    Add,
    Command,
    Outbox,
    Sink,
    Stop,
    deliver_step,
    fail_sinks,
    stream_deltas,
)

logger = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


# ---- what runs in the core ------------------------------------------------------------------

class CoreLoop(Protocol):
    """An engine loop a core can host (`EngineLoop`, `SyntheticLoop`)."""

    @property
    def max_model_len(self) -> int: ...

    @property
    def vocab_size(self) -> int: ...

    @property
    def phases(self) -> list[Phase]: ...

    def stats(self) -> EngineStats: ...

    def prepare(self, command: Add) -> None: ...

    def run(self, commands: queue.SimpleQueue[Command], outbox: Outbox) -> None: ...


class CoreSpec(Protocol):
    """What to build in the core (pickled to it) and, in the worker, the tokenizer to encode
    prompts with (None: token-id prompts only)."""

    def build(self) -> CoreLoop: ...

    def load_tokenizer(self) -> Any | None: ...


# ---- wire -------------------------------------------------------------------------------------

class Refusal(msgspec.Struct, frozen=True):
    """A refused request's error, rebuilt as the same exception type on the worker's side."""

    kind: Literal["prompt_too_long", "invalid_parameter", "duplicate", "value"]
    message: str
    param: str | None = None
    counts: tuple[int, int, int] | None = None  # prompt tokens, max_tokens, max_model_len

    @classmethod
    def of(cls, error: ValueError) -> Refusal:
        if isinstance(error, PromptTooLongError) and not isinstance(error, PromptTooLargeError):
            return cls("prompt_too_long", str(error), counts=(
                error.num_prompt_tokens, error.max_tokens, error.max_model_len))
        if isinstance(error, DuplicateRequestError):
            return cls("duplicate", str(error))
        param = getattr(error, "param", None)
        if isinstance(param, str):
            return cls("invalid_parameter", str(error), param=param)
        return cls("value", str(error))

    def exception(self) -> ValueError:
        if self.kind == "prompt_too_long" and self.counts is not None:
            return PromptTooLongError(*self.counts)
        if self.kind == "invalid_parameter" and self.param is not None:
            return InvalidParameterError(self.message, self.param)
        if self.kind == "duplicate":
            return DuplicateRequestError(self.message)
        return ValueError(self.message)


class AddMsg(msgspec.Struct, tag="add", array_like=True):
    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    resume: dict[int, list[int]] | None


class AbortMsg(msgspec.Struct, tag="abort", array_like=True):
    request_id: str


class StopMsg(msgspec.Struct, tag="stop", array_like=True):
    pass


class ReadyMsg(msgspec.Struct, tag="ready", array_like=True):
    max_model_len: int
    vocab_size: int
    phases: list[Phase]
    stats: EngineStats


class BuildFailedMsg(msgspec.Struct, tag="build_failed", array_like=True):
    message: str


class StepMsg(msgspec.Struct, tag="step", array_like=True):
    deltas: list[RequestDelta]
    stats: EngineStats


class StatsMsg(msgspec.Struct, tag="stats", array_like=True):
    stats: EngineStats


class RefusedMsg(msgspec.Struct, tag="refused", array_like=True):
    request_id: str
    error: Refusal


class FailedMsg(msgspec.Struct, tag="failed", array_like=True):
    request_ids: list[str]
    message: str


ToCore = AddMsg | AbortMsg | StopMsg
FromCore = ReadyMsg | BuildFailedMsg | StepMsg | StatsMsg | RefusedMsg | FailedMsg

_LENGTH = struct.Struct("!I")


class FrameSocket:
    """Length-prefixed frames over a blocking stream socket; `send` may be called from several
    threads, `recv` from one."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._send_lock = threading.Lock()

    def send(self, payload: bytes) -> None:
        with self._send_lock:
            self.sock.sendall(_LENGTH.pack(len(payload)) + payload)

    def recv(self) -> bytes | None:
        """The next frame, or None when the other end closed."""
        header = self._read(_LENGTH.size)
        if header is None:
            return None
        (size,) = _LENGTH.unpack(header)
        return self._read(size) if size else b""

    def _read(self, size: int) -> bytes | None:
        buffer = bytearray(size)
        view = memoryview(buffer)
        got = 0
        while got < size:
            try:
                n = self.sock.recv_into(view[got:])
            except OSError:  # closed under us (shutdown)
                return None
            if n == 0:
                return None
            got += n
        return bytes(buffer)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


# ---- the core's side --------------------------------------------------------------------------

class PipeOutbox:
    """The outbox of a loop in the core: one frame per step to the worker."""

    def __init__(self, frames: FrameSocket, stats: EngineStats) -> None:
        self.frames = frames
        self.encoder = msgspec.msgpack.Encoder()
        self._sent_stats = stats

    def _send(self, message: FromCore) -> None:
        with contextlib.suppress(OSError):  # the worker is gone; the reader stops the loop
            self.frames.send(self.encoder.encode(message))

    def accept(self, command: Add) -> None:
        """Nothing to say: the worker registered the request's stream before sending it."""

    def refuse(self, command: Add, error: ValueError) -> None:
        self._send(RefusedMsg(command.request_id, Refusal.of(error)))

    def deliver(self, deltas: list[RequestDelta], stats: EngineStats) -> None:
        if not deltas:
            self.publish(stats)
            return
        self._sent_stats = stats
        self._send(StepMsg(deltas, stats))

    def fail(self, request_ids: list[str], message: str) -> None:
        self._send(FailedMsg(request_ids, message))

    def publish(self, stats: EngineStats) -> None:
        if stats != self._sent_stats:
            self._sent_stats = stats
            self._send(StatsMsg(stats))


def _read_commands(frames: FrameSocket, loop: CoreLoop, commands: queue.SimpleQueue[Command],
                   outbox: PipeOutbox) -> None:
    """The core's reader thread: frames to commands, preparing each request here (compiling its
    grammar) so the engine loop never waits for that. A closed socket stops the loop."""
    decoder = msgspec.msgpack.Decoder(ToCore)
    while True:
        payload = frames.recv()
        if payload is None:
            commands.put(Stop())
            return
        message = decoder.decode(payload)
        if isinstance(message, AddMsg):
            command = Add(message.request_id, message.prompt_ids, message.params, message.resume)
            try:
                loop.prepare(command)
            except ValueError as exc:
                outbox.refuse(command, exc)
                continue
            commands.put(command)
        elif isinstance(message, AbortMsg):
            commands.put(Abort(message.request_id))
        else:
            commands.put(Stop())
            return


def serve_core(sock: socket.socket) -> int:
    """The core process: read the spec, build, say ready, run the loop until stopped."""
    from pagefleet.workers.engine.gc_freeze import freeze_startup_heap

    frames = FrameSocket(sock)
    encoder = msgspec.msgpack.Encoder()
    payload = frames.recv()
    if payload is None:
        return 0
    try:
        spec: CoreSpec = pickle.loads(payload)
        loop = spec.build()
    except BaseException as exc:  # tell the worker why, then exit
        logger.exception("the engine core could not be built")
        frames.send(encoder.encode(BuildFailedMsg(
            "".join(traceback.format_exception_only(type(exc), exc)).strip())))
        return 1
    freeze_startup_heap()  # this process lives for its engine (`gc_freeze`)
    stats = loop.stats()
    frames.send(encoder.encode(ReadyMsg(loop.max_model_len, loop.vocab_size, list(loop.phases),
                                        stats)))
    commands: queue.SimpleQueue[Command] = queue.SimpleQueue()
    outbox = PipeOutbox(frames, stats)
    reader = threading.Thread(target=_read_commands, args=(frames, loop, commands, outbox),
                              name="pagefleet-core-reader", daemon=True)
    reader.start()
    loop.run(commands, outbox)
    frames.close()
    return 0


# ---- the worker's side ------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class CoreProcess:
    """A started engine-core process that has not been told what to build yet."""

    process: subprocess.Popen
    frames: FrameSocket


ENGINE_IMPORTS = ("pagefleet.workers.engine.llm_engine",)
"""What a core imports before it reads its spec when started ahead (torch, the engine)."""


def start_core(imports: tuple[str, ...] = ()) -> CoreProcess:
    """Start a core; it imports `imports` first, then waits for its spec (a spare worker's core
    does the slow imports while the spare waits to be started). It exits if the socket closes."""
    parent_sock, child_sock = socket.socketpair()
    process = subprocess.Popen([sys.executable, "-m", __name__, str(child_sock.fileno()), *imports],
                               pass_fds=(child_sock.fileno(),))
    child_sock.close()
    return CoreProcess(process, FrameSocket(parent_sock))


class EngineProcessError(RuntimeError):
    """The engine core could not be built."""


class ProcessEngine:
    """The `EngineClient` of an engine core in a child process (see the module docstring).

    Building blocks until the core is ready (the worker builds its engine in a thread); the
    tokenizer loads here while the core builds. `stats()` is the core's latest snapshot."""

    def __init__(self, spec: CoreSpec, tokenizer: Any | None = None,
                 ready_timeout_s: float | None = None, core: CoreProcess | None = None) -> None:
        """`core`: one started earlier (a spare worker starts it with the engine's imports
        done while it waits); by default a fresh one."""
        core = core or start_core()
        self.process = core.process
        self.frames = core.frames
        self._decoder = msgspec.msgpack.Decoder(FromCore)
        self._encoder = msgspec.msgpack.Encoder()
        self._sinks: dict[str, Sink] = {}
        self._exit_message: str | None = None
        self._stopping = False
        self._exited = threading.Event()
        try:
            self.frames.send(pickle.dumps(spec))
            if tokenizer is None:
                tokenizer = spec.load_tokenizer()
            ready = self._wait_ready(ready_timeout_s)
        except BaseException:
            self._kill()
            self.frames.close()
            raise
        self.max_model_len = ready.max_model_len
        self.phases = PhaseLog()
        self.phases.phases.extend(ready.phases)
        self.encoder = PromptEncoder(tokenizer, ready.vocab_size, ready.max_model_len)
        self._stats = ready.stats
        self._reader = threading.Thread(target=self._read, name="pagefleet-core-results", daemon=True)
        self._reader.start()

    @property
    def tokenizer(self) -> Any | None:
        return self.encoder.tokenizer

    @property
    def max_prompt_chars(self) -> int:
        return self.encoder.max_prompt_chars

    def _wait_ready(self, timeout_s: float | None) -> ReadyMsg:
        self.frames.sock.settimeout(timeout_s)
        try:
            payload = self.frames.recv()
        except TimeoutError:
            raise EngineProcessError(f"the engine core was not ready within {timeout_s} s") from None
        finally:
            self.frames.sock.settimeout(None)
        if payload is None:
            raise EngineProcessError(
                f"the engine core exited with status {self.process.wait()} before it was ready")
        message = self._decoder.decode(payload)
        if isinstance(message, BuildFailedMsg):
            raise EngineProcessError(f"the engine core could not be built: {message.message}")
        if not isinstance(message, ReadyMsg):
            raise EngineProcessError(f"the engine core said {type(message).__name__} before ready")
        return message

    def add_request(
        self, request_id: str, prompt: Prompt, params: SamplingParams,
        resume: dict[int, list[int]] | None = None,
    ) -> AsyncIterator[RequestDelta]:
        """Stream the request's deltas; ValueError (the engine's own types) before the first
        delta for bad input, `EngineGoneError` once the core is gone (at any point). Leaving
        the iteration early aborts the request."""
        def submit(sink: Sink, prompt_ids: list[int]) -> None:
            if request_id in self._sinks:
                raise DuplicateRequestError(f"request {request_id!r} is already running")
            self._sinks[request_id] = sink  # before sending: the reply may come at once
            try:
                if self._exit_message is not None:  # the reader may have failed the rest already
                    raise EngineGoneError(self._exit_message)
                self._send(AddMsg(request_id, prompt_ids, params, resume))
            except EngineGoneError:
                self._sinks.pop(request_id, None)
                raise

        return stream_deltas(lambda: self._encode(prompt), submit, lambda: self.abort(request_id))

    async def _encode(self, prompt: Prompt) -> list[int]:
        self._check_alive()
        return await self.encoder.encode(prompt)

    def abort(self, request_id: str) -> None:
        if self._exit_message is None:
            self._send(AbortMsg(request_id))

    def stats(self) -> EngineStats:
        return self._stats

    def wait_exit(self, timeout: float | None = None) -> str | None:
        """Block until the core exits (or `timeout`); why it did, or None if it has not."""
        self._exited.wait(timeout)
        return self._exit_message

    def shutdown(self) -> None:
        """Stop the core (it aborts what is left), wait for it, and close the socket."""
        self._stopping = True
        if self._exit_message is None:
            self._send(StopMsg())
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            logger.error("the engine core did not stop within 30 s: killing it")
            self._kill()
        self._reader.join(timeout=10)
        self.frames.close()
        self.encoder.shutdown()

    def _check_alive(self) -> None:
        if self._exit_message is not None:
            raise EngineGoneError(self._exit_message)

    def _send(self, message: ToCore) -> None:
        try:
            self.frames.send(self._encoder.encode(message))
        except OSError as exc:  # the core is gone; the reader fails the streams
            if not isinstance(message, StopMsg | AbortMsg):
                raise EngineGoneError(f"the engine core is gone: {exc}") from exc

    def _read(self) -> None:
        """The results thread: each frame decoded once and fanned out to the callers' loops
        (`deliver_step`: one wake-up per caller loop per step)."""
        decoder = self._decoder
        sinks = self._sinks
        while (payload := self.frames.recv()) is not None:
            message = decoder.decode(payload)
            if isinstance(message, StepMsg):
                self._stats = message.stats
                deliver_step(sinks, message.deltas)
            elif isinstance(message, StatsMsg):
                self._stats = message.stats
            elif isinstance(message, RefusedMsg):
                sink = sinks.pop(message.request_id, None)
                if sink is not None:
                    sink.put(message.error.exception())
            elif isinstance(message, FailedMsg):
                fail_sinks(sinks, message.request_ids, message.message)
        status = self.process.wait()
        self._exit_message = f"the engine core exited with status {status}"
        if not self._stopping:
            logger.error("%s; failing its %d open requests", self._exit_message, len(sinks))
        fail_sinks(sinks, list(sinks), self._exit_message, EngineGoneError)
        self._exited.set()

    def _kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        self.process.wait()


def main() -> int:
    # The worker stops its core (a stop message, or its end of the socket closing when it dies);
    # a Ctrl-C or SIGTERM sent to the whole process group must not kill the core under a
    # worker that is still draining its requests.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    sock = socket.socket(fileno=int(sys.argv[1]))
    for module in sys.argv[2:]:
        importlib.import_module(module)
    return serve_core(sock)


if __name__ == "__main__":
    raise SystemExit(main())

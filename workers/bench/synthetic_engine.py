"""A benchmark device: an engine without a model that emits tokens at a GPU's step rate.

`bench serve --overhead` compares the platform (gateway, Redis, worker) with the engine alone.
On a GPU a decode step takes a few milliseconds and the platform's cost per token shows; on a
CPU the real model steps every ~130 ms and hides it. This engine has no model: every `step_ms`
it emits one token for each running request, so the platform's per-token path runs at GPU
rates on any machine. It serves nothing useful and is only built for a registry model with
`synthetic_step_ms` set (see docs/benchmarks.md).

The timing model is continuous batching with free compute: requests are admitted first in,
first out at step boundaries, at most `max_num_seqs` running; a request admitted at one
boundary gets its first token at the next (an idle engine starts a step as a request arrives),
then one per step until `max_tokens` (finish "length"; there is no end of sequence and text
is empty). Token ids are a function of the prompt and the position. Steps keep to deadlines
(`time.perf_counter`, waits on the command queue with a timeout), so a late step does not
shift the later ones; a step that cannot keep up starts the next one at once, as a real engine
whose step outlasts its target would.

`SyntheticLoop` talks to its callers through a `thread_bridge.Outbox`, as the real engine's loop
does: in one process one `call_soon_threadsafe` per caller loop per step, in an engine-core
process (`core_process`) one message per step. Nothing here imports torch.
"""

from __future__ import annotations

import logging
import queue
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

from pagefleet.platform.protocol.sampling import SamplingParams
from pagefleet.workers.engine.errors import DuplicateRequestError, PromptTooLongError
from pagefleet.workers.engine.outputs import EngineCounters, EngineStats, RequestDelta
from pagefleet.workers.engine.thread_bridge import (
    Abort,
    Add,
    Command,
    Outbox,
    Stop,
    ThreadedLoop,
)
from pagefleet.workers.runtime.engine_port import EnginePrompt

logger = logging.getLogger(__name__)

_TOKEN_STRIDE = 7919  # a prime: consecutive positions land far apart in the vocabulary


@dataclass(frozen=True, slots=True)
class SyntheticEngineConfig:
    step_ms: float
    max_num_seqs: int = 256
    max_model_len: int = 4096
    vocab_size: int = 32_000

    def __post_init__(self) -> None:
        if isinstance(self.step_ms, bool) or not isinstance(self.step_ms, int | float) or self.step_ms <= 0:
            raise ValueError(f"step_ms must be a positive number, got {self.step_ms!r}")
        for name in ("max_num_seqs", "max_model_len", "vocab_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer of at least 1, got {value!r}")


def synthetic_token_id(prompt_ids: list[int], position: int, vocab_size: int) -> int:
    """The token at output `position` of a request with this prompt (the same in any process:
    the hash of a tuple of ints is not randomised)."""
    return _token_id(hash(tuple(prompt_ids)), position, vocab_size)


def _token_id(seed: int, position: int, vocab_size: int) -> int:
    return (seed + _TOKEN_STRIDE * position) % vocab_size


@dataclass(slots=True)
class _Sequence:
    request_id: str
    prompt_ids: list[int]
    seed: int  # hash(tuple(prompt_ids)), once per request
    max_tokens: int  # output tokens in all, resumed ones included
    num_tokens: int  # output tokens so far, resumed ones included
    report_prompt: bool  # the next delta carries the prompt's ids (a resumed request reported them)

    @property
    def num_held(self) -> int:
        return len(self.prompt_ids) + self.num_tokens


class SyntheticBatch:
    """The synchronous core: FIFO admission up to `max_num_seqs`, one token per running request
    per `step()`. Owned by one thread; the tests drive it directly."""

    def __init__(self, config: SyntheticEngineConfig) -> None:
        self.config = config
        self.waiting: deque[_Sequence] = deque()
        self.running: dict[str, _Sequence] = {}  # admission order
        self._counters = EngineCounters()

    def add(self, request_id: str, prompt_ids: list[int], params: SamplingParams,
            resume: dict[int, list[int]] | None = None) -> None:
        """Queue a request; raises ValueError for what a real engine would refuse too."""
        if request_id in self.running or any(s.request_id == request_id for s in self.waiting):
            raise DuplicateRequestError(f"request {request_id!r} is already running")
        if params.n != 1:
            raise ValueError(f"the synthetic engine generates one choice per request, got n={params.n}")
        if not prompt_ids or any(t < 0 or t >= self.config.vocab_size for t in prompt_ids):
            raise ValueError(f"the prompt must be token ids in [0, {self.config.vocab_size})")
        room = self.config.max_model_len - len(prompt_ids)
        max_tokens = params.max_tokens if params.max_tokens is not None else room
        if room < 1 or max_tokens > room:
            raise PromptTooLongError(len(prompt_ids), max_tokens, self.config.max_model_len)
        resume = resume or {}
        if any(index != 0 for index in resume):
            raise ValueError("resume holds a choice index outside [0, 1)")
        done = len(resume.get(0, ()))
        if done >= max_tokens:
            raise ValueError(f"resume holds {done} tokens, max_tokens is {max_tokens}")
        seed = hash(tuple(prompt_ids))
        self.waiting.append(_Sequence(request_id, prompt_ids, seed, max_tokens, done, done == 0))
        self._counters.prompt_tokens += len(prompt_ids)

    def admit(self) -> None:
        """Start waiting requests, oldest first, while fewer than `max_num_seqs` run."""
        while self.waiting and len(self.running) < self.config.max_num_seqs:
            seq = self.waiting.popleft()
            self.running[seq.request_id] = seq

    def step(self) -> list[RequestDelta]:
        """One token for every running request, in admission order; finished requests leave
        and waiting ones take their places for the next step."""
        vocab_size = self.config.vocab_size
        deltas: list[RequestDelta] = []
        finished: list[str] = []
        for seq in self.running.values():
            position = seq.num_tokens
            seq.num_tokens += 1
            last = seq.num_tokens == seq.max_tokens
            delta = RequestDelta(seq.request_id, 0, position,
                                 [_token_id(seq.seed, position, vocab_size)], "", None,
                                 "length" if last else None, len(seq.prompt_ids), finished=last)
            if seq.report_prompt:
                delta.prompt_token_ids, seq.report_prompt = seq.prompt_ids, False
            deltas.append(delta)
            if last:
                finished.append(seq.request_id)
        self._counters.generation_tokens += len(deltas)
        for request_id in finished:
            del self.running[request_id]
        self.admit()
        return deltas

    def abort(self, request_id: str) -> list[RequestDelta]:
        """The aborted request's last delta (finish "abort"), or none if it is not here."""
        seq = self.running.pop(request_id, None)
        if seq is None:
            seq = next((s for s in self.waiting if s.request_id == request_id), None)
            if seq is not None:
                self.waiting.remove(seq)
        if seq is None:
            return []
        return [RequestDelta(request_id, 0, seq.num_tokens, [], "", None, "abort",
                             len(seq.prompt_ids), finished=True)]

    def request_ids(self) -> list[str]:
        return [*self.running, *(seq.request_id for seq in self.waiting)]

    def has_unfinished(self) -> bool:
        return bool(self.running) or bool(self.waiting)

    def stats(self) -> EngineStats:
        """`kv_cache_usage`: the running requests' tokens over `max_num_seqs * max_model_len`
        (there is no cache; this is what a cache sized for full contexts would hold)."""
        capacity = self.config.max_num_seqs * self.config.max_model_len
        return EngineStats(
            num_running=len(self.running), num_waiting=len(self.waiting),
            kv_cache_usage=sum(seq.num_held for seq in self.running.values()) / capacity,
            prefix_cache_hit_rate=0.0,
            prompt_tokens_total=self._counters.prompt_tokens,
            generation_tokens_total=self._counters.generation_tokens, num_preemptions_total=0,
            max_num_seqs=self.config.max_num_seqs, num_kv_blocks=0)


@dataclass(frozen=True, slots=True)
class StepReport:
    """How well the engine kept its pace: steps that emitted tokens and their mean interval
    (from the previous step, or from the start of a busy spell)."""

    num_steps: int
    mean_step_ms: float


class SyntheticLoop:
    """Steps a `SyntheticBatch` every `step_ms` (keeping to deadlines) while serving commands;
    runs in the `SyntheticEngine`'s thread or as an engine-core process's loop."""

    def __init__(self, config: SyntheticEngineConfig) -> None:
        self.config = config
        self.batch = SyntheticBatch(config)
        self.num_steps = 0
        self.stepping_s = 0.0

    @property
    def max_model_len(self) -> int:
        return self.config.max_model_len

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @property
    def phases(self) -> list:
        return []  # nothing is loaded

    def stats(self) -> EngineStats:
        return self.batch.stats()

    def prepare(self, command: Add) -> None:
        """Nothing to compile: the synthetic engine ignores grammars."""

    def step_report(self) -> StepReport:
        num_steps = self.num_steps
        mean_ms = 1000.0 * self.stepping_s / num_steps if num_steps else 0.0
        return StepReport(num_steps, mean_ms)

    def run(self, commands: queue.SimpleQueue[Command], outbox: Outbox) -> None:
        """Serve commands and step until `Stop` (which aborts what is left)."""
        step_s = self.config.step_ms / 1000.0
        deadline: float | None = None  # None: idle, wait for a command as long as it takes
        previous = 0.0  # when the previous step ran, or the busy spell began
        batch = self.batch
        while True:
            now = time.perf_counter()
            if deadline is not None and now >= deadline:
                deltas = batch.step()
                if deltas:
                    self.num_steps += 1
                    self.stepping_s += now - previous
                outbox.deliver(deltas, batch.stats())
                previous = now
                deadline = max(deadline + step_s, time.perf_counter()) \
                    if batch.has_unfinished() else None
                continue
            try:
                command = commands.get(timeout=None if deadline is None else max(0.0, deadline - now))
            except queue.Empty:
                continue
            if isinstance(command, Stop):
                deltas = [delta for request_id in batch.request_ids()
                          for delta in batch.abort(request_id)]
                outbox.deliver(deltas, batch.stats())
                return
            self._handle(command, outbox)
            if deadline is None and batch.has_unfinished():
                batch.admit()  # an idle engine starts a step at once
                previous = time.perf_counter()
                deadline = previous + step_s
            outbox.publish(batch.stats())

    def _handle(self, command: Add | Abort, outbox: Outbox) -> None:
        if isinstance(command, Abort):
            outbox.deliver(self.batch.abort(command.request_id), self.batch.stats())
            return
        try:
            self.batch.add(command.request_id, command.prompt_ids, command.params, command.resume)
        except ValueError as exc:
            outbox.refuse(command, exc)
            return
        outbox.accept(command)


@dataclass(frozen=True, slots=True)
class SyntheticCoreSpec:
    """A `SyntheticLoop` in an engine-core process (`core_process.ProcessEngine`); prompts are
    token ids, so there is no tokenizer."""

    config: SyntheticEngineConfig

    def build(self) -> SyntheticLoop:
        return SyntheticLoop(self.config)

    def load_tokenizer(self) -> None:
        return None


class SyntheticEngine:
    """The `EngineClient` over a `SyntheticLoop` in its own thread."""

    def __init__(self, config: SyntheticEngineConfig) -> None:
        self.config = config
        self.loop = SyntheticLoop(config)
        self._threaded = ThreadedLoop(self.loop, "pagefleet-synthetic-engine")

    @property
    def max_model_len(self) -> int:
        return self.config.max_model_len

    def add_request(
        self, request_id: str, prompt: EnginePrompt, params: SamplingParams,
        resume: dict[int, list[int]] | None = None,
    ) -> AsyncIterator[RequestDelta]:
        """Stream the request's deltas (token-id prompts only); ValueError before the first
        delta for input it refuses. Leaving the iteration early aborts the request."""
        return self._threaded.stream(request_id, lambda: token_ids_only(prompt), params, resume)

    def abort(self, request_id: str) -> None:
        self._threaded.abort(request_id)

    def stats(self) -> EngineStats:
        return self._threaded.stats()

    def step_report(self) -> StepReport:
        return self.loop.step_report()

    def shutdown(self) -> None:
        self._threaded.stop()
        log_step_report(self.loop)


async def token_ids_only(prompt: EnginePrompt) -> list[int]:
    if not isinstance(prompt, list) or not all(isinstance(t, int) for t in prompt):
        raise ValueError("the synthetic engine takes token-id prompts only")
    return prompt


def log_step_report(loop: SyntheticLoop) -> None:
    report = loop.step_report()
    logger.info("synthetic engine: %d steps, mean interval %.2f ms (target %.2f ms)",
                report.num_steps, report.mean_step_ms, loop.config.step_ms)

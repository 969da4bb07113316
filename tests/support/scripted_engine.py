"""ScriptedEngine: a tiny `EngineClient` whose output follows from the prompt, so the REAL worker
runtime (pulling, cancels, result writing, job records, acks) can run in tests without a model.

- choice i emits words[(i + j) % len(words)] as token j (text " word", id crc32(word) % 50000);
  token-id prompts use the words `t{id}`; chat prompts the words of all message contents;
- the prompt has one token per word; prompt + max_tokens over `max_model_len` raises
  `PromptTooLongError` (the runtime's 400 `context_length_exceeded`);
- stop strings end a choice before the stop string (finish "stop"), and so does the word
  `[eos]` where it would be emitted (a model's end of sequence: APIs without `stop`, like the
  Responses API, can finish with "stop" this way); else finish "length";
- a prompt containing the word `[hold]` emits one token per choice, then waits until aborted;
- `gate_after_first_token`: every request emits its first token, then waits for `release()`
  (a load test holds thousands of open streams at once this way);
- `token_delay_s` paces tokens (0: as fast as the event loop allows).

`InProcessWorker` runs `Worker(settings, lambda: engine)` in its own thread and event loop.
"""

from __future__ import annotations

import asyncio
import threading
import time
import zlib
from collections.abc import AsyncIterator
from typing import Any

from pagefleet.platform.protocol import SamplingParams, TokenLogprob, TopLogprob
from pagefleet.workers.engine.chat_template import ChatPrompt
from pagefleet.workers.engine.errors import PromptTooLongError
from pagefleet.workers.engine.outputs import EngineStats, RequestDelta
from pagefleet.workers.runtime.config import WorkerSettings
from pagefleet.workers.runtime.engine_port import EnginePrompt
from pagefleet.workers.runtime.main import Worker

HOLD = "[hold]"
EOS = "[eos]"


def prompt_words(prompt: EnginePrompt) -> list[str]:
    if isinstance(prompt, ChatPrompt):
        prompt = prompt.messages
    if isinstance(prompt, str):
        return prompt.split() or ["empty"]
    if prompt and isinstance(prompt[0], dict):
        text = " ".join(m["content"] for m in prompt if isinstance(m.get("content"), str))
        return text.split() or ["empty"]
    return [f"t{token_id}" for token_id in prompt] or ["empty"]


def token_id(word: str) -> int:
    return zlib.crc32(word.encode()) % 50_000


def choice_tokens(words: list[str], choice: int, max_tokens: int, stop: list[str],
                  stop_token_ids: list[int]) -> tuple[list[tuple[int, str]], str]:
    """(token id, text) pairs of one choice and its finish reason."""
    tokens: list[tuple[int, str]] = []
    text = ""
    for j in range(max_tokens):
        word = words[(choice + j) % len(words)]
        if word == EOS or token_id(word) in stop_token_ids:
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


def _logprobs(tid: int, text: str, num_top: int | None) -> list[TokenLogprob] | None:
    if num_top is None:
        return None
    top = [TopLogprob(token_id=tid, token=text, logprob=-0.5)]
    top += [TopLogprob(token_id=tid + k, token=f"{text}#{k}", logprob=-1.0 - k) for k in range(1, num_top)]
    return [TokenLogprob(token_id=tid, token=text, logprob=-0.5, top=top[:num_top])]


class ScriptedEngine:
    """Implements `EngineClient`; lives in the worker's event loop, observed from the test's."""

    def __init__(self, *, max_model_len: int = 64, max_num_seqs: int = 256,
                 token_delay_s: float = 0.0, gate_after_first_token: bool = False) -> None:
        self.max_model_len = max_model_len
        self.max_num_seqs = max_num_seqs
        self.token_delay_s = token_delay_s
        self.gated = gate_after_first_token
        self.aborted: set[str] = set()  # request ids it ended because they were aborted
        self.changed = threading.Condition()  # notified on every abort and first token
        self.num_first_tokens = 0
        self._aborts: dict[str, asyncio.Event] = {}
        self._gate: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._released = False
        self._prompt_tokens = 0
        self._generation_tokens = 0

    # ---- test side (any thread) -----------------------------------------------------------

    def wait_aborted(self, request_id: str, timeout: float = 30.0) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: request_id in self.aborted, timeout)

    def wait_first_tokens(self, count: int, timeout: float) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: self.num_first_tokens >= count, timeout)

    def release(self) -> None:
        """Open the gate: gated requests continue past their first token."""
        self._released = True
        if self._loop is not None and self._gate is not None:
            self._loop.call_soon_threadsafe(self._gate.set)

    # ---- EngineClient ---------------------------------------------------------------------

    async def add_request(self, request_id: str, prompt: EnginePrompt, params: SamplingParams,
                          resume: dict[int, list[int]] | None = None) -> AsyncIterator[RequestDelta]:
        words = prompt_words(prompt)
        max_tokens = params.max_tokens or max(1, self.max_model_len - len(words))
        if len(words) + max_tokens > self.max_model_len:
            raise PromptTooLongError(len(words), max_tokens, self.max_model_len)
        self._bind_loop()
        abort = self._aborts.setdefault(request_id, asyncio.Event())
        choices = [choice_tokens(words, i, max_tokens, params.stop or [], params.stop_token_ids or [])
                   for i in range(params.n)]
        done = {i: len((resume or {}).get(i, [])) for i in range(params.n)}
        self._prompt_tokens += len(words)
        try:
            for j in range(max(len(tokens) for tokens, _ in choices)):
                if j == 1:
                    await self._wait_after_first(HOLD in words, abort)
                if abort.is_set():
                    break
                for i, (tokens, reason) in enumerate(choices):
                    if j < done[i] or j >= len(tokens):
                        continue
                    tid, text = tokens[j]
                    last = j == len(tokens) - 1
                    done[i] = j + 1
                    self._generation_tokens += 1
                    yield RequestDelta(request_id=request_id, index=i, offset=j, token_ids=[tid],
                                       text=text, logprobs=_logprobs(tid, text, params.logprobs),
                                       finish_reason=reason if last else None,
                                       num_prompt_tokens=len(words))
                if j == 0:
                    with self.changed:
                        self.num_first_tokens += 1
                        self.changed.notify_all()
                await asyncio.sleep(self.token_delay_s)
            if abort.is_set():
                with self.changed:
                    self.aborted.add(request_id)
                    self.changed.notify_all()
                for i, (tokens, _) in enumerate(choices):
                    if done[i] < len(tokens):
                        yield RequestDelta(request_id=request_id, index=i, offset=done[i],
                                           token_ids=[], text="", logprobs=None,
                                           finish_reason="abort", num_prompt_tokens=len(words))
        finally:
            self._aborts.pop(request_id, None)

    async def _wait_after_first(self, hold: bool, abort: asyncio.Event) -> None:
        waits = [asyncio.ensure_future(abort.wait())]
        if self.gated and not self._released and self._gate is not None:
            waits.append(asyncio.ensure_future(self._gate.wait()))
        elif not hold:
            waits[0].cancel()
            return
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waits:
                waiter.cancel()

    def _bind_loop(self) -> None:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._gate = asyncio.Event()
            if self._released:
                self._gate.set()

    def abort(self, request_id: str) -> None:
        event = self._aborts.get(request_id)
        if event is not None:
            event.set()

    def stats(self) -> EngineStats:
        return EngineStats(num_running=len(self._aborts), num_waiting=0, kv_cache_usage=0.0,
                           prefix_cache_hit_rate=0.0, prompt_tokens_total=self._prompt_tokens,
                           generation_tokens_total=self._generation_tokens,
                           num_preemptions_total=0, max_num_seqs=self.max_num_seqs,
                           num_kv_blocks=0)

    def shutdown(self) -> None:
        for event in self._aborts.values():
            event.set()


class InProcessWorker:
    """The real worker runtime on a `ScriptedEngine`, in a thread with its own event loop."""

    def __init__(self, redis_url: str, model: str, engine: ScriptedEngine, **settings: Any) -> None:
        self.engine = engine
        self.settings = WorkerSettings(model=model, redis_url=redis_url, **settings)
        self._worker: Worker | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True, name=f"worker-{model}")
        self.exit_code: int | None = None

    def start(self, timeout: float = 30.0) -> InProcessWorker:
        """Start the thread and return once the worker heartbeats `ready` (it pulls then)."""
        self._thread.start()
        deadline = time.monotonic() + timeout
        self._ready.wait(timeout)
        while self._worker is None or self._worker.state != "ready":  # a condition, with a deadline
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the in-process worker did not become ready")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 60.0) -> None:
        """Abort what the engine still holds (a `[hold]` request whose cancel was lost with
        Redis), then drain as SIGTERM does and wait for the thread."""
        if self._loop is not None and self._worker is not None:
            self._loop.call_soon_threadsafe(self.engine.shutdown)
            self._loop.call_soon_threadsafe(self._worker.stop.set)
        self._thread.join(timeout)

    def wait_aborted(self, request_id: str, timeout: float = 30.0) -> bool:
        return self.engine.wait_aborted(request_id, timeout)

    def _main(self) -> None:
        async def main() -> int:
            self._loop = asyncio.get_running_loop()
            self._worker = Worker(self.settings, lambda: self.engine)
            self._ready.set()
            return await self._worker.run(install_signal_handlers=False)

        self.exit_code = asyncio.run(main())

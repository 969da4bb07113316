"""The loop that drives an `LLMEngine` for servers: commands in, steps out.

It runs in the `AsyncEngine`'s thread, or as the main loop of an engine-core process
(`core_process`); only the `Outbox` differs. The engine's state is touched by this loop only.
"""

from __future__ import annotations

import logging
import queue
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pagefleet.platform.protocol.phases import Phase
from pagefleet.workers.engine.config import EngineConfig
from pagefleet.workers.engine.outputs import EngineStats
from pagefleet.workers.engine.thread_bridge import Abort, Add, Command, Outbox, Stop

if TYPE_CHECKING:
    from pagefleet.workers.engine.llm_engine import LLMEngine

logger = logging.getLogger(__name__)


def check_standby_after_s(standby_after_s: float | None) -> None:
    """Refuse a negative standby time before anything is loaded for it."""
    if standby_after_s is not None and standby_after_s < 0:
        raise ValueError(f"standby_after_s must be at least 0, got {standby_after_s}")


class EngineLoop:
    """`standby_after_s`: with nothing to do for that long the engine sleeps (standby: the
    device memory is freed, the process and its host copy of the weights stay), and the next
    request wakes it first. None: never sleep (idle means the controller's scale to zero)."""

    def __init__(self, engine: LLMEngine, standby_after_s: float | None = None) -> None:
        check_standby_after_s(standby_after_s)
        self.engine = engine
        self.standby_after_s = standby_after_s

    @property
    def max_model_len(self) -> int:
        return self.engine.max_model_len

    @property
    def vocab_size(self) -> int:
        return self.engine.arch.vocab_size

    @property
    def phases(self) -> list[Phase]:
        return self.engine.phases.phases

    def stats(self) -> EngineStats:
        return self.engine.stats()

    def prepare(self, command: Add) -> None:
        """Work a request needs before it is queued that may run off the loop (and so does not
        stall other streams): compiling its grammar, which `add_request` then finds cached.
        Raises ValueError (`InvalidParameterError`) for a grammar that does not compile."""
        self.engine.compile_grammar(command.params)

    def run(self, commands: queue.SimpleQueue[Command], outbox: Outbox) -> None:
        """Serve commands and step until `Stop` (which aborts what is left)."""
        while True:
            block = not self.engine.has_unfinished()
            try:
                while True:
                    command = commands.get(block=block, timeout=self._idle_timeout(block))
                    block = False
                    if isinstance(command, Stop):
                        self._abort_all(outbox)
                        return
                    self._handle(command, outbox)
            except queue.Empty:
                if block:  # idle for standby_after_s
                    self._sleep(outbox)
            if not self.engine.has_unfinished():
                outbox.publish(self.engine.stats())
                continue
            try:
                deltas = self.engine.step()
            except Exception as exc:  # the step failed: fail every request rather than hang them
                logger.exception("engine step failed")
                self._fail_all(outbox, exc)
                continue
            outbox.deliver(deltas, self.engine.stats())

    def _idle_timeout(self, idle: bool) -> float | None:
        """How long an idle engine waits for a command before it sleeps (None: forever)."""
        if not idle or self.standby_after_s is None or self.engine.is_sleeping:
            return None
        return self.standby_after_s

    def _sleep(self, outbox: Outbox) -> None:
        logger.info("idle for %g s: going to standby", self.standby_after_s)
        self.engine.sleep()
        outbox.publish(self.engine.stats())

    def _handle(self, command: Add | Abort, outbox: Outbox) -> None:
        if isinstance(command, Abort):
            outbox.deliver(self.engine.abort(command.request_id), self.engine.stats())
            return
        if self.engine.is_sleeping:
            self.engine.wake()  # logs its phases
        try:
            self.engine.add_request(command.request_id, command.prompt_ids, command.params,
                                    command.resume)
        except ValueError as exc:
            outbox.refuse(command, exc)
            return
        except Exception as exc:  # never let one bad request stop the loop that serves the rest
            logger.exception("could not add request %s", command.request_id)
            outbox.refuse(command, ValueError(f"invalid request: {exc}"))
            return
        outbox.accept(command)

    def _abort_all(self, outbox: Outbox) -> None:
        for request_id in list(self.engine.requests):
            outbox.deliver(self.engine.abort(request_id), self.engine.stats())

    def _fail_all(self, outbox: Outbox, exc: Exception) -> None:
        request_ids = list(self.engine.requests)
        for request_id in request_ids:
            self.engine.abort(request_id)
        outbox.fail(request_ids, f"engine step failed: {exc}")


@dataclass(frozen=True, slots=True)
class EngineCoreSpec:
    """An `EngineLoop` over an `LLMEngine` of `config`, built in an engine-core process
    (`core_process.ProcessEngine`); the worker loads the tokenizer to encode prompts with."""

    config: EngineConfig
    standby_after_s: float | None = None

    def __post_init__(self) -> None:
        check_standby_after_s(self.standby_after_s)

    def build(self) -> EngineLoop:
        from pagefleet.workers.engine.llm_engine import LLMEngine

        return EngineLoop(LLMEngine(self.config), self.standby_after_s)

    def load_tokenizer(self) -> Any | None:
        from pagefleet.workers.models.loader import load_tokenizer, resolve_model

        resolved = resolve_model(self.config.model, load_format=self.config.load_format)
        return load_tokenizer(resolved, self.config.tokenizer)

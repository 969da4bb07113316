"""The engine as the worker runtime sees it: four calls, nothing else.

`AsyncEngine` implements it; so does the scripted engine the tests run the real runtime on
(tests/support/scripted_engine.py). Keeping the boundary this small is what lets the runtime
be tested without a model and the engine without Redis.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from pagefleet.platform.protocol.sampling import SamplingParams
from pagefleet.workers.engine.chat_template import ChatPrompt
from pagefleet.workers.engine.outputs import EngineStats, RequestDelta

if TYPE_CHECKING:
    from pagefleet.workers.embed.engine import EmbeddingResult

# Text, token ids, or chat messages as dicts (role, content, name), plain or with tools and
# template options (ChatPrompt).
EnginePrompt = str | list[int] | list[dict[str, Any]] | ChatPrompt


class EngineClient(Protocol):
    def add_request(self, request_id: str, prompt: EnginePrompt, params: SamplingParams,
                    resume: dict[int, list[int]] | None = None) -> AsyncIterator[RequestDelta]:
        """Stream the request's deltas, each choice continuing after its `resume` tokens.

        Raises ValueError (e.g. `PromptTooLongError`) before the first delta for input the
        engine refuses; leaving the iteration early aborts the request.
        """
        ...

    def abort(self, request_id: str) -> None:
        """Stop a request soon; its stream ends with finish reason `abort`."""
        ...

    def stats(self) -> EngineStats:
        """Load now: what the puller's admission and the heartbeat report."""
        ...

    def shutdown(self) -> None:
        """Free the engine's resources; called once, after the last request."""
        ...


@runtime_checkable
class EmbeddingClient(EngineClient, Protocol):
    """The engine of a `task: embed` model (`EmbeddingEngine`): one more call, no deltas."""

    async def embed(self, request_id: str, prompt: str | list[int],
                    dimensions: int | None = None) -> EmbeddingResult | None:
        """The input's unit vector (cut to `dimensions` first), or None if aborted; raises
        ValueError for input the model refuses."""
        ...


@runtime_checkable
class EngineWithCore(EngineClient, Protocol):
    """An engine whose loop runs in another process (`ProcessEngine`), which can die under the
    worker: the worker watches it and stops (exit status 1) so that its pod is restarted and
    its pending entries are claimed by the others."""

    def wait_exit(self, timeout: float | None = None) -> str | None:
        """Block until the engine's process exits (or `timeout`); why it did, or None."""
        ...


EngineFactory = Callable[[], EngineClient]

"""The event loop pagefleet's long-running processes use: uvloop where it is installed.

The worker's loop turns every engine step into result writes and shares the process's GIL
with the engine's scheduling thread; the benchmark client parses every streamed chunk. Both
spend their time in the loop's own machinery (callbacks, sockets), which uvloop runs in C at
a fraction of asyncio's cost. Where it is missing (it is a dependency on Linux and macOS)
the standard loop serves the same code.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop constructor, or None (asyncio's default) where uvloop is not installed."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run` on the fastest loop available."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)

"""`event_loop.run` runs a coroutine on uvloop where installed, asyncio's loop otherwise."""

from __future__ import annotations

import asyncio
import importlib.util

from pagefleet.platform.protocol import event_loop


async def _loop_module_and(value: int) -> tuple[str, int]:
    await asyncio.sleep(0)
    return type(asyncio.get_running_loop()).__module__, value


def test_run_returns_the_coroutines_value_on_the_fastest_loop():
    module, value = event_loop.run(_loop_module_and(7))
    assert value == 7
    if importlib.util.find_spec("uvloop") is not None:
        assert module.startswith("uvloop")
    else:
        assert module.startswith("asyncio")

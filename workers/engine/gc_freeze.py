"""Keep Python's full garbage collections off the engine's step loop.

A loaded engine process tracks hundreds of thousands of objects (torch, transformers, the
model's modules); a full (generation 2) collection walks all of them, and on the CPU machine
one took 0.14 s with 445k objects, 9 % of a 1.6 s benchmark run. Python starts one whenever the
long-lived objects have grown by a quarter, so a serving engine meets them now and then: a
pause of that length is fifty GPU decode steps of a small model, and a step-time spike for every
stream. `gc.freeze()` moves everything alive now into a permanent generation that collections
skip (vLLM does the same after start-up); later objects are collected as before.

Called by the processes that own an engine for their lifetime (the worker, the benchmarks)
once the engine is built, never by the engine itself: a test process that builds and drops
many engines would keep each one's cyclic garbage forever.
"""

from __future__ import annotations

import gc


def freeze_startup_heap() -> int:
    """Exempt every object alive now from future collections; returns how many were moved.
    No collection first: that would cost a full pass at start-up (cold start) to save the
    memory of start-up's cyclic garbage, which is small."""
    gc.freeze()
    return gc.get_freeze_count()


def unfreeze_heap() -> None:
    """Back to normal collection, before dropping an engine in a process that goes on (a
    benchmark building the next engine): its cycles are collectable again."""
    gc.unfreeze()

"""The phases of a worker's cold start, named once for the worker, the engine and the bench.

A cold start is a chain: the gateway queues a request, the controller decides to scale, a
process is spawned, it imports, loads weights, allocates the KV cache (and on CUDA profiles
memory and captures graphs), pulls the request and streams the first token. Each worker marks
these phases as they happen (one structured log line each, and an entry on the model's phase
stream, `keys.phase_stream`), so `pagefleet bench coldstart` and an operator reading logs see
the same breakdown. Phases that do not apply (graphs on a CPU) are simply absent.
"""

from __future__ import annotations

import time

import msgspec

SPAWNED_AT_ENV = "PAGEFLEET_SPAWNED_AT"
"""Set by the local backend on a worker: when it spawned it (or handed a spare its start), so
the worker's phases count from the backend's decision, not from its own interpreter start."""
SPARE_ENV = "PAGEFLEET_SPARE"
"""Set (to 1) by the local backend on a worker it starts as a spare (`workers.runtime.spare`)."""

PHASE_ORDER = (
    "spawned",           # the backend started the process (or handed a pre-imported spare the start)
    "imports_done",      # torch and the engine are imported
    "tokenizer_loaded",  # the model resolved (a folder's config and tokenizer: transformers; a preset has neither)
    "weights_loaded",
    "memory_profiled",   # CUDA: the dummy step that sizes the KV cache
    "kv_allocated",
    "graphs_captured",   # CUDA graphs of the decode batch sizes
    "engine_ready",
    "first_pull",        # the first request entries pulled from Redis
    "first_token",       # the first token of the first request written to its result stream
)


class Phase(msgspec.Struct, frozen=True):
    """One phase reached at wall-clock time `at` (seconds since the epoch, comparable across
    processes on one machine), when the process had used `cpu_s` seconds of CPU (all threads):
    on a shared machine the wall clock says what a client waits, the CPU time what the work
    itself costs."""

    name: str
    at: float
    cpu_s: float = 0.0


class PhaseEvent(msgspec.Struct, kw_only=True, frozen=True):
    """A phase as the worker publishes it on `keys.phase_stream(model)`."""

    worker_id: str
    model: str
    phase: str
    at: float
    since_spawn_s: float
    cpu_since_spawn_s: float = 0.0  # CPU seconds this worker used since it was spawned


PHASE_EVENT_FIELD = "event"  # the field of a phase stream entry holding the encoded event


def decode_phase_event(raw: bytes | str) -> PhaseEvent:
    return msgspec.json.decode(raw, type=PhaseEvent)


class PhaseLog:
    """Phases in the order they were reached; the engine marks its own during construction."""

    def __init__(self) -> None:
        self.phases: list[Phase] = []

    def mark(self, name: str, at: float | None = None) -> Phase:
        if name not in PHASE_ORDER:
            raise ValueError(f"unknown phase {name!r}; expected one of {PHASE_ORDER}")
        phase = Phase(name, time.time() if at is None else at, time.process_time())
        self.phases.append(phase)
        return phase


def in_order(names: list[str]) -> bool:
    """Whether `names` follow `PHASE_ORDER` (skipping the phases that did not apply)."""
    ranks = [PHASE_ORDER.index(name) for name in names]
    return ranks == sorted(ranks)

"""A spare worker: a process that has done everything a worker of one model can do before it
is needed, and waits for the word to start.

Most of a CPU cold start is not the model: it is importing torch and transformers (and the
lazily imported parts transformers pulls in on first use: the model's config class, the
tokenizer classes) and reading the small files. The local backend keeps one spare per model
(`LocalSettings.spare_workers`); scaling up hands the spare a start line on its stdin instead of
spawning a bare interpreter, so a start pays only for the weights and the KV cache.

Why a waiting process rather than a fork server ("zygote"): the backend keeps a real child
(`Popen`: its pid, signals, exit status and the parent-death signal all work as for any
worker), and nothing forks a process that already runs torch's thread pools. The price is one
idle process per model at zero (a few hundred MB resident); replicas do not share the imported
pages the way forked children would.

Protocol on stdin: one JSON line `{"spawned_at": <epoch seconds>}` starts the worker; end of
file (the controller stopped, or dropped the spare) exits 0 without starting.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import redis

from pagefleet.platform.protocol import keys

log = logging.getLogger(__name__)


def preload(spec: Any) -> Any:
    """Import what a worker of `spec` imports, read its config and load its tokenizer (returned,
    for the engine to use), and ask the kernel to read the weight files into the page cache.
    A synthetic model (a benchmark device) has nothing to preload."""
    if spec.synthetic_step_ms is not None:
        return None
    from pagefleet.workers.engine.async_engine import AsyncEngine  # noqa: F401  torch, the engine
    from pagefleet.workers.models.loader import load_tokenizer
    from pagefleet.workers.models.sources import resolve_model

    kwargs = spec.engine_kwargs()
    resolved = resolve_model(spec.source, load_format=kwargs.get("load_format", "auto"))
    if resolved.path is not None and hasattr(os, "posix_fadvise"):
        for file in Path(resolved.path).glob("*.safetensors"):
            fd = os.open(file, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
            finally:
                os.close(fd)
    return load_tokenizer(resolved, kwargs.get("tokenizer"))


def _start_core(spec: Any) -> Any:
    """For a model whose engine runs in its own process, start that process now, importing
    torch and the engine while the spare waits (it exits with the spare if never used)."""
    if spec.synthetic_step_ms is not None or not spec.runs_engine_process:
        return None
    from pagefleet.workers.engine.core_process import ENGINE_IMPORTS, start_core

    return start_core(ENGINE_IMPORTS)


@dataclass(frozen=True, slots=True)
class SpareStart:
    """What a spare hands the worker it becomes: when it was told to start, and its tokenizer."""

    spawned_at: float
    tokenizer: Any
    core: Any = None  # a `CoreProcess` with the engine imported, for an engine_process model


def wait_for_start(spec: Any, redis_url: str, worker_id: str,
                   stdin: IO[str] = sys.stdin) -> SpareStart | None:
    """Preload, announce the spare in `keys.SPARE_WORKERS` and wait for the start line; None
    when told to exit instead."""
    started = time.monotonic()
    tokenizer = preload(spec)
    core = _start_core(spec)
    log.info("spare worker %s of %s preloaded in %.2fs; waiting for a start", worker_id, spec.name,
             time.monotonic() - started)
    client = redis.Redis.from_url(redis_url)
    try:
        _best_effort(lambda: client.hset(keys.SPARE_WORKERS, worker_id, spec.name))
        line = stdin.readline()
        _best_effort(lambda: client.hdel(keys.SPARE_WORKERS, worker_id))
    finally:
        client.close()
    if not line.strip():
        return None
    try:
        return SpareStart(float(json.loads(line)["spawned_at"]), tokenizer, core)
    except (ValueError, KeyError, TypeError) as exc:
        raise SystemExit(f"spare worker {worker_id}: bad start line {line!r}: {exc}") from None


def _best_effort(write: Any) -> None:
    """The spare's announcement is for benchmarks and tests; Redis being down must not stop it."""
    try:
        write()
    except (redis.RedisError, OSError) as exc:
        log.warning("spare bookkeeping failed: %s", exc)

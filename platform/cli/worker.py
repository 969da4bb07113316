"""`pagefleet worker`: serve one registry model from its Redis streams.

The flags are generated from `WorkerSettings`; the engine (torch) is imported inside the
command, so building the CLI stays light. The webhook signing secret comes only from
PAGEFLEET_WEBHOOK_SECRET (a flag would show it in the process list).
"""

from __future__ import annotations

import argparse
import logging
import os
import time

from pagefleet.platform.cli import flags
from pagefleet.workers.runtime.config import WorkerSettings

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_HELP = {
    "metrics_port": "/metrics and /health port",
    "retention_s": "seconds result streams are kept",
    "dead_after_s": "seconds without heartbeat after which a worker's entries are claimed",
    "webhook_allow_private": "deliver webhooks to private and loopback addresses too",
    "batch_share": "fraction of max_num_seqs that batch (priority 2) work may hold; the rest "
                   "stays free for interactive requests and jobs",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("worker", help="serve one model from its Redis streams")
    parser.add_argument("--model", default=None, help="registry model name (default: the first one)")
    flags.add_registry_flag(parser)
    flags.add_flags(parser, WorkerSettings, ("redis_url", "worker_id", "metrics_port", "metrics_host",
                                             "retention_s", "dead_after_s", "webhook_allow_private",
                                             "batch_share"),
                    help=_HELP, env={"worker_id": "PAGEFLEET_WORKER_ID",
                                     "webhook_allow_private": "PAGEFLEET_WEBHOOK_ALLOW_PRIVATE"})
    parser.add_argument("--log-level", default="INFO")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pagefleet.platform.protocol.phases import SPARE_ENV
    from pagefleet.platform.registry import load_registry
    from pagefleet.workers.engine.gc_freeze import freeze_startup_heap
    from pagefleet.workers.runtime import run_worker
    from pagefleet.workers.runtime.main import registry_engine_factory
    from pagefleet.workers.runtime.phases import PhaseRecorder, spawned_at_from_env
    from pagefleet.workers.runtime.spare import wait_for_start

    logging.basicConfig(level=args.log_level.upper(), format=LOG_FORMAT)
    spec = load_registry(args.registry_path).get_or_first(args.model)
    settings = flags.settings_from_args(
        WorkerSettings, args, model=spec.name,
        webhook_secret=os.environ.get("PAGEFLEET_WEBHOOK_SECRET") or None)
    spawned_at, cpu_at_spawn, tokenizer, core = spawned_at_from_env(), 0.0, None, None
    if os.environ.get(SPARE_ENV):
        start = wait_for_start(spec, settings.redis_url, settings.worker_id)
        if start is None:
            return 0
        spawned_at, cpu_at_spawn, tokenizer, core = (start.spawned_at, time.process_time(),
                                                     start.tokenizer, start.core)
    phases = PhaseRecorder(settings.model, settings.worker_id, spawned_at, cpu_at_spawn)
    build_engine = registry_engine_factory(spec, phases, tokenizer, core=core)

    def build_and_freeze():
        """This process lives for its engine: what loading left alive stays out of every
        full garbage collection from here on (`gc_freeze`)."""
        engine = build_engine()
        freeze_startup_heap()
        return engine

    return run_worker(settings, build_and_freeze, phases=phases)

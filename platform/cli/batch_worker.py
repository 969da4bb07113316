"""`pagefleet batch-worker`: a Celery worker that runs batches (/v1/batches) step by step.

Stateless: scale it with replicas. Every replica needs the gateway's Redis and the same files
directory as the gateway (a shared volume). No torch: the models run in `pagefleet worker`.
"""

from __future__ import annotations

import argparse
import os

from pagefleet.platform.batch.settings import BatchSettings
from pagefleet.platform.cli import flags

_FLAGS = ("files_dir", "max_in_flight", "max_backlog", "step_s", "lease_s", "visibility_timeout_s",
          "file_retention_s", "file_sweep_s")
_HELP = {
    "files_dir": "where files live; the gateway's directory (default ~/.pagefleet/files)",
    "max_in_flight": "requests one batch keeps queued or running",
    "max_backlog": "undelivered batch entries per model (all batches) beyond which no more "
                   "lines are queued",
    "visibility_timeout_s": "seconds after which a task of a dead worker is handed out again",
    "file_retention_s": "seconds after which a file (upload or batch output) is deleted",
    "file_sweep_s": "seconds between two sweeps for expired files",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("batch-worker", help="run /v1/batches work (a Celery worker)")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    flags.add_registry_flag(parser)
    flags.add_flags(parser, BatchSettings, _FLAGS, help=_HELP)
    parser.add_argument("--concurrency", type=int, default=2, help="batches stepped at once")
    parser.add_argument("--log-level", default="info")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import redis

    from pagefleet.platform.batch.celery_app import QUEUE, create_celery
    from pagefleet.platform.batch.tasks import register_tasks, sweep
    from pagefleet.platform.registry import load_registry

    settings = flags.settings_from_args(BatchSettings, args)
    models = frozenset(load_registry(args.registry_path).models)
    app = create_celery(args.redis_url, settings)
    register_tasks(app, args.redis_url, settings, models)
    client = redis.Redis.from_url(args.redis_url)
    try:
        sweep(app, client, settings)
    finally:
        client.close()
    pool = "solo" if args.concurrency == 1 else "prefork"
    app.worker_main(["worker", f"--pool={pool}", f"--concurrency={args.concurrency}",
                     f"--loglevel={args.log_level.upper()}", "-Q", QUEUE, "--without-gossip",
                     "--without-mingle", "--without-heartbeat"])
    return 0

"""`pagefleet batch-worker`: a Celery worker that runs batches (/v1/batches) step by step.

Stateless: scale it with replicas. Every replica needs the gateway's Redis and the same files
directory as the gateway (a shared volume). No torch: the models run in `pagefleet worker`.
"""

from __future__ import annotations

import argparse
import os

from pagefleet.platform.batch.settings import BatchSettings

_DEFAULTS = BatchSettings()


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("batch-worker", help="run /v1/batches work (a Celery worker)")
    add_arguments(parser)
    parser.set_defaults(func=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--registry", default=None, help="registry YAML (default: the packaged one)")
    parser.add_argument("--files-dir", default=_DEFAULTS.files_dir,
                        help="where files live; the gateway's directory (default ~/.pagefleet/files)")
    parser.add_argument("--concurrency", type=int, default=2, help="batches stepped at once")
    parser.add_argument("--max-in-flight", type=int, default=_DEFAULTS.max_in_flight,
                        help="requests one batch keeps queued or running")
    parser.add_argument("--max-backlog", type=int, default=_DEFAULTS.max_backlog,
                        help="undelivered batch entries per model (all batches) beyond which "
                             "no more lines are queued")
    parser.add_argument("--step", type=float, default=_DEFAULTS.step_s, dest="step_s")
    parser.add_argument("--lease", type=float, default=_DEFAULTS.lease_s, dest="lease_s")
    parser.add_argument("--visibility-timeout", type=float, default=_DEFAULTS.visibility_timeout_s,
                        dest="visibility_timeout_s",
                        help="seconds after which a task of a dead worker is handed out again")
    parser.add_argument("--log-level", default="info")


def settings_from_args(args: argparse.Namespace) -> BatchSettings:
    return BatchSettings(files_dir=args.files_dir, max_in_flight=args.max_in_flight,
                         max_backlog=args.max_backlog, step_s=args.step_s, lease_s=args.lease_s,
                         visibility_timeout_s=args.visibility_timeout_s)


def run(args: argparse.Namespace) -> int:
    import redis

    from pagefleet.platform.batch.celery_app import QUEUE, create_celery
    from pagefleet.platform.batch.tasks import register_tasks, sweep
    from pagefleet.platform.registry import load_registry

    settings = settings_from_args(args)
    models = frozenset(load_registry(args.registry).models)
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

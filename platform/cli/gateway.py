"""`pagefleet gateway`: serve the OpenAI-compatible gateway with uvicorn (no torch imported).

API keys come from `--api-key` (repeatable) or, if none is given, the comma-separated
PAGEFLEET_API_KEYS environment variable; with neither the gateway is open, like vLLM.
Admin keys (accepted as API keys, and the only ones that open the console's fleet views) come
from `--admin-key` or PAGEFLEET_ADMIN_KEYS the same way.
The other flags are generated from `GatewaySettings`, which holds their defaults.
`--workers N` runs N gateway processes on the one port (see `gateway.serving`).
"""

from __future__ import annotations

import argparse
import os

from pagefleet.platform.batch.settings import BatchSettings
from pagefleet.platform.cli import flags
from pagefleet.platform.gateway.settings import GatewaySettings

_HELP = {
    "registry_path": "registry YAML (default: the packaged one)",
    "api_keys": "accepted bearer key; repeat for several",
    "admin_keys": "bearer key that also opens the console's fleet views; repeat for several",
    "request_timeout_s": "seconds before a request is answered 504 and cancelled",
    "max_backlog": "undelivered interactive entries per model beyond which requests get 429",
    "max_job_backlog": "undelivered /v1/jobs entries per model beyond which new jobs get 429",
    "max_in_flight": "requests each gateway process waits on at once; beyond it 429 and "
                     "/health/ready 503",
    "job_retention_s": "seconds job records are kept",
    "webhook_allow_private": "accept job webhooks to private and loopback addresses",
    "result_readers": "Redis connections per gateway process that read every in-flight "
                      "request's results (one XREAD loop each)",
    "files_dir": "where /v1/files keeps files (default ~/.pagefleet/files); the batch workers' too",
    "file_retention_s": "seconds after which a file is deleted (its expires_at); the batch "
                        "workers, which delete it, need the same value",
}
# Only these BatchSettings fields are flags here: the namespace is shared with GatewaySettings,
# and both classes have a `max_in_flight` (the batch one is the batch workers' to set).
_BATCH_FLAGS = ("files_dir", "file_retention_s")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("gateway", help="serve the OpenAI-compatible HTTP gateway")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=flags.positive_int, default=1,
                        help="gateway processes sharing the port (one core each at most); "
                             "/metrics sums them (default: 1)")
    flags.add_flags(parser, GatewaySettings, ("registry_path", "redis_url", "api_keys", "admin_keys",
                                              "request_timeout_s", "max_backlog", "max_job_backlog",
                                              "max_in_flight", "job_retention_s",
                                              "webhook_allow_private", "result_readers"),
                    help=_HELP, flags={"api_keys": "--api-key", "admin_keys": "--admin-key"},
                    env={"webhook_allow_private": "PAGEFLEET_WEBHOOK_ALLOW_PRIVATE",
                         "result_readers": "PAGEFLEET_RESULT_READERS"})
    flags.add_flags(parser, BatchSettings, _BATCH_FLAGS, help=_HELP)
    parser.add_argument("--log-level", default="info")
    parser.set_defaults(func=run)


def _keys(given: list[str] | None, variable: str) -> tuple[str, ...]:
    if given is not None:
        return tuple(given)
    return tuple(k.strip() for k in os.environ.get(variable, "").split(",") if k.strip())


def settings_from_args(args: argparse.Namespace) -> GatewaySettings:
    batch_args = argparse.Namespace(**{name: getattr(args, name) for name in _BATCH_FLAGS})
    return flags.settings_from_args(GatewaySettings, args,
                                    api_keys=_keys(args.api_keys, "PAGEFLEET_API_KEYS"),
                                    admin_keys=_keys(args.admin_keys, "PAGEFLEET_ADMIN_KEYS"),
                                    batch=flags.settings_from_args(BatchSettings, batch_args))


def run(args: argparse.Namespace) -> int:
    from pagefleet.platform.gateway.serving import serve

    serve(settings_from_args(args), args.host, args.port, workers=args.workers,
          log_level=args.log_level)
    return 0

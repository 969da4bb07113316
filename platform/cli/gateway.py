"""`pagefleet gateway`: serve the OpenAI-compatible gateway with uvicorn (no torch imported).

API keys come from `--api-key` (repeatable) or, if none is given, the comma-separated
PAGEFLEET_API_KEYS environment variable; with neither the gateway is open, like vLLM.
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pagefleet.platform.gateway import GatewaySettings


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("gateway", help="serve the OpenAI-compatible HTTP gateway")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--registry", default=None, help="registry YAML (default: the packaged one)")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--api-key", action="append", default=None, dest="api_keys",
                        help="accepted bearer key; repeat for several")
    parser.add_argument("--request-timeout", type=float, default=600.0,
                        help="seconds before a request is answered 504 and cancelled")
    parser.add_argument("--max-backlog", type=int, default=1024,
                        help="undelivered entries per model beyond which requests get 429")
    parser.add_argument("--job-retention", type=float, default=86_400.0,
                        help="seconds job records are kept")
    parser.add_argument("--files-dir", default="",
                        help="where /v1/files keeps files (default ~/.pagefleet/files); the batch workers' too")
    parser.add_argument("--log-level", default="info")
    parser.set_defaults(func=run)


def settings_from_args(args: argparse.Namespace) -> GatewaySettings:
    from pagefleet.platform.batch.settings import BatchSettings
    from pagefleet.platform.gateway import GatewaySettings

    keys = args.api_keys
    if keys is None:
        keys = [k.strip() for k in os.environ.get("PAGEFLEET_API_KEYS", "").split(",") if k.strip()]
    return GatewaySettings(
        redis_url=args.redis_url, registry_path=args.registry, api_keys=tuple(keys),
        request_timeout_s=args.request_timeout, max_backlog=args.max_backlog,
        job_retention_s=args.job_retention, batch=BatchSettings(files_dir=args.files_dir),
    )


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from pagefleet.platform.gateway import create_app

    app = create_app(settings_from_args(args))
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level,
                timeout_graceful_shutdown=10)
    return 0

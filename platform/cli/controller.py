"""`pagefleet controller`: scale every registry model's workers with its queue."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shlex
import signal

from pagefleet.platform.controller.settings import (
    DEFAULT_WORKER_IMAGE,
    ControllerSettings,
    KubernetesSettings,
    LocalSettings,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("controller", help=__doc__.split(": ", 1)[1])
    parser.add_argument("--registry", default=os.environ.get("PAGEFLEET_REGISTRY"),
                        help="registry YAML (default: the packaged one with the embedded model)")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--backend", choices=("local", "kubernetes"), default="local")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between ticks")
    parser.add_argument("--metrics-port", type=int, default=None)
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--render", action="store_true",
                        help="print the worker Deployments of the registry as YAML and exit")
    local = parser.add_argument_group("local backend")
    local.add_argument("--worker-command", default=None,
                       help="worker command line with {model} {registry} {redis_url} {worker_id}")
    local.add_argument("--drain-timeout", type=float, default=30.0)
    k8s = parser.add_argument_group("kubernetes backend")
    k8s.add_argument("--namespace", default=os.environ.get("POD_NAMESPACE", "pagefleet"))
    k8s.add_argument("--worker-image", default=DEFAULT_WORKER_IMAGE)
    k8s.add_argument("--registry-configmap", default="pagefleet-registry")
    k8s.add_argument("--lease-name", default="pagefleet-controller")
    k8s.add_argument("--identity", default=os.environ.get("POD_NAME"))
    parser.set_defaults(func=_run)


def settings_from_args(args: argparse.Namespace) -> ControllerSettings:
    local = (LocalSettings(worker_command=tuple(shlex.split(args.worker_command)),
                           drain_timeout_s=args.drain_timeout)
             if args.worker_command else LocalSettings(drain_timeout_s=args.drain_timeout))
    k8s_kwargs = {"namespace": args.namespace, "image": args.worker_image,
                  "registry_configmap": args.registry_configmap, "lease_name": args.lease_name}
    if args.identity:
        k8s_kwargs["identity"] = args.identity
    return ControllerSettings(redis_url=args.redis_url, registry_path=args.registry, backend=args.backend,
                              interval_s=args.interval, metrics_port=args.metrics_port,
                              kubernetes=KubernetesSettings(**k8s_kwargs), local=local)


def _render(settings: ControllerSettings) -> int:
    import sys

    import yaml

    from pagefleet.platform.controller.manifests import render_worker_deployments
    from pagefleet.platform.registry import load_registry

    manifests = render_worker_deployments(load_registry(settings.registry_path), settings.kubernetes)
    yaml.safe_dump_all(manifests, sys.stdout, sort_keys=False)
    return 0


def _run(args: argparse.Namespace) -> int:
    from pagefleet.platform.controller.runner import run_controller

    settings = settings_from_args(args)
    if args.render:
        return _render(settings)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await run_controller(settings, stop)

    asyncio.run(main())
    return 0

"""`pagefleet controller`: scale every registry model's workers with its queue."""

from __future__ import annotations

import argparse
import asyncio
import logging
import shlex
import signal

from pagefleet.platform.cli import flags
from pagefleet.platform.controller.settings import (
    ControllerSettings,
    KubernetesSettings,
    LocalSettings,
)

_HELP = {
    "registry_path": "registry YAML (default: the packaged one with the embedded model)",
    "interval_s": "seconds between ticks",
    "worker_command": "worker command line with {model} {registry} {redis_url} {worker_id}",
    "spare_workers": "pre-imported processes per model that wait to become workers (fast cold starts)",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("controller", help=__doc__.split(": ", 1)[1])
    flags.add_flags(parser, ControllerSettings, ("registry_path", "redis_url", "backend",
                                                 "interval_s", "metrics_port"), help=_HELP)
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--render", action="store_true",
                        help="print the worker Deployments of the registry as YAML and exit")
    flags.add_flags(parser.add_argument_group("local backend"), LocalSettings,
                    ("worker_command", "drain_timeout_s", "spare_workers"), help=_HELP,
                    parse={"worker_command": shlex.split})
    flags.add_flags(parser.add_argument_group("kubernetes backend"), KubernetesSettings,
                    ("namespace", "image", "registry_configmap", "lease_name", "identity"),
                    flags={"image": "--worker-image"},
                    env={"namespace": "POD_NAMESPACE", "identity": "POD_NAME"})
    parser.set_defaults(func=_run)


def settings_from_args(args: argparse.Namespace) -> ControllerSettings:
    return flags.settings_from_args(
        ControllerSettings, args, kubernetes=flags.settings_from_args(KubernetesSettings, args),
        local=flags.settings_from_args(LocalSettings, args))


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

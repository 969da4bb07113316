"""The `pagefleet` command line: one subcommand module per job, imported lazily.

Each module in `COMMANDS` exposes `register(subparsers)`, which adds its parser and sets
`func` (called with the parsed args). Heavy imports (torch, the engine) happen inside the
commands, so `pagefleet gateway` never loads torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = (
    "pagefleet.platform.cli.batch_worker",
    "pagefleet.platform.cli.bench",
    "pagefleet.platform.cli.controller",
    "pagefleet.platform.cli.gateway",
    "pagefleet.platform.cli.up",
    "pagefleet.platform.cli.worker",
)


def register_commands(subparsers: argparse._SubParsersAction, module_names: tuple[str, ...]) -> None:
    """Let each command module add its parser; a missing module is an error, not a gap in --help."""
    for module_name in module_names:
        importlib.import_module(module_name).register(subparsers)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pagefleet", description=__doc__.splitlines()[0])
    register_commands(parser.add_subparsers(dest="command", required=True), COMMANDS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

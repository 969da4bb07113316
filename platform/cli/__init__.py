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
    "pagefleet.platform.cli.serve",
)


def register_commands(subparsers: argparse._SubParsersAction, module_names: tuple[str, ...]) -> None:
    """Let each command module add its parser; a module that does not exist is skipped."""
    for module_name in module_names:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        module.register(subparsers)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pagefleet", description=__doc__.splitlines()[0])
    register_commands(parser.add_subparsers(dest="command", required=True), COMMANDS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

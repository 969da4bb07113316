"""`pagefleet bench {engine,serve,kernels}`: benchmarks that print comparisons measured in one run."""

from __future__ import annotations

import argparse
import importlib

BENCH_COMMANDS = (
    "pagefleet.platform.cli.bench_engine",
    "pagefleet.platform.cli.bench_serve",
    "pagefleet.platform.cli.bench_kernels",
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("bench", help="benchmarks (engine, serve, kernels)")
    bench_subparsers = parser.add_subparsers(dest="bench_command", required=True)
    for module_name in BENCH_COMMANDS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        module.register(bench_subparsers)

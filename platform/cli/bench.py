"""`pagefleet bench {engine,serve,kernels,batch,coldstart}`: benchmarks that print comparisons measured in one run."""

from __future__ import annotations

import argparse

from pagefleet.platform.cli import register_commands

BENCH_COMMANDS = (
    "pagefleet.platform.cli.bench_engine",
    "pagefleet.platform.cli.bench_serve",
    "pagefleet.platform.cli.bench_kernels",
    "pagefleet.platform.cli.bench_batch",
    "pagefleet.platform.cli.bench_coldstart",
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("bench", help="benchmarks (engine, serve, kernels, batch, coldstart)")
    register_commands(parser.add_subparsers(dest="bench_command", required=True), BENCH_COMMANDS)

"""`pagefleet bench kernels`: kernel tests at full size, then speed on this machine's GPU.

torch and the kernels are imported inside the command, so building the CLI stays light.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("kernels", help="test and benchmark the Triton kernels on a GPU")
    parser.add_argument("--skip-tests", action="store_true", help="benchmarks only")
    parser.add_argument("--tune", action="store_true", help="sweep launch parameters first")
    parser.add_argument("--json", type=Path, default=None, help="write all numbers here")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32, 64, 128])
    parser.add_argument("--contexts", type=int, nargs="+", default=[512, 4096, 32768])
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pagefleet.kernels.bench import KernelBenchOptions, run_benchmarks

    return run_benchmarks(KernelBenchOptions(
        run_tests=not args.skip_tests, tune=args.tune, json_path=args.json,
        batches=tuple(args.batches), contexts=tuple(args.contexts)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pagefleet bench")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["kernels", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

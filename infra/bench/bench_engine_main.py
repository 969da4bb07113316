"""`pagefleet bench engine ARGS...` without the other CLI commands (a GPU host has no gateway
dependencies). A file, not stdin: tensor-parallel ranks are spawned and re-import __main__."""

from __future__ import annotations

import argparse
import sys

from pagefleet.platform.cli import bench_engine

if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="pagefleet bench")
    bench_engine.register(parser.add_subparsers())
    args = parser.parse_args(["engine", *sys.argv[1:]])
    sys.exit(args.func(args))

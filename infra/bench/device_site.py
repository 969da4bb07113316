"""Stand in for the lent GPU image's Python on this machine: a folder of links to only those
distributions of the running interpreter's site-packages that the image also has (plus what
they need here), for the CPU rehearsal of infra/bench/gpu_serve.sh.

With that folder on PYTHONPATH of an empty interpreter, a package the image lacks and the
carried wheels forget fails to import here, as it would there, instead of being found in the
project's .venv. What stays different: versions (this venv's torch, transformers ... are not the
image's) and the device itself. A requirement of an image package that the image's version
may not share (huggingface_hub here needs httpx2) is linked too, and named on stderr.

Usage: .venv/bin/python infra/bench/device_site.py DEST --have infra/bench/device_packages.txt
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import sys
import sysconfig
from pathlib import Path, PurePosixPath

from packaging.requirements import Requirement

sys.path.insert(0, str(Path(__file__).resolve().parent))
from wheel_closure import normalise, read_names  # the script beside this one


def top_level_entries(dist: metadata.Distribution) -> set[str]:
    """The names a distribution puts in site-packages (packages, modules, its dist-info)."""
    entries = {PurePosixPath(str(f)).parts[0] for f in dist.files or ()}
    return {e for e in entries if e not in ("..", "__pycache__")}


def image_closure(dists: dict[str, metadata.Distribution], have: set[str]) -> set[str]:
    """The image's distributions installed here, and what they require here, transitively."""
    chosen: set[str] = set()
    todo = [name for name in dists if name in have]
    while todo:
        name = todo.pop()
        if name in chosen:
            continue
        chosen.add(name)
        for text in dists[name].requires or ():
            requirement = Requirement(text)
            if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
                continue
            needed = normalise(requirement.name)
            if needed in dists and needed not in chosen:
                if needed not in have:
                    print(f"also linked: {needed} (needed here by {name})", file=sys.stderr)
                todo.append(needed)
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dest", type=Path)
    parser.add_argument("--have", type=Path, required=True)
    args = parser.parse_args(argv)
    site = Path(sysconfig.get_paths()["purelib"])
    dists = {normalise(d.metadata["Name"]): d for d in metadata.distributions(path=[str(site)])}
    chosen = image_closure(dists, read_names(args.have))
    entries = set().union(*(top_level_entries(dists[name]) for name in chosen))
    args.dest.mkdir(parents=True, exist_ok=True)
    for entry in sorted(entries):
        link = args.dest / entry
        if not link.is_symlink() and (site / entry).exists():
            link.symlink_to(site / entry)
    print(f"{len(chosen)} of the image's distributions linked from {site} into {args.dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Check that a folder of carried wheels installs on its own: every requirement of every wheel
(`Requires-Dist`, markers evaluated for the target Python, extras left out) is met by another
wheel in the folder or by a distribution the target image already has, and no distribution
comes twice (two versions stop `pip install --no-deps` of the whole folder).

`pip download --no-deps` fetches no dependencies, and the lent GPU machine has no index to
fetch them from, so a missing one shows up only there, as an ImportError in the middle of a
device call. This finds it here. Version ranges are checked against the carried wheels; for
the image's own distributions only the name is known (the image's list has no versions).

Usage: wheel_closure.py WHEEL_DIR --python-version 3.12.3 --have infra/bench/device_packages.txt
"""

from __future__ import annotations

import argparse
import re
import sys
import zipfile
from dataclasses import dataclass
from email.parser import HeaderParser
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version


@dataclass(frozen=True, slots=True)
class Wheel:
    name: str  # normalised distribution name
    version: Version
    requires: tuple[Requirement, ...]
    filename: str


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_wheel(path: Path) -> Wheel:
    with zipfile.ZipFile(path) as archive:
        metadata = next(n for n in archive.namelist()
                        if n.count("/") == 1 and n.endswith(".dist-info/METADATA"))
        headers = HeaderParser().parsestr(archive.read(metadata).decode())
    return Wheel(normalise(headers["Name"]), Version(headers["Version"]),
                 tuple(Requirement(r) for r in headers.get_all("Requires-Dist") or ()), path.name)


def read_names(path: Path) -> set[str]:
    """One distribution name a line; `#` starts a comment."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return {normalise(line) for line in lines if line}


def problems(wheels: list[Wheel], have: set[str], python_version: str) -> list[str]:
    """Every unmet requirement and every distribution present twice, as readable lines."""
    environment = {"python_version": ".".join(python_version.split(".")[:2]),
                   "python_full_version": python_version, "sys_platform": "linux",
                   "platform_system": "Linux", "platform_machine": "x86_64",
                   "implementation_name": "cpython", "platform_python_implementation": "CPython",
                   "os_name": "posix", "extra": ""}
    found: list[str] = []
    carried: dict[str, Wheel] = {}
    for wheel in wheels:
        if wheel.name in carried:
            found.append(f"{wheel.name} twice: {carried[wheel.name].filename} and {wheel.filename}")
        carried[wheel.name] = wheel
    for wheel in wheels:
        for requirement in wheel.requires:
            if requirement.marker is not None and not requirement.marker.evaluate(environment):
                continue  # another Python or platform, or an extra nobody asked for
            name = normalise(requirement.name)
            if name in carried:
                if not requirement.specifier.contains(carried[name].version, prereleases=True):
                    found.append(f"{wheel.filename} needs {requirement}, "
                                 f"carried is {carried[name].version}")
            elif name not in have:
                found.append(f"{wheel.filename} needs {requirement}: neither carried nor in the image")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("wheel_dir", type=Path)
    parser.add_argument("--python-version", required=True, help="the target's, e.g. 3.12.3")
    parser.add_argument("--have", type=Path, required=True,
                        help="distributions the target already has, one name a line")
    args = parser.parse_args(argv)
    wheels = [read_wheel(path) for path in sorted(args.wheel_dir.glob("*.whl"))]
    if not wheels:
        print(f"no wheels in {args.wheel_dir}", file=sys.stderr)
        return 1
    found = problems(wheels, read_names(args.have), args.python_version)
    for line in found:
        print(line, file=sys.stderr)
    print(f"{len(wheels)} wheels in {args.wheel_dir}: "
          + ("closed over the image's packages" if not found else f"{len(found)} problems"))
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())

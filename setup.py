"""Lists pagefleet's packages: the top-level folders map onto `pagefleet.<folder>` (see pyproject).

`platform/` is a namespace package on purpose (a regular package named `platform` would shadow
the standard library module), so its subpackages are found folder by folder.
"""

from setuptools import find_packages, setup

TOP_LEVEL = ("platform", "workers", "kernels")


def _packages() -> list[str]:
    names = []
    for top in TOP_LEVEL:
        names.append(f"pagefleet.{top}")
        names.extend(f"pagefleet.{top}.{sub}" for sub in find_packages(top))
    return names


setup(packages=_packages())

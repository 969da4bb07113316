"""The repository layout must never shadow Python's standard `platform` module."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_standard_platform_module_works_from_the_repo_root():
    result = subprocess.run(
        [sys.executable, "-c", "import platform, uuid; print(platform.system(), platform.__file__)"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )
    system, module_file = result.stdout.split()
    assert system
    assert not Path(module_file).resolve().is_relative_to(ROOT / "platform")


def test_platform_folder_is_a_namespace_package():
    assert not (ROOT / "platform" / "__init__.py").exists()
    import pagefleet.platform

    assert getattr(pagefleet.platform, "__file__", None) is None  # namespace packages have none

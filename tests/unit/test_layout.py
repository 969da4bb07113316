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


def test_kernels_folder_does_not_shadow_the_kernels_distribution():
    """transformers >= 5.25 imports the `kernels` distribution (Hugging Face's kernel hub) while
    it builds a config; run from the repo root (as workers and tests are), a regular package in
    `kernels/` would win over it and the import fails. As a namespace folder it never wins."""
    assert not (ROOT / "kernels" / "__init__.py").exists()
    code = ("import importlib.util; spec = importlib.util.find_spec('kernels'); "
            "print(spec.origin if spec else None); import transformers.activations")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    origin = result.stdout.split()[0]
    assert origin == "None" or not Path(origin).resolve().is_relative_to(ROOT / "kernels")
    import pagefleet.kernels.rms_norm  # noqa: F401  (the package itself still imports)

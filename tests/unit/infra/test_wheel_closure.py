"""infra/bench/wheel_closure.py: the check that the wheels carried to a lent GPU install and
import on their own there (no index to fetch a forgotten dependency from)."""

from __future__ import annotations

import importlib.util
import sys
import zipfile
from pathlib import Path

import pytest

_SCRIPT = Path(__file__).resolve().parents[3] / "infra" / "bench" / "wheel_closure.py"
_spec = importlib.util.spec_from_file_location("wheel_closure", _SCRIPT)
wheel_closure = importlib.util.module_from_spec(_spec)
sys.modules["wheel_closure"] = wheel_closure  # dataclasses look their module up there
_spec.loader.exec_module(wheel_closure)


def _wheel(folder: Path, name: str, version: str, *requires: str) -> Path:
    path = folder / f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
    metadata = "\n".join(["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}",
                          *(f"Requires-Dist: {r}" for r in requires)]) + "\n"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{name.replace('-', '_')}-{version}.dist-info/METADATA", metadata)
    return path


@pytest.fixture
def have(tmp_path: Path) -> Path:
    path = tmp_path / "have.txt"
    path.write_text("# the image\nanyio\nPyYAML\n")
    return path


def _run(folder: Path, have: Path, version: str = "3.12.3") -> int:
    return wheel_closure.main([str(folder), "--python-version", version, "--have", str(have)])


def test_closed_over_carried_wheels_and_the_image(tmp_path: Path, have: Path) -> None:
    _wheel(tmp_path, "litestar", "2.25.0", "anyio>=3", "pyyaml", "msgspec>=0.18.2",
           "exceptiongroup; python_version < '3.11'", "uvicorn; extra == 'standard'")
    _wheel(tmp_path, "msgspec", "0.23.0")
    assert _run(tmp_path, have) == 0


def test_a_forgotten_dependency_is_reported(tmp_path: Path, have: Path, capsys) -> None:
    _wheel(tmp_path, "litestar", "2.25.0", "sniffio>=1.3.1", "anyio")
    assert _run(tmp_path, have) == 1
    assert "needs sniffio>=1.3.1: neither carried nor in the image" in capsys.readouterr().err


def test_markers_are_read_for_the_target_python(tmp_path: Path, have: Path, capsys) -> None:
    _wheel(tmp_path, "redis", "8.1.0", "async-timeout>=4.0.3; python_full_version < '3.11.3'")
    assert _run(tmp_path, have, "3.12.3") == 0
    assert _run(tmp_path, have, "3.11.2") == 1
    assert "async-timeout" in capsys.readouterr().err


def test_carried_versions_must_match_and_come_once(tmp_path: Path, have: Path, capsys) -> None:
    _wheel(tmp_path, "kombu", "5.7.0", "vine==5.1.0")
    _wheel(tmp_path, "vine", "5.0.0")
    _wheel(tmp_path, "Vine", "5.0.1")
    assert _run(tmp_path, have) == 1
    err = capsys.readouterr().err
    assert "vine twice" in err and "needs vine==5.1.0, carried is 5.0." in err

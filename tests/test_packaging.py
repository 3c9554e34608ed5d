"""The wheel as `pip install` and `make dist` get it: built without warnings, licensed, and complete.

The build runs on a copy of the packaging inputs in tmp_path, without isolation: no network,
and nothing written into the working tree (setuptools leaves `build/` and an egg-info
beside the pyproject it builds). It needs the dev extra's `build` and setuptools.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "converter"
_NOT_PACKAGED = shutil.ignore_patterns("__pycache__", "*.pyc")


def _package_files_on_disk() -> set[str]:
    """The package's files as wheel paths (`converter/core/sample.py`), bytecode caches left out."""
    return {
        path.relative_to(PROJECT_ROOT).as_posix()
        for path in (PROJECT_ROOT / PACKAGE).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


def _build_wheel(tmp_path: Path) -> tuple[Path, str]:
    """The wheel built from a copy of the project, and the build's combined output."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copyfile(PROJECT_ROOT / name, source / name)
    shutil.copytree(PROJECT_ROOT / PACKAGE, source / PACKAGE, ignore=_NOT_PACKAGED)
    completed = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path / "dist"), str(source)],
        capture_output=True,
        text=True,
        check=False,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    return wheel, output


def test_the_wheel_builds_without_deprecation_warnings_and_holds_the_whole_package(tmp_path: Path) -> None:
    wheel, output = _build_wheel(tmp_path)

    assert "deprecat" not in output.lower(), output
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (metadata,) = [name for name in names if name.endswith(".dist-info/METADATA")]
        metadata_lines = archive.read(metadata).decode("utf-8").splitlines()
        (entry_points,) = [name for name in names if name.endswith(".dist-info/entry_points.txt")]
        entry_points_text = archive.read(entry_points).decode("utf-8")
    assert "License-Expression: Apache-2.0" in metadata_lines
    assert not any(line.startswith("License:") for line in metadata_lines)  # the deprecated free-text field
    assert "dataset-converter = converter.cli:main" in entry_points_text
    packaged = {name for name in names if name.startswith(f"{PACKAGE}/")}
    assert packaged == _package_files_on_disk()
    assert f"{PACKAGE}/py.typed" in packaged  # package data, not only modules

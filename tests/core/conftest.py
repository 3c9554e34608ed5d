"""Fixtures: a tiny Ground Truth export, and a dataset converted from it with the CLI."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from .gt_export import convert, write_detection_export


@pytest.fixture(scope="session")
def detection_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The manifest of a 12-image detection export (images beside it)."""
    return write_detection_export(tmp_path_factory.mktemp("export"))


@pytest.fixture(scope="session")
def converted_once(detection_export: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The export converted with small shards (several per split), train/validation/test."""
    output = tmp_path_factory.mktemp("converted") / "dataset"
    convert(detection_export, output, "--split", "0.5,0.25,0.25", "--partition", "0.004")
    return output


@pytest.fixture
def dataset(converted_once: Path, tmp_path: Path) -> Path:
    """A private copy of the converted dataset, free to tamper with (its links stay links, as written)."""
    return Path(shutil.copytree(converted_once, tmp_path / "dataset", symlinks=True))

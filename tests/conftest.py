"""Shared fixtures: where the real third-party samples are, and whether they must be there.

The samples live in ../shared/samples beside the project (never copied into it). In a
user's clone they are absent and those tests skip saying why; CI sets
DATASET_CONVERTER_REQUIRE_SHARED=1, which turns that skip into a failure.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import reader_envs

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED_SAMPLES = PROJECT_ROOT.parent / "shared" / "samples"


def _required(variable: str) -> bool:
    return os.environ.get(variable, "") not in ("", "0", "false", "no")


@pytest.fixture(scope="session")
def shared_samples() -> Path:
    """The ../shared/samples folder; skips (or fails in CI) when it is absent."""
    if not SHARED_SAMPLES.is_dir():
        message = f"real third-party samples not found at {SHARED_SAMPLES}"
        if _required("DATASET_CONVERTER_REQUIRE_SHARED"):
            pytest.fail(message + " and DATASET_CONVERTER_REQUIRE_SHARED is set")
        pytest.skip(message + " (they sit beside the project in the development checkout)")
    return SHARED_SAMPLES


@pytest.fixture(autouse=True)
def _forget_registered_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no registered secret: in-process runs would otherwise pile them up."""
    from converter.core import secret

    monkeypatch.setattr(secret, "_REGISTRY", secret._Registry())


def _reader_of(item: pytest.Item | None) -> str | None:
    marker = item.get_closest_marker("reader") if item is not None else None
    return str(marker.args[0]) if marker is not None else None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the tests that use a third-party reader last, grouped by reader (stable within each group).

    Then one reader's venv is needed at a time, and CI can remove it after its last test (reader_envs.py).
    """
    others = [item for item in items if _reader_of(item) is None]
    readers = sorted((item for item in items if _reader_of(item) is not None), key=lambda item: str(_reader_of(item)))
    items[:] = others + readers


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """Under DATASET_CONVERTER_DISPOSE_READERS, remove a reader's venv once its last test has run."""
    reader = _reader_of(item)
    if reader is not None and _reader_of(nextitem) != reader and reader_envs.disposable():
        reader_envs.dispose(reader)

"""Shared fixtures: where the real third-party samples are, and whether they must be there.

The samples live in ../shared/samples beside the project (never copied into it). In a
user's clone they are absent and those tests skip saying why; CI sets
DATASET_CONVERTER_REQUIRE_SHARED=1, which turns that skip into a failure.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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

"""Third-party readers, each in its own cached virtual environment, run as subprocesses.

The output must load in the stacks our users train with (TFDS, Model Garden, Datumaro,
fastai), and the only honest check is to run each stack's own reader on it. Their
dependencies clash with each other and with the project (Model Garden pins TensorFlow
2.20, Datumaro and fastai drag pandas, torch and friends), so each reader gets a venv of
its own under `.readers/<name>/` (git-ignored), made on first use from the pinned
requirement list below, like the Label Studio server's `.labelstudio-venv/`.

DATASET_CONVERTER_READERS_DIR puts them elsewhere (a cache that outlives a CI clone). A
marker file in each venv holds the requirement list it was installed from: a changed pin
reinstalls. pip's output goes to `.readers/<name>.log`. Installation holds an exclusive
`flock` on `.readers/<name>.lock`, so two pytest processes never build the same venv at
once (the second waits, then finds the marker). A reader that cannot be installed skips
its tests, saying why; DATASET_CONVERTER_REQUIRE_READERS=1 (set by CI) makes that a
failure.

Disk: the four venvs take about 13 GB together, fastai's CUDA torch 6 GB of it, and CI
machines may have less free. Tests that use a reader carry `@pytest.mark.reader(NAME)`;
conftest.py runs them last, grouped by reader, and under DATASET_CONVERTER_DISPOSE_READERS=1
(set by CI) removes each venv once its reader's last test has run, so the disk holds one
reader at a time. pip runs with --no-cache-dir: the venvs are the cache.

The scripts run by `run_reader` live in `tests/readers/` (no `test_` prefix: pytest does
not collect them); each prints one JSON line last, which `run_reader` returns parsed.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# DATASET_CONVERTER_READERS_DIR moves the venvs elsewhere (e.g. a cache that outlives a CI clone: about 13 GB).
READERS_ROOT = Path(os.environ.get("DATASET_CONVERTER_READERS_DIR") or PROJECT_ROOT / ".readers")
SCRIPTS = Path(__file__).resolve().parent / "readers"
REQUIRE_VARIABLE = "DATASET_CONVERTER_REQUIRE_READERS"
DISPOSE_VARIABLE = "DATASET_CONVERTER_DISPOSE_READERS"

# Compatible ranges; the versions pip resolved when these were written are in the comments.
REQUIREMENTS: dict[str, tuple[str, ...]] = {
    # tensorflow-datasets 4.9.10, tensorflow-cpu 2.21.0 (the project's own TensorFlow)
    "tfds": ("tensorflow-datasets==4.9.*", "tensorflow-cpu==2.21.*"),
    # tf-models-official 2.20.0 requires tensorflow~=2.20.0 (it pulls the full `tensorflow` wheel too;
    # tensorflow-cpu at the same version keeps the two identical)
    "modelgarden": ("tf-models-official==2.20.*", "tensorflow-cpu==2.20.*"),
    # datumaro 1.13.12; its tf_detection_api importer imports TensorFlow, which datumaro does not require
    "datumaro": ("datumaro==1.13.*", "tensorflow-cpu==2.21.*"),
    # torch 2.14.1 and torchvision 0.29.1 come from this machine's local wheel index; fastai 2.8.12
    "fastai": ("torch==2.14.1", "torchvision==0.29.1", "fastai==2.8.*"),
}
MARKER = "installed-requirements.txt"
VENV_TIMEOUT_S = 300
INSTALL_TIMEOUT_S = 2400  # the fastai venv (CUDA torch wheels) is about 6 GB
LOG_TAIL_CHARS = 4000


class ReaderUnavailableError(Exception):
    """A reader's venv cannot be made here (no index, no network, no disk...)."""


def _set(variable: str) -> bool:
    return os.environ.get(variable, "") not in ("", "0", "false", "no")


def _required() -> bool:
    return _set(REQUIRE_VARIABLE)


def disposable() -> bool:
    """Whether each reader's venv is removed after its last test (CI, where the disk may be short)."""
    return _set(DISPOSE_VARIABLE)


def _unavailable(reason: str) -> NoReturn:
    """Skip for a developer who cannot install the reader; fail in CI, where it must be tested."""
    if _required():
        pytest.fail(f"{reason}, and {REQUIRE_VARIABLE} is set", pytrace=False)
    pytest.skip(f"{reason} ({REQUIRE_VARIABLE}=1 makes this a failure)")


def _tail(text: str) -> str:
    return text[-LOG_TAIL_CHARS:]


def _venv(name: str) -> Path:
    return READERS_ROOT / name


def _python(name: str) -> Path:
    return _venv(name) / "bin" / "python"


def _marker_text(name: str) -> str:
    return "\n".join(REQUIREMENTS[name]) + "\n"


def _installed(name: str) -> bool:
    marker = _venv(name) / MARKER
    return marker.is_file() and marker.read_text(encoding="utf-8") == _marker_text(name) and _python(name).exists()


def _install(name: str) -> None:
    """Make `.readers/<name>/` from scratch (under the caller's lock): a partial or outdated venv is removed."""
    venv, log = _venv(name), READERS_ROOT / f"{name}.log"
    shutil.rmtree(venv, ignore_errors=True)
    requirements = list(REQUIREMENTS[name])
    started = time.monotonic()
    try:
        subprocess.run(
            [sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=VENV_TIMEOUT_S
        )
        with log.open("w", encoding="utf-8") as stream:
            stream.write(f"pip install {' '.join(requirements)}\n")
            stream.flush()
            subprocess.run(
                [str(_python(name)), "-m", "pip", "install", "--no-cache-dir", "--progress-bar", "off", *requirements],
                check=True,
                stdout=stream,
                stderr=subprocess.STDOUT,
                timeout=INSTALL_TIMEOUT_S,
            )
            stream.write(f"installed in {time.monotonic() - started:.0f} s\n")
    except (OSError, subprocess.SubprocessError) as error:
        text = log.read_text(encoding="utf-8", errors="replace") if log.exists() else ""
        raise ReaderUnavailableError(
            f"cannot install {' '.join(requirements)} into {venv}: {error}\n{_tail(text)}"
        ) from None
    (venv / MARKER).write_text(_marker_text(name), encoding="utf-8")


def reader_python(name: str) -> Path:
    """The python of reader `name`'s venv, installed first if absent or made from other pins.

    Skips the calling test when the venv cannot be made (fails it under DATASET_CONVERTER_REQUIRE_READERS).
    """
    if name not in REQUIREMENTS:
        raise KeyError(f"no reader environment named {name!r}; known: {sorted(REQUIREMENTS)}")
    if _installed(name):
        return _python(name)
    READERS_ROOT.mkdir(parents=True, exist_ok=True)
    failure = None
    with (READERS_ROOT / f"{name}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or when the process dies
        try:
            if not _installed(name):  # another process may have installed it while we waited
                _install(name)
        except ReaderUnavailableError as error:
            failure = str(error)
    if failure is not None:
        _unavailable(failure)
    return _python(name)


def dispose(name: str) -> None:
    """Remove reader `name`'s venv (under its lock); the next use installs it again."""
    with (READERS_ROOT / f"{name}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        shutil.rmtree(_venv(name), ignore_errors=True)


def _environment() -> dict[str, str]:
    """The caller's environment, less what would make the venv's python load the project's packages."""
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")
    }
    environment.update(
        TF_CPP_MIN_LOG_LEVEL="2",  # TensorFlow's C++ INFO/WARNING lines would bury the script's own errors
        CUDA_VISIBLE_DEVICES="",  # the readers are checked on CPU, like CI; a GPU here must change nothing
        MPLBACKEND="Agg",  # fastai and Model Garden import matplotlib; no display
        PYTHONUNBUFFERED="1",
    )
    return environment


def run_reader(name: str, script: str | Path, *args: str | Path, timeout: float = 900, cwd: Path | None = None) -> Any:
    """Run `tests/readers/<script>` with reader `name`'s python; return its last stdout line parsed as JSON.

    A non-zero exit, a timeout or a last line that is not JSON fails the test with the script's stderr tail.
    """
    python = reader_python(name)
    path = SCRIPTS / script
    command = [str(python), str(path), *map(str, args)]
    try:
        completed = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, env=_environment(), cwd=cwd, check=False
        )
    except subprocess.TimeoutExpired as error:
        stderr = error.stderr.decode(errors="replace") if isinstance(error.stderr, bytes) else (error.stderr or "")
        pytest.fail(f"{path.name} ({name}) ran past {timeout} s:\n{_tail(stderr)}", pytrace=False)
    if completed.returncode != 0:
        pytest.fail(
            f"{path.name} ({name}) exited with code {completed.returncode}:\n{_tail(completed.stderr)}\n"
            f"stdout:\n{_tail(completed.stdout)}",
            pytrace=False,
        )
    lines = [line for line in completed.stdout.splitlines() if line.strip()]
    try:
        return json.loads(lines[-1])
    except (IndexError, ValueError):
        pytest.fail(
            f"{path.name} ({name}) printed no JSON last line:\n{_tail(completed.stdout)}\n{_tail(completed.stderr)}",
            pytrace=False,
        )

"""Crash consistency, tested as databases test it: a SIGKILL at every file-system call of a run.

For `convert` over an existing dataset and for `finalize` over one, a reference run under
`strace` lists the file-system calls the run makes (mkdir, write, fsync, rename, symlink,
unlink...). Then, for every call of that list, a fresh copy of the output folder is run
again with `strace -e inject=CALL:signal=SIGKILL:when=N`, so the process dies at the entry
of exactly that call. After each kill the output folder must hold the previous dataset
whole or the new one whole: `dataset_info.yaml` plus exactly the entries it lists, each as
it lists them (`verify` passes, nothing unlisted resolves beside them). Then a rerun must
produce exactly what a clean run produces, byte for byte, with no leftover of the killed one.

strace is a Debian package (`apt-get install strace`); CI installs it, and sets
DATASET_CONVERTER_REQUIRE_STRACE so that these tests fail rather than skip without it.
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
import yaml
from builders import CocoExport, detection_export

from converter.core.commit import CURRENT_LINK, LOCK_FILE, STATE_FOLDER
from converter.core.verify import verify_dataset

BIN = Path(sys.executable).parent / "dataset-converter"
FILE_SYSTEM_CALLS = (
    "mkdir",
    "mkdirat",
    "rename",
    "renameat",
    "renameat2",
    "unlink",
    "unlinkat",
    "rmdir",
    "symlink",
    "symlinkat",
    "link",
    "linkat",
    "write",
    "pwrite64",
    "ftruncate",
    "fsync",
    "fdatasync",
    "syncfs",
)
_CALL = re.compile(r"^\d+\s+([a-z0-9_]+)\(")


@pytest.fixture(scope="module")
def strace() -> str:
    found = shutil.which("strace")
    if found is None:
        message = "strace is not installed (apt-get install strace)"
        if os.environ.get("DATASET_CONVERTER_REQUIRE_STRACE", "") not in ("", "0"):
            pytest.fail(message + " and DATASET_CONVERTER_REQUIRE_STRACE is set")
        pytest.skip(message)
    return found


def _run(arguments: Sequence[str | Path], strace_options: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
    command = [str(BIN), *map(str, arguments)]
    if strace_options:
        command = ["strace", "-f", "-qq", *strace_options, *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def _trace_set() -> str:
    return ",".join(FILE_SYSTEM_CALLS)


def _calls_of(arguments: Sequence[str | Path], log: Path) -> collections.Counter[str]:
    """How many times a run calls each file-system call (threads and child processes included)."""
    completed = _run(arguments, ["-o", str(log), "-e", f"trace={_trace_set()}"])
    assert completed.returncode == 0, completed.stderr
    calls: collections.Counter[str] = collections.Counter()
    for line in log.read_text().splitlines():
        match = _CALL.match(line)
        if match:
            calls[match[1]] += 1
    return calls


def dataset_view(output: Path) -> dict[str, bytes]:
    """The dataset as a reader sees it through dataset_info.yaml: that file, its report and its entries' files."""
    info_path = output / "dataset_info.yaml"
    if not info_path.exists():
        return {}
    info = yaml.safe_load(info_path.read_text(encoding="utf-8"))
    view = {"dataset_info.yaml": info_path.read_bytes()}
    if (output / "report.json").exists():
        view["report.json"] = (output / "report.json").read_bytes()
    for entry in info["entries"]:
        path = output / entry
        if path.is_file():
            view[entry] = path.read_bytes()
            continue
        for root, _, files in os.walk(path, followlinks=True):
            for name in files:
                file = Path(root) / name
                view[file.relative_to(output).as_posix()] = file.read_bytes()
    return view


def _resolving_names(output: Path) -> set[str]:
    """Top-level names that lead somewhere (a dangling link left by a killed run does not)."""
    return {path.name for path in output.iterdir() if path.name != STATE_FOLDER and path.exists()}


def assert_one_whole_dataset(output: Path, candidates: Sequence[dict[str, bytes]], inputs: set[str]) -> int:
    """The folder holds exactly one of `candidates` and nothing else but `inputs`; returns which."""
    view = dataset_view(output)
    assert view in candidates, f"{output}: neither the previous nor the new dataset ({sorted(view)})"
    info = yaml.safe_load(view["dataset_info.yaml"])
    assert _resolving_names(output) - inputs <= {*info["entries"], "dataset_info.yaml", "report.json"}
    verification = verify_dataset(output / "dataset_info.yaml")
    assert verification.problems == [], verification.problems
    return candidates.index(view)


def assert_no_leftovers(output: Path) -> None:
    state = sorted(path.name for path in (output / STATE_FOLDER).iterdir())
    live = (output / STATE_FOLDER / CURRENT_LINK).readlink().name
    assert state == sorted([CURRENT_LINK, LOCK_FILE, live])
    assert all(path.exists() for path in output.iterdir())  # no dangling link
    assert verify_dataset(output / "dataset_info.yaml").notes == []


def _kill_points(calls: collections.Counter[str]) -> list[tuple[str, int]]:
    return [(call, number) for call in sorted(calls) for number in range(1, calls[call] + 1)]


def _sweep(
    tmp_path: Path, previous: Path, command: Sequence[str | Path], clean: dict[str, bytes], inputs: set[str]
) -> int:
    """Kill a run at each of its file-system calls over a copy of `previous`; returns the points covered.

    `command` is run with `{output}` standing for the copy; `inputs` are top-level names the run
    reads (a scaled-out run's `parts/`), which may stay beside the dataset until it commits.
    """
    before = dataset_view(previous)
    assert before and before != clean

    def arguments(output: Path) -> list[str | Path]:
        return [output if argument == "{output}" else argument for argument in command]

    traced = tmp_path / "traced"
    shutil.copytree(previous, traced, symlinks=True)
    points = _kill_points(_calls_of(arguments(traced), tmp_path / "trace.log"))
    outcomes: collections.Counter[int] = collections.Counter()
    for call, number in points:
        output = tmp_path / f"killed-{call}-{number}"
        shutil.copytree(previous, output, symlinks=True)
        killed = _run(arguments(output), ["-e", f"trace={call}", "-e", f"inject={call}:signal=SIGKILL:when={number}"])
        assert killed.returncode != 0, f"{call} #{number}: the run was not killed"
        assert "Traceback" not in killed.stderr
        outcomes[assert_one_whole_dataset(output, [before, clean], inputs)] += 1
        rerun = _run(arguments(output))
        assert rerun.returncode == 0, f"{call} #{number}: {rerun.stderr}"
        assert dataset_view(output) == clean, f"{call} #{number}: the rerun differs from a clean run"
        assert_no_leftovers(output)
        shutil.rmtree(output)
    assert outcomes[0] and outcomes[1]  # the sweep saw both sides of the commit point
    return len(points)


@pytest.mark.parametrize(
    ("images", "previous_format", "new_format"),
    [(12, "tfrecord", "tfrecord"), (5, "tfrecord", "json")],  # shards; then a file per image replacing shards
)
def test_convert_killed_at_every_file_system_call_leaves_one_whole_dataset(
    strace: str, tmp_path: Path, images: int, previous_format: str, new_format: str
) -> None:
    export = detection_export(tmp_path / "export", images)
    export.write()
    common = ["convert", "-a", export.manifest, "-i", export.images, "--workers", "1", "-o"]
    previous = tmp_path / "previous"
    # The previous dataset has a test split and other shards, so a stale entry would show.
    assert _run([*common, previous, "-s", "0.6,0.2,0.2", "--seed", "1", "-f", previous_format]).returncode == 0
    new_options = ["-s", "0.5", "--seed", "2", "-p", "0.01", "-f", new_format]
    clean_output = tmp_path / "clean"
    assert _run([*common, clean_output, *new_options]).returncode == 0
    clean = dataset_view(clean_output)

    points = _sweep(tmp_path, previous, [*common, "{output}", *new_options], clean, inputs=set())
    assert points >= 30  # mkdirs, shard writes, fsyncs, the links and the renames, the removals


def test_finalize_killed_at_every_file_system_call_leaves_one_whole_dataset(strace: str, tmp_path: Path) -> None:
    export = CocoExport(tmp_path / "export", categories=[{"id": 1, "name": "car"}, {"id": 2, "name": "bus"}])
    for index in range(12):
        image_id = export.add_image(f"img{index:03d}.jpg")
        export.add_annotation(image_id, 1 + index % 2, bbox=[2, 3, 20, 10])
    export.write()
    common = ["convert", "-a", export.path, "-i", export.image_folder, "--workers", "1", "-o"]
    previous = tmp_path / "previous"
    assert _run([*common, previous, "-s", "0.6,0.2,0.2", "--seed", "1"]).returncode == 0
    for index in range(3):
        worker = [*common, previous, "-s", "0.5", "--seed", "2", "--num-workers", "3", "--worker-index", str(index)]
        assert _run(worker).returncode == 0
    clean_output = tmp_path / "clean"
    shutil.copytree(previous, clean_output, symlinks=True)
    assert _run(["finalize", clean_output]).returncode == 0
    clean = dataset_view(clean_output)

    points = _sweep(tmp_path, previous, ["finalize", "{output}"], clean, inputs={"parts"})
    assert points >= 20


def test_stats_killed_at_every_file_system_call_leaves_one_whole_dataset(strace: str, tmp_path: Path) -> None:
    """`dataset-converter stats` commits a new generation: killed anywhere, the dataset is whole with or without it."""
    export = detection_export(tmp_path / "export", 6)
    export.write()
    previous = tmp_path / "previous"
    converted = _run(
        ["convert", "-a", export.manifest, "-i", export.images, "--workers", "1", "--no-stats", "-o", previous]
    )
    assert converted.returncode == 0, converted.stderr
    clean_output = tmp_path / "clean"
    shutil.copytree(previous, clean_output, symlinks=True)
    assert _run(["stats", clean_output]).returncode == 0
    clean = dataset_view(clean_output)
    assert "stats/index.html" in clean

    points = _sweep(tmp_path, previous, ["stats", "{output}"], clean, inputs=set())
    assert points >= 15  # the hard links, the stats files, dataset_info.yaml, the links and the switch

"""The output folder is the user's: ownership, one writer at a time, clean failures, verify, finalize.

Each test replays what a new user or a fault injection did to the converter (issue 9's
"Measured" list) and checks what must hold instead. Faults the test machine cannot produce
for real (a full disk, a read-only mount) are injected with strace at the system call, so
the converter sees exactly the errno the kernel would give it.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import yaml
from builders import CocoExport, Export, detection_export
from test_crash_consistency import assert_no_leftovers, dataset_view

from converter.core.commit import LOCK_FILE, STATE_FOLDER

BIN = Path(sys.executable).parent / "dataset-converter"
SYSTEM_PYTHON = Path("/usr/bin/python3.11")  # readable by every user, unlike the venv's interpreter


def run(*arguments: str | Path, strace: Sequence[str] = (), timeout: float = 120) -> subprocess.CompletedProcess[str]:
    command = [str(BIN), *map(str, arguments)]
    if strace:
        command = ["strace", "-f", "-qq", "-o", "/dev/null", *strace, *command]  # the converter's stderr alone
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("ERROR:")]


def assert_one_clean_error(completed: subprocess.CompletedProcess[str], code: int, *fragments: str) -> None:
    assert completed.returncode == code, completed.stderr
    assert "Traceback" not in completed.stderr
    (line,) = error_lines(completed.stderr)
    for fragment in fragments:
        assert fragment in line, line


@pytest.fixture
def export(tmp_path: Path) -> Export:
    made = detection_export(tmp_path / "export", 12)
    made.write()
    return made


def convert(
    export: Export, output: Path, *options: str | Path, strace: Sequence[str] = ()
) -> subprocess.CompletedProcess[str]:
    arguments = ["-a", export.manifest, "-i", export.images, "-o", output, "--workers", "1", *options]
    return run("convert", *arguments, strace=strace)


def strace_available() -> None:
    if shutil.which("strace") is None:
        if os.environ.get("DATASET_CONVERTER_REQUIRE_STRACE", "") not in ("", "0"):
            pytest.fail("strace is not installed and DATASET_CONVERTER_REQUIRE_STRACE is set")
        pytest.skip("strace is not installed (apt-get install strace)")


# --- 1. ownership --------------------------------------------------------------------------------


def test_a_folder_the_converter_did_not_write_stops_the_run_before_any_work(export: Export, tmp_path: Path) -> None:
    output = tmp_path / "out"
    photo = output / "train" / "images" / "my_photo.jpg"
    photo.parent.mkdir(parents=True)
    photo.write_text("mine")

    completed = convert(export, output, "-f", "json")

    assert_one_clean_error(completed, 2, str(output / "train"), "--overwrite")
    assert photo.read_text() == "mine"
    assert sorted(path.name for path in output.iterdir()) == [STATE_FOLDER, "train"]
    assert sorted(path.name for path in (output / STATE_FOLDER).iterdir()) == [LOCK_FILE]  # no work was done


FOREIGN_FOLDERS = ("tfrecord_train", "configs", "coco")  # the training stacks' files are entries too


@pytest.mark.parametrize(
    "foreign", ["report.json", "dataset_info.yaml", "label_map.pbtxt", "features.json", *FOREIGN_FOLDERS]
)
def test_another_tools_file_is_kept_unless_overwrite_allows_it(export: Export, tmp_path: Path, foreign: str) -> None:
    output = tmp_path / "out"
    output.mkdir()
    path = output / foreign
    if foreign in FOREIGN_FOLDERS:
        path.mkdir()
        (path / "theirs.tfrecord").write_bytes(b"theirs")
    else:
        path.write_text("theirs")
    refused = convert(export, output)
    assert_one_clean_error(refused, 2, str(path))
    assert path.exists()

    allowed = convert(export, output, "--overwrite")

    assert allowed.returncode == 0, allowed.stderr
    assert run("verify", output, "--no-records").returncode == 0
    if foreign in FOREIGN_FOLDERS:
        assert not (path / "theirs.tfrecord").exists()
    else:
        assert path.read_text(encoding="utf-8") != "theirs"  # the converter's own file replaced it


def test_unrelated_files_survive_runs_and_reruns(export: Export, tmp_path: Path) -> None:
    output = tmp_path / "out"
    output.mkdir()
    (output / "notes.txt").write_text("keep")
    (output / "experiments").mkdir()
    (output / "experiments" / "run1.log").write_text("keep")
    for options in (["-s", "0.5,0.25,0.25"], ["-s", "0.5", "-f", "json"], ["-s", "0.2"]):
        assert convert(export, output, *options).returncode == 0
    assert (output / "notes.txt").read_text() == "keep"
    assert (output / "experiments" / "run1.log").read_text() == "keep"
    assert not (output / "tfrecord_test").exists() and not (output / "train").exists()  # earlier runs' entries


def test_a_hand_edited_dataset_info_never_makes_a_run_remove_paths_outside_its_entries(
    export: Export, tmp_path: Path
) -> None:
    output = tmp_path / "out"
    output.mkdir()
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious").write_text("keep")
    (output / "dataset_info.yaml").write_text(
        yaml.safe_dump({"entries": ["../victim", str(victim), "..", ".", "", "a/../../victim", "*"]})
    )
    completed = convert(export, output)
    assert completed.returncode == 0, completed.stderr
    assert (victim / "precious").read_text() == "keep"


# --- 3. one writer at a time ---------------------------------------------------------------------


@pytest.fixture
def held_lock(tmp_path: Path) -> Iterator[Path]:
    """The output folder of a conversion that is running now (this process holds its lock as pid 4242)."""
    output = tmp_path / "out"
    (output / STATE_FOLDER).mkdir(parents=True)
    descriptor = os.open(output / STATE_FOLDER / LOCK_FILE, os.O_RDWR | os.O_CREAT)
    fcntl.flock(descriptor, fcntl.LOCK_EX)
    os.write(descriptor, b"4242\n")
    staging = output / STATE_FOLDER / "g-0123456789abcdef0123456789abcdef"
    staging.mkdir()
    (staging / "half-written.partial").write_bytes(b"in progress")
    try:
        yield output
    finally:
        os.close(descriptor)


def test_a_second_run_exits_2_naming_the_holder_and_leaves_its_staging_alone(export: Export, held_lock: Path) -> None:
    completed = convert(export, held_lock)
    assert_one_clean_error(completed, 2, "another conversion (pid 4242)", str(held_lock))
    staging = held_lock / STATE_FOLDER / "g-0123456789abcdef0123456789abcdef"
    assert (staging / "half-written.partial").read_bytes() == b"in progress"


def test_the_lock_of_a_dead_process_is_taken_over(export: Export, tmp_path: Path) -> None:
    output = tmp_path / "out"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (output / STATE_FOLDER).mkdir(parents=True)
    (output / STATE_FOLDER / LOCK_FILE).write_text(dead.stdout)
    leftover = output / STATE_FOLDER / "g-feedfeedfeedfeedfeedfeedfeedfeed"
    leftover.mkdir()

    completed = convert(export, output)

    assert completed.returncode == 0, completed.stderr
    assert not leftover.exists()  # the dead run's staging went with its lock
    assert run("verify", output, "--no-records").returncode == 0


def test_runs_started_together_never_mix(export: Export, tmp_path: Path) -> None:
    output = tmp_path / "out"
    command = [str(BIN), "convert", "-a", str(export.manifest), "-i", str(export.images), "-o", str(output)]
    processes = [
        subprocess.Popen([*command, "--seed", str(seed), "--workers", "1"], stderr=subprocess.PIPE, text=True)
        for seed in (1, 2, 3)
    ]
    outcomes = [(process.wait(timeout=120), process.stderr.read() if process.stderr else "") for process in processes]
    assert all(code in (0, 2) and "Traceback" not in stderr for code, stderr in outcomes), outcomes
    assert any(code == 0 for code, _ in outcomes)
    assert all("another conversion" in stderr for code, stderr in outcomes if code == 2)
    assert run("verify", output, "--no-records").returncode == 0


# --- 4. clean failures ---------------------------------------------------------------------------


def _first_write_to_a_file(export: Export, tmp_path: Path) -> int:
    """Which `write` call of a run is its first to a file (not to stderr), from a traced run."""
    log = tmp_path / "writes.log"
    traced = convert(export, tmp_path / "traced", strace=["-o", str(log), "-e", "trace=write"])
    assert traced.returncode == 0, traced.stderr
    writes = [line.split("(", 1)[1] for line in log.read_text().splitlines() if " write(" in line]
    return next(number for number, call in enumerate(writes, start=1) if not call.startswith(("1,", "2,")))


@pytest.mark.parametrize("fault", ["shard write", "fsync", "mkdir of a split folder"])
def test_a_full_disk_is_one_error_line_and_the_previous_dataset_stays(
    export: Export, tmp_path: Path, fault: str
) -> None:
    strace_available()
    output = tmp_path / "out"
    assert convert(export, output, "-s", "0.5,0.25,0.25").returncode == 0
    before = dataset_view(output)
    inject = {
        "shard write": f"write:error=ENOSPC:when={_first_write_to_a_file(export, tmp_path)}",
        "fsync": "fsync:error=ENOSPC:when=1",
        "mkdir of a split folder": "mkdir:error=ENOSPC:when=4",  # after the state folder, the lock and the generation
    }[fault]

    completed = convert(export, output, "-s", "0.2", strace=["-e", f"inject={inject}"])

    assert_one_clean_error(completed, 1, "No space left on device")
    after = dataset_view(output)
    report = json.loads(after.pop("report.json"))  # the failed run's report, where one could be written
    assert "No space left on device" in report["summary"]["failure"]
    before.pop("report.json")
    assert after == before
    assert run("verify", output, "--no-records").returncode == 0
    assert convert(export, output, "-s", "0.2").returncode == 0  # and the next run cleans up and succeeds
    assert_no_leftovers(output)


def test_a_read_only_output_is_a_usage_error(export: Export, tmp_path: Path) -> None:
    strace_available()
    completed = convert(export, tmp_path / "out", strace=["-e", "inject=mkdir:error=EROFS:when=1"])
    assert_one_clean_error(completed, 2, "Read-only file system")


@pytest.fixture
def shared_folder() -> Iterator[Path]:
    """A folder every user may write in, like a volume mounted into a container."""
    folder = Path(tempfile.mkdtemp(prefix="dataset-converter-uids-"))
    folder.chmod(0o777)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _as_user(uid: int, *arguments: str | Path) -> subprocess.CompletedProcess[str]:
    """The converter run by another uid (the image runs as 10001), through the system's Python 3.11."""
    import converter

    site_packages = next(Path(sys.prefix).glob("lib/python3.11/site-packages"))
    project = Path(converter.__file__).parent.parent
    code = "import sys; from converter.cli import main; sys.argv[0] = 'dataset-converter'; main()"

    def become_user() -> None:
        os.setgid(uid)
        os.setuid(uid)

    return subprocess.run(
        [str(SYSTEM_PYTHON), "-c", code, *map(str, arguments)],
        env={"PYTHONPATH": f"{project}:{site_packages}", "HOME": "/tmp", "PATH": "/usr/bin:/bin"},
        preexec_fn=become_user,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_dataset_of_another_uid_is_refused_before_anything_changes(export: Export, shared_folder: Path) -> None:
    if os.geteuid() != 0 or not SYSTEM_PYTHON.exists():
        message = "this test switches users: it needs root and Debian's /usr/bin/python3.11, as CI has"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)
    data = shared_folder / "export"
    shutil.copytree(export.root, data)
    for path in [data, *data.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    output = shared_folder / "out"
    arguments = ["convert", "-a", data / "output.manifest", "-i", data / "images", "-o", output, "--workers", "1"]
    first = _as_user(10001, *arguments)
    assert first.returncode == 0, first.stderr
    before = dataset_view(output)

    second = _as_user(10002, *arguments, "-s", "0.5")

    assert_one_clean_error(second, 2, "cannot write to the output folder", "Permission denied")
    assert dataset_view(output) == before
    assert run("verify", output, "--no-records").returncode == 0


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, frontier = set(), [pid]
    while frontier:
        for child in children.get(frontier.pop(), []):
            found.add(child)
            frontier.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_workers_exit_within_seconds_of_the_converters_death(tmp_path: Path) -> None:
    export = CocoExport(tmp_path / "export", categories=[{"id": 1, "name": "field"}])
    for index in range(160):
        image_id = export.add_image(f"img{index:03d}.jpg", size=(1600, 1200))
        polygon = [10, 10, 1500, 40, 1400, 1100, 30, 1000]
        export.add_annotation(image_id, 1, segmentation=[polygon], bbox=[10, 10, 1490, 1090])
    export.write()
    process = subprocess.Popen(
        [
            str(BIN),
            "convert",
            "-a",
            str(export.path),
            "-i",
            str(export.image_folder),
            "-o",
            str(tmp_path / "out"),
            "--workers",
            "2",
            "--instance-masks",
        ],
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    workers: set[int] = set()
    while time.monotonic() < deadline and len(workers) < 3:  # the fork server and two workers
        workers = _descendants(process.pid)
        time.sleep(0.05)
    assert len(workers) >= 3 and process.poll() is None, "the run ended before its workers could be seen"

    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_alive(pid) for pid in workers):
        time.sleep(0.1)
    assert not [pid for pid in workers if _alive(pid)]


# --- 5. verify -----------------------------------------------------------------------------------


@pytest.fixture
def dataset(export: Export, tmp_path: Path) -> Path:
    output = tmp_path / "out"
    assert convert(export, output, "-s", "0.5").returncode == 0
    return output


def test_verify_fails_on_a_stray_shard_and_a_stray_split_folder(dataset: Path) -> None:
    (dataset / "tfrecord_train" / "train-00009-of-00010.tfrecord").write_bytes(b"stale")
    (dataset / "tfrecord_test").mkdir()
    (dataset / "tfrecord_test" / "test-00000-of-00001.tfrecord").write_bytes(b"stale")

    completed = run("verify", dataset, "--no-records")

    assert completed.returncode == 1
    text = "\n".join(error_lines(completed.stderr))
    assert "train-00009-of-00010.tfrecord: not listed" in text
    assert f"{dataset / 'tfrecord_test'}: a split folder" in text


@pytest.mark.parametrize(
    "listed",
    [
        "../../../../../../etc/passwd",
        "/etc/passwd",
        "tfrecord_train/../../outside.tfrecord",
        "tfrecord_train/escape.tfrecord",  # a link to /etc/passwd
    ],
)
def test_verify_refuses_listed_paths_that_leave_the_dataset(dataset: Path, tmp_path: Path, listed: str) -> None:
    (tmp_path / "outside.tfrecord").write_bytes(b"outside")
    (dataset / "tfrecord_train" / "escape.tfrecord").symlink_to("/etc/passwd")
    info_path = dataset / "dataset_info.yaml"
    info = yaml.safe_load(info_path.read_text())
    info["train"]["shards"][0]["file"] = listed
    info_path.resolve().write_text(yaml.safe_dump(info))

    completed = run("verify", dataset, "--no-records")

    assert completed.returncode == 1 and "Traceback" not in completed.stderr
    (line,) = error_lines(completed.stderr)
    assert "damaged" in line and ("outside the dataset folder" in line or "leaves the dataset folder" in line)


@pytest.mark.parametrize(
    "damage",
    [
        "train: 5\n",
        "train: {shards: 5, samples: 1}\n",
        "train: {shards: [{}], samples: 1}\n",
        "train: {shards: [{file: 7}]}\n",
        "entries: 7\n",
        "classes: [a\n",
        "\xff\xfe garbage",
        "{{{{{{{{",
        "[" * 5000,
    ],
)
def test_verify_reports_a_damaged_dataset_info_in_one_line(dataset: Path, damage: str) -> None:
    (dataset / "dataset_info.yaml").resolve().write_bytes(damage.encode("utf-8", "surrogateescape"))
    completed = run("verify", dataset, "--no-records")
    assert completed.returncode == 1
    assert "Traceback" not in completed.stderr
    assert len(error_lines(completed.stderr)) == 1, completed.stderr


def test_verify_names_the_leftovers_of_an_interrupted_run_and_still_passes(dataset: Path) -> None:
    (dataset / STATE_FOLDER / "g-abcdefabcdefabcdefabcdefabcdefab").mkdir()
    (dataset / "tfrecord_test").symlink_to(f"{STATE_FOLDER}/current/tfrecord_test")
    completed = run("verify", dataset, "--no-records")
    assert completed.returncode == 0, completed.stderr
    notes = [line for line in completed.stderr.splitlines() if line.startswith("NOTE:")]
    assert len(notes) == 2 and all("interrupted conversion" in note for note in notes)


# --- finalize ------------------------------------------------------------------------------------


@pytest.fixture
def parts(export: Export, tmp_path: Path) -> Path:
    """A previous single-machine dataset, and the three parts of a new scaled-out run beside it."""
    output = tmp_path / "scaled"
    assert convert(export, output, "-s", "0.5,0.25,0.25").returncode == 0
    for index in range(3):
        worker = convert(export, output, "-s", "0.5", "--seed", "3", "--num-workers", "3", "--worker-index", str(index))
        assert worker.returncode == 0, worker.stderr
    return output


@pytest.mark.parametrize("damage", ["flipped byte", "missing shard"])
def test_finalize_refuses_a_damaged_part_and_changes_nothing(parts: Path, damage: str) -> None:
    before = dataset_view(parts)
    shard = sorted((parts / "parts" / "worker-00001-of-00003").rglob("*.tfrecord"))[0]
    if damage == "missing shard":
        shard.unlink()
    else:
        data = bytearray(shard.read_bytes())
        data[len(data) // 2] ^= 0x01
        shard.write_bytes(bytes(data))

    completed = run("finalize", parts)

    assert_one_clean_error(completed, 1, shard.name, "rerun those workers")
    assert dataset_view(parts) == before
    assert (parts / "parts" / "worker-00000-of-00003" / "part.yaml").exists()


def test_a_full_disk_during_finalize_leaves_the_previous_dataset(parts: Path) -> None:
    strace_available()
    before = dataset_view(parts)
    completed = run("finalize", parts, strace=["-e", "inject=fsync:error=ENOSPC:when=1"])
    assert_one_clean_error(completed, 1, "No space left on device")
    assert dataset_view(parts) == before
    assert run("finalize", parts).returncode == 0
    assert run("verify", parts, "--no-records").returncode == 0


# --- 7. bounded by design ------------------------------------------------------------------------


def _garbage_manifest(export: Export, bad_lines: int) -> Path:
    """The export's good lines, then `bad_lines` lines of garbage."""
    manifest = export.manifest.with_name("garbage.manifest")
    with manifest.open("w", encoding="utf-8") as stream:
        stream.write(export.manifest.read_text(encoding="utf-8"))
        for number in range(bad_lines):
            stream.write(f"garbage line {number} {{not json\n")
    return manifest


def test_bad_lines_stream_to_the_report_and_the_log_stays_short(export: Export, tmp_path: Path) -> None:
    manifest = _garbage_manifest(export, 30_000)
    output = tmp_path / "out"
    completed = run("convert", "-a", manifest, "-i", export.images, "-o", output, "--workers", "1")
    assert completed.returncode == 0, completed.stderr
    report = json.loads((output / "report.json").read_text())
    assert report["summary"]["skipped"] == 30_000 and report["summary"]["converted"] == 12
    assert [entry["line"] for entry in report["skipped"]] == list(range(13, 30_013))
    events = [json.loads(line)["event"] for line in completed.stderr.splitlines()]
    assert events.count("skipped") == 5
    assert len(events) < 20


def test_max_skipped_stops_reading_as_soon_as_it_is_exceeded(export: Export, tmp_path: Path) -> None:
    manifest = _garbage_manifest(export, 30_000)
    output = tmp_path / "out"
    completed = run("convert", "-a", manifest, "-i", export.images, "-o", output, "--max-skipped", "10")
    assert completed.returncode == 1
    report = json.loads((output / "report.json").read_text())
    assert report["summary"]["skipped"] == 11  # the 11th skip stopped the read: the other 29,989 lines were not read
    assert "reading stopped" in report["summary"]["failure"]
    assert not (output / "dataset_info.yaml").exists()


def test_memory_does_not_grow_with_the_number_of_bad_lines(export: Export, tmp_path: Path) -> None:
    """Peak Python allocations of a whole in-process run, for 10 times more garbage lines: flat."""
    from builders import convert as convert_in_process

    def peak_bytes(bad_lines: int) -> int:
        manifest = _garbage_manifest(export, bad_lines)
        tracemalloc.start()
        try:
            result = convert_in_process("-a", manifest, "-i", export.images, "-o", tmp_path / f"out{bad_lines}")
            assert result.exit_code == 0, result.stderr
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    peak_bytes(100)  # imports and caches are allocated once, by the first run
    small, large = peak_bytes(6_000), peak_bytes(60_000)
    assert large < small * 1.5, (small, large)  # held entries would add megabytes per 10,000 lines

"""The `dataset-converter` command end to end: splits, shards, dataset_info.yaml, exit codes, atomic output.

Runs go through the typer app with CliRunner (or a real subprocess where the entry
point itself is under test); records are read back with TensorFlow.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import struct
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from builders import (
    BUCKET,
    STATE_FOLDER,
    TRAINING_STACK_NAMES,
    Export,
    GtBox,
    convert,
    dataset_files,
    detection_export,
    detection_line,
    flat,
    image_pixels,
    json_events,
    leftovers,
    load_info,
    load_report,
    sha256_hex,
    shard_files,
    tfrecord_names,
    verify,
    visible_names,
    write_image,
    write_manifest,
)
from readback import OD_API_KEYS, parse_records, read_all, read_split

import converter
import converter.core.worker as worker
from converter.cli import main
from converter.core.commit import OutputFolder
from converter.core.materialize import materialize as real_materialize
from converter.core.verify import verify_dataset

SPLIT_FOLDERS = {"train": "tfrecord_train", "validation": "tfrecord_val", "test": "tfrecord_test"}
SHARD_PREFIXES = {"train": "train", "validation": "val", "test": "test"}
BIN = Path(sys.executable).parent


def _run(export: Export, output: Path, *options: str) -> None:
    export.write()
    result = convert("-a", export.manifest, "-i", export.images, "-o", output, *options)
    assert result.exit_code == 0, result.stderr


def _keys_by_split(output: Path) -> dict[str, list[str]]:
    """Each split's source_ids in record order."""
    return {
        split: [record["image/source_key"][0].decode() for record in records]
        for split, records in read_all(output).items()
    }


def _golden_position(salt: str, seed: int, key: str) -> float:
    """The documented split hash, computed here independently: SHA-256 of salt, seed and key."""
    digest = hashlib.sha256(f"{salt}\x00{seed}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def _golden_split(key: str, seed: int, shares: tuple[float, ...]) -> str:
    position = _golden_position("split", seed, key)
    if position < shares[0]:
        return "train"
    if len(shares) == 2 or position < shares[0] + shares[1]:
        return "validation"
    return "test"


# ---------------------------------------------------------------------------
# Stable splits


@pytest.mark.parametrize(
    ("split", "shares"),
    [("0.2", (0.8, 0.2)), ("0.8,0.1,0.1", (0.8, 0.1, 0.1)), ("0.5,0.5", (0.5, 0.5))],
)
def test_splits_follow_the_golden_hash_and_order(tmp_path: Path, split: str, shares: tuple[float, ...]) -> None:
    export = detection_export(tmp_path / "export", 60)
    output = tmp_path / "out"

    _run(export, output, "-s", split, "--seed", "7")

    info = load_info(output)
    names = ("train", "validation", "test")[: len(shares)]
    assert info["split"] == pytest.approx(dict(zip(names, shares, strict=True)))
    assert info["seed"] == 7
    assert [name for name in visible_names(output) if name.startswith("tfrecord_")] == sorted(
        SPLIT_FOLDERS[name] for name in names
    )
    keys = _keys_by_split(output)
    assert set(keys) == set(names)
    for name in names:
        expected = [key for key in export.references() if _golden_split(key, 7, shares) == name]
        assert sorted(keys[name]) == sorted(expected)
        # Records are shuffled by a second, salted hash, not kept in input order.
        assert keys[name] == sorted(expected, key=lambda key: _golden_position("order", 7, key))
        assert info[name]["samples"] == len(expected)
    assert sum(len(split_keys) for split_keys in keys.values()) == 60
    assert keys["train"] != [key for key in export.references() if key in set(keys["train"])]


def test_rerun_gives_byte_identical_output(tmp_path: Path) -> None:
    export = detection_export(tmp_path / "export", 30)
    first, second = tmp_path / "first", tmp_path / "second"

    _run(export, first, "-s", "0.8,0.1,0.1", "-p", "0.01")
    _run(export, second, "-s", "0.8,0.1,0.1", "-p", "0.01")

    assert len(shard_files(first)) > 3  # several shards per split, so their order is compared too
    # The dataset as a user sees it (generation folders and the lock's pid differ by design).
    files = dataset_files(first)
    assert {"dataset_info.yaml", "report.json"} <= set(files)
    assert files == dataset_files(second)


def test_input_order_and_other_samples_do_not_change_a_sample_split_or_record_order(tmp_path: Path) -> None:
    export = detection_export(tmp_path / "export", 40)
    full = tmp_path / "full"
    _run(export, full)
    full_keys = _keys_by_split(full)

    reordered = Export(tmp_path / "export", lines=list(reversed(export.lines)), image_bytes=export.image_bytes)
    reordered_output = tmp_path / "reordered"
    _run(reordered, reordered_output)
    assert shard_files(reordered_output) == shard_files(full)

    subset = Export(tmp_path / "export", lines=export.lines[::3], image_bytes=export.image_bytes)
    subset_output = tmp_path / "subset"
    _run(subset, subset_output)
    for split, keys in _keys_by_split(subset_output).items():
        assert keys == [key for key in full_keys[split] if key in set(subset.references())]


def test_appending_lines_never_moves_an_existing_sample(tmp_path: Path) -> None:
    export = detection_export(tmp_path / "export", 40)
    before = tmp_path / "before"
    _run(export, before, "-s", "0.6,0.2,0.2")
    for line in detection_export(tmp_path / "export", 30, first_seed=1000, prefix="new").lines:
        export.add_line(line)
    after = tmp_path / "after"
    _run(export, after, "-s", "0.6,0.2,0.2")

    keys_before, keys_after = _keys_by_split(before), _keys_by_split(after)
    old = set(export.references()[:40])
    for split in ("train", "validation", "test"):
        assert set(keys_before[split]) == set(keys_after[split]) & old
    assert sum(len(keys) for keys in keys_after.values()) == 70
    assert all(keys_after[split] != keys_before[split] for split in keys_after)  # new samples joined every split


def test_a_different_seed_changes_assignment_and_order(tmp_path: Path) -> None:
    export = detection_export(tmp_path / "export", 40)
    seed0, seed1 = tmp_path / "seed0", tmp_path / "seed1"
    _run(export, seed0, "--seed", "0")
    _run(export, seed1, "--seed", "1")

    keys0, keys1 = _keys_by_split(seed0), _keys_by_split(seed1)
    assert set(keys0["validation"]) != set(keys1["validation"])
    common = [key for key in keys0["train"] if key in set(keys1["train"])]
    assert common != [key for key in keys1["train"] if key in set(keys0["train"])]


# ---------------------------------------------------------------------------
# Shards and dataset_info.yaml


def _framed_record_sizes(path: Path) -> list[int]:
    """On-disk size of each record of a TFRecord file, from its framing (length + 16 bytes of CRCs)."""
    data = path.read_bytes()
    sizes, offset = [], 0
    while offset < len(data):
        (length,) = struct.unpack_from("<Q", data, offset)
        sizes.append(length + 16)
        offset += length + 16
    assert offset == len(data), f"{path} ends inside a record"
    return sizes


def _greedy_in_order(sizes: list[int], cap: int) -> list[int]:
    """Records per shard of in-order greedy packing (the fewest shards that keep record order)."""
    shards: list[int] = []
    current = 0
    for size in sizes:
        if not shards or current + size > cap:
            shards.append(0)
            current = 0
        shards[-1] += 1
        current += size
    return shards


def test_shards_are_capped_by_size_and_packed_greedily(tmp_path: Path) -> None:
    export = Export(tmp_path / "export")
    sides = [56, 60, 64, 70, 76, 80, 84, 88, 92, 58, 66, 72, 82, 90, 62, 74, 86, 94, 68, 78]
    for index, side in enumerate(sides):
        export.add_detection(
            f"n{index:02d}.png",
            [GtBox(index % 2, 1, 1, 20, 20)],
            {index % 2: ("cat", "dog")[index % 2]},
            size=(side, side),
            noise=True,
            seed=index,
        )
    export.add_detection("huge.png", [GtBox(0, 1, 1, 9, 9)], {0: "cat"}, size=(150, 150), noise=True, seed=99)
    output = tmp_path / "out"

    _run(export, output, "-p", "0.05", "-s", "0.3")

    cap = int(0.05 * 1024 * 1024)
    info = load_info(output)
    saw_oversized_single = False
    for split in ("train", "validation"):
        shards = info[split]["shards"]
        paths = [output / shard["file"] for shard in shards]
        assert sorted(paths) == sorted((output / SPLIT_FOLDERS[split]).glob("*.tfrecord"))
        pattern = re.compile(rf"{SHARD_PREFIXES[split]}-(\d{{5}})-of-(\d{{5}})\.tfrecord")
        for index, path in enumerate(paths):
            match = pattern.fullmatch(path.name)
            assert match, path.name
            assert (int(match.group(1)), int(match.group(2))) == (index, len(paths))
        per_shard = [_framed_record_sizes(path) for path in paths]
        for sizes, path, shard in zip(per_shard, paths, shards, strict=True):
            assert sum(sizes) <= cap or len(sizes) == 1, f"{path} holds {len(sizes)} records, {sum(sizes)} bytes"
            saw_oversized_single |= sum(sizes) > cap
            data = path.read_bytes()
            assert shard["bytes"] == len(data)
            assert shard["sha256"] == sha256_hex(data)
            assert shard["records"] == len(sizes) == len(parse_records([path]))
        all_sizes = [size for sizes in per_shard for size in sizes]
        assert [len(sizes) for sizes in per_shard] == _greedy_in_order(all_sizes, cap)
        assert len(per_shard) >= 2
        assert info[split]["samples"] == len(read_split(output, split)) == len(all_sizes)
    assert saw_oversized_single
    assert info["train"]["samples"] + info["validation"]["samples"] == len(sides) + 1
    assert verify(output).exit_code == 0


def test_dataset_info_describes_the_dataset(tmp_path: Path) -> None:
    export = detection_export(tmp_path / "export", 24)
    export.add_detection("negative.jpg", [], {})
    export.add_line(detection_line(f"{BUCKET}/absent.jpg", [], {}))
    output = tmp_path / "out"

    _run(export, output, "-s", "0.7,0.2,0.1", "--seed", "3")

    info = load_info(output)
    assert list(info) == [
        "classes",
        "train",
        "validation",
        "test",
        "record_layout",
        "seed",
        "split",
        "converter",
        "input",
        "report",
        "entries",
        "stats",
    ]
    assert info["entries"] == [
        "coco", "configs", "dataset_info.json", "features.json", "label_map.csv", "label_map.pbtxt", "stats",
        "tfrecord_test", "tfrecord_train", "tfrecord_val",
    ]  # fmt: skip
    assert info["stats"]["page"] == "stats/index.html" and (output / "stats" / "index.html").is_file()
    assert info["classes"] == ["cat", "dog"]
    assert info["seed"] == 3
    assert info["split"] == pytest.approx({"train": 0.7, "validation": 0.2, "test": 0.1})
    assert info["converter"] == {"name": "dataset-converter", "version": converter.__version__}
    assert info["input"]["annotations"] == str(export.manifest)
    assert info["input"]["images"] == str(export.images)
    assert (info["input"]["samples"], info["input"]["converted"], info["input"]["skipped"]) == (26, 25, 1)
    assert set(info["record_layout"]["keys"]) >= set(OD_API_KEYS)
    assert info["record_layout"]["class_id_offset"] == 1

    boxes_by_key = {
        line["source-ref"]: [
            line["bbox-metadata"]["class-map"][str(a["class_id"])] for a in line["bbox"]["annotations"]
        ]
        for line in export.lines
        if isinstance(line, dict)
    }
    records = read_all(output)
    for split in ("train", "validation", "test"):
        entry = info[split]
        assert set(entry) == {"annotations", "images", "samples", "shards", "label_map", "statistics", "class_counts"}
        assert entry["statistics"]["max_width"] == 64 and entry["statistics"]["max_height"] == 48
        assert entry["label_map"] == f"{SPLIT_FOLDERS[split]}/label_map.pbtxt"
        assert entry["annotations"] == entry["images"] == SPLIT_FOLDERS[split]
        assert entry["samples"] == len(records[split]) == sum(shard["records"] for shard in entry["shards"])
        objects: Counter[str] = Counter()
        images: Counter[str] = Counter()
        for record in records[split]:
            names = boxes_by_key[record["image/source_key"][0].decode()]
            objects.update(names)
            images.update(set(names))
            assert set(record) >= set(OD_API_KEYS)
        assert entry["class_counts"] == {
            name: {"objects": objects[name], "images": images[name]} for name in info["classes"]
        }
    assert sum(info[split]["samples"] for split in ("train", "validation", "test")) == 25


def test_relative_paths_let_the_output_folder_move(tmp_path: Path) -> None:
    export = detection_export(tmp_path / "export", 12)
    output = tmp_path / "out"
    _run(export, output, "-p", "0.01")
    moved = tmp_path / "elsewhere" / "dataset"
    moved.parent.mkdir()
    shutil.move(output, moved)

    info = load_info(moved)
    files = [shard["file"] for split in ("train", "validation") for shard in info[split]["shards"]]
    assert files and all(not Path(file).is_absolute() for file in files)
    result = verify(moved)
    assert result.exit_code == 0, result.stderr
    assert "OK: 12 records" in result.stdout
    assert sum(len(records) for records in read_all(moved).values()) == 12

    # verify really checks the shards: a truncated copy fails, naming the file.
    victim = moved / files[0]
    victim.write_bytes(victim.read_bytes()[:-5])
    result = verify(moved)
    assert result.exit_code == 1
    assert str(victim) in result.stderr


def test_absolute_paths_name_the_final_output_location(tmp_path: Path) -> None:
    export = detection_export(tmp_path / "export", 10)
    output = tmp_path / "out"

    _run(export, output, "--absolute-paths", "-s", "0.8,0.1,0.1")

    info = load_info(output)
    paths = [info["report"]]
    for split in ("train", "validation", "test"):
        paths += [info[split]["annotations"], info[split]["images"]]
        paths += [shard["file"] for shard in info[split]["shards"]]
    for path in map(Path, paths):
        assert path.is_absolute(), path
        assert path.exists(), path
        assert path.resolve().is_relative_to(output.resolve())
        assert STATE_FOLDER not in str(path)  # the names a user sees, not a generation a rerun removes
    assert verify(output).exit_code == 0
    assert sum(len(records) for records in read_all(output).values()) == 10


# ---------------------------------------------------------------------------
# Exit codes and failures


def test_nothing_converted_exits_1_and_writes_only_the_report(tmp_path: Path) -> None:
    export = Export(tmp_path / "export")
    export.images.mkdir(parents=True)
    for index in range(3):
        export.add_line(detection_line(f"{BUCKET}/missing{index}.jpg", [], {}))
    export.write()
    output = tmp_path / "out"

    result = convert("-a", export.manifest, "-i", export.images, "-o", output)

    assert result.exit_code == 1
    assert "none of the 3 input samples could be converted" in result.stderr
    assert str(output / "report.json") in result.stderr
    assert not (output / "dataset_info.yaml").exists()
    report = load_report(output)
    assert report["summary"]["status"] == "failed"
    assert [entry["code"] for entry in report["skipped"]] == ["missing_image"] * 3
    assert leftovers(output) == []


@pytest.mark.parametrize(
    ("limit", "exit_code"),
    [("1", 1), ("0.2", 1), ("20%", 1), ("3", 0), ("0.3", 0), ("30%", 0)],
)
def test_max_skipped_fails_the_run_and_keeps_the_earlier_dataset(tmp_path: Path, limit: str, exit_code: int) -> None:
    output = tmp_path / "out"
    earlier = detection_export(tmp_path / "earlier", 5, first_seed=500)
    _run(earlier, output)
    earlier_info = (output / "dataset_info.yaml").read_bytes()
    earlier_shards = shard_files(output)

    export = detection_export(tmp_path / "export", 7)
    for index in range(3):
        export.add_line(detection_line(f"{BUCKET}/gone{index}.jpg", [], {}))  # 3 of 10 samples skipped
    export.write()
    result = convert("-a", export.manifest, "-i", export.images, "-o", output, "--max-skipped", limit)

    assert result.exit_code == exit_code, result.stderr
    report = load_report(output)
    if limit == "1":
        # A count stops the read at the skip that exceeds it, the 2nd: the rest of the export is not read.
        assert report["summary"]["input_samples"] == report["summary"]["skipped"] == 2
        assert "reading stopped" in report["summary"]["failure"]
    else:
        assert report["summary"]["input_samples"] == 10
    if exit_code == 1:
        assert report["summary"]["status"] == "failed"
        assert "more than --max-skipped allows" in report["summary"]["failure"]
        assert "more than --max-skipped allows" in flat(result.stderr)
        assert (output / "dataset_info.yaml").read_bytes() == earlier_info
        assert shard_files(output) == earlier_shards
        assert verify(output).exit_code == 0
    else:
        assert report["summary"]["status"] == "ok"
        assert report["summary"]["converted"] == 7
        assert {key for keys in _keys_by_split(output).values() for key in keys} == set(export.references()[:7])
    assert leftovers(output) == []


def _two_manifests(tmp_path: Path) -> list[str]:
    export = detection_export(tmp_path / "export", 2)
    export.write()
    shutil.copyfile(export.manifest, tmp_path / "export" / "other.manifest")
    return ["-a", str(tmp_path / "export")]


def _good(tmp_path: Path) -> list[str]:
    export = detection_export(tmp_path / "export", 2)
    export.write()
    return ["-a", str(export.manifest)]


USAGE_ERRORS = [
    ("split-above-one", lambda tmp: [*_good(tmp), "-s", "1.5"], ["--split", "[0, 1)", "1.5"]),
    ("split-not-summing-to-one", lambda tmp: [*_good(tmp), "-s", "0.5,0.6"], ["--split", "sum to 1"]),
    ("split-not-a-number", lambda tmp: [*_good(tmp), "-s", "half"], ["--split", "half"]),
    ("missing-annotations", lambda tmp: ["-a", str(tmp / "nowhere.manifest")], ["nowhere.manifest", "does not exist"]),
    ("two-manifests", _two_manifests, ["several annotation exports", "output.manifest", "other.manifest"]),
    (
        "empty-folder",
        lambda tmp: ["-a", str(tmp)],
        ["no annotation export found", "one of sagemaker_gt, labelstudio", "pass it with -a/--annotations"],
    ),
    ("allow-new-without-classes", lambda tmp: [*_good(tmp), "--allow-new-classes"], ["needs --classes"]),
    ("bad-max-skipped", lambda tmp: [*_good(tmp), "--max-skipped", "lots"], ["--max-skipped", "lots"]),
]


@pytest.mark.parametrize(
    ("make_arguments", "fragments"), [c[1:] for c in USAGE_ERRORS], ids=[c[0] for c in USAGE_ERRORS]
)
def test_usage_errors_exit_2_with_a_message(tmp_path: Path, make_arguments: Any, fragments: list[str]) -> None:
    (tmp_path / "in").mkdir()
    arguments = make_arguments(tmp_path / "in")
    output = tmp_path / "out"

    result = convert(*arguments, "-o", output)

    assert result.exit_code == 2
    message = flat(result.stderr)
    for fragment in fragments:
        assert fragment in message
    assert not (output / "dataset_info.yaml").exists()


# ---------------------------------------------------------------------------
# Atomic output


@pytest.mark.parametrize("cleans_up", [True, False], ids=["interrupted", "killed"])
def test_an_interrupted_run_leaves_the_previous_dataset_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cleans_up: bool
) -> None:
    output = tmp_path / "out"
    previous = detection_export(tmp_path / "previous", 8, first_seed=700)
    _run(previous, output, "-p", "0.01")
    previous_files = dataset_files(output)

    seen: dict[str, Any] = {"calls": 0}

    def interrupting_materialize(*arguments: Any, **keywords: Any) -> Any:
        seen["calls"] += 1
        if seen["calls"] == 5:
            # Mid-run: partial shards exist in the new generation, yet the user sees the previous dataset whole.
            seen["partial"] = [path.name for path in (output / STATE_FOLDER).rglob("*.partial")]
            seen["files"] = dataset_files(output)
            seen["verify"] = verify_dataset(output / "dataset_info.yaml")
            raise KeyboardInterrupt
        return real_materialize(*arguments, **keywords)

    monkeypatch.setattr(worker, "materialize", interrupting_materialize)  # in this process: --workers 1
    if not cleans_up:
        # A killed run (SIGKILL, power loss) removes nothing: its generation stays behind.
        monkeypatch.setattr(OutputFolder, "discard", lambda self, generation: None)
    export = detection_export(tmp_path / "export", 20)
    export.write()
    result = convert("-a", export.manifest, "-i", export.images, "-o", output, "-p", "0.01", "--workers", "1")

    assert result.exit_code != 0
    assert seen["calls"] == 5
    assert seen["partial"]
    assert seen["files"] == previous_files
    assert (seen["verify"].records, seen["verify"].problems) == (8, [])
    assert dataset_files(output) == previous_files
    checked = verify(output)
    assert checked.exit_code == 0, checked.stderr
    if cleans_up:
        assert leftovers(output) == []
        return
    (left,) = leftovers(output)
    assert left.startswith(f"{STATE_FOLDER}/") and str(output / left) in checked.stderr  # named as a note
    monkeypatch.undo()
    _run(previous, output, "-p", "0.01")  # the next run removes what the killed one left
    assert leftovers(output) == []
    assert dataset_files(output) == previous_files


def test_while_committing_dataset_info_never_points_at_missing_shards(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    output = tmp_path / "out"
    _run(detection_export(tmp_path / "previous", 8, first_seed=700), output, "-s", "0.6,0.2,0.2", "-p", "0.01")
    previous_files = dataset_files(output)
    checks: list[tuple[str, list[str], dict[str, bytes]]] = []

    def checked(operation: str, real: Any) -> Any:
        def check_then_run(path: Any, *arguments: Any, **keywords: Any) -> Any:
            # Before every rename or removal in the output folder, whatever dataset_info.yaml is there verifies.
            target = Path(arguments[0] if operation == "replace" else path)
            if target.is_relative_to(output):
                step = f"{operation} {target.relative_to(output).as_posix()}"
                problems = verify_dataset(output / "dataset_info.yaml").problems
                checks.append((step, problems, dataset_files(output)))
            return real(path, *arguments, **keywords)

        return check_then_run

    monkeypatch.setattr(Path, "replace", checked("replace", Path.replace))
    monkeypatch.setattr(Path, "unlink", checked("unlink", Path.unlink))
    monkeypatch.setattr(shutil, "rmtree", checked("rmtree", shutil.rmtree))
    export = detection_export(tmp_path / "export", 12)
    _run(export, output, "-p", "0.01")
    monkeypatch.undo()

    assert all(problems == [] for _, problems, _ in checks), [(step, problems) for step, problems, _ in checks]
    # One rename commits the whole dataset at once, the switch of `current`: before it the user sees the
    # previous dataset whole, after it (the previous one's removal) the new one whole.
    steps = [step for step, _, _ in checks]
    switch = steps.index(f"replace {STATE_FOLDER}/current")
    new_files = dataset_files(output)
    assert all(files == previous_files for _, _, files in checks[: switch + 1]), steps
    assert all(files == new_files for _, _, files in checks[switch + 1 :]), steps
    assert "unlink tfrecord_test" in steps[switch + 1 :]  # the link only the previous dataset used
    assert visible_names(output) == tfrecord_names("tfrecord_train", "tfrecord_val")
    assert verify(output).exit_code == 0
    assert sorted(key for keys in _keys_by_split(output).values() for key in keys) == sorted(export.references())
    assert leftovers(output) == []


def test_a_successful_rerun_replaces_the_previous_output(tmp_path: Path) -> None:
    output = tmp_path / "out"
    first = detection_export(tmp_path / "first", 30, first_seed=1)
    _run(first, output, "-s", "0.6,0.2,0.2")
    assert (output / "tfrecord_test").is_dir()

    second = detection_export(tmp_path / "second", 12, first_seed=900)
    _run(second, output, "-s", "0.25")

    assert visible_names(output) == tfrecord_names("tfrecord_train", "tfrecord_val")
    info = load_info(output)
    assert "test" not in info
    keys = _keys_by_split(output)
    assert sorted(key for split_keys in keys.values() for key in split_keys) == sorted(second.references())
    assert set(shard_files(output)) == {
        shard["file"] for split in ("train", "validation") for shard in info[split]["shards"]
    }
    label_maps = {f"{folder}/label_map.pbtxt" for folder in ("tfrecord_train", "tfrecord_val")}
    top_files = {path for path in dataset_files(output) if not path.startswith("tfrecord_")}
    assert set(dataset_files(output)) == set(shard_files(output)) | label_maps | top_files
    assert {path.split("/")[0] for path in top_files} == {
        *TRAINING_STACK_NAMES,
        "dataset_info.yaml",
        "report.json",
        "stats",
    }
    assert leftovers(output) == []  # nothing of the first dataset stays, not even out of sight
    assert verify(output).exit_code == 0


# ---------------------------------------------------------------------------
# Entry points, input discovery, logs


def test_main_without_the_convert_word(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    export = detection_export(tmp_path / "export", 10)
    export.write()
    output = tmp_path / "out"
    arguments = ["-a", str(export.manifest), "-i", str(export.images), "-o", str(output), "-s", "0.1"]
    monkeypatch.setattr(sys, "argv", ["dataset-converter", *arguments])

    with pytest.raises(SystemExit) as exit_info:
        main()

    assert exit_info.value.code in (0, None)
    assert load_info(output)["split"] == pytest.approx({"train": 0.9, "validation": 0.1})
    assert sum(len(keys) for keys in _keys_by_split(output).values()) == 10


def test_console_script_logs_json_lines_on_a_non_terminal_stderr(tmp_path: Path) -> None:
    export = detection_export(tmp_path / "export", 5)
    missing_line = export.add_line(detection_line(f"{BUCKET}/absent.jpg", [], {}))
    export.add_line("{not json")
    export.write()
    output = tmp_path / "out"

    arguments = ["-a", str(export.manifest), "-i", str(export.images), "-o", str(output), "-s", "0.1"]
    completed = subprocess.run(
        [str(BIN / "dataset-converter"), *arguments], capture_output=True, text=True, timeout=60, check=False
    )

    assert completed.returncode == 0, completed.stderr
    lines = [line for line in completed.stderr.splitlines() if line.strip()]
    events = [json.loads(line) for line in lines]  # every line is JSON
    assert all("event" in event for event in events)
    assert [event["event"] for event in events].count("started") == 1
    assert events[-1]["event"] == "finished"
    assert events[-1]["converted"] == 5
    skipped = {
        (event["file"], event["line"], event["key"]): event["code"] for event in events if event["event"] == "skipped"
    }
    assert skipped == {
        (str(export.manifest), missing_line, f"{BUCKET}/absent.jpg"): "missing_image",
        (str(export.manifest), 7, None): "malformed_json",
    }
    assert load_info(output)["split"] == pytest.approx({"train": 0.9, "validation": 0.1})


def test_python_dash_m_converter_help() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "converter", "--help"], capture_output=True, text=True, timeout=60, check=False
    )

    assert completed.returncode == 0, completed.stderr
    for command in ("convert", "verify", "version"):
        assert command in completed.stdout


def test_annotations_folder_finds_the_output_manifest_and_is_the_default_images_folder(tmp_path: Path) -> None:
    job = tmp_path / "job"
    image_bytes: dict[str, bytes] = {}
    lines = []
    for index in range(4):
        reference = f"{BUCKET}/images/img{index}.jpg"
        image_bytes[reference] = write_image(job / "images" / f"img{index}.jpg", image_pixels(64, 48, index))
        lines.append(detection_line(reference, [GtBox(0, 1, 1, 5, 5)], {0: "cat"}))
    write_manifest(job / "manifests" / "output.manifest", lines)
    # The job's input manifest (source-ref only) sits beside it and is not a candidate.
    write_manifest(job / "manifests" / "input.manifest", [{"source-ref": line["source-ref"]} for line in lines])
    output = tmp_path / "out"

    result = convert("-a", job, "-o", output)

    assert result.exit_code == 0, result.stderr
    info = load_info(output)
    assert info["input"]["annotations"] == str(job / "manifests" / "output.manifest")
    assert info["input"]["images"] == str(job)
    records = [record for records in read_all(output).values() for record in records]
    assert {record["image/source_key"][0].decode(): record["image/encoded"][0] for record in records} == image_bytes
    assert {record["image/filename"][0] for record in records} == {f"images/img{i}.jpg".encode() for i in range(4)}


def test_annotation_file_folder_is_the_default_images_folder(tmp_path: Path) -> None:
    export = Export(tmp_path / "job")
    for index in range(3):
        reference = export.add_image(f"pics/{index}.jpg")
        export.add_line(detection_line(reference, [GtBox(0, 1, 1, 5, 5)], {0: "cat"}))
    manifest = write_manifest(export.images / "output.manifest", export.lines)  # beside pics/
    decoy = export.root / "pics" / "0.jpg"  # would win if the images folder were the parent
    decoy.parent.mkdir()
    decoy.write_bytes(b"not the image")
    output = tmp_path / "out"

    result = convert("-a", manifest, "-o", output)

    assert result.exit_code == 0, result.stderr
    records = [record for records in read_all(output).values() for record in records]
    assert {record["image/source_key"][0].decode(): record["image/encoded"][0] for record in records} == (
        export.image_bytes
    )
    assert load_info(output)["input"]["images"] == str(export.images)


def test_version_command_prints_the_package_version() -> None:
    from typer.testing import CliRunner

    from converter.cli import app

    result = CliRunner().invoke(app, ["version"])

    assert result.exit_code == 0
    assert result.stdout.strip() == converter.__version__


def test_skip_messages_name_the_file_and_line(tmp_path: Path) -> None:
    export = detection_export(tmp_path / "export", 3)
    export.add_line("")
    bad = export.add_line(detection_line(f"{BUCKET}/absent.jpg", [], {}))
    export.write()
    output = tmp_path / "out"

    result = convert("-a", export.manifest, "-i", export.images, "-o", output)

    assert result.exit_code == 0, result.stderr
    (event,) = [event for event in json_events(result.stderr) if event["event"] == "skipped"]
    assert (event["file"], event["line"], event["key"]) == (str(export.manifest), bad, f"{BUCKET}/absent.jpg")
    assert "absent.jpg" in event["reason"]
    (entry,) = load_report(output)["skipped"]
    assert (entry["file"], entry["line"], entry["code"]) == (str(export.manifest), bad, "missing_image")


def test_an_output_folder_that_cannot_be_written_is_a_usage_error_before_any_work(tmp_path: Path) -> None:
    export = detection_export(tmp_path / "export", 2)
    export.write()
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")

    result = convert("-a", export.manifest, "-i", export.images, "-o", blocker / "out")

    assert result.exit_code == 2
    message = flat(result.stderr)
    assert message == (
        f"ERROR: -o {blocker / 'out'} lies under {blocker}, which is a file; the output must be a folder "
        "(it is created if absent)"
    )
    assert not any(event["event"] in ("reading", "started") for event in json_events(result.stderr))

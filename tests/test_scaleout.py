"""Parallel workers and scale-out: the same dataset whatever the number of processes or machines.

`--workers N` must give byte-identical output for any N. N machines (`--num-workers N
--worker-index I`, here N local processes) plus `finalize` must give exactly the records,
per split and in order, of one machine; a re-run worker replaces only its own part; and
finalize refuses to merge an incomplete or inconsistent set of parts, naming what is wrong.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from builders import CocoExport, convert, dataset_files, flat, leftovers, load_info, load_report, shard_files
from readback import read_all
from typer.testing import CliRunner, Result

from converter.cli import app
from converter.core.scaleout import WorkerSlice, resolve_worker_slice
from converter.errors import UsageError

BIN = Path(sys.executable).parent
SAMPLES = 60
SPLIT = ("-s", "0.7,0.2,0.1", "-p", "0.02")  # three splits, several shards each


def _coco_export(root: Path) -> CocoExport:
    """Polygons (mask work in the workers), boxes, a clipped box, a missing image and a bad polygon."""
    export = CocoExport(root, categories=[{"id": 3, "name": "car"}, {"id": 9, "name": "tree"}])
    for index in range(SAMPLES):
        image_id = export.add_image(f"img{index:03d}.jpg", size=(64 + index % 5, 48))
        x, y = 3 + index % 20, 2 + index % 15
        export.add_annotation(
            image_id, 3, segmentation=[[x, y, x + 30.5, y + 2, x + 20, y + 25.25]], bbox=[x, y, 30.5, 25.25]
        )
        if index % 4 == 0:
            export.add_annotation(image_id, 9, bbox=[40, 30, 40, 30])  # runs past the edge: clipped
        if index == 17:
            export.add_annotation(image_id, 9, segmentation=[[1, 1, 2, 2]])  # too few vertices: reported
    export.images.append({"id": 999, "file_name": "absent.jpg", "width": 64, "height": 48})
    export.write()
    return export


def _convert(export: CocoExport, output: Path, *options: str) -> Result:
    return convert("-a", export.path, "-i", export.image_folder, "-o", output, "--instance-masks", *SPLIT, *options)


def _finalize(output: Path) -> Result:
    return CliRunner().invoke(app, ["finalize", str(output)])


def _part_files(output: Path) -> dict[str, bytes]:
    """Every file under `output/parts` (real files, no links), the workers' own state folders included."""
    parts = output / "parts"
    return {
        path.relative_to(parts).as_posix(): path.read_bytes() for path in sorted(parts.rglob("*")) if path.is_file()
    }


def _split_bytes(output: Path) -> dict[str, bytes]:
    """Each split's shards concatenated in dataset_info.yaml's order: the records, in order, byte for byte."""
    info = load_info(output)
    return {
        split: b"".join((output / shard["file"]).read_bytes() for shard in info[split]["shards"])
        for split in ("train", "validation", "test")
    }


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> tuple[CocoExport, Path]:
    root = tmp_path_factory.mktemp("single")
    export = _coco_export(root / "export")
    result = _convert(export, root / "out", "--workers", "1")
    assert result.exit_code == 0, result.stderr
    return export, root / "out"


@pytest.mark.parametrize("workers", [2, 3])
def test_any_number_of_workers_writes_byte_identical_output(
    single: tuple[CocoExport, Path], tmp_path: Path, workers: int
) -> None:
    export, reference = single
    result = _convert(export, tmp_path / "out", "--workers", str(workers))
    assert result.exit_code == 0, result.stderr
    assert dataset_files(tmp_path / "out") == dataset_files(reference)
    report = load_report(reference)
    assert report["summary"]["converted"] == SAMPLES
    assert [entry["code"] for entry in report["skipped"]] == ["missing_image"]
    assert {entry["code"] for entry in report["objects"]} >= {"clipped"}


def test_the_command_line_default_uses_worker_processes_and_agrees(
    single: tuple[CocoExport, Path], tmp_path: Path
) -> None:
    """The real console script with its default --workers (the CPU count), in its own process."""
    export, reference = single
    completed = subprocess.run(
        [
            BIN / "dataset-converter",
            "convert",
            "-a",
            export.path,
            "-i",
            export.image_folder,
            "-o",
            tmp_path / "out",
            "--instance-masks",
            *SPLIT,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert dataset_files(tmp_path / "out") == dataset_files(reference)


def _run_worker(export: CocoExport, output: Path, index: int, count: int, *options: str) -> Result:
    return _convert(export, output, "--num-workers", str(count), "--worker-index", str(index), *options)


def test_workers_plus_finalize_equal_one_machine(single: tuple[CocoExport, Path], tmp_path: Path) -> None:
    export, reference = single
    output = tmp_path / "out"
    for index in range(3):
        result = _run_worker(export, output, index, 3, "--workers", "2" if index == 1 else "1")
        assert result.exit_code == 0, result.stderr
        assert not (output / "dataset_info.yaml").exists()
    assert sorted(path.name for path in (output / "parts").iterdir()) == [
        f"worker-0000{index}-of-00003" for index in range(3)
    ]
    result = _finalize(output)
    assert result.exit_code == 0, result.stderr
    assert not (output / "stats").exists()  # statistics need every record: `stats` builds them after finalize
    rebuilt = CliRunner().invoke(app, ["stats", str(output)])
    assert rebuilt.exit_code == 0, rebuilt.output
    # the same numbers as one machine's, but for shapes: a conversion measures the export's polygons, a
    # rebuild the pixels TFRecords keep of them (their class masks), which differ by the rasterization
    assert _without_shapes(output) == _without_shapes(reference)

    assert not (output / "parts").exists()
    assert _split_bytes(output) == _split_bytes(reference)  # same records, same order, per split
    records, expected = read_all(output), read_all(reference)  # and TensorFlow reads them alike
    assert {split: [r["image/source_key"] for r in rs] for split, rs in records.items()} == {
        split: [r["image/source_key"] for r in rs] for split, rs in expected.items()
    }
    info, single_info = load_info(output), load_info(reference)
    for split in ("train", "validation", "test"):
        assert info[split]["samples"] == single_info[split]["samples"]
        assert info[split]["class_counts"] == single_info[split]["class_counts"]
        names = [shard["file"] for shard in info[split]["shards"]]
        assert names == [
            f"{names[0].split('/')[0]}/{names[0].split('/')[1].split('-')[0]}-{number:05d}-of-{len(names):05d}.tfrecord"
            for number in range(len(names))
        ]
    assert info["input"]["workers"] == 3
    assert load_report(output) == load_report(reference)  # every skip and note once, as one machine reports
    # The training stacks' files are those of one machine: label maps, COCO ground truth, configs, TFDS features
    merged_files, single_files = dataset_files(output), dataset_files(reference)
    stack_files = [
        path for path in single_files if path.split("/")[0] in ("coco", "configs") or path.endswith("label_map.pbtxt")
    ]
    assert len(stack_files) > 8
    for path in [*stack_files, "label_map.csv", "features.json"]:
        assert merged_files[path] == single_files[path], path
    assert info["entries"] == single_info["entries"]
    tfds_splits = {split["name"]: split for split in json.loads(merged_files["dataset_info.json"])["splits"]}
    for split in ("train", "validation", "test"):
        assert info[split]["statistics"] == single_info[split]["statistics"]
        assert info[split]["label_map"] == single_info[split]["label_map"]
        assert tfds_splits[split]["shardLengths"] == [str(shard["records"]) for shard in info[split]["shards"]]
    verified = CliRunner().invoke(app, ["verify", str(output)])
    assert verified.exit_code == 0, verified.stderr


def test_a_rerun_worker_overwrites_only_its_own_part(single: tuple[CocoExport, Path], tmp_path: Path) -> None:
    export, reference = single
    output = tmp_path / "out"
    for index in range(3):
        assert _run_worker(export, output, index, 3).exit_code == 0
    before = _part_files(output)
    sentinel = output / "parts" / "worker-00001-of-00003" / "leftover-from-a-crash"
    sentinel.write_text("x")
    other_inodes = {
        path: path.stat().st_ino for path in (output / "parts").rglob("*") if "worker-00001" not in path.as_posix()
    }

    assert _run_worker(export, output, 1, 3).exit_code == 0  # Kubernetes retries index 1

    assert not sentinel.exists()
    assert _part_files(output) == before
    assert {path: path.stat().st_ino for path in other_inodes} == other_inodes  # untouched, not rewritten
    assert _finalize(output).exit_code == 0
    assert _split_bytes(output) == _split_bytes(reference)


def test_finalize_refuses_a_missing_part_and_names_it(single: tuple[CocoExport, Path], tmp_path: Path) -> None:
    export, _ = single
    output = tmp_path / "out"
    for index in (0, 2):
        assert _run_worker(export, output, index, 4).exit_code == 0
    (output / "parts" / "worker-00003-of-00004").mkdir()  # started, never finished
    parts_before = _part_files(output)

    result = _finalize(output)

    assert result.exit_code == 1
    message = flat(result.stderr)
    assert "2 of 4 parts are missing or failed" in message
    assert "worker 1 (parts/worker-00001-of-00004: not written" in message
    assert "worker 3 (parts/worker-00003-of-00004: no part.yaml" in message
    assert "worker 0" not in message and "worker 2 " not in message
    assert _part_files(output) == parts_before
    assert not (output / "dataset_info.yaml").exists()


def test_finalize_refuses_parts_made_with_different_options(single: tuple[CocoExport, Path], tmp_path: Path) -> None:
    export, _ = single
    output = tmp_path / "out"
    assert _run_worker(export, output, 0, 2).exit_code == 0
    assert _run_worker(export, output, 1, 2, "--seed", "7").exit_code == 0
    result = _finalize(output)
    assert result.exit_code == 1
    assert "parts disagree on 'seed': workers [1]" in flat(result.stderr)


def test_finalize_refuses_parts_of_two_worker_counts(single: tuple[CocoExport, Path], tmp_path: Path) -> None:
    export, _ = single
    output = tmp_path / "out"
    assert _run_worker(export, output, 0, 2).exit_code == 0
    assert _run_worker(export, output, 0, 3).exit_code == 0
    result = _finalize(output)
    assert result.exit_code == 1
    assert "different worker counts: 2 (1 parts), 3 (1 parts)" in flat(result.stderr)


def test_max_skipped_applies_to_the_whole_run_at_finalize(single: tuple[CocoExport, Path], tmp_path: Path) -> None:
    """One sample is skipped in the whole run; each part alone is within the limit of 0 only if it has none."""
    export, _ = single
    output = tmp_path / "out"
    results = [_run_worker(export, output, index, 2, "--max-skipped", "0") for index in range(2)]
    failed = [index for index, result in enumerate(results) if result.exit_code != 0]
    assert len(failed) == 1  # the worker whose slice holds the missing image fails, and says so
    result = _finalize(output)
    assert result.exit_code == 1
    assert f"worker {failed[0]} (parts/worker-0000{failed[0]}-of-00002: the worker failed" in flat(result.stderr)
    assert not (output / "dataset_info.yaml").exists()


def test_finalize_replaces_a_previous_single_machine_dataset(single: tuple[CocoExport, Path], tmp_path: Path) -> None:
    export, reference = single
    output = tmp_path / "out"
    assert _convert(export, output, "-p", "100").exit_code == 0  # one big shard per split, to be replaced
    for index in range(2):
        assert _run_worker(export, output, index, 2).exit_code == 0
    assert _finalize(output).exit_code == 0
    listed = {
        shard["file"] for split in ("train", "validation", "test") for shard in load_info(output)[split]["shards"]
    }
    assert set(shard_files(output)) == listed
    assert leftovers(output) == []  # nor out of sight: the previous dataset's generation is gone
    assert _split_bytes(output) == _split_bytes(reference)


def test_scale_out_needs_tfrecords(single: tuple[CocoExport, Path], tmp_path: Path) -> None:
    export, _ = single
    result = _run_worker(export, tmp_path / "out", 0, 2, "-f", "json")
    assert result.exit_code == 2
    assert "scale-out writes TFRecord shards" in flat(result.stderr)


# ---------------------------------------------------------------------------
# Where a worker learns its slice


def test_explicit_options_win() -> None:
    assert resolve_worker_slice(4, 3, {"JOB_COMPLETION_INDEX": "1"}) == WorkerSlice(3, 4)
    assert resolve_worker_slice(1, 0, {}) is None  # one worker is a whole run


def test_kubernetes_indexed_job_gives_the_index_and_the_job_the_count() -> None:
    assert resolve_worker_slice(4, None, {"JOB_COMPLETION_INDEX": "2"}) == WorkerSlice(2, 4)
    with pytest.raises(UsageError, match="DATASET_CONVERTER_NUM_WORKERS"):
        resolve_worker_slice(None, None, {"JOB_COMPLETION_INDEX": "2"})
    with pytest.raises(UsageError, match=r"outside 0\.\.3"):
        resolve_worker_slice(4, None, {"JOB_COMPLETION_INDEX": "4"})


def test_sagemaker_resource_config_gives_both(tmp_path: Path) -> None:
    config = tmp_path / "resourceconfig.json"
    config.write_text(json.dumps({"current_host": "algo-3", "hosts": ["algo-1", "algo-2", "algo-3"]}))
    environ = {"DATASET_CONVERTER_RESOURCE_CONFIG": str(config)}
    assert resolve_worker_slice(None, None, environ) == WorkerSlice(2, 3)
    config.write_text(json.dumps({"current_host": "algo-1", "hosts": ["algo-1"]}))
    assert resolve_worker_slice(None, None, environ) is None
    assert resolve_worker_slice(None, None, {"DATASET_CONVERTER_RESOURCE_CONFIG": str(tmp_path / "absent")}) is None
    config.write_text("{}")
    with pytest.raises(UsageError, match="cannot read the SageMaker resource config"):
        resolve_worker_slice(None, None, environ)


def test_slices_cover_every_position_once() -> None:
    for total in (0, 1, 7, 100):
        for count in (1, 2, 3, 8):
            covered = [i for index in range(count) for i in range(*WorkerSlice(index, count).bounds(total))]
            assert covered == list(range(total))


def test_combination_classes_are_numbered_alike_whatever_workers_are_asked_for(tmp_path: Path) -> None:
    """`--overlap combine` numbers combinations as first met: the run keeps one process for it."""
    export = CocoExport(tmp_path / "export", categories=[{"id": 1, "name": "a"}, {"id": 2, "name": "b"}])
    for index in range(48):
        image_id = export.add_image(f"img{index:03d}.jpg")
        first, second = (1, 2) if index % 3 else (2, 1)
        export.add_annotation(image_id, first, segmentation=[[2, 2, 40, 2, 40, 40, 2, 40]])
        if index % 5:
            export.add_annotation(image_id, second, segmentation=[[20, 10, 60, 10, 60, 45, 20, 45]])
    export.write()
    outputs = {}
    for workers in ("1", "2"):
        outputs[workers] = tmp_path / f"out{workers}"
        result = convert("-a", export.path, "-i", export.image_folder, "-o", outputs[workers], "--overlap", "combine",
                         "--workers", workers)  # fmt: skip
        assert result.exit_code == 0, result.stderr
    assert dataset_files(outputs["2"]) == dataset_files(outputs["1"])
    assert load_info(outputs["1"])["masks"]["combinations"] == {"a+b": ["a", "b"]}
    refused = _run_worker(export, tmp_path / "parts", 0, 2, "--overlap", "combine")
    assert refused.exit_code == 2
    assert "cannot be split over machines" in flat(refused.stderr)


def _without_shapes(dataset: Path) -> dict[str, Any]:
    """stats.json with each class's polygon statistics left out."""
    document: dict[str, Any] = json.loads((dataset / "stats" / "stats.json").read_text(encoding="utf-8"))
    for split in document["splits"].values():
        for numbers in split["classes"].values():
            numbers.pop("polygons")
    return document

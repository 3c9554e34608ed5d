"""The first ten minutes of a new user: every message the command line gives, its text and exit code.

Usage errors (typer's own and the converter's) are one `ERROR:` line with the next step;
the defaults /data_in and /data_out hold only where the image sets them; `--task` chooses
what the records carry and every run says what it writes; the JSON events carry what a
log reader needs (rate, ETA, output, elapsed time, a skip summary with its diagnosis).
The terminal side (bar, summary, Ctrl-C) is in test_terminal.py, through a pseudo-terminal.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from builders import (
    CocoExport,
    detection_export,
    json_events,
    load_info,
)
from readback import read_split
from typer.testing import CliRunner, Result

from converter import __version__
from converter.cli import app

PROJECT_ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = PROJECT_ROOT / "examples" / "sagemaker_gt"
WITHOUT_IMAGE_DEFAULTS: dict[str, str | None] = {
    "DATASET_CONVERTER_ANNOTATIONS": None,
    "DATASET_CONVERTER_OUTPUT": None,
    "DATASET_CONVERTER_IMAGES": None,
}
CLASS_MASK = "image/segmentation/class/encoded"
INSTANCE_MASK = "image/object/mask"


def invoke(*arguments: str | Path, env: dict[str, str | None] | None = None) -> Result:
    return CliRunner().invoke(
        app, [str(argument) for argument in arguments], env={**WITHOUT_IMAGE_DEFAULTS, **(env or {})}
    )


def error_line(result: Result) -> str:
    """The one line a failed command prints: exactly one, starting `ERROR:`."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


# ---------------------------------------------------------------------------
# Usage errors: one line, the next step, exit 2


@pytest.mark.parametrize(
    ("arguments", "fragments"),
    [
        (
            ["convert", "-a", EXAMPLE, "-o", "OUT", "-f", "tfrecords"],
            ["-f / --format: 'tfrecords' is not one of", "did you mean tfrecord?"],
        ),
        (
            ["convert", "-a", EXAMPLE, "-o", "OUT", "--task", "detect"],
            ["--task: 'detect' is not one of", "did you mean detection?"],
        ),
        (
            ["convert", "-a", EXAMPLE, "-o", "OUT", "--fromat", "json"],
            ["No such option: --fromat", "did you mean --format?"],
        ),
        (["convert", EXAMPLE, "OUT"], ["unexpected extra argument", f"did you mean `-a {EXAMPLE} -o OUT`?"]),
        (["convert", "-a", EXAMPLE, "-o", "OUT", "--absolute-paths", "true"], ["on/off options take no value"]),
        (["convert", "-a", EXAMPLE, "-o", "OUT", "--overwrite=yes"], ["'--overwrite' does not take a value"]),
        (["convert", "-a", EXAMPLE, "-o", "OUT", "-p", "big"], ["-p / --partition:"]),
        (["convert", "-a", EXAMPLE, "-o", "OUT", "-s", "0.2,0.2,0.2,0.4"], ["-s / --split:"]),
    ],
)
def test_typer_usage_errors_are_one_error_line_with_the_next_step(
    tmp_path: Path, arguments: list[Any], fragments: list[str]
) -> None:
    result = invoke(*(tmp_path / "out" if argument == "OUT" else argument for argument in arguments))
    assert result.exit_code == 2, result.output
    line = error_line(result)
    for fragment in fragments:
        assert fragment.replace("OUT", str(tmp_path / "out")) in line
    assert "see `dataset-converter" in line or "See `dataset-converter" in line
    assert "╭" not in result.stderr and "Traceback" not in result.stderr  # no box, no traceback
    assert not (tmp_path / "out").exists()


def test_the_export_and_output_defaults_hold_only_inside_the_image(tmp_path: Path) -> None:
    """Outside the image nothing is written at the file system root; the image's ENV makes them defaults."""
    missing_input = invoke("convert", "-o", tmp_path / "out")
    assert missing_input.exit_code == 2
    assert "no export given: pass -a/--annotations (the default /data_in applies only inside" in error_line(
        missing_input
    )
    missing_output = invoke("convert", "-a", EXAMPLE)
    assert missing_output.exit_code == 2
    assert "no output folder given: pass -o/--output" in error_line(missing_output)

    inside = {"DATASET_CONVERTER_ANNOTATIONS": str(EXAMPLE), "DATASET_CONVERTER_OUTPUT": str(tmp_path / "data_out")}
    result = invoke("convert", env=inside)  # what the image's ENV lines do
    assert result.exit_code == 0, result.output
    assert load_info(tmp_path / "data_out")["train"]["samples"] > 0


def test_version_and_help() -> None:
    for option in ("--version", "-V"):
        result = invoke(option)
        assert result.exit_code == 0
        assert result.stdout.strip() == f"dataset-converter {__version__}"
    for arguments in (["-h"], ["--help"], ["convert", "-h"], ["verify", "-h"], ["finalize", "-h"]):
        result = invoke(*arguments)
        assert result.exit_code == 0, arguments
        assert "Usage: " in result.stdout
        # no value placeholder on on/off options, no Python type names on options
        for placeholder in ("<bool>", "list[str]", "<float", "<int"):
            assert placeholder not in result.stdout, (arguments, placeholder)
    assert "<str>" not in invoke("convert", "-h").stdout
    convert_help = invoke("convert", "-h").stdout
    for metavar in ("PATH|URL", "FOLDER|URL", "FORMAT", "TASK", "MB", "SHARES"):
        assert metavar in convert_help


@pytest.mark.parametrize(
    ("words", "expected"),
    [("convert --fo", ["--format"]), ("convert --task seg", ["segmentation"]), ("ver", ["verify", "version"])],
)
def test_shell_completion_completes_options_and_values(words: str, expected: list[str]) -> None:
    """What bash asks the installed script when the user presses Tab (typer's completion protocol)."""
    typed = f"dataset-converter {words}".split()
    completed = _console_script(
        env={
            "_DATASET_CONVERTER_COMPLETE": "complete_bash",
            "COMP_WORDS": " ".join(typed),
            "COMP_CWORD": str(len(typed) - 1),
        }
    )
    assert completed.returncode == 0
    assert completed.stdout.split() == expected


def _console_script(*arguments: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).parent / "dataset-converter"
    return subprocess.run(
        [str(script), *arguments], capture_output=True, text=True, env={**os.environ, **(env or {})}, check=False
    )


# ---------------------------------------------------------------------------
# Option clashes refused before any reading (the output folder is never created)


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (
            ["--instance-masks", "-f", "masterful"],
            "--instance-masks: -f masterful holds classification or detection or segmentation only",
        ),
        (["--instance-masks", "-f", "masks"], "--instance-masks: -f masks holds segmentation only"),
        (["--task", "keypoints", "-f", "masterful"], "--task keypoints: -f masterful holds"),
        (["--task", "detection", "-f", "masks"], "--task detection: -f masks holds segmentation only"),
        (["--task", "detection", "--instance-masks"], "--instance-masks and --task detection disagree"),
        (["--masks", "MASKS"], "--masks names the masks of a mask-folder export; this export is sagemaker_gt"),
    ],
)
def test_option_clashes_are_refused_before_any_reading(tmp_path: Path, extra: list[str], fragment: str) -> None:
    (tmp_path / "masks").mkdir()
    arguments = [tmp_path / "masks" if value == "MASKS" else value for value in extra]
    result = invoke("convert", "-a", EXAMPLE, "-o", tmp_path / "out", *arguments)
    assert result.exit_code == 2, result.output
    assert fragment in error_line(result)
    assert not (tmp_path / "out").exists()
    assert not any(event["event"] == "reading" for event in json_events(result.stderr))


# ---------------------------------------------------------------------------
# --task: what the records carry, said at the start of every run


def _polygon_coco(root: Path) -> Path:
    coco = CocoExport(root)
    coco.categories = [{"id": 1, "name": "leaf"}, {"id": 2, "name": "stem"}]
    for index in range(6):
        image_id = coco.add_image(f"img{index}.jpg", size=(40, 30))
        coco.add_annotation(image_id, 1, bbox=[2, 2, 10, 8], segmentation=[[2, 2, 12, 2, 12, 10, 2, 10]], area=80)
        if index % 2:
            coco.add_annotation(image_id, 2, bbox=[20, 5, 10, 10], area=100)
    return coco.write()


def _plan(result: Result) -> dict[str, Any]:
    (plan,) = [event for event in json_events(result.stderr) if event["event"] == "plan"]
    return plan


def _records(output: Path) -> list[dict[str, Any]]:
    return [record for split in ("train", "validation") for record in read_split(output, split)]


def test_default_writes_what_the_data_has_and_says_how_to_write_boxes_only(tmp_path: Path) -> None:
    annotations = _polygon_coco(tmp_path / "export")
    result = invoke("convert", "-a", annotations, "-i", tmp_path / "export" / "images", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    plan = _plan(result)
    assert plan["writes"] == ["boxes", "class masks"]
    assert plan["hint"] == "shapes found: --task detection writes boxes only, without rasterizing masks"
    assert all(CLASS_MASK in record for record in _records(tmp_path / "out"))


def test_task_detection_writes_boxes_only(tmp_path: Path) -> None:
    annotations = _polygon_coco(tmp_path / "export")
    images = tmp_path / "export" / "images"
    result = invoke("convert", "-a", annotations, "-i", images, "-o", tmp_path / "boxes", "--task", "detection")
    assert result.exit_code == 0, result.output
    assert _plan(result) == {**_plan(result), "writes": ["boxes"], "hint": None}
    boxes_only = _records(tmp_path / "boxes")
    assert boxes_only and not any(CLASS_MASK in record or INSTANCE_MASK in record for record in boxes_only)
    assert "masks" not in load_info(tmp_path / "boxes")
    # the boxes are those of the default run
    invoke("convert", "-a", annotations, "-i", images, "-o", tmp_path / "full")
    by_key = {record["image/source_key"][0]: record for record in _records(tmp_path / "full")}
    for record in boxes_only:
        full = by_key[record["image/source_key"][0]]
        for key in ("image/object/bbox/xmin", "image/object/bbox/ymax", "image/object/class/label"):
            assert record[key] == full[key]


def test_task_instance_segmentation_and_classification(tmp_path: Path) -> None:
    annotations = _polygon_coco(tmp_path / "export")
    images = tmp_path / "export" / "images"
    result = invoke(
        "convert", "-a", annotations, "-i", images, "-o", tmp_path / "inst", "--task", "instance-segmentation"
    )
    assert result.exit_code == 0, result.output
    assert _plan(result)["writes"] == ["boxes", "instance masks"]
    for record in _records(tmp_path / "inst"):
        assert len(record[INSTANCE_MASK]) == len(record["image/object/class/label"]) and CLASS_MASK not in record

    result = invoke("convert", "-a", annotations, "-i", images, "-o", tmp_path / "cls", "--task", "classification")
    assert result.exit_code == 0, result.output
    assert _plan(result)["writes"] == ["image labels"]
    for record in _records(tmp_path / "cls"):
        index = int(record["image/source_key"][0].decode().removeprefix("img").removesuffix(".jpg"))
        expected = [b"leaf", b"stem"] if index % 2 else [b"leaf"]
        assert record["image/class/text"] == expected
        assert not record.get("image/object/class/label")


def test_a_task_the_export_cannot_serve_is_one_clear_error(tmp_path: Path) -> None:
    detection_export(tmp_path / "export", 4).write()
    result = invoke("convert", "-a", tmp_path / "export", "-o", tmp_path / "out", "--task", "segmentation")
    assert result.exit_code == 2
    assert error_line(result) == (
        "ERROR: --task segmentation needs polygons, RLE, brushes or mask files to paint class masks from, and no "
        "sample of this export has any; drop --task to write what the export has"
    )
    assert not (tmp_path / "out").exists()  # the folder the run created goes with it: it holds nothing


def test_a_failed_run_keeps_an_output_folder_it_did_not_create(tmp_path: Path) -> None:
    detection_export(tmp_path / "export", 4).write()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    result = invoke("convert", "-a", tmp_path / "export", "-o", tmp_path / "out", "--task", "keypoints")
    assert result.exit_code == 2
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"


# ---------------------------------------------------------------------------
# JSON events: what a log reader needs


def test_json_events_carry_rate_eta_output_elapsed_and_a_skip_summary(tmp_path: Path) -> None:
    export = detection_export(tmp_path / "export", 5)
    export.lines.append(
        {"source-ref": "s3://bucket/gone.jpg", **{k: v for k, v in export.lines[0].items() if k != "source-ref"}}
    )
    export.write()
    result = invoke("convert", "-a", tmp_path / "export", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    events = json_events(result.stderr)
    # the source skips while reading; Ground Truth's confidences are not in TFRecords (a "lossy" event)
    names = [event["event"] for event in events if event["event"] not in ("skipped", "lossy")]
    assert names[:3] == ["reading", "plan", "started"] and names[-2:] == ["skips", "finished"]
    assert events[0]["annotations"] == str(tmp_path / "export" / "output.manifest")
    progress = [event for event in events if event["event"] == "progress"]
    assert progress and all(event["rate"] >= 0 and event["eta_s"] is not None for event in progress)
    assert progress[-1]["done"] == progress[-1]["total"] == 5
    skips, finished = events[-2], events[-1]
    assert skips["skipped"] == 1
    (code,) = skips["by_code"]
    assert skips["by_code"][code]["count"] == 1 and "gone.jpg" in skips["by_code"][code]["examples"][0]
    assert skips["diagnosis"] is None  # one of six: a bad sample, not a wrong option
    assert finished["output"] == str(tmp_path / "out")
    assert finished["elapsed_s"] > 0 and finished["rate"] > 0
    assert finished["converted"] == 5


def test_a_wrong_images_folder_is_diagnosed(tmp_path: Path) -> None:
    detection_export(tmp_path / "export", 6).write()
    (tmp_path / "elsewhere").mkdir()
    result = invoke("convert", "-a", tmp_path / "export", "-i", tmp_path / "elsewhere", "-o", tmp_path / "out")
    assert result.exit_code == 1
    (skips,) = [event for event in json_events(result.stderr) if event["event"] == "skips"]
    assert skips["skipped"] == 6 and len(next(iter(skips["by_code"].values()))["examples"]) == 3
    assert re.match(
        rf"all 6 samples missing under {re.escape(str(tmp_path / 'elsewhere'))}: is -i/--images right\? The first",
        skips["diagnosis"],
    ), skips["diagnosis"]
    assert "none of the 6 input samples could be converted" in error_line(result)


def test_a_small_run_warns_of_an_empty_split(tmp_path: Path) -> None:
    detection_export(tmp_path / "export", 1).write()
    result = invoke("convert", "-a", tmp_path / "export", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    info = load_info(tmp_path / "out")
    empty = [split for split in ("train", "validation") if info[split]["samples"] == 0]
    (warning,) = [event for event in json_events(result.stderr) if event["event"] == "warning"]
    assert empty and warning["message"].startswith(f"{empty[0]} gets none of the 1 samples")


def test_no_export_found_is_one_short_line_naming_the_formats(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = invoke("convert", "-a", tmp_path / "empty", "-o", tmp_path / "out")
    assert result.exit_code == 2
    assert error_line(result) == (
        f"ERROR: no annotation export found in {tmp_path / 'empty'} (searched 4 levels deep for one of sagemaker_gt, "
        "labelstudio, mask_folder, coco, geojson, scale); pass it with -a/--annotations, and --source if it is not "
        "recognized"
    )


def test_a_hostile_value_cannot_flood_the_error_line(tmp_path: Path) -> None:
    """A 5,000-character path in a message is cut in the middle; the line stays one line."""
    hostile = tmp_path / ("x" * 250) / ("y" * 250) / ("z\n" * 100)
    result = invoke("convert", "-a", hostile, "-o", tmp_path / "out")
    assert result.exit_code == 2
    line = error_line(result)
    assert result.stderr.count("\n") == 1  # one line, whatever the value holds
    assert len(line) <= 620 and " … " in line and line.startswith("ERROR: annotations path ")

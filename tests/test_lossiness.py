"""What a conversion cannot carry into its output: counted per kind, stated by `convert`, refused by `--strict`.

Every count asserted here is computed from the export the test wrote or read (rotated
rectangles from their `rotation`, overlaps from shapes drawn to overlap or not), never
taken from the converter. A loss shows three ways: a `lossy` JSON log event, report.json's
summary `lossy` list, and `--strict` refusing the run with exit 2 before anything is written.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from builders import (
    CocoExport,
    convert,
    detection_export,
    json_events,
    load_report,
    person_keypoints_export,
)
from labelstudio_tasks import annotation, rectangle, relation, task, write_export, write_stand_in
from typer.testing import Result

from converter.core.lossiness import AXIS_TOLERANCE_DEGREES, is_rotated_rectangle
from converter.core.sample import ObjectAnnotation, Polygon

SQUARE_A: list[float] = [4, 4, 24, 4, 24, 24, 4, 24]
SQUARE_B: list[float] = [14, 14, 34, 14, 34, 34, 14, 34]  # overlaps SQUARE_A in a 10x10 square
TOUCHING_B: list[float] = [24, 4, 34, 4, 34, 24, 24, 24]  # shares SQUARE_A's right edge, no area


def lossy_event(result: Result) -> dict[str, int] | None:
    """The `lossy` log event's counts by code, or None when the run logged none."""
    events = [event for event in json_events(result.stderr) if event["event"] == "lossy"]
    assert len(events) <= 1, events
    return {loss["code"]: loss["count"] for loss in events[0]["losses"]} if events else None


def summary_losses(output: Path) -> dict[str, int]:
    return {loss["code"]: loss["count"] for loss in load_report(output)["summary"]["lossy"]}


def converted(output: Path, *arguments: str | Path) -> tuple[dict[str, int] | None, dict[str, int]]:
    """A conversion that must succeed: its `lossy` event's counts, and report.json's."""
    result = convert(*arguments, "-o", output, "-s", "0", "--workers", "1")
    assert result.exit_code == 0, result.stderr
    return lossy_event(result), summary_losses(output)


def _coco(root: Path, *segmentations: tuple[int, list[float]]) -> CocoExport:
    """One 40x40 image with a polygon annotation per (category id, ring); categories a (1) and b (2)."""
    export = CocoExport(root, categories=[{"id": 1, "name": "a"}, {"id": 2, "name": "b"}])
    image = export.add_image("a.jpg", (40, 40))
    for category, ring in segmentations:
        xs, ys = ring[0::2], ring[1::2]
        bbox = [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
        export.add_annotation(image, category, segmentation=[ring], bbox=bbox)
    export.write()
    return export


def _coco_args(export: CocoExport) -> list[str | Path]:
    return ["-a", export.path, "-i", export.image_folder]


# ---------------------------------------------------------------------------
# Rotation: Label Studio's real rotated rectangles


def _rotated_rectangles(shared_samples: Path, images: Path) -> tuple[Path, int]:
    """The real export, stand-in images of its declared sizes, and how many of its rectangles are tilted."""
    export = shared_samples / "label_studio" / "rotated_rectangles_export.json"
    tasks: list[dict[str, Any]] = json.loads(export.read_text(encoding="utf-8"))
    tilted = 0
    for seed, entry in enumerate(tasks, start=1):
        results = entry["annotations"][0]["result"]
        write_stand_in(
            images / entry["data"]["image"].lstrip("/"),
            (results[0]["original_width"], results[0]["original_height"]),
            seed,
        )
        for item in results:
            angle = item["value"]["rotation"] % 90
            tilted += min(angle, 90 - angle) > AXIS_TOLERANCE_DEGREES
    return export, tilted


@pytest.mark.shared_samples
def test_rotated_rectangles_lose_their_rotation_only_as_boxes(shared_samples: Path, tmp_path: Path) -> None:
    export, tilted = _rotated_rectangles(shared_samples, tmp_path / "images")
    assert tilted == 25  # every rectangle of upstream's export is drawn tilted
    source: list[str | Path] = ["-a", export, "-i", tmp_path / "images"]

    event, summary = converted(tmp_path / "boxes", *source, "--task", "detection")
    json_event, json_summary = converted(tmp_path / "json", *source, "-f", "json")

    assert event is not None and event["rotation"] == tilted
    assert summary["rotation"] == tilted
    assert "shapes" not in summary  # a rotated rectangle is counted once, as a rotation
    assert json_event is None and json_summary == {}


@pytest.mark.shared_samples
def test_strict_refuses_to_drop_rotations_and_writes_nothing(shared_samples: Path, tmp_path: Path) -> None:
    export, tilted = _rotated_rectangles(shared_samples, tmp_path / "images")
    output = tmp_path / "out"

    result = convert(
        "-a", export, "-i", tmp_path / "images", "-o", output, "--task", "detection", "-f", "tfrecord", "--strict"
    )

    assert result.exit_code == 2
    assert f"{tilted} rotated boxes lose their rotation" in result.stderr
    assert "ERROR" in result.stderr and "--strict" in result.stderr
    assert not output.exists() or not any(output.iterdir())


# ---------------------------------------------------------------------------
# Class masks: overlaps and instances


def test_overlapping_shapes_of_different_classes_are_painted_over(tmp_path: Path) -> None:
    export = _coco(tmp_path / "export", (1, SQUARE_A), (2, SQUARE_B))

    masks_event, masks_summary = converted(tmp_path / "masks", *_coco_args(export), "-f", "masks")
    tfrecord_event, _ = converted(tmp_path / "tfrecord", *_coco_args(export))
    _, combined = converted(tmp_path / "combined", *_coco_args(export), "--overlap", "combine")

    assert masks_event is not None and masks_event["overlap"] == 1
    assert masks_summary["overlap"] == 1
    assert masks_summary["boxes"] == 2  # -f masks holds no boxes either
    assert "instance_identity" not in masks_summary  # two classes: nothing merges
    assert tfrecord_event == {"overlap": 1}
    assert combined == {}


def test_shapes_that_only_touch_do_not_overlap(tmp_path: Path) -> None:
    export = _coco(tmp_path / "export", (1, SQUARE_A), (2, TOUCHING_B))

    event, summary = converted(tmp_path / "out", *_coco_args(export))

    assert event is None and summary == {}


def test_shapes_of_one_class_merge_in_a_class_mask(tmp_path: Path) -> None:
    export = _coco(tmp_path / "export", (1, SQUARE_A), (1, SQUARE_B), (2, [30.0, 2, 38, 2, 34, 8]))

    event, summary = converted(tmp_path / "class", *_coco_args(export))
    instances_event, instances = converted(tmp_path / "instances", *_coco_args(export), "--instance-masks")

    assert event == {"instance_identity": 2} and summary == {"instance_identity": 2}
    assert instances_event is None and instances == {}


# ---------------------------------------------------------------------------
# Keypoints, attributes, relations


def test_masterful_loses_keypoints(tmp_path: Path) -> None:
    export, keypoints = person_keypoints_export(tmp_path / "export")

    event, summary = converted(tmp_path / "masterful", *_coco_args(export), "-f", "masterful")
    _, tfrecord = converted(tmp_path / "tfrecord", *_coco_args(export))

    assert event is not None and event["object_keypoints"] == len(keypoints) == 6
    assert summary["object_keypoints"] == len(keypoints)
    assert "object_keypoints" not in tfrecord


def test_ground_truth_confidences_are_lost_in_tfrecord_but_not_in_json(tmp_path: Path) -> None:
    export = detection_export(tmp_path / "export", 5)
    export.write()
    objects = sum(len(line["bbox"]["annotations"]) for line in export.lines if not isinstance(line, str))
    source: list[str | Path] = ["-a", export.manifest, "-i", export.images]

    event, summary = converted(tmp_path / "tfrecord", *source)
    json_event, json_summary = converted(tmp_path / "json", *source, "-f", "json")

    assert event is not None and event["object_attributes"] == objects == 7
    assert summary["object_attributes"] == objects
    assert summary["sample_attributes"] == len(export.lines)
    assert json_event is None and json_summary == {}


def test_label_studio_relations_are_counted(tmp_path: Path) -> None:
    size = (40, 30)
    tasks = []
    for number in range(3):
        write_stand_in(tmp_path / "images" / f"{number}.jpg", size, number + 1)
        results = [rectangle(10, 10, 20, 20, ["cat"], size), rectangle(50, 50, 20, 20, ["dog"], size)]
        results += [relation()] * number  # 0 + 1 + 2 relations
        tasks.append(task(f"{number}.jpg", annotation(results), task_id=number + 1))
    export = write_export(tmp_path / "export.json", tasks)

    event, summary = converted(tmp_path / "out", "-a", export, "-i", tmp_path / "images")

    assert event is not None and event["relations"] == 3
    assert summary["relations"] == 3


def test_a_lossless_conversion_logs_no_loss_and_strict_lets_it_run(tmp_path: Path) -> None:
    export = _coco(tmp_path / "export", (1, SQUARE_A))
    output = tmp_path / "out"

    result = convert(*_coco_args(export), "-o", output, "-s", "0", "--strict")

    assert result.exit_code == 0, result.stderr
    assert lossy_event(result) is None and summary_losses(output) == {}


# ---------------------------------------------------------------------------
# Recognizing a rotated rectangle


def _quad(points: list[tuple[float, float]]) -> ObjectAnnotation:
    return ObjectAnnotation("a", polygons=(Polygon(tuple(c for point in points for c in point)),))


def _rotated(width: float, height: float, degrees: float) -> list[tuple[float, float]]:
    angle = math.radians(degrees)
    cos, sin = math.cos(angle), math.sin(angle)
    corners = [(-width / 2, -height / 2), (width / 2, -height / 2), (width / 2, height / 2), (-width / 2, height / 2)]
    return [(20 + x * cos - y * sin, 20 + x * sin + y * cos) for x, y in corners]


@pytest.mark.parametrize(
    ("points", "rotated"),
    [
        ([(2, 3), (12, 3), (12, 9), (2, 9)], False),  # axis-aligned
        (_rotated(10, 6, 30), True),
        (_rotated(10, 6, 90), False),  # a quarter turn is axis-aligned again
        (_rotated(10, 6, 0.2), False),  # within the tolerance of the axes
        ([(0, 0), (10, 0), (16, 8), (6, 8)], False),  # a rhombus: four equal sides, no right angles
        ([(10, 0), (20, 10), (10, 20), (0, 10)], True),  # a square standing on its corner
        ([(0, 0), (10, 0), (10, 5)], False),  # a triangle
    ],
)
def test_is_rotated_rectangle(points: list[tuple[float, float]], rotated: bool) -> None:
    assert is_rotated_rectangle(_quad(points)) is rotated

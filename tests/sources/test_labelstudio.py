"""The Label Studio export source: real exports read back exactly, and every mapping rule.

Expected values are computed here from the percent coordinates, independently of the
converter: rotated rectangles with a rotation matrix, masks with pycocotools'
rasterization of the same polygons. Rule tests call the source directly (no TensorFlow)
unless the point is what lands in the records.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from builders import convert, flat, load_info, load_report
from labelstudio_tasks import (
    Size,
    annotation,
    choices,
    keypoint,
    polygon,
    rectangle,
    relation,
    task,
    write_export,
    write_stand_in,
)
from pycocotools import mask as coco_mask
from readback import Record, decode_png, records_by_source_id

from converter.core.sample import SourceContents
from converter.errors import UsageError
from converter.sources import locate_export
from converter.sources.labelstudio import (
    LabelConfig,
    LabelStudioSource,
    LoadedExport,
    build_labelstudio_source,
    looks_like_labelstudio_export,
    parse_label_config,
)

SIZE: Size = (200, 100)


def _corners(value: dict[str, Any], size: Size) -> npt.NDArray[np.float64]:
    """The four corners in pixels: the rectangle rotated clockwise (y down) about its top-left corner."""
    width, height = size
    origin = np.array([value["x"] / 100 * width, value["y"] / 100 * height])
    extent = np.array(
        [
            [0, 0],
            [value["width"] / 100 * width, 0],
            [value["width"] / 100 * width, value["height"] / 100 * height],
            [0, value["height"] / 100 * height],
        ]
    )
    angle = math.radians(value.get("rotation", 0))
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return origin + extent @ rotation.T


def _coco_mask(rings: Sequence[Sequence[float]], size: Size) -> npt.NDArray[np.bool_]:
    width, height = size
    rle = coco_mask.merge(coco_mask.frPyObjects([list(ring) for ring in rings], height, width))
    return np.asarray(coco_mask.decode(rle), dtype=bool)


def _normalized_clipped_box(xs: Sequence[float], ys: Sequence[float], size: Size) -> list[float]:
    width, height = size
    return [
        min(max(min(xs), 0), width) / width,
        min(max(min(ys), 0), height) / height,
        min(max(max(xs), 0), width) / width,
        min(max(max(ys), 0), height) / height,
    ]


def _boxes(record: Record) -> list[list[float]]:
    keys = ("xmin", "ymin", "xmax", "ymax")
    columns = [record[f"image/object/bbox/{key}"] for key in keys]
    return [list(box) for box in zip(*columns, strict=True)]


def _changed(result: dict[str, Any], **value: Any) -> dict[str, Any]:
    """`result` with some of its `value` fields replaced."""
    return {**result, "value": {**result["value"], **value}}


def _read(export: Path, images: Path, rule: str = "ground-truth-then-newest") -> SourceContents:
    return build_labelstudio_source(export, images, rule).read()


def _stand_ins(shared_export: Path, images: Path) -> list[dict[str, Any]]:
    """Write an image of each task's declared size under the path its `data.image` names."""
    tasks: list[dict[str, Any]] = json.loads(shared_export.read_text(encoding="utf-8"))
    for seed, entry in enumerate(tasks, start=1):
        first = entry["annotations"][0]["result"][0]
        size = (first["original_width"], first["original_height"])
        write_stand_in(images / entry["data"]["image"].lstrip("/"), size, seed)
    return tasks


# ---------------------------------------------------------------------------
# Real exports


@pytest.mark.shared_samples
def test_rotated_rectangles_export_converts_exactly(shared_samples: Path, tmp_path: Path) -> None:
    export = shared_samples / "label_studio" / "rotated_rectangles_export.json"
    tasks = _stand_ins(export, tmp_path / "images")
    output = tmp_path / "out"

    result = convert("-a", export, "-i", tmp_path / "images", "-o", output, "-s", "0")

    assert result.exit_code == 0, result.stderr
    info = load_info(output)
    assert info["classes"] == ["Butterfly", "butterfly"]  # no config in an export file: sorted by name
    records = records_by_source_id(output)
    assert sorted(records) == sorted(entry["data"]["image"] for entry in tasks)
    clipped = 0
    for entry in tasks:
        results = entry["annotations"][0]["result"]
        size = (results[0]["original_width"], results[0]["original_height"])
        record = records[entry["data"]["image"]]
        assert (record["image/width"], record["image/height"]) == ([size[0]], [size[1]])
        assert record["image/filename"] == [entry["data"]["image"].lstrip("/").encode()]
        expected_boxes, rings, names = [], [], []
        for item in results:
            corners = _corners(item["value"], size)
            box = _normalized_clipped_box(corners[:, 0], corners[:, 1], size)
            clipped += bool(corners.min() < 0 or (corners.max(axis=0) > size).any())
            expected_boxes.append(box)
            rings.append(corners.ravel().tolist())
            names.extend(item["value"]["rectanglelabels"])
        assert _boxes(record) == [pytest.approx(box, abs=1e-6) for box in expected_boxes]
        assert record["image/object/class/text"] == [name.encode() for name in names]
        assert record["image/object/class/label"] == [info["classes"].index(name) + 1 for name in names]
        class_id = info["classes"].index(names[0]) + 1  # one class per image in this export
        np.testing.assert_array_equal(
            decode_png(record["image/segmentation/class/encoded"][0]), np.where(_coco_mask(rings, size), class_id, 0)
        )
    report = load_report(output)
    assert report["skipped"] == []
    assert report["summary"]["clipped_boxes"] == clipped


@pytest.mark.shared_samples
def test_polygons_export_converts_exactly(shared_samples: Path, tmp_path: Path) -> None:
    export = shared_samples / "label_studio" / "polygons_export.json"
    (entry,) = _stand_ins(export, tmp_path / "images")
    output = tmp_path / "out"

    result = convert("-a", export, "-i", tmp_path / "images", "-o", output, "-s", "0")

    assert result.exit_code == 0, result.stderr
    (item,) = entry["annotations"][0]["result"]
    size = (item["original_width"], item["original_height"])
    ring = [coordinate for x, y in item["value"]["points"] for coordinate in (x / 100 * size[0], y / 100 * size[1])]
    record = records_by_source_id(output)["/image2"]
    assert load_info(output)["classes"] == ["Airplane"]
    assert record["image/object/class/text"] == [b"Airplane"]
    assert record["image/object/class/label"] == [1]
    assert _boxes(record) == [pytest.approx(_normalized_clipped_box(ring[0::2], ring[1::2], size), abs=1e-6)]
    np.testing.assert_array_equal(
        decode_png(record["image/segmentation/class/encoded"][0]), _coco_mask([ring], size).astype(np.uint8)
    )
    assert load_report(output)["skipped"] == []


# ---------------------------------------------------------------------------
# Recognizing an export


def test_export_file_is_recognized_in_a_folder(tmp_path: Path) -> None:
    write_stand_in(tmp_path / "a.png", SIZE)
    export = write_export(tmp_path / "project-1-at-2024.json", [task("/data/upload/1/a.png", annotation([]))])

    located = locate_export(tmp_path, None)

    assert (located.source_name, located.annotations) == ("labelstudio", export)


@pytest.mark.parametrize(
    ("text", "recognized"),
    [
        (json.dumps([task("a.jpg", annotation([]))]), True),
        (json.dumps([{"data": {"image": "a.jpg"}, "predictions": []}]), True),
        ("\ufeff  [\n  " + json.dumps(task("a.jpg")), True),  # BOM, whitespace, the rest cut off
        (json.dumps([]), False),
        (json.dumps([{"image": "a.jpg", "label": []}]), False),  # JSON_MIN
        (json.dumps({"images": [], "annotations": []}), False),  # COCO
        ('{"source-ref": "s3://b/a.jpg"}\n', False),  # a Ground Truth manifest
        ("[not json", False),
    ],
)
def test_recognizes_a_task_list_by_its_first_task(tmp_path: Path, text: str, recognized: bool) -> None:
    path = tmp_path / "export.json"
    path.write_text(text, encoding="utf-8")

    assert looks_like_labelstudio_export(path) is recognized


def test_recognizes_an_export_whose_first_task_is_longer_than_the_peek(tmp_path: Path) -> None:
    big = task("a.jpg", annotation([{"type": "brushlabels", "value": {"rle": list(range(256)) * 400}}]))
    path = write_export(tmp_path / "export.json", [big])

    assert path.stat().st_size > 64 * 1024
    assert looks_like_labelstudio_export(path)
    assert not looks_like_labelstudio_export(path.rename(tmp_path / "export.txt"))


# ---------------------------------------------------------------------------
# Which annotation


def _three_annotations() -> dict[str, Any]:
    """One task, annotated three times, each annotation's box labelled after it."""
    return task(
        "a.png",
        annotation(
            [rectangle(1, 1, 5, 5, ["ground-truth"], SIZE)],
            annotation_id=10,
            created_at="2024-01-02T00:00:00Z",
            ground_truth=True,
        ),
        annotation([rectangle(1, 1, 5, 5, ["newest"], SIZE)], annotation_id=11, created_at="2024-03-01T00:00:00.5Z"),
        annotation([rectangle(1, 1, 5, 5, ["oldest"], SIZE)], annotation_id=9, created_at="2024-01-01T00:00:00+00:00"),
        annotation(
            [rectangle(1, 1, 5, 5, ["cancelled"], SIZE)],
            annotation_id=12,
            created_at="2025-01-01T00:00:00Z",
            was_cancelled=True,
        ),
        task_id=1,
    )


@pytest.mark.parametrize(
    ("rule", "label"), [("ground-truth-then-newest", "ground-truth"), ("newest", "newest"), ("oldest", "oldest")]
)
def test_annotation_rule_picks_one_annotation_and_never_a_cancelled_one(tmp_path: Path, rule: str, label: str) -> None:
    write_stand_in(tmp_path / "a.png", SIZE)
    export = write_export(tmp_path / "export.json", [_three_annotations()])

    (sample,) = _read(export, tmp_path, rule).samples

    assert [obj.class_name for obj in sample.objects] == [label]


def test_without_ground_truth_the_default_rule_takes_the_newest_and_ties_go_to_the_higher_id(tmp_path: Path) -> None:
    write_stand_in(tmp_path / "a.png", SIZE)
    same_time = "2024-01-01T00:00:00Z"
    export = write_export(
        tmp_path / "export.json",
        [
            task(
                "a.png",
                annotation([choices(["low-id"])], annotation_id=3, created_at=same_time),
                annotation([choices(["high-id"])], annotation_id=4, created_at=same_time),
                annotation([choices(["older"])], annotation_id=5, created_at="2023-12-31T23:59:59Z"),
            )
        ],
    )

    (sample,) = _read(export, tmp_path).samples

    assert sample.image_labels == ("high-id",)


def test_cli_annotation_rule_option_reaches_the_source(tmp_path: Path) -> None:
    write_stand_in(tmp_path / "images" / "a.png", SIZE)
    export = write_export(tmp_path / "export.json", [_three_annotations()])
    output = tmp_path / "out"

    result = convert("-a", export, "-i", tmp_path / "images", "-o", output, "--annotation-rule", "oldest")

    assert result.exit_code == 0, result.stderr
    assert load_info(output)["classes"] == ["oldest"]
    assert load_info(output)["input"]["annotation_rule"] == "oldest"


def test_unknown_annotation_rule_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="ground-truth-then-newest, newest, oldest"):
        build_labelstudio_source(tmp_path / "export.json", tmp_path, "latest")


# ---------------------------------------------------------------------------
# Tasks that are skipped, results that skip their task


def test_unannotated_and_cancelled_tasks_are_skipped_and_an_empty_result_is_a_negative(tmp_path: Path) -> None:
    for name in ("negative.png", "none.png", "cancelled.png", "predicted.png"):
        write_stand_in(tmp_path / "images" / name, SIZE)
    predicted = task("predicted.png", task_id=4)
    predicted["predictions"] = [{"result": [rectangle(1, 1, 5, 5, ["cat"], SIZE)]}]
    export = write_export(
        tmp_path / "export.json",
        [
            task("negative.png", annotation([]), task_id=1),
            task("none.png", task_id=2),
            task("cancelled.png", annotation([], was_cancelled=True), annotation([], was_cancelled=True), task_id=3),
            predicted,
        ],
    )
    output = tmp_path / "out"

    result = convert("-a", export, "-i", tmp_path / "images", "-o", output, "-s", "0")

    assert result.exit_code == 0, result.stderr
    report = load_report(output)
    assert [(entry["file"], entry["line"], entry["key"], entry["code"]) for entry in report["skipped"]] == [
        (str(export), None, "task 2", "not_annotated"),
        (str(export), None, "task 3", "cancelled"),
        (str(export), None, "task 4", "not_annotated"),
    ]
    reasons = {entry["key"]: entry["reason"] for entry in report["skipped"]}
    assert reasons["task 3"] == "all 2 annotations of the task were cancelled"
    assert "1 predictions: model output, not converted" in reasons["task 4"]
    record = records_by_source_id(output)["negative.png"]
    assert record["image/object/bbox/xmin"] == []
    assert record["image/object/class/label"] == []


@pytest.mark.parametrize(
    ("result", "code", "fragment"),
    [
        (
            {"type": "ellipselabels", "value": {}},
            "unsupported_result_type",
            "type 'ellipselabels', which is not converted",
        ),
        ({**rectangle(1, 1, 5, 5, ["cat"], SIZE), "image_rotation": 90}, "image_rotation", "rotated by 90 degrees"),
        (rectangle(1, 1, 5, 5, ["cat"], (201, 100)), "inconsistent_size", "201x100 image, earlier results on 200x100"),
        (_changed(rectangle(1, 1, 5, 5, ["cat"], SIZE), x="10"), "malformed_annotation", "number, got '10'"),
        (rectangle(float("nan"), 1, 5, 5, ["cat"], SIZE), "malformed_annotation", "`x` must be a finite number"),
        (rectangle(1, 1, -5, 5, ["cat"], SIZE), "malformed_annotation", "negative width or height"),
        (rectangle(1, 1, 5, 5, [], SIZE), "malformed_annotation", "`value.rectanglelabels` must be a non-empty list"),
        (polygon([(1, 1), (2, 2)], ["cat"], SIZE), "malformed_annotation", "at least 3 [x, y] points"),
        (
            {**polygon([(1, 1), (2, 2), (3, 1)], ["cat"], SIZE), "original_width": 0},
            "malformed_annotation",
            "`original_width` must be a positive integer",
        ),
        ({**keypoint(1, 1, ["eye"], SIZE), "value": None}, "malformed_annotation", "has no `value` object"),
        (
            {
                "type": "brushlabels",
                "original_width": SIZE[0],
                "original_height": SIZE[1],
                "value": {"format": "png", "brushlabels": ["cat"]},
            },
            "malformed_annotation",
            'needs `format: "rle"`',
        ),
    ],
)
def test_a_result_that_cannot_be_converted_skips_its_task(
    tmp_path: Path, result: dict[str, Any], code: str, fragment: str
) -> None:
    for name in ("bad.png", "good.png"):
        write_stand_in(tmp_path / name, SIZE)
    export = write_export(
        tmp_path / "export.json",
        [
            task("bad.png", annotation([rectangle(1, 1, 5, 5, ["cat"], SIZE), result]), task_id=7),
            task("good.png", annotation([rectangle(1, 1, 5, 5, ["cat"], SIZE)]), task_id=8),
        ],
    )

    contents = _read(export, tmp_path)

    assert [sample.key for sample in contents.samples] == ["good.png"]
    (skipped,) = contents.skipped
    assert (skipped.location.file, skipped.location.line, skipped.location.key) == (str(export), None, "task 7")
    assert skipped.code == code
    assert fragment in skipped.reason
    assert "result 1" in skipped.reason


def test_relations_are_ignored_and_counted(tmp_path: Path) -> None:
    write_stand_in(tmp_path / "images" / "a.png", SIZE)
    results = [rectangle(1, 1, 5, 5, ["cat"], SIZE), relation(), rectangle(10, 10, 5, 5, ["dog"], SIZE), relation()]
    export = write_export(tmp_path / "export.json", [task("a.png", annotation(results))])
    output = tmp_path / "out"

    result = convert("-a", export, "-i", tmp_path / "images", "-o", output)

    assert result.exit_code == 0, result.stderr
    assert load_info(output)["input"]["relations_ignored"] == "2"
    assert load_report(output)["skipped"] == []
    assert records_by_source_id(output)["a.png"]["image/object/class/text"] == [b"cat", b"dog"]


def test_tasks_that_are_not_objects_or_lack_an_image_are_skipped(tmp_path: Path) -> None:
    export = write_export(
        tmp_path / "export.json",
        [["not", "a", "task"], {"id": 5, "data": {"text": "hello"}, "annotations": [annotation([])]}],
    )

    contents = _read(export, tmp_path)

    assert [(item.location.key, item.code) for item in contents.skipped] == [
        ("task at index 0", "malformed_task"),
        ("task 5", "missing_image_reference"),
    ]
    assert "no image reference `image` (its keys: text)" in contents.skipped[1].reason


@pytest.mark.parametrize(
    ("document", "fragment"),
    [
        ({"tasks": []}, "is a JSON dict, not a list of tasks"),
        ([{"image": "a.jpg", "label": []}], "looks like a JSON_MIN export"),
    ],
)
def test_a_file_that_is_not_a_json_export_is_a_usage_error(tmp_path: Path, document: Any, fragment: str) -> None:
    export = tmp_path / "export.json"
    export.write_text(json.dumps(document), encoding="utf-8")

    result = convert("-a", export, "--source", "labelstudio", "-i", tmp_path, "-o", tmp_path / "out")

    assert result.exit_code == 2
    assert fragment in flat(result.stderr)


# ---------------------------------------------------------------------------
# Shapes


def test_unrotated_rectangle_is_a_box_and_paints_no_mask(tmp_path: Path) -> None:
    write_stand_in(tmp_path / "images" / "a.png", SIZE)
    export = write_export(
        tmp_path / "export.json", [task("a.png", annotation([rectangle(10, 20, 30, 40, ["cat"], SIZE, rotation=360)]))]
    )
    output = tmp_path / "out"

    result = convert("-a", export, "-i", tmp_path / "images", "-o", output)

    assert result.exit_code == 0, result.stderr
    record = records_by_source_id(output)["a.png"]
    assert _boxes(record) == [pytest.approx([0.1, 0.2, 0.4, 0.6], abs=1e-6)]
    assert "image/segmentation/class/encoded" not in record


def test_a_region_with_several_labels_gives_one_object_per_label(tmp_path: Path) -> None:
    write_stand_in(tmp_path / "a.png", SIZE)
    export = write_export(
        tmp_path / "export.json",
        [task("a.png", annotation([polygon([(0, 0), (50, 0), (0, 50)], ["cat", "pet"], SIZE)]))],
    )

    (sample,) = _read(export, tmp_path).samples

    assert [obj.class_name for obj in sample.objects] == ["cat", "pet"]
    assert sample.objects[0].polygons == sample.objects[1].polygons
    assert sample.objects[0].polygons[0].exterior == (0.0, 0.0, 100.0, 0.0, 0.0, 50.0)


def test_keypoints_and_choices_are_written_in_pixels_and_as_image_classes(tmp_path: Path) -> None:
    write_stand_in(tmp_path / "images" / "a.png", SIZE)
    results = [keypoint(25, 50, ["eye"], SIZE), choices(["indoor", "night"]), keypoint(75.5, 10, ["nose"], SIZE)]
    export = write_export(tmp_path / "export.json", [task("a.png", annotation(results))])
    output = tmp_path / "out"

    result = convert("-a", export, "-i", tmp_path / "images", "-o", output)

    assert result.exit_code == 0, result.stderr
    (sample,) = _read(export, tmp_path / "images").samples
    assert [(point.x, point.y) for point in sample.keypoints] == [(50.0, 50.0), (151.0, 10.0)]
    assert sample.declared_size == SIZE
    record = records_by_source_id(output)["a.png"]
    assert record["image/keypoint/x"] == pytest.approx([0.25, 0.755], abs=1e-6)
    assert record["image/keypoint/y"] == pytest.approx([0.5, 0.1], abs=1e-6)
    assert record["image/keypoint/text"] == [b"eye", b"nose"]
    assert record["image/class/text"] == [b"indoor", b"night"]
    classes = load_info(output)["classes"]
    assert classes == ["eye", "indoor", "night", "nose"]
    assert record["image/class/label"] == [classes.index("indoor") + 1, classes.index("night") + 1]


# ---------------------------------------------------------------------------
# Image references


@pytest.mark.parametrize(
    ("reference", "stored_as"),
    [
        ("/data/local-files/?d=photos/a%20b.jpg", "photos/a b.jpg"),
        ("http://ls.example:8080/data/local-files/?d=photos/c.jpg", "photos/c.jpg"),
        ("/data/upload/3/6e2a3b1c-cat.jpg", "upload/3/6e2a3b1c-cat.jpg"),
        ("s3://bucket/raw/d.jpg", "raw/d.jpg"),
        ("gs://bucket/raw/e.jpg", "raw/e.jpg"),
        ("https://cdn.example/img/f.jpg?signature=x", "img/f.jpg"),
    ],
)
def test_image_references_resolve_under_the_images_folder(tmp_path: Path, reference: str, stored_as: str) -> None:
    write_stand_in(tmp_path / "images" / stored_as, SIZE)
    export = write_export(tmp_path / "export.json", [task(reference, annotation([]))])

    (sample,) = _read(export, tmp_path / "images").samples

    assert (sample.key, sample.image_name) == (reference, stored_as)


def test_an_upload_is_found_as_written_first_then_without_its_prefix(tmp_path: Path) -> None:
    images = tmp_path / "images"
    write_stand_in(images / "upload" / "1" / "6e2a3b1c-cat.jpg", SIZE, seed=1)
    write_stand_in(images / "upload" / "1" / "cat.jpg", SIZE, seed=2)
    write_stand_in(images / "upload" / "1" / "dog.jpg", SIZE, seed=3)
    export = write_export(
        tmp_path / "export.json",
        [
            task("/data/upload/1/6e2a3b1c-cat.jpg", annotation([]), task_id=1),
            task("/data/upload/1/0a1b2c3d-dog.jpg", annotation([]), task_id=2),
            task("/data/upload/1/deadbeef-fox.jpg", annotation([]), task_id=3),
        ],
    )

    contents = _read(export, images)

    assert [sample.image_name for sample in contents.samples] == ["upload/1/6e2a3b1c-cat.jpg", "upload/1/dog.jpg"]
    (missing,) = contents.skipped
    assert (missing.location.key, missing.code) == ("task 3", "missing_image")
    assert "'/data/upload/1/deadbeef-fox.jpg' not found" in missing.reason
    assert "nor as 'fox.jpg' (without Label Studio's upload prefix)" in missing.reason
    assert "pass -i <label-studio data folder>/media" in missing.reason


# ---------------------------------------------------------------------------
# Class order and the labelling config


def test_labelling_config_gives_the_class_order_and_the_image_field(tmp_path: Path) -> None:
    config = parse_label_config(
        """<View>
          <Image name="photo" value="$picture"/>
          <RectangleLabels name="label" toName="photo">
            <Label value="zebra"/><Label value="Apple Tree" alias="apple"/><Label value="zebra"/>
          </RectangleLabels>
          <Choices name="scene" toName="photo"><Choice value="outdoor"/></Choices>
        </View>"""
    )
    assert config == LabelConfig(("zebra", "apple", "outdoor"), "picture")
    write_stand_in(tmp_path / "a.png", SIZE)
    tasks = [
        {
            "id": 1,
            "data": {"picture": "a.png"},
            "annotations": [annotation([rectangle(1, 1, 5, 5, ["mango", "apple", "banana"], SIZE)])],
        }
    ]

    contents = LabelStudioSource(lambda: LoadedExport(tasks, "server", config), tmp_path, "newest").read()

    assert contents.native_class_order == ("zebra", "apple", "outdoor", "banana", "mango")

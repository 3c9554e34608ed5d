"""The Scale AI export source: every annotation type read back exactly, and every rule.

Expected values are computed here, independently of the converter: rotated boxes with a
rotation matrix (tests/scale_tasks.py), painted shapes with pycocotools' rasterization of
the same rings, segmentation masks by remapping the index image written here. Rule tests
call the source directly (no TensorFlow) unless the point is what lands in the records.
Nothing here touches a network: downloads and the API are in tests/test_scale_api.py.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from builders import convert, flat, image_pixels, load_info, load_report, write_image
from pycocotools import mask as coco_mask
from readback import Record, class_id, decode_png, records_by_source_id
from scale_tasks import (
    box,
    cuboid,
    ellipse,
    image_task,
    line,
    mapping_entry,
    point,
    polygon,
    rotated_box,
    rotated_corners,
    segment_task,
    write_index_mask,
    write_json_lines,
    write_json_list,
)

from converter.core.sample import SourceContents
from converter.errors import UsageError
from converter.sources import SOURCES, locate_export
from converter.sources.scale import box_annotation, build_scale_source, label_leaves, looks_like_scale_export

SIGNATURE = "X-Amz-Signature=5ca1ab1e0ddba11"
BUCKET_URL = "https://scale-uploads.s3.amazonaws.com"
Writer = Callable[[Path, Sequence[Any]], Path]
WRITERS = {"json-list": (write_json_list, "export.json"), "json-lines": (write_json_lines, "export.jsonl")}


def _url(path: str) -> str:
    """A signed, expiring URL as Scale hands them out."""
    return f"{BUCKET_URL}/{path}?X-Amz-Expires=3600&{SIGNATURE}"


def _image(images: Path, name: str, size: tuple[int, int], seed: int) -> None:
    write_image(images / name, image_pixels(*size, seed))


def _boxes(record: Record) -> list[list[float]]:
    columns = [record[f"image/object/bbox/{key}"] for key in ("xmin", "ymin", "xmax", "ymax")]
    return [list(values) for values in zip(*columns, strict=True)]


def _normalized(xs: Sequence[float], ys: Sequence[float], size: tuple[int, int]) -> list[float]:
    return [min(xs) / size[0], min(ys) / size[1], max(xs) / size[0], max(ys) / size[1]]


def _painted(ring: Sequence[tuple[float, float]], size: tuple[int, int]) -> npt.NDArray[np.bool_]:
    flat_ring = [coordinate for vertex in ring for coordinate in vertex]
    rle = coco_mask.merge(coco_mask.frPyObjects([flat_ring], size[1], size[0]))
    return np.asarray(coco_mask.decode(rle), dtype=bool)


def _read(export: Path, images: Path, **options: Any) -> SourceContents:
    return build_scale_source(export, images, **options).read()


# ---------------------------------------------------------------------------
# Every annotation type, read back by TensorFlow

A_SIZE, B_SIZE, C_SIZE = (200, 100), (40, 30), (24, 16)
LEAF = [(150.0, 10.0), (190.0, 10.0), (170.0, 60.0)]
DOG = (100.0, 20.0, 40.0, 20.0, 0.5)  # left, top, width, height, rotation (radians clockwise)
BIRD = (60.0, 60.0, 30.0, 10.0, -0.3)


def _mixed_export(images: Path) -> tuple[list[dict[str, Any]], dict[str, npt.NDArray[np.uint8]]]:
    """Three tasks covering every annotation type, their images and index masks under `images`."""
    _image(images, "photos/a.png", A_SIZE, 1)
    _image(images, "b.png", B_SIZE, 2)
    _image(images, "c.png", C_SIZE, 3)
    b_mask = np.zeros(B_SIZE[::-1], dtype=np.uint8)
    b_mask[:10] = 1  # sky
    b_mask[10:20, :20] = 2  # car, instance 1
    b_mask[10:20, 20:] = 3  # car, instance 2 (same colour)
    c_mask = np.zeros(C_SIZE[::-1], dtype=np.uint8)
    c_mask[4:12, 4:20] = 5  # road; grass (6) is in the mapping but on no pixel
    write_index_mask(images / "masks" / "b-index.png", b_mask)
    write_index_mask(images / "masks" / "c-index.png", c_mask)
    tasks = [
        image_task(
            "a-task",
            _url("photos/a.png"),
            [
                box("cat", 10, 20, 30, 40),
                rotated_box("dog", *DOG),
                rotated_box("bird", *BIRD, vertices=False),  # corners from the rotation about the centre
                polygon("leaf", LEAF),
                point("eye", 5, 5),
                line("edge", [(1, 1), (50, 2)]),
                ellipse("wheel", (20, 80), (10, 5)),
                cuboid("truck"),
                point("eye", 7, 7),  # a second point of a class: one image label
            ],
            geometries={
                "box": ["cat", {"choice": "animal", "subchoices": ["dog", {"choice": "bird", "display": "Bird"}]}],
                "polygon": ["leaf"],
                "point": ["eye", "nose"],
                "line": ["edge"],
                "ellipse": ["wheel"],
                "cuboid": ["truck"],
            },
        ),
        segment_task(
            "b-task",
            _url("b.png"),
            _url("masks/b-index.png"),
            {
                "sky": mapping_entry(1, "#0000ff", pixels=400),
                "car": [mapping_entry(2, "#ff0000", pixels=200), mapping_entry(3, "#ff0000", pixels=200)],
                "tree": mapping_entry(4, "#00ff00", pixels=0),
            },
            labels=["sky", {"choice": "vehicle", "subchoices": ["car"]}, "tree"],
        ),
        segment_task(
            "c-task", _url("c.png"), _url("masks/c-index.png"), {"road": mapping_entry(5), "grass": mapping_entry(6)}
        ),
    ]
    return tasks, {"b-task": b_mask, "c-task": c_mask}


@pytest.mark.parametrize("layout", sorted(WRITERS))
def test_every_annotation_type_converts_exactly(tmp_path: Path, layout: str) -> None:
    writer, name = WRITERS[layout]
    tasks, masks = _mixed_export(tmp_path / "images")
    export = writer(tmp_path / name, tasks)
    output = tmp_path / "out"

    result = convert("-a", export, "-i", tmp_path / "images", "-o", output, "-s", "0")

    assert result.exit_code == 0, result.stderr
    info = load_info(output)
    assert info["input"]["source"] == "scale"
    # sorted union of the declared leaves and the used labels; a choice with subchoices is no class
    assert info["classes"] == sorted(
        ["bird", "car", "cat", "dog", "edge", "eye", "grass", "leaf", "nose", "road", "sky", "tree", "truck", "wheel"]
    )
    assert load_report(output)["skipped"] == []
    records = records_by_source_id(output)
    assert sorted(records) == ["a-task", "b-task", "c-task"]

    a = records["a-task"]
    assert a["image/filename"] == [b"photos/a.png"]
    dog, bird = rotated_corners(*DOG), rotated_corners(*BIRD)
    assert a["image/object/class/text"] == [b"cat", b"dog", b"bird", b"leaf"]
    assert a["image/object/class/label"] == [class_id(info, name) for name in ("cat", "dog", "bird", "leaf")]
    expected_boxes = [
        _normalized([10, 40], [20, 60], A_SIZE),
        *(_normalized([x for x, _ in ring], [y for _, y in ring], A_SIZE) for ring in (dog, bird, LEAF)),
    ]
    assert _boxes(a) == [pytest.approx(expected, abs=1e-6) for expected in expected_boxes]
    assert a["image/class/text"] == [b"eye", b"edge", b"wheel", b"truck"]
    assert a["image/class/label"] == [class_id(info, name) for name in ("eye", "edge", "wheel", "truck")]
    expected_mask = np.zeros(A_SIZE[::-1], dtype=np.uint8)  # the plain box is not a segmentation
    for name, ring in (("dog", dog), ("bird", bird), ("leaf", LEAF)):
        expected_mask[_painted(ring, A_SIZE)] = class_id(info, name)
    np.testing.assert_array_equal(decode_png(a["image/segmentation/class/encoded"][0]), expected_mask)

    remap = {
        0: 0,
        1: class_id(info, "sky"),
        2: class_id(info, "car"),
        3: class_id(info, "car"),
        5: class_id(info, "road"),
    }
    for key, present in (("b-task", [b"sky", b"car"]), ("c-task", [b"road"])):
        record = records[key]
        assert record["image/object/class/label"] == []
        assert record["image/class/text"] == present  # numPixels > 0, or (c) the values in the index image
        expected = np.vectorize(remap.__getitem__, otypes=[np.uint8])(masks[key])
        np.testing.assert_array_equal(decode_png(record["image/segmentation/class/encoded"][0]), expected)

    for path in output.rglob("*"):
        if path.is_file():
            assert b"5ca1ab1e" not in path.read_bytes(), f"a URL signature was written into {path}"


def test_box_annotation_example_from_its_docstring() -> None:
    plain = box_annotation(box("cat", 10, 20, 40, 20), "cat", "annotation 0")
    turned = box_annotation(rotated_box("cat", 10, 20, 40, 20, math.pi / 2, vertices=False), "cat", "annotation 0")

    assert plain.bbox_xyxy == (10, 20, 50, 40) and plain.polygons == ()
    assert turned.bbox_xyxy == pytest.approx((20, 10, 40, 50))
    assert turned.polygons[0].exterior == pytest.approx((40, 10, 40, 50, 20, 50, 20, 10))


def test_a_rotation_of_zero_is_a_plain_box_even_with_vertices() -> None:
    obj = box_annotation(rotated_box("cat", 10, 20, 40, 20, 0.0), "cat", "annotation 0")

    assert (obj.bbox_xyxy, obj.polygons) == ((10, 20, 50, 40), ())


@pytest.mark.parametrize(
    ("entries", "leaves"),
    [
        (["car", "bus"], ["car", "bus"]),
        ([{"choice": "vehicle", "subchoices": ["car", {"choice": "truck", "display": "Truck"}]}], ["car", "truck"]),
        ([{"choice": "a", "subchoices": [{"choice": "b", "subchoices": ["c"]}]}], ["c"]),
        ([{"choice": "plain"}, "", 7, None], ["plain"]),
        (None, []),
    ],
)
def test_label_leaves(entries: Any, leaves: list[str]) -> None:
    assert label_leaves(entries) == leaves


# ---------------------------------------------------------------------------
# Tasks that are skipped, and why


def _bad_tasks(images: Path) -> list[Any]:
    """One good task, then one task per skip reason (its id names the reason)."""
    _image(images, "good.png", (32, 32), 1)
    good = image_task("good", _url("good.png"), [box("cat", 1, 1, 5, 5)])
    segment = segment_task("no-mask-url", _url("good.png"), _url("m.png"), {"sky": mapping_entry(1)})
    del segment["response"]["annotations"]["combined"]["indexedImage"]
    index_zero = segment_task("index-zero", _url("good.png"), _url("m.png"), {"sky": mapping_entry(0)})
    same_index = segment_task(
        "same-index", _url("good.png"), _url("m.png"), {"a": mapping_entry(1), "b": mapping_entry(1)}
    )
    no_response = image_task("no-response", _url("good.png"), [])
    del no_response["response"]
    three_corners = rotated_box("cat", 1, 1, 5, 5, 0.3)
    three_corners["vertices"] = three_corners["vertices"][:3]
    return [
        good,
        image_task("pending", _url("good.png"), [], status="pending"),
        image_task("canceled", _url("good.png"), [], status="canceled"),
        {**image_task("categorize", _url("good.png"), []), "type": "categorization"},
        no_response,
        image_task("nan-left", _url("good.png"), [box("cat", float("nan"), 1, 5, 5)]),
        image_task("negative", _url("good.png"), [box("cat", 1, 1, -5, 5)]),
        image_task("short-polygon", _url("good.png"), [polygon("leaf", [(1, 1), (2, 2)])]),
        image_task("three-corners", _url("good.png"), [three_corners]),
        image_task("no-label", _url("good.png"), [{**box("cat", 1, 1, 5, 5), "label": None}]),
        image_task("text", _url("good.png"), [box("cat", 1, 1, 5, 5), {"type": "text", "label": "sign"}]),
        segment,
        index_zero,
        same_index,
        image_task("missing-image", _url("nowhere/missing.png"), [box("cat", 1, 1, 5, 5)]),
        image_task("good", _url("good.png"), [box("dog", 1, 1, 5, 5)]),
        "{not json",
        [1, 2],
        segment_task("missing-mask", _url("good.png"), _url("masks/gone.png"), {"sky": mapping_entry(1)}),
    ]


SKIP_CODES = {
    "task pending": ("not_completed", "status is 'pending'; only completed tasks are converted"),
    "task canceled": ("not_completed", "status is 'canceled'"),
    "task categorize": ("unsupported_task_type", "type 'categorization' is not converted"),
    "task no-response": ("missing_response", "has no `response` object"),
    "task nan-left": ("bad_geometry", "annotation 0 (box) `left` must be a finite number, got nan"),
    "task negative": ("bad_geometry", "negative width or height"),
    "task short-polygon": ("bad_geometry", "`vertices` must list at least 3 {x, y} points"),
    "task three-corners": ("bad_geometry", "annotation 0 (box) `vertices` must list at least 4 {x, y} points"),
    "task no-label": ("malformed_annotation", "annotation 0 (box) has no `label`"),
    "task text": ("unsupported_annotation_type", "annotation 1 (text) has a type this converter does not read"),
    "task no-mask-url": ("missing_response", "has no `indexedImage` URL"),
    "task index-zero": ("malformed_annotation", "`labelMapping` 'sky' has index 0"),
    "task same-index": ("malformed_annotation", "gives index 1 to more than one label"),
    "task missing-image": ("missing_image", f"{BUCKET_URL}/nowhere/missing.png' not found under"),
    "task good": ("duplicate_task", "an earlier task has the same `task_id`"),
    "task missing-mask": ("missing_mask", f"index mask: image '{BUCKET_URL}/masks/gone.png' not found under"),
}


def test_every_skip_is_reported_with_its_reason(tmp_path: Path) -> None:
    export = write_json_lines(tmp_path / "export.jsonl", _bad_tasks(tmp_path / "images"))

    contents = _read(export, tmp_path / "images")

    assert [sample.key for sample in contents.samples] == ["good"]
    assert [obj.class_name for obj in contents.samples[0].objects] == ["cat"]  # the first of the duplicates
    by_key = {skipped.location.key: skipped for skipped in contents.skipped if skipped.location.key}
    assert {key: skipped.code for key, skipped in by_key.items()} == {
        key: code for key, (code, _) in SKIP_CODES.items()
    } | {"task at index 17": "malformed_task"}
    for key, (_, fragment) in SKIP_CODES.items():
        assert fragment in by_key[key].reason, by_key[key].reason
        assert "5ca1ab1e" not in by_key[key].reason  # no signed query string in a message
    (malformed,) = [skipped for skipped in contents.skipped if skipped.location.key is None]
    assert (malformed.location.line, malformed.code) == (17, "malformed_json")
    assert by_key["task pending"].location.line == 2


def test_skips_reach_the_report_with_file_line_and_task(tmp_path: Path) -> None:
    export = write_json_list(tmp_path / "export.json", _bad_tasks(tmp_path / "images")[:3])
    output = tmp_path / "out"

    result = convert("-a", export, "-i", tmp_path / "images", "-o", output)

    assert result.exit_code == 0, result.stderr
    assert [
        (entry["file"], entry["line"], entry["key"], entry["code"]) for entry in load_report(output)["skipped"]
    ] == [
        (str(export), None, "task canceled", "not_completed"),  # the report sorts by file, line and key
        (str(export), None, "task pending", "not_completed"),
    ]


def test_attachment_s3_downloads_are_tried_after_the_attachment(tmp_path: Path) -> None:
    _image(tmp_path / "images", "copies/converted.png", (16, 16), 1)
    task = image_task("t", "s3://customer-bucket/raw/original.heic", [box("cat", 1, 1, 5, 5)])
    task["attachmentS3Downloads"] = [
        {"isConvertedImage": False, "s3URL": _url("copies/original.heic")},
        {"isConvertedImage": True, "s3URL": _url("copies/converted.png")},
    ]
    export = write_json_list(tmp_path / "export.json", [task])

    (sample,) = _read(export, tmp_path / "images").samples

    assert sample.image_name == "copies/converted.png"


# ---------------------------------------------------------------------------
# Filters


def test_date_filters_keep_after_inclusive_and_before_exclusive_and_leave_the_rest_unreported(tmp_path: Path) -> None:
    _image(tmp_path / "images", "a.png", (16, 16), 1)
    created = {
        "april-last-second": "2024-04-30T23:59:59.999Z",
        "may-first": "2024-05-01T00:00:00Z",
        "may-last": "2024-05-31T23:59:59.999+00:00",
        "june-first": "2024-06-01T00:00:00Z",
        "june-first-in-paris": "2024-06-01T01:30:00+02:00",  # 23:30 UTC on May 31: inside
        "pending-in-april": "2024-04-02T00:00:00Z",
    }
    tasks = [
        image_task(name, _url("a.png"), [], created_at=moment, status="pending" if "pending" in name else "completed")
        for name, moment in created.items()
    ]
    export = write_json_lines(tmp_path / "export.jsonl", tasks)
    output = tmp_path / "out"

    result = convert(
        "-a", export, "-i", tmp_path / "images", "-o", output, "--created-after", "2024-05-01",
        "--created-before", "2024-06-01",
    )  # fmt: skip

    assert result.exit_code == 0, result.stderr
    assert sorted(records_by_source_id(output)) == ["june-first-in-paris", "may-first", "may-last"]
    report = load_report(output)
    assert report["skipped"] == []  # the pending task is outside the dates: not reported either
    assert report["summary"]["input_samples"] == 3
    described = load_info(output)["input"]
    assert described["created_after"] == "2024-05-01 (inclusive, UTC)"
    assert described["created_before"] == "2024-06-01 (exclusive, UTC)"
    assert described["tasks_left_out_by_filters"] == "3"


def test_a_task_without_created_at_is_skipped_only_when_a_date_filter_needs_it(tmp_path: Path) -> None:
    _image(tmp_path, "a.png", (16, 16), 1)
    export = write_json_list(tmp_path / "export.json", [image_task("t", _url("a.png"), [], created_at="yesterday")])

    assert [sample.key for sample in _read(export, tmp_path).samples] == ["t"]
    (skipped,) = _read(export, tmp_path, created_after="2024-01-01").skipped
    assert skipped.code == "malformed_task"
    assert "`created_at` must be an ISO 8601 time to apply the date filters, got 'yesterday'" in skipped.reason


def test_batch_filter_applies_to_exports(tmp_path: Path) -> None:
    _image(tmp_path, "a.png", (16, 16), 1)
    tasks = [image_task(f"t{n}", _url("a.png"), [], batch=batch) for n, batch in enumerate(["one", "two", "three"])]
    tasks.append(image_task("no-batch", _url("a.png"), []))
    export = write_json_list(tmp_path / "export.json", tasks)

    contents = _read(export, tmp_path, batches=("one", "three"))

    assert [sample.key for sample in contents.samples] == ["t0", "t2"]
    assert contents.skipped == ()
    assert contents.description["tasks_left_out_by_filters"] == "2"
    assert ("scale_batch", "one") in contents.samples[0].attributes


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        (["--created-after", "2024-5-1"], "--created-after must be a date written YYYY-MM-DD, got '2024-5-1'"),
        (["--created-before", "2024-02-30"], "--created-before must be a date written YYYY-MM-DD, got '2024-02-30'"),
        (
            ["--created-after", "2024-06-01", "--created-before", "2024-06-01"],
            "--created-after 2024-06-01 is not before --created-before 2024-06-01",
        ),
    ],
)
def test_bad_date_options_are_usage_errors(tmp_path: Path, options: list[str], fragment: str) -> None:
    export = write_json_list(tmp_path / "export.json", [image_task("t", _url("a.png"), [])])

    result = convert("-a", export, "-o", tmp_path / "out", *options)

    assert result.exit_code == 2
    assert fragment in flat(result.stderr)


def test_without_an_export_or_a_project_the_source_cannot_start(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="reads an export file"):
        build_scale_source(None, tmp_path)


# ---------------------------------------------------------------------------
# Recognizing an export, and not taking other formats' files for one


@pytest.mark.parametrize(
    ("name", "text", "recognized"),
    [
        ("e.json", json.dumps([image_task("t", "https://x/a.png", [])]), True),
        ("e.jsonl", json.dumps(segment_task("t", "https://x/a.png", "https://x/m.png", {})) + "\n", True),
        ("e.ndjson", "\ufeff" + json.dumps(image_task("t", "https://x/a.png", [])) + "\n", True),
        ("e.json", "[\n  " + json.dumps(image_task("t", "https://x/a.png", [])), True),  # cut off: a peek
        ("e.json", json.dumps([{**image_task("t", "https://x/a.png", []), "type": "categorization"}]), False),
        ("e.json", json.dumps([{"type": "imageannotation"}]), False),  # no task_id
        ("e.json", json.dumps([{"data": {"image": "a.jpg"}, "annotations": []}]), False),  # Label Studio
        ("e.json", json.dumps({"images": [], "annotations": [], "categories": []}), False),  # COCO
        ("e.jsonl", '{"source-ref": "s3://b/a.jpg", "bbox": {}, "bbox-metadata": {"type": "x"}}\n', False),  # GT
        ("e.txt", json.dumps([image_task("t", "https://x/a.png", [])]), False),
        ("e.json", "[not json", False),
    ],
)
def test_recognizes_an_export_by_its_first_tasks(tmp_path: Path, name: str, text: str, recognized: bool) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")

    assert looks_like_scale_export(path) is recognized


def test_recognizes_an_export_whose_first_task_is_longer_than_the_peek(tmp_path: Path) -> None:
    vertices = [(float(x), float(x % 7)) for x in range(4000)]
    export = write_json_list(tmp_path / "export.json", [image_task("t", "https://x/a.png", [polygon("p", vertices)])])

    assert export.stat().st_size > 64 * 1024
    assert looks_like_scale_export(export)


@pytest.mark.parametrize("writer", [write_json_list, write_json_lines])
@pytest.mark.parametrize("count", [1, 3])
def test_a_scale_export_is_recognized_by_scale_alone(tmp_path: Path, writer: Writer, count: int) -> None:
    tasks = [image_task(f"t{n}", "https://x/a.png", [box("cat", 1, 1, 2, 2)]) for n in range(count)]
    export = writer(tmp_path / "export.json", tasks)

    assert [name for name, fmt in SOURCES.items() if fmt.recognizes(export)] == ["scale"]
    located = locate_export(tmp_path, None)
    assert (located.source_name, located.annotations) == ("scale", export)


def test_other_formats_exports_are_not_taken_for_scale(tmp_path: Path) -> None:
    samples = {
        "labelstudio.json": [{"id": 1, "data": {"image": "a.jpg"}, "annotations": [{"result": []}]}],
        "coco.json": {"images": [], "annotations": [], "categories": [{"id": 1, "name": "cat"}]},
        "geojson.json": {"type": "FeatureCollection", "features": []},
        "label_map.json": {"1": "cat", "0": "background"},
    }
    for name, document in samples.items():
        (tmp_path / name).write_text(json.dumps(document), encoding="utf-8")
    manifest = tmp_path / "output.manifest.jsonl"
    manifest.write_text(
        json.dumps({"source-ref": "s3://b/a.jpg", "c": 0, "c-metadata": {"type": "groundtruth/image-classification"}})
        + "\n",
        encoding="utf-8",
    )

    for path in [*(tmp_path / name for name in samples), manifest]:
        assert not looks_like_scale_export(path), path.name


def test_the_documented_example(tmp_path: Path) -> None:
    """docs/sources/scale.md's example, converted as the page says."""
    _image(tmp_path / "images", "photos/a.png", (640, 480), 1)
    task = image_task(
        "5f12",
        _url("photos/a.png"),
        [box("cat", 64, 96, 192, 192), point("eye", 100, 120)],
        geometries={"box": ["cat", "dog"], "point": ["eye"]},
    )
    output = tmp_path / "out"

    result = convert("-a", write_json_list(tmp_path / "export.json", [task]), "-i", tmp_path / "images", "-o", output)

    assert result.exit_code == 0, result.stderr
    assert load_info(output)["classes"] == ["cat", "dog", "eye"]
    record = records_by_source_id(output)["5f12"]
    assert _boxes(record) == [pytest.approx([0.1, 0.2, 0.4, 0.6], abs=1e-6)]
    assert (record["image/object/class/label"], record["image/class/label"]) == ([1], [3])

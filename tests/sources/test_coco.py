"""The COCO source end to end: COCO instances files in, TFRecords read back with TensorFlow.

Every expected value is computed here from the JSON the test reads or writes: boxes
from `bbox` over `images[].width/height`, class ids by name from dataset_info.yaml,
masks with pycocotools itself (`frPyObjects`, `merge`, `decode`), the reference the
converter's rasterizer must agree with pixel for pixel.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from builders import CocoExport, convert, flat, load_info, load_report, sha256_hex, write_manifest
from builders import detection_line as gt_detection_line
from pycocotools import mask as coco_mask
from readback import OD_API_KEYS, Record, class_id, decode_png, records_by_source_id

from converter.sources.coco import looks_like_coco
from converter.sources.sagemaker_gt import looks_like_manifest

BoolMask = npt.NDArray[np.bool_]
CLASS_MASK = "image/segmentation/class/encoded"
INSTANCE_MASKS = "image/object/mask"


# ---------------------------------------------------------------------------
# Building exports and reading records


def _export(root: Path, categories: Mapping[int, str]) -> CocoExport:
    return CocoExport(
        root, categories=[{"id": key, "name": name, "supercategory": ""} for key, name in categories.items()]
    )


def _convert(export: CocoExport, output: Path, *options: str) -> None:
    export.write()
    result = convert("-a", export.path, "-i", export.image_folder, "-o", output, "-s", "0", *options)
    assert result.exit_code == 0, result.stderr


def polygon_mask(parts: Sequence[Sequence[float]], height: int, width: int) -> BoolMask:
    """pycocotools' rasterization of a COCO polygon list (the union of its parts)."""
    rle = coco_mask.merge(coco_mask.frPyObjects([list(map(float, part)) for part in parts], height, width))
    return coco_mask.decode(rle).astype(bool)


def rle_mask(segmentation: Mapping[str, Any]) -> BoolMask:
    """pycocotools' decoding of a COCO RLE, compressed or not."""
    height, width = segmentation["size"]
    if isinstance(segmentation["counts"], list):
        return coco_mask.decode(coco_mask.frPyObjects(dict(segmentation), height, width)).astype(bool)
    return coco_mask.decode({"size": [height, width], "counts": segmentation["counts"].encode()}).astype(bool)


def box_mask(bbox: Sequence[float], height: int, width: int) -> BoolMask:
    """pycocotools' rasterization of a `[x, y, width, height]` box."""
    rles = coco_mask.frPyObjects(np.array([bbox], dtype=np.float64), height, width)
    return coco_mask.decode(rles)[..., 0].astype(bool)


def _assert_boxes(record: Record, expected: Sequence[Sequence[float]], size: tuple[int, int]) -> None:
    """`expected` boxes are `[x_min, y_min, x_max, y_max]` in pixels; stored normalized by `size`."""
    width, height = size
    for index, key in enumerate(("xmin", "ymin", "xmax", "ymax")):
        scale = width if index % 2 == 0 else height
        assert record[f"image/object/bbox/{key}"] == pytest.approx([box[index] / scale for box in expected], abs=1e-6)


def _coco_box(bbox: Sequence[float]) -> list[float]:
    x, y, width, height = bbox
    return [x, y, x + width, y + height]


def _instance_masks(record: Record) -> list[BoolMask]:
    return [decode_png(png).astype(bool) for png in record[INSTANCE_MASKS]]


# ---------------------------------------------------------------------------
# The real export (datumaro's test assets)


@pytest.mark.shared_samples
@pytest.mark.parametrize("subset", ["train", "val"])
def test_datumaro_export_reads_back_exactly(shared_samples: Path, tmp_path: Path, subset: str) -> None:
    dataset = shared_samples / "coco" / "datumaro"
    annotations_file = dataset / "annotations" / f"instances_{subset}.json"
    document = json.loads(annotations_file.read_text(encoding="utf-8"))
    output = tmp_path / "out"

    # -i is the dataset root: `a.jpg` is found at images/train/a.jpg by its file name.
    result = convert("-a", annotations_file, "-i", dataset, "-o", output, "-s", "0", "--instance-masks")

    assert result.exit_code == 0, result.stderr
    info = load_info(output)
    categories = {category["id"]: category["name"] for category in document["categories"]}
    assert info["classes"] == [categories[key] for key in sorted(categories)] == ["a", "b", "c"]
    assert info["input"]["source"] == "coco"
    report = load_report(output)
    assert report["summary"]["converted"] == len(document["images"]) == 1
    assert report["skipped"] == report["objects"] == []
    records = records_by_source_id(output)
    (image,) = document["images"]
    record = records[image["file_name"]]
    image_path = dataset / "images" / subset / image["file_name"]
    assert set(OD_API_KEYS) <= set(record)
    assert record["image/encoded"] == [image_path.read_bytes()]
    assert record["image/key/sha256"] == [sha256_hex(image_path.read_bytes()).encode()]
    assert record["image/filename"] == [f"images/{subset}/{image['file_name']}".encode()]
    assert (record["image/width"], record["image/height"]) == ([image["width"]], [image["height"]])

    height, width = image["height"], image["width"]
    annotations = [a for a in document["annotations"] if a["image_id"] == image["id"]]
    _assert_boxes(record, [_coco_box(a["bbox"]) for a in annotations], (width, height))
    names = [categories[a["category_id"]] for a in annotations]
    assert record["image/object/class/text"] == [name.encode() for name in names]
    assert record["image/object/class/label"] == [class_id(info, name) for name in names]
    assert record["image/object/is_crowd"] == [a["iscrowd"] for a in annotations]
    assert record["image/object/area"] == pytest.approx([a["area"] for a in annotations])  # COCO's own areas

    expected_instances, expected_classes = [], np.zeros((height, width), dtype=np.uint8)
    for annotation, name in zip(annotations, names, strict=True):
        segmentation = annotation["segmentation"]
        if isinstance(segmentation, dict):
            pixels = rle_mask(segmentation)
        elif segmentation:
            pixels = polygon_mask(segmentation, height, width)
        else:  # box only: its instance mask is its rectangle, and it paints nothing in the class mask
            pixels = box_mask(annotation["bbox"], height, width)
        expected_instances.append(pixels)
        if segmentation:
            expected_classes[pixels] = class_id(info, name)  # in annotation order: later paints over earlier
    masks = _instance_masks(record)
    assert len(masks) == len(expected_instances)
    for mask, expected in zip(masks, expected_instances, strict=True):
        np.testing.assert_array_equal(mask, expected)
    if subset == "train":  # the only annotation is box-only: nothing to paint, so no class mask at all
        assert [a["segmentation"] for a in annotations] == [[]]
        assert CLASS_MASK not in record
    else:  # a polygon of class a, then an uncompressed RLE with iscrowd=1 of class b painted over it
        assert [type(a["segmentation"]).__name__ for a in annotations] == ["list", "dict"]
        assert annotations[1]["iscrowd"] == 1 and isinstance(annotations[1]["segmentation"]["counts"], list)
        np.testing.assert_array_equal(decode_png(record[CLASS_MASK][0]), expected_classes)
        assert expected_classes.any()


# ---------------------------------------------------------------------------
# Generated exports


def test_multipart_polygons_sparse_category_ids_box_only_and_a_negative_image(tmp_path: Path) -> None:
    export = _export(tmp_path / "export", {42: "zebra", 1: "person", 7: "car"})
    image = export.add_image("street.jpg", (64, 48))
    export.add_image("empty.jpg", (32, 24))
    parts = [[2, 2, 20, 2, 20, 14, 2, 14], [30.5, 20.25, 50, 22, 44, 40.75]]
    export.add_annotation(image, 7, bbox=[2, 2, 48, 38.75], segmentation=parts, area=500.0)
    export.add_annotation(image, 42, bbox=[40, 5, 10, 6], segmentation=[])  # box only
    export.add_annotation(image, 1, bbox=[10.5, 30, 5.25, 12], segmentation=[[10.5, 30, 15.75, 30, 13, 42]])
    output = tmp_path / "out"

    _convert(export, output)

    info = load_info(output)
    assert info["classes"] == ["person", "car", "zebra"]  # by category id, not by listing order
    records = records_by_source_id(output)
    assert sorted(records) == ["empty.jpg", "street.jpg"]
    record = records["street.jpg"]
    _assert_boxes(record, [_coco_box(a["bbox"]) for a in export.annotations], (64, 48))
    assert record["image/object/class/text"] == [b"car", b"zebra", b"person"]
    assert record["image/object/class/label"] == [2, 3, 1]
    expected = np.zeros((48, 64), dtype=np.uint8)
    expected[polygon_mask(parts, 48, 64)] = 2
    expected[polygon_mask([[10.5, 30, 15.75, 30, 13, 42]], 48, 64)] = 1
    class_mask = decode_png(record[CLASS_MASK][0])
    np.testing.assert_array_equal(class_mask, expected)
    assert not (class_mask == 3).any()  # the box-only zebra paints nothing
    assert all(polygon_mask([part], 48, 64).any() for part in parts)  # both parts are painted
    empty = records["empty.jpg"]
    assert empty["image/object/class/label"] == [] and empty["image/object/bbox/xmin"] == []
    assert not decode_png(empty[CLASS_MASK][0]).any()
    assert load_report(output)["summary"]["converted"] == 2


def test_classes_file_pins_the_class_order(tmp_path: Path) -> None:
    export = _export(tmp_path / "export", {1: "person", 7: "car"})
    image = export.add_image("a.jpg")
    export.add_annotation(image, 1, bbox=[1, 1, 5, 5])
    export.add_annotation(image, 7, bbox=[2, 2, 5, 5])
    pinned = tmp_path / "classes.txt"
    pinned.write_text("car\nperson\n", encoding="utf-8")
    output = tmp_path / "out"

    _convert(export, output, "--classes", str(pinned))

    assert load_info(output)["classes"] == ["car", "person"]
    assert records_by_source_id(output)["a.jpg"]["image/object/class/label"] == [2, 1]


def test_compressed_and_uncompressed_rle_decode_like_pycocotools(tmp_path: Path) -> None:
    export = _export(tmp_path / "export", {3: "blob"})
    image = export.add_image("a.png", (40, 30))
    pixels = np.zeros((30, 40), dtype=np.uint8)
    pixels[5:20, 8:30] = 1
    pixels[10:14, 12:16] = 0  # a hole
    pixels[25:28, 1:4] = 1  # a second island
    compressed = coco_mask.encode(np.asfortranarray(pixels))
    compressed_segmentation = {"size": [30, 40], "counts": compressed["counts"].decode()}
    bbox = [float(value) for value in coco_mask.toBbox(compressed)]
    export.add_annotation(image, 3, bbox=bbox, segmentation=compressed_segmentation, iscrowd=1)
    stripe = np.zeros((30, 40), dtype=np.uint8)
    stripe[:, 35:37] = 1  # two full columns: column-major runs 35*30 zeros, 60 ones, the rest zeros
    uncompressed = {"size": [30, 40], "counts": [35 * 30, 60, 3 * 30]}
    export.add_annotation(image, 3, segmentation=uncompressed)  # no bbox: derived from the mask
    output = tmp_path / "out"

    _convert(export, output, "--instance-masks")

    record = records_by_source_id(output)["a.png"]
    np.testing.assert_array_equal(rle_mask(compressed_segmentation), pixels.astype(bool))
    np.testing.assert_array_equal(rle_mask(uncompressed), stripe.astype(bool))
    masks = _instance_masks(record)
    np.testing.assert_array_equal(masks[0], rle_mask(compressed_segmentation))
    np.testing.assert_array_equal(masks[1], rle_mask(uncompressed))
    expected = (rle_mask(compressed_segmentation) | rle_mask(uncompressed)).astype(np.uint8)
    np.testing.assert_array_equal(decode_png(record[CLASS_MASK][0]), expected)
    _assert_boxes(record, [_coco_box(bbox), [35, 0, 37, 30]], (40, 30))
    assert record["image/object/is_crowd"] == [1, 0]


def test_unknown_image_and_category_ids_are_reported(tmp_path: Path) -> None:
    export = _export(tmp_path / "export", {1: "cat", 2: "dog"})
    image = export.add_image("a.jpg")
    export.add_annotation(image, 1, bbox=[1, 2, 10, 8])
    stray = export.add_annotation(99, 1, bbox=[1, 2, 3, 4])  # no image 99
    unknown = export.add_annotation(image, 5, bbox=[5, 5, 5, 5])  # no category 5
    export.add_annotation(image, 2, bbox=[20, 10, 4, 4])
    output = tmp_path / "out"

    _convert(export, output)

    record = records_by_source_id(output)["a.jpg"]
    assert record["image/object/class/text"] == [b"cat", b"dog"]  # the image keeps its good annotations
    _assert_boxes(record, [[1, 2, 11, 10], [20, 10, 24, 14]], (64, 48))
    report = load_report(output)
    assert report["summary"]["input_samples"] == 2  # the image, and the annotation that belongs to no image
    assert [(entry["key"], entry["code"]) for entry in report["skipped"]] == [
        (f"annotation {stray['id']}", "unknown_image")
    ]
    assert "image_id 99" in report["skipped"][0]["reason"]
    assert report["skipped"][0]["file"] == str(export.path)
    (note,) = report["objects"]
    assert (note["key"], note["object"], note["code"]) == ("a.jpg", None, "unknown_class_id")
    assert f"annotation {unknown['id']} dropped" in note["message"] and "category_id 5" in note["message"]
    assert report["summary"]["object_notes_by_code"] == {"unknown_class_id": 1}


def test_polygon_partly_outside_the_image_is_clipped_like_pycocotools(tmp_path: Path) -> None:
    export = _export(tmp_path / "export", {1: "cat"})
    image = export.add_image("a.jpg", (40, 30))
    outside = [[-10.5, 5, 30, 5, 55.25, 40, 10, 25]]
    export.add_annotation(image, 1, bbox=[-10.5, 5, 65.75, 35], segmentation=outside)
    export.add_annotation(image, 1, segmentation=outside)  # no bbox: the polygon's extent, clipped
    output = tmp_path / "out"

    _convert(export, output, "--instance-masks")

    record = records_by_source_id(output)["a.jpg"]
    expected = polygon_mask(outside, 30, 40)
    assert expected.any() and not expected.all()
    for mask in _instance_masks(record):
        np.testing.assert_array_equal(mask, expected)
    np.testing.assert_array_equal(decode_png(record[CLASS_MASK][0]), expected.astype(np.uint8))
    _assert_boxes(record, [[0, 5, 40, 30], [0, 5, 40, 30]], (40, 30))
    report = load_report(output)
    assert [(entry["object"], entry["code"]) for entry in report["objects"]] == [(0, "clipped"), (1, "clipped")]


def test_instance_masks_equal_pycocotools_per_object_masks(tmp_path: Path) -> None:
    export = _export(tmp_path / "export", {1: "a", 2: "b"})
    image = export.add_image("a.jpg", (50, 40))
    shapes = [
        {"segmentation": [[5, 5, 25, 5, 25, 25, 5, 25], [30, 30, 45, 30, 38, 39]], "bbox": [5, 5, 40, 34]},
        {"segmentation": [[0.5, 0.5, 10.5, 0.5, 3.25, 12.75]], "bbox": [0.5, 0.5, 10, 12.25]},
        {"segmentation": [], "bbox": [20.5, 10.25, 9, 7.5]},
    ]
    for index, shape in enumerate(shapes):
        export.add_annotation(image, 1 + index % 2, **shape)
    output = tmp_path / "out"

    _convert(export, output, "--instance-masks")

    masks = _instance_masks(records_by_source_id(output)["a.jpg"])
    expected = [
        polygon_mask(shapes[0]["segmentation"], 40, 50),
        polygon_mask(shapes[1]["segmentation"], 40, 50),
        box_mask(shapes[2]["bbox"], 40, 50),
    ]
    assert len(masks) == 3
    for mask, reference in zip(masks, expected, strict=True):
        assert reference.any()
        np.testing.assert_array_equal(mask, reference)


TWO_SQUARES = ([[4, 4, 24, 4, 24, 24, 4, 24]], [[14, 14, 34, 14, 34, 34, 14, 34]])  # class a, then class b


@pytest.mark.parametrize("policy", ["order", "priority", "combine"])
def test_overlap_policies_on_two_overlapping_polygons(tmp_path: Path, policy: str) -> None:
    export = _export(tmp_path / "export", {1: "a", 2: "b"})
    image = export.add_image("a.jpg", (40, 40))
    export.add_annotation(image, 1, segmentation=TWO_SQUARES[0])
    export.add_annotation(image, 2, segmentation=TWO_SQUARES[1])
    output = tmp_path / "out"
    options = ["--overlap", policy] + (["--class-priority", "a"] if policy == "priority" else [])

    _convert(export, output, *options)

    first, second = (polygon_mask(shape, 40, 40) for shape in TWO_SQUARES)
    both = first & second
    assert both.any() and (first & ~second).any() and (second & ~first).any()
    expected = np.zeros((40, 40), dtype=np.uint8)
    expected[first], expected[second] = 1, 2
    info = load_info(output)
    if policy == "priority":
        expected[both] = 1
        assert info["masks"]["class_priority"] == ["a"]
    if policy == "combine":
        expected[both] = 3
        assert info["classes"] == ["a", "b", "a+b"]
        assert info["masks"]["combinations"] == {"a+b": ["a", "b"]}
    else:
        assert info["classes"] == ["a", "b"]
    assert info["masks"]["overlap"] == policy
    np.testing.assert_array_equal(decode_png(records_by_source_id(output)["a.jpg"][CLASS_MASK][0]), expected)


def test_degenerate_polygons_are_reported(tmp_path: Path) -> None:
    export = _export(tmp_path / "export", {1: "cat"})
    image = export.add_image("a.jpg", (40, 30))
    good = [2, 2, 12, 2, 12, 12]
    mixed = export.add_annotation(image, 1, bbox=[2, 2, 10, 10], segmentation=[good, [20, 20, 22, 22]])
    box_kept = export.add_annotation(image, 1, bbox=[20, 5, 5, 5], segmentation=[[20, 5, 25, 5]])
    dropped = export.add_annotation(image, 1, segmentation=[[1, 1]])
    output = tmp_path / "out"

    _convert(export, output)

    record = records_by_source_id(output)["a.jpg"]
    _assert_boxes(record, [[2, 2, 12, 12], [20, 5, 25, 10]], (40, 30))
    np.testing.assert_array_equal(decode_png(record[CLASS_MASK][0]), polygon_mask([good], 30, 40).astype(np.uint8))
    notes = [(entry["code"], entry["message"]) for entry in load_report(output)["objects"]]
    assert [code for code, _ in notes] == ["degenerate_polygon"] * 3
    assert f"annotation {mixed['id']}: polygon parts [1]" in notes[0][1]
    assert f"annotation {box_kept['id']}: no polygon part" in notes[1][1] and "keeps its bbox" in notes[1][1]
    assert f"annotation {dropped['id']} dropped" in notes[2][1]


def test_image_entry_problems_skip_their_image_only(tmp_path: Path) -> None:
    export = _export(tmp_path / "export", {1: "cat"})
    good = export.add_image("good.jpg")
    export.add_annotation(good, 1, bbox=[1, 1, 5, 5])
    export.images.append({"id": 50, "file_name": "absent.jpg", "width": 64, "height": 48})
    export.add_annotation(50, 1, bbox=[1, 1, 5, 5])
    export.images.append({"id": 51, "width": 64, "height": 48})  # no file_name
    export.images.append({"id": good, "file_name": "other.jpg"})  # repeats good's id
    export.add_image("twice.jpg", image_id=60)
    export.images.append({"id": 61, "file_name": "twice.jpg", "width": 64, "height": 48})
    export.images.append({"file_name": "no-id.jpg"})
    output = tmp_path / "out"

    _convert(export, output)

    assert sorted(records_by_source_id(output)) == ["twice.jpg"]
    report = load_report(output)
    skipped = {(entry["key"], entry["code"]) for entry in report["skipped"]}
    assert skipped == {
        ("good.jpg", "duplicate_image"),
        ("other.jpg", "duplicate_image"),
        ("absent.jpg", "missing_image"),
        ("image 51", "malformed_annotation"),
        ("twice.jpg", "duplicate_image"),
        ("images[6]", "malformed_annotation"),
    }
    reasons = {entry["key"]: entry["reason"] for entry in report["skipped"] if entry["key"] != "twice.jpg"}
    assert "its 1 annotations are not converted" in reasons["absent.jpg"]
    assert "listed 2 times" in reasons["good.jpg"]
    assert report["summary"]["input_samples"] == 7


@pytest.mark.parametrize(
    ("document", "fragment"),
    [
        ({"images": [], "categories": []}, "no `annotations` list"),
        ({"images": [], "annotations": [], "categories": [{"id": 1}]}, "categories[0] needs an `id` and a non-empty"),
    ],
)
def test_a_file_that_is_not_coco_is_a_usage_error(tmp_path: Path, document: dict[str, Any], fragment: str) -> None:
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(document), encoding="utf-8")

    result = convert("-a", path, "--source", "coco", "-o", tmp_path / "out")

    assert result.exit_code == 2
    assert fragment in flat(result.stderr)


# ---------------------------------------------------------------------------
# Recognizing a COCO file


def test_a_folder_with_a_coco_file_and_images_is_recognized(tmp_path: Path) -> None:
    export = _export(tmp_path / "export", {1: "cat"})
    image = export.add_image("a.jpg")
    export.add_annotation(image, 1, bbox=[1, 1, 5, 5])
    export.write()
    output = tmp_path / "out"

    # No --source and no -i: the file is found under -a, and images resolve under -a by file name.
    result = convert("-a", export.root, "-o", output)

    assert result.exit_code == 0, result.stderr
    assert load_info(output)["input"]["source"] == "coco"
    assert records_by_source_id(output)["a.jpg"]["image/object/class/text"] == [b"cat"]


def test_a_folder_with_a_manifest_and_a_coco_file_is_a_usage_error_listing_both(tmp_path: Path) -> None:
    export = _export(tmp_path / "export", {1: "cat"})
    export.add_image("a.jpg")
    export.write()
    manifest = write_manifest(export.root / "output.manifest", [gt_detection_line("s3://bucket/images/a.jpg", [], {})])

    result = convert("-a", export.root, "-o", tmp_path / "out")

    assert result.exit_code == 2
    message = flat(result.stderr)
    assert "several annotation exports" in message
    assert f"{export.path.name} (coco)" in message and f"{manifest.name} (sagemaker_gt)" in message


def _large_coco_text(images: int) -> str:
    """Minified, laid out like COCO's own files: the small `categories` list last, after megabytes."""
    document = {
        "info": {"description": "large"},
        "images": [{"id": i, "file_name": f"{i:012d}.jpg", "width": 640, "height": 480} for i in range(images)],
        "annotations": [{"id": i, "image_id": i, "category_id": 1, "bbox": [1, 2, 3, 4]} for i in range(images)],
        "categories": [{"id": 1, "name": "cat"}],
    }
    return json.dumps(document, separators=(",", ":"))


def test_a_large_file_is_recognized_from_its_ends(tmp_path: Path) -> None:
    large = tmp_path / "instances_large.json"
    large.write_text(_large_coco_text(40_000), encoding="utf-8")
    text = large.read_text(encoding="utf-8")
    assert len(text) > 3 << 20 and "\n" not in text
    assert text.index('"annotations"') > 1 << 20 and len(text) - text.index('"categories"') < 1 << 20

    assert looks_like_coco(large)
    assert not looks_like_manifest(large)  # nor is it taken for a manifest (read 1 MiB of a line at most)


@pytest.mark.parametrize(
    "document",
    [
        [{"id": 1, "data": {"image": "a.jpg"}, "annotations": [], "images": [], "categories": []}],  # Label Studio
        {"type": "FeatureCollection", "features": []},
        {"images": [], "annotations": []},
    ],
    ids=["a-list-of-tasks", "geojson", "no-categories"],
)
def test_other_json_is_not_taken_for_coco(tmp_path: Path, document: Any) -> None:
    path = tmp_path / "export.json"
    path.write_text(json.dumps(document), encoding="utf-8")

    assert not looks_like_coco(path)


@pytest.mark.shared_samples
def test_a_real_label_studio_export_is_not_taken_for_coco(shared_samples: Path) -> None:
    export = shared_samples / "label_studio" / "polygons_export.json"
    assert '"annotations"' in export.read_text(encoding="utf-8")

    assert not looks_like_coco(export)

"""Converted datasets of every output format read back as `WrittenRecord`s, compared with the export.

Each dataset is written by the real CLI from a generated export; every expected value is
computed here from the export itself: boxes in pixels over the image size the test chose,
class names, masks rasterized independently (pycocotools for polygons, the Ground Truth
mask files for class masks), keypoints, and the image files' sha256.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from builders import PERSON_KEYPOINTS, CocoExport, convert, load_info, person_keypoints_export
from labelstudio_tasks import annotation, choices, keypoint, task, write_export, write_stand_in
from pycocotools import mask as coco_mask
from sinks import HEIGHT, WIDTH, Input, classification_input, detection_input, segmentation_input

from converter.errors import UsageError
from converter.stats.records import WrittenRecord
from converter.stats.written import dataset_splits, read_written_records

FORMATS = {
    "tfrecord": ("-f", "tfrecord"),
    "modelpack": ("-f", "tfrecord", "--layout", "modelpack"),
    "json": ("-f", "json"),
    "masterful": ("-f", "masterful"),
    "masks": ("-f", "masks"),
}
FLOAT32 = 1e-6  # TFRecords store float32


def _sha256(data: bytes | None) -> str:
    assert data is not None
    return hashlib.sha256(data).hexdigest()


def _read_all(dataset: Path, *, with_images: bool = True) -> dict[str, list[WrittenRecord]]:
    return {
        split: list(read_written_records(dataset, split, with_images=with_images)) for split in dataset_splits(dataset)
    }


def _by_image_name(dataset: Path) -> dict[str, WrittenRecord]:
    """Every record of every split by its image's file name (the last part of any key), checking the counts."""
    info = load_info(dataset)
    records: dict[str, WrittenRecord] = {}
    for split, split_records in _read_all(dataset).items():
        assert len(split_records) == info[split]["samples"]
        for record in split_records:
            name = record.key.rsplit("/", 1)[-1]
            assert name not in records
            records[name] = record
    return records


def _decode(png: bytes | None) -> npt.NDArray[np.uint8]:
    assert png is not None
    pixels = cv2.imdecode(np.frombuffer(png, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    assert pixels is not None and pixels.ndim == 2
    return np.asarray(pixels, dtype=np.uint8)


def _convert(data: Input, output: Path, layout: str, *options: str) -> None:
    result = data.convert(output, *FORMATS[layout], "--seed", "3", *options)
    assert result.exit_code == 0, result.stderr


# ---------------------------------------------------------------------------
# Boxes, image labels, class masks: Ground Truth exports


@pytest.mark.parametrize("layout", ["tfrecord", "modelpack", "json", "masterful"])
def test_boxes_read_back_normalized_with_class_names_and_the_images_bytes(tmp_path: Path, layout: str) -> None:
    data = detection_input(tmp_path / "export", count=5)
    output = tmp_path / "out"
    _convert(data, output, layout, "-s", "0.4")

    records = _by_image_name(output)

    without_images = _read_all(output, with_images=False)
    assert without_images == {
        split: [replace(record, image_bytes=None) for record in split_records]
        for split, split_records in _read_all(output).items()
    }
    classes = load_info(output)["classes"]
    assert sorted(records) == sorted(data.expected)
    for name, expected in data.expected.items():
        record = records[name]
        assert (record.width, record.height) == (WIDTH, HEIGHT)
        assert _sha256(record.image_bytes) == _sha256(expected.image_bytes)
        assert [(obj.class_id, obj.class_name) for obj in record.objects] == [
            (classes.index(class_name) + 1, class_name) for class_name, _ in expected.boxes
        ]
        pixels = [
            # Masterful stores whole pixels, each edge truncated
            tuple(float(int(edge)) for edge in box) if layout == "masterful" else box
            for _, box in expected.boxes
        ]
        normalized = [
            (x_min / WIDTH, y_min / HEIGHT, x_max / WIDTH, y_max / HEIGHT) for x_min, y_min, x_max, y_max in pixels
        ]
        assert [obj.box for obj in record.objects] == [pytest.approx(box, abs=FLOAT32) for box in normalized]
        areas = [(x_max - x_min) * (y_max - y_min) for x_min, y_min, x_max, y_max in pixels]
        stores_area = layout in ("tfrecord", "json")
        assert [obj.area for obj in record.objects] == (pytest.approx(areas) if stores_area else [None] * len(areas))
        assert record.class_mask_png is None and record.image_labels == () and record.keypoints == ()
        keys = {
            "tfrecord": f"s3://bucket/{name}",  # the sample's own key
            "json": f"s3://bucket/{name}",
            "modelpack": name,  # image_name: the image's path under -i
            "masterful": f"images/{name}",  # the image's path in its split folder
        }
        assert record.key == keys[layout]


@pytest.mark.parametrize("layout", ["tfrecord", "json", "masterful", "masks"])
def test_class_masks_read_back_as_the_export_s_masks_in_class_ids(tmp_path: Path, layout: str) -> None:
    data = segmentation_input(tmp_path / "export")
    output = tmp_path / "out"
    _convert(data, output, layout, "-s", "0.4")

    records = _by_image_name(output)

    classes = load_info(output)["classes"]
    assert sorted(records) == sorted(data.expected)
    for name, expected in data.expected.items():
        record = records[name]
        assert (record.width, record.height) == (WIDTH, HEIGHT)
        np.testing.assert_array_equal(_decode(record.class_mask_png), expected.class_mask(classes))
        assert _sha256(record.image_bytes) == _sha256(expected.image_bytes)
        assert record.objects == ()


def test_the_masks_format_gives_the_mask_file_s_own_bytes(tmp_path: Path) -> None:
    data = segmentation_input(tmp_path / "export")
    output = tmp_path / "out"
    _convert(data, output, "masks", "-s", "0")

    for record in read_written_records(output, "train", with_images=False):
        assert record.image_bytes is None
        assert record.class_mask_png == (output / "train" / "masks" / f"{Path(record.key).stem}.png").read_bytes()


@pytest.mark.parametrize("layout", ["tfrecord", "json", "masterful"])
def test_image_labels_read_back_with_their_class_names(tmp_path: Path, layout: str) -> None:
    data = classification_input(tmp_path / "export")
    output = tmp_path / "out"
    _convert(data, output, layout, "-s", "0.5")

    records = _by_image_name(output)

    classes = load_info(output)["classes"]
    for name, expected in data.expected.items():
        assert records[name].image_labels == tuple((classes.index(label) + 1, label) for label in expected.labels)
        assert records[name].objects == ()


# ---------------------------------------------------------------------------
# Polygons and instance masks: a COCO export


SHAPES: tuple[dict[str, Any], ...] = (
    {"category_id": 1, "segmentation": [[4, 4, 30, 4, 30, 20, 4, 20], [40, 30, 55, 30, 47, 44]], "area": 480.0},
    {"category_id": 2, "segmentation": [[10.5, 12.25, 40, 8, 25, 38.75]], "area": 300.0},
    {"category_id": 2, "bbox": [50, 2, 10, 6], "segmentation": []},  # a box only: no shape
)
COCO_SIZE = (64, 48)


def _polygon_mask(parts: Sequence[Sequence[float]]) -> npt.NDArray[np.bool_]:
    """pycocotools' rasterization of a COCO polygon list (the union of its parts)."""
    width, height = COCO_SIZE
    rle = coco_mask.merge(coco_mask.frPyObjects([list(map(float, part)) for part in parts], height, width))
    mask: npt.NDArray[np.bool_] = coco_mask.decode(rle).astype(bool)
    return mask


def _box_mask(bbox: Sequence[float]) -> npt.NDArray[np.bool_]:
    width, height = COCO_SIZE
    rles = coco_mask.frPyObjects(np.array([bbox], dtype=np.float64), height, width)
    mask: npt.NDArray[np.bool_] = coco_mask.decode(rles)[..., 0].astype(bool)
    return mask


def _coco_polygons(tmp_path: Path) -> CocoExport:
    export = CocoExport(tmp_path / "export", categories=[{"id": 1, "name": "leaf"}, {"id": 2, "name": "stem"}])
    image = export.add_image("plant.jpg", COCO_SIZE)
    for shape in SHAPES:
        export.add_annotation(image, **shape)
    export.write()
    return export


@pytest.mark.parametrize(
    ("layout", "instance_masks"),
    [("json", False), ("json", True), ("tfrecord", True)],
    ids=["json", "json+masks", "tfrecord+masks"],
)
def test_polygons_and_instance_masks_read_back_as_the_coco_shapes(
    tmp_path: Path, layout: str, instance_masks: bool
) -> None:
    export = _coco_polygons(tmp_path)
    output = tmp_path / "out"
    options = ["--instance-masks"] if instance_masks else []
    result = convert("-a", export.path, "-i", export.image_folder, "-o", output, "-s", "0", *FORMATS[layout], *options)
    assert result.exit_code == 0, result.stderr

    (record,) = read_written_records(output, "train")

    width, height = COCO_SIZE
    assert (record.key, record.width, record.height) == ("plant.jpg", width, height)
    assert _sha256(record.image_bytes) == _sha256(export.image_bytes["plant.jpg"])
    assert [(obj.class_id, obj.class_name) for obj in record.objects] == [(1, "leaf"), (2, "stem"), (2, "stem")]
    assert record.objects[2].box == pytest.approx((50 / width, 2 / height, 60 / width, 8 / height), abs=FLOAT32)
    assert [obj.area for obj in record.objects[:2]] == [480.0, 300.0]  # COCO's own areas
    if layout == "json":  # the only format that keeps polygons
        assert [[(polygon.exterior, polygon.holes) for polygon in obj.polygons] for obj in record.objects] == [
            [(tuple(map(float, part)), ()) for part in shape["segmentation"]] for shape in SHAPES
        ]
    else:
        assert all(obj.polygons == () for obj in record.objects)
    expected_masks = [_polygon_mask(SHAPES[0]["segmentation"]), _polygon_mask(SHAPES[1]["segmentation"])]
    if instance_masks:
        expected_masks.append(_box_mask(SHAPES[2]["bbox"]))  # a box paints its rectangle
        for obj, expected in zip(record.objects, expected_masks, strict=True):
            assert expected.any()
            np.testing.assert_array_equal(_decode(obj.mask_png).astype(bool), expected)
    else:
        assert all(obj.mask_png is None for obj in record.objects)
    class_mask = np.zeros((height, width), dtype=np.uint8)
    for class_id, shape_mask in zip((1, 2), expected_masks[:2], strict=True):
        class_mask[shape_mask] = class_id  # later shapes paint over earlier ones (--overlap order)
    np.testing.assert_array_equal(_decode(record.class_mask_png), class_mask)


# ---------------------------------------------------------------------------
# Keypoints: COCO person keypoints (per object) and Label Studio points (per image)


@pytest.mark.parametrize("layout", ["tfrecord", "json"])
def test_object_keypoints_read_back_named_normalized_with_their_visibility(tmp_path: Path, layout: str) -> None:
    export, keypoints_by_annotation = person_keypoints_export(tmp_path / "export")
    output = tmp_path / "out"
    result = convert("-a", export.path, "-i", export.image_folder, "-o", output, "-s", "0", *FORMATS[layout])
    assert result.exit_code == 0, result.stderr

    records = {record.key: record for record in read_written_records(output, "train", with_images=False)}

    width, height = 64, 48
    persons = [entry for entry in export.annotations if entry["category_id"] == 1]
    assert sorted(records) == sorted(image["file_name"] for image in export.images)
    for image, person in zip(export.images, persons, strict=True):
        record = records[image["file_name"]]
        assert record.image_bytes is None
        person_object, ball = record.objects
        assert (person_object.class_name, ball.class_name) == ("person", "ball")
        assert ball.keypoints == ()  # the padding that gives every object 17 points is not a point
        points = keypoints_by_annotation[person["id"]]
        assert [(point.name, point.visibility) for point in person_object.keypoints] == list(
            zip(PERSON_KEYPOINTS, points[2::3], strict=True)
        )
        np.testing.assert_allclose(
            [(point.x, point.y) for point in person_object.keypoints],
            [(x / width, y / height) for x, y in zip(points[0::3], points[1::3], strict=True)],
            atol=FLOAT32,
        )
        assert person_object.area == 2000.0


@pytest.mark.parametrize("layout", ["tfrecord", "json"])
def test_image_keypoints_and_choices_read_back_with_their_classes(tmp_path: Path, layout: str) -> None:
    size = (200, 100)
    image_bytes = write_stand_in(tmp_path / "images" / "a.png", size)
    results = [keypoint(25, 50, ["eye"], size), choices(["indoor"]), keypoint(75.5, 10, ["nose"], size)]
    export = write_export(tmp_path / "export.json", [task("a.png", annotation(results))])
    output = tmp_path / "out"
    result = convert("-a", export, "-i", tmp_path / "images", "-o", output, "-s", "0", *FORMATS[layout])
    assert result.exit_code == 0, result.stderr

    (record,) = read_written_records(output, "train")

    classes = load_info(output)["classes"]
    assert (record.width, record.height) == size
    assert _sha256(record.image_bytes) == _sha256(image_bytes)
    assert record.image_labels == ((classes.index("indoor") + 1, "indoor"),)
    assert [(class_id, name, point.name, point.visibility) for class_id, name, point in record.keypoints] == [
        (classes.index("eye") + 1, "eye", "eye", 2),
        (classes.index("nose") + 1, "nose", "nose", 2),
    ]
    np.testing.assert_allclose(
        [(point.x, point.y) for _, _, point in record.keypoints], [(0.25, 0.5), (0.755, 0.1)], atol=FLOAT32
    )


# ---------------------------------------------------------------------------
# Streaming, splits, paths, errors


def test_records_come_in_stored_order_and_limit_stops_early(tmp_path: Path) -> None:
    data = detection_input(tmp_path / "export", count=6)
    output = tmp_path / "out"
    _convert(data, output, "modelpack", "-s", "0", "-p", "0.004")  # a few KiB per shard: several shards

    every = list(read_written_records(output, "train", with_images=False))

    shards = load_info(output)["train"]["shards"]
    assert len(shards) > 1 and len(every) == sum(shard["records"] for shard in shards) == 8
    assert [record.key for record in read_written_records(output, "train", limit=3)] == [r.key for r in every[:3]]
    assert list(read_written_records(output, "train", limit=0)) == []
    assert all(record.image_bytes is None for record in every)


def test_json_and_masks_records_come_in_file_name_order(tmp_path: Path) -> None:
    data = segmentation_input(tmp_path / "export")
    for layout in ("json", "masks"):
        output = tmp_path / layout
        _convert(data, output, layout, "-s", "0")

        names = [Path(record.key).name for record in read_written_records(output, "train", with_images=False)]

        assert names == sorted(data.expected)


def test_splits_are_listed_train_validation_test_whatever_the_yaml_order(tmp_path: Path) -> None:
    data = detection_input(tmp_path / "export", count=10)
    three, two = tmp_path / "three", tmp_path / "two"
    _convert(data, three, "json", "-s", "0.4,0.3,0.3")
    _convert(data, two, "json", "-s", "0.3")
    reordered = tmp_path / "reordered"
    reordered.mkdir()
    (reordered / "dataset_info.yaml").write_text(
        "test: {}\nclasses: [a]\nvalidation: {}\nrecord_layout: {format: json, class_id_offset: 1}\n",
        encoding="utf-8",
    )

    assert dataset_splits(three) == ["train", "validation", "test"]
    assert dataset_splits(two) == ["train", "validation"]
    assert dataset_splits(reordered) == ["validation", "test"]
    with pytest.raises(UsageError, match=r"has no 'test' split; its dataset_info.yaml lists train, validation"):
        read_written_records(two, "test")


def test_absolute_paths_read_inside_the_folder_given_after_a_move(tmp_path: Path) -> None:
    data = detection_input(tmp_path / "export", count=3)
    for layout in ("masterful", "json", "tfrecord"):
        written, moved = tmp_path / f"{layout}-written", tmp_path / f"{layout}-moved"
        _convert(data, written, layout, "-s", "0", "--absolute-paths")
        shutil.move(written, moved)  # the converter's links are relative: the dataset moves whole

        records = list(read_written_records(moved, "train"))

        assert sorted(_sha256(record.image_bytes) for record in records) == sorted(
            _sha256(expected.image_bytes) for expected in data.expected.values()
        )


def test_a_folder_that_is_not_a_dataset_is_a_usage_error_that_says_what_to_pass(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as raised:
        read_written_records(tmp_path, "train")
    assert str(raised.value) == (
        f"{tmp_path} is not a converted dataset: pass the folder a `dataset-converter convert` run wrote (its -o), "
        "which holds dataset_info.yaml; there is none"
    )
    with pytest.raises(UsageError, match="is not a converted dataset"):
        dataset_splits(tmp_path / "absent")
    (tmp_path / "dataset_info.yaml").write_text("classes: [a\n", encoding="utf-8")
    with pytest.raises(UsageError, match=r"dataset_info.yaml is not valid YAML"):
        dataset_splits(tmp_path)
    (tmp_path / "dataset_info.yaml").write_text("train: {samples: 1}\n", encoding="utf-8")
    with pytest.raises(UsageError, match=r"lacks the `classes` and `record_layout`"):
        read_written_records(tmp_path, "train")


def test_a_damaged_shard_stops_the_stream_naming_it_and_verify(tmp_path: Path) -> None:
    data = detection_input(tmp_path / "export", count=3)
    output = tmp_path / "out"
    _convert(data, output, "tfrecord", "-s", "0")
    (shard,) = load_info(output)["train"]["shards"]
    path = output / shard["file"]
    path.write_bytes(path.read_bytes()[:-10])

    records = read_written_records(output, "train")

    read: list[WrittenRecord] = []
    with pytest.raises(UsageError) as raised:
        read.extend(records)
    assert len(read) == shard["records"] - 1  # the records before the damage were read
    message = str(raised.value)
    assert message.startswith(
        f"{path} record {len(read)}: cannot be read as this converter writes it (CorruptRecordError: "
        f"'record {len(read)}: truncated data"
    )
    assert message.endswith(f"`dataset-converter verify {output}` checks the dataset")

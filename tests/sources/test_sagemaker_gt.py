"""The Ground Truth source end to end: synthetic manifests in, TFRecords read back with TensorFlow.

Every expected value is derived from the lines and images the test wrote: boxes are
the manifest's pixels over its declared size, masks the written indices remapped to
the run's class ids (taken by name from dataset_info.yaml), image bytes the files.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from builders import (
    BUCKET,
    CLASSIFICATION,
    Export,
    GtBox,
    classification_line,
    convert,
    detection_export,
    detection_line,
    flat,
    json_events,
    load_info,
    load_report,
    metadata,
    multilabel_line,
    segmentation_line,
    sha256_hex,
    skipped_by_line,
    write_palette_mask,
    write_rgb_mask,
)
from PIL import Image
from readback import OD_API_KEYS, Record, class_id, decode_png, records_by_source_id

OBJECT_KEYS = tuple(key for key in OD_API_KEYS if key.startswith("image/object/"))


def _assert_boxes(
    record: Record,
    boxes: Sequence[GtBox],
    class_map: Mapping[int, str],
    frame: tuple[float, float],
    info: Mapping[str, Any],
) -> None:
    """Every box of `record` equals the manifest box over the frame (no clipping expected)."""
    width, height = frame
    assert record["image/object/bbox/xmin"] == pytest.approx([box.left / width for box in boxes], abs=1e-6)
    assert record["image/object/bbox/ymin"] == pytest.approx([box.top / height for box in boxes], abs=1e-6)
    assert record["image/object/bbox/xmax"] == pytest.approx(
        [(box.left + box.width) / width for box in boxes], abs=1e-6
    )
    assert record["image/object/bbox/ymax"] == pytest.approx(
        [(box.top + box.height) / height for box in boxes], abs=1e-6
    )
    assert record["image/object/class/text"] == [class_map[box.class_id].encode() for box in boxes]
    assert record["image/object/class/label"] == [class_id(info, class_map[box.class_id]) for box in boxes]
    assert all(label >= 1 for label in record["image/object/class/label"])
    assert record["image/object/area"] == pytest.approx([box.width * box.height for box in boxes], rel=1e-6)
    assert record["image/object/is_crowd"] == [0] * len(boxes)


def _assert_image(record: Record, export: Export, reference: str, size: tuple[int, int], image_format: str) -> None:
    original = export.image_bytes[reference]
    assert set(OD_API_KEYS) <= set(record)
    assert record["image/encoded"] == [original]
    assert record["image/key/sha256"] == [sha256_hex(original).encode()]
    assert record["image/source_key"] == [reference.encode()]
    assert record["image/format"] == [image_format.encode()]
    assert (record["image/width"], record["image/height"]) == ([size[0]], [size[1]])


def _run(export: Export, output: Path, *options: str) -> None:
    export.write()
    result = convert("-a", export.manifest, "-i", export.images, "-o", output, *options)
    assert result.exit_code == 0, result.stderr


# ---------------------------------------------------------------------------
# Object detection


def test_detection_records_hold_every_box_class_and_image(tmp_path: Path) -> None:
    export = detection_export(tmp_path / "export", 12)
    negative = export.add_detection("negative.jpg", [], {})
    output = tmp_path / "out"

    _run(export, output)

    info = load_info(output)
    assert info["classes"] == ["cat", "dog"]
    records = records_by_source_id(output)
    assert sorted(records) == sorted(export.references())
    for line in export.lines:
        assert isinstance(line, dict)
        reference = line["source-ref"]
        record = records[reference]
        _assert_image(record, export, reference, (64, 48), "jpeg")
        assert record["image/filename"] == [reference.removeprefix(BUCKET + "/").encode()]
        boxes = [GtBox(**annotation) for annotation in line["bbox"]["annotations"]]
        class_map = {int(key): name for key, name in line["bbox-metadata"]["class-map"].items()}
        _assert_boxes(record, boxes, class_map, (64, 48), info)
        assert record["image/class/label"] == []
        assert record["image/class/text"] == []
        assert "image/segmentation/class/encoded" not in record
    for key in OBJECT_KEYS:
        assert records[negative][key] == [], key
    report = load_report(output)
    assert report["summary"]["input_samples"] == 13
    assert report["summary"]["converted"] == 13
    assert report["skipped"] == []


def test_float_coordinates_are_kept_exactly(tmp_path: Path) -> None:
    export = Export(tmp_path / "export")
    boxes = [GtBox(0, 164.60000000000002, 20.3, 100.25, 50.1), GtBox(0, 0.5, 0.25, 10.125, 7.75)]
    reference = export.add_detection("float.jpg", boxes, {0: "cat"}, size=(320, 240))
    output = tmp_path / "out"

    _run(export, output)

    record = records_by_source_id(output)[reference]
    _assert_boxes(record, boxes, {0: "cat"}, (320, 240), load_info(output))
    assert load_report(output)["objects"] == []


def _adjustment_export(root: Path) -> tuple[Export, dict[str, list[GtBox]]]:
    """Lines carrying both the original `bbox` and the adjustment job's `adjusted-bbox`."""
    export = Export(root)
    chosen: dict[str, list[GtBox]] = {"bbox": [], "adjusted-bbox": []}
    for index in range(3):
        reference = export.add_image(f"adj{index}.jpg")
        original = [GtBox(0, 5 + index, 6, 20, 10)]
        adjusted = [GtBox(0, 7 + index, 8, 22, 12), GtBox(1, 30, 20, 10, 10)]
        line = detection_line(reference, original, {0: "cat"}, attribute="bbox")
        adjusted_line = detection_line(reference, adjusted, {0: "cat", 1: "dog"}, attribute="adjusted-bbox")
        adjusted_line["adjusted-bbox-metadata"]["adjustment-status"] = "adjusted"
        export.add_line({**line, **adjusted_line})
        chosen["bbox"].extend(original)
        chosen["adjusted-bbox"].extend(adjusted)
    return export, chosen


def test_adjustment_job_without_label_attribute_is_a_usage_error(tmp_path: Path) -> None:
    export, _ = _adjustment_export(tmp_path / "export")
    export.write()

    result = convert("-a", export.manifest, "-o", tmp_path / "out")

    assert result.exit_code == 2
    message = flat(result.stderr)
    assert "adjusted-bbox (3 lines)" in message
    assert "bbox (3 lines)" in message
    assert "--label-attribute" in message
    assert str(export.manifest) in message
    assert not (tmp_path / "out" / "dataset_info.yaml").exists()


@pytest.mark.parametrize("attribute", ["bbox", "adjusted-bbox"])
def test_adjustment_job_converts_the_chosen_attribute(tmp_path: Path, attribute: str) -> None:
    export, chosen = _adjustment_export(tmp_path / "export")
    output = tmp_path / "out"

    _run(export, output, "--label-attribute", attribute)

    info = load_info(output)
    assert info["input"]["label_attribute"] == attribute
    records = records_by_source_id(output)
    boxes_per_line = len(chosen[attribute]) // 3
    for index, reference in enumerate(export.references()):
        boxes = chosen[attribute][index * boxes_per_line : (index + 1) * boxes_per_line]
        _assert_boxes(records[reference], boxes, {0: "cat", 1: "dog"}, (64, 48), info)


def test_sparse_class_maps_give_one_class_list_ordered_by_ground_truth_id(tmp_path: Path) -> None:
    export = Export(tmp_path / "export")
    first = export.add_detection("a.jpg", [GtBox(0, 1, 1, 10, 10), GtBox(5, 20, 20, 10, 10)], {0: "dog", 5: "bone"})
    second = export.add_detection("b.jpg", [GtBox(5, 3, 3, 10, 10)], {5: "bone"})
    third = export.add_detection("c.jpg", [GtBox(2, 4, 4, 10, 10)], {2: "cat"})
    output = tmp_path / "out"

    _run(export, output)

    info = load_info(output)
    assert info["classes"] == ["dog", "cat", "bone"]
    records = records_by_source_id(output)
    assert records[first]["image/object/class/label"] == [1, 3]
    assert records[second]["image/object/class/label"] == [3]
    assert records[third]["image/object/class/label"] == [2]
    assert records[first]["image/object/class/text"] == [b"dog", b"bone"]
    totals = {
        name: sum(info[split]["class_counts"][name]["objects"] for split in ("train", "validation"))
        for name in info["classes"]
    }
    assert totals == {"dog": 1, "cat": 1, "bone": 2}


def test_boxes_outside_the_image_are_clipped_or_dropped_and_reported(tmp_path: Path) -> None:
    export = Export(tmp_path / "export")
    boxes = [
        GtBox(0, 10, 10, 20, 20),  # inside
        GtBox(0, -10, 5, 30, 10),  # partly left of the image -> x from 0 to 20
        GtBox(1, 50, 40, 30, 20),  # partly right and below -> 50..64, 40..48
        GtBox(0, 70, 10, 5, 5),  # fully outside -> dropped
        GtBox(1, 20, 20, 0, 10),  # zero width -> dropped
    ]
    reference = export.add_detection("clip.jpg", boxes, {0: "cat", 1: "dog"})
    output = tmp_path / "out"

    _run(export, output)

    info = load_info(output)
    record = records_by_source_id(output)[reference]
    kept = [(10, 10, 30, 30, "cat"), (0, 5, 20, 15, "cat"), (50, 40, 64, 48, "dog")]
    assert record["image/object/bbox/xmin"] == pytest.approx([box[0] / 64 for box in kept], abs=1e-6)
    assert record["image/object/bbox/ymin"] == pytest.approx([box[1] / 48 for box in kept], abs=1e-6)
    assert record["image/object/bbox/xmax"] == pytest.approx([box[2] / 64 for box in kept], abs=1e-6)
    assert record["image/object/bbox/ymax"] == pytest.approx([box[3] / 48 for box in kept], abs=1e-6)
    assert record["image/object/area"] == pytest.approx([(b[2] - b[0]) * (b[3] - b[1]) for b in kept], rel=1e-6)
    assert record["image/object/class/label"] == [class_id(info, box[4]) for box in kept]
    assert record["image/object/is_crowd"] == [0, 0, 0]
    for key in ("xmin", "ymin", "xmax", "ymax"):
        assert all(0.0 <= value <= 1.0 for value in record[f"image/object/bbox/{key}"])

    report = load_report(output)
    notes = {(entry["object"], entry["code"]) for entry in report["objects"]}
    assert notes == {(1, "clipped"), (2, "clipped"), (3, "degenerate_box"), (4, "degenerate_box")}
    assert all(entry["line"] == 1 and entry["key"] == reference for entry in report["objects"])
    assert report["summary"]["clipped_boxes"] == 2
    assert report["summary"]["dropped_boxes"] == 2


def test_exif_rotated_jpeg_keeps_its_bytes_and_uses_the_displayed_frame(tmp_path: Path) -> None:
    export = Export(tmp_path / "export")
    stored = Image.fromarray(np.random.default_rng(3).integers(0, 256, (480, 640, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = export.images / "rotated.jpg"
    path.parent.mkdir(parents=True)
    stored.save(path, exif=exif)
    with Image.open(path) as reopened:
        assert reopened.size == (640, 480)  # stored pixels
    reference = f"{BUCKET}/rotated.jpg"
    export.image_bytes[reference] = path.read_bytes()
    boxes = [GtBox(0, 100, 200, 50, 80), GtBox(0, 400, 600, 80, 40)]
    export.add_line(detection_line(reference, boxes, {0: "cat"}, size=(480, 640)))
    output = tmp_path / "out"

    _run(export, output)

    record = records_by_source_id(output)[reference]
    _assert_image(record, export, reference, (480, 640), "jpeg")
    _assert_boxes(record, boxes, {0: "cat"}, (480, 640), load_info(output))
    report = load_report(output)
    (warning,) = report["warnings"]
    assert "EXIF orientation 6" in warning["message"]
    assert (warning["line"], warning["key"]) == (1, reference)
    assert report["objects"] == []


# ---------------------------------------------------------------------------
# Semantic segmentation, classification, multi-label

SEG_COLORS: dict[int, tuple[str, str]] = {
    0: ("BACKGROUND", "#ffffff"),
    1: ("road", "#1f77b4"),
    2: ("car", "#ff7f0e"),
    3: ("tree", "#2ca02c"),
}


def _gt_indices(seed: int, values: Sequence[int], shape: tuple[int, int] = (48, 64)) -> npt.NDArray[np.uint8]:
    """Blocks of Ground Truth indices, so every listed value occurs."""
    indices = np.random.default_rng(seed).choice(np.array(values, dtype=np.uint8), size=(shape[0] // 8, shape[1] // 8))
    indices.flat[: len(values)] = values
    return np.kron(indices, np.ones((8, 8), dtype=np.uint8))


def _expected_mask(gt_indices: npt.NDArray[np.uint8], info: Mapping[str, Any]) -> npt.NDArray[np.uint8]:
    lookup = np.zeros(256, dtype=np.uint8)
    for index, (name, _) in SEG_COLORS.items():
        lookup[index] = 0 if index == 0 else class_id(info, name)
    expected: npt.NDArray[np.uint8] = lookup[gt_indices]
    return expected


def test_semantic_segmentation_palette_masks(tmp_path: Path) -> None:
    export = Export(tmp_path / "export")
    masks: dict[str, npt.NDArray[np.uint8]] = {}
    for index, (values, color_map) in enumerate(
        [
            ([0, 1, 2, 3], SEG_COLORS),
            ([0, 2], {0: SEG_COLORS[0], 2: SEG_COLORS[2]}),  # the map lists only the classes present
            ([0], {0: SEG_COLORS[0]}),  # all background
        ]
    ):
        reference = export.add_image(f"photos/p{index}.png")
        masks[reference] = _gt_indices(index, values)
        write_palette_mask(
            export.images / f"labels/p{index}.png", masks[reference], [color for _, color in SEG_COLORS.values()]
        )
        export.add_line(segmentation_line(reference, f"{BUCKET}/labels/p{index}.png", color_map))
    output = tmp_path / "out"

    _run(export, output)

    info = load_info(output)
    assert info["classes"] == ["road", "car", "tree"]
    records = records_by_source_id(output)
    for reference, gt_indices in masks.items():
        record = records[reference]
        _assert_image(record, export, reference, (64, 48), "png")
        assert record["image/segmentation/class/format"] == [b"png"]
        written = decode_png(record["image/segmentation/class/encoded"][0])
        np.testing.assert_array_equal(written, _expected_mask(gt_indices, info))
        for key in OBJECT_KEYS:
            assert record[key] == []
    images_with = {name: 0 for name in info["classes"]}
    for split in ("train", "validation"):
        for name in info["classes"]:
            images_with[name] += info[split]["class_counts"][name]["images"]
    assert images_with == {"road": 1, "car": 2, "tree": 1}


def test_semantic_segmentation_rgb_masks_map_through_hex_colors(tmp_path: Path) -> None:
    export = Export(tmp_path / "export")
    palette = np.array([(0, 0, 0)] * 256, dtype=np.uint8)
    for index, (_, color) in SEG_COLORS.items():
        palette[index] = [int(color[i : i + 2], 16) for i in (1, 3, 5)]
    good: dict[str, npt.NDArray[np.uint8]] = {}
    for index in range(2):
        reference = export.add_image(f"rgb{index}.jpg")
        good[reference] = _gt_indices(10 + index, [0, 1, 2, 3])
        write_rgb_mask(export.images / "masks" / f"rgb{index}.png", palette[good[reference]])
        export.add_line(segmentation_line(reference, f"{BUCKET}/masks/rgb{index}.png", SEG_COLORS))
    bad_reference = export.add_image("unknown-colour.jpg")
    bad_rgb = palette[_gt_indices(20, [0, 1])].copy()
    bad_rgb[0:3, 0:3] = (1, 2, 3)  # a colour no class has
    write_rgb_mask(export.images / "masks" / "unknown-colour.png", bad_rgb)
    bad_line = export.add_line(segmentation_line(bad_reference, f"{BUCKET}/masks/unknown-colour.png", SEG_COLORS))
    output = tmp_path / "out"

    _run(export, output)

    info = load_info(output)
    records = records_by_source_id(output)
    assert sorted(records) == sorted(good)
    for reference, gt_indices in good.items():
        written = decode_png(records[reference]["image/segmentation/class/encoded"][0])
        np.testing.assert_array_equal(written, _expected_mask(gt_indices, info))
    report = load_report(output)
    (entry,) = report["skipped"]
    assert (entry["line"], entry["code"], entry["key"]) == (bad_line, "unknown_mask_color", bad_reference)
    assert "#010203" in entry["reason"]


def test_image_classification_with_int_and_string_values(tmp_path: Path) -> None:
    export = Export(tmp_path / "export")
    cat = export.add_image("cat.jpg")
    dog = export.add_image("dog.jpg")
    other_dog = export.add_image("dog2.jpg")
    export.add_line(classification_line(cat, 1, "cat"))
    export.add_line(classification_line(dog, "0", "dog"))
    export.add_line(classification_line(other_dog, 0, "dog"))
    output = tmp_path / "out"

    _run(export, output)

    info = load_info(output)
    assert info["classes"] == ["dog", "cat"]  # by Ground Truth index: 0 dog, 1 cat
    records = records_by_source_id(output)
    for reference, name in ((cat, "cat"), (dog, "dog"), (other_dog, "dog")):
        _assert_image(records[reference], export, reference, (64, 48), "jpeg")
        assert records[reference]["image/class/label"] == [class_id(info, name)]
        assert records[reference]["image/class/text"] == [name.encode()]
        for key in OBJECT_KEYS:
            assert records[reference][key] == []


def test_multilabel_classification_writes_every_label(tmp_path: Path) -> None:
    export = Export(tmp_path / "export")
    lines = [
        ([0, 2], {0: "sunny", 2: "beach"}),
        ([1], {1: "city"}),
        ([2, 1, 0], {0: "sunny", 1: "city", 2: "beach"}),
        ([], {}),
    ]
    references = []
    for index, (values, class_map) in enumerate(lines):
        references.append(export.add_image(f"m{index}.jpg"))
        export.add_line(multilabel_line(references[-1], values, class_map))
    output = tmp_path / "out"

    _run(export, output)

    info = load_info(output)
    assert info["classes"] == ["sunny", "city", "beach"]
    records = records_by_source_id(output)
    for reference, (values, class_map) in zip(references, lines, strict=True):
        names = [class_map[value] for value in values]
        assert records[reference]["image/class/text"] == [name.encode() for name in names]
        assert records[reference]["image/class/label"] == [class_id(info, name) for name in names]


# ---------------------------------------------------------------------------
# Finding images


@pytest.mark.parametrize(
    "reference",
    ["s3://b/my images/a b.jpg", "s3://b/my%20images/a%20b.jpg"],
    ids=["spaces", "url-encoded"],
)
def test_keys_with_spaces_resolve_to_the_folder_of_the_same_name(tmp_path: Path, reference: str) -> None:
    export = Export(tmp_path / "export")
    export.add_image("my images/a b.jpg")
    data = export.image_bytes.pop(f"{BUCKET}/my images/a b.jpg")
    export.image_bytes[reference] = data
    export.add_line(detection_line(reference, [GtBox(0, 1, 2, 3, 4)], {0: "cat"}))
    output = tmp_path / "out"

    _run(export, output)

    record = records_by_source_id(output)[reference]
    assert record["image/encoded"] == [data]
    assert record["image/filename"] == [b"my images/a b.jpg"]


# (case, reference, where the wanted file is, decoy files, expected skip code or None)
RESOLUTION_CASES = [
    ("full-key-path", "s3://bkt/a/b/c.jpg", "a/b/c.jpg", ["b/c.jpg", "c.jpg", "other/c.jpg"], None),
    ("bucket-and-key", "s3://bkt/a/b/c.jpg", "bkt/a/b/c.jpg", ["b/c.jpg", "c.jpg"], None),
    ("trailing-components", "s3://bkt/deep/prefix/x/c.jpg", "x/c.jpg", ["c.jpg", "y/c.jpg"], None),
    ("last-component", "s3://bkt/deep/prefix/c.jpg", "c.jpg", ["z/c.jpg"], None),
    ("unique-file-name", "s3://bkt/p/q/u.jpg", "elsewhere/u.jpg", [], None),
    ("ambiguous-file-name", "s3://bkt/p/amb.jpg", None, ["one/amb.jpg", "two/amb.jpg"], "ambiguous_image"),
    ("absent", "s3://bkt/p/absent.jpg", None, ["p/present.jpg"], "missing_image"),
    ("dot-dot", "s3://bkt/../secret.jpg", None, [], "unsafe_path"),
    ("dot-dot-inside", "s3://bkt/a/../../secret.jpg", None, ["a/secret.jpg"], "unsafe_path"),
]


@pytest.mark.parametrize(
    ("reference", "target", "decoys", "code"),
    [case[1:] for case in RESOLUTION_CASES],
    ids=[case[0] for case in RESOLUTION_CASES],
)
def test_image_resolution_fallbacks(
    tmp_path: Path, reference: str, target: str | None, decoys: list[str], code: str | None
) -> None:
    export = Export(tmp_path / "export")
    good = export.add_image("good.jpg", seed=100)
    export.add_line(detection_line(good, [], {}))
    for index, decoy in enumerate(decoys):
        export.add_image(decoy, seed=200 + index)
    # A file outside the images folder that a naive join of `..` would reach.
    (tmp_path / "export" / "secret.jpg").write_bytes(export.image_bytes[good])
    if target is not None:
        export.add_image(target, seed=300)
        wanted = export.image_bytes[f"{BUCKET}/{target}"]
    export.add_line(detection_line(reference, [GtBox(0, 1, 1, 5, 5)], {0: "cat"}))
    output = tmp_path / "out"

    _run(export, output)

    records = records_by_source_id(output)
    report = load_report(output)
    if target is not None:
        assert code is None
        assert records[reference]["image/encoded"] == [wanted]
        assert records[reference]["image/filename"] == [target.encode()]
        assert report["skipped"] == []
    else:
        assert reference not in records
        assert skipped_by_line(report) == {2: code}
        assert report["skipped"][0]["key"] == reference
    assert good in records


def test_symlink_out_of_the_images_folder_is_refused(tmp_path: Path) -> None:
    export = Export(tmp_path / "export")
    good = export.add_image("good.jpg")
    export.add_line(detection_line(good, [], {}))
    outside = tmp_path / "outside" / "secret.jpg"
    outside.parent.mkdir()
    outside.write_bytes(export.image_bytes[good] + b"secret")
    (export.images / "linked").mkdir()
    (export.images / "linked" / "secret.jpg").symlink_to(outside)
    (export.images / "linked-folder").symlink_to(outside.parent, target_is_directory=True)
    direct = f"{BUCKET}/linked/secret.jpg"
    through_folder = f"{BUCKET}/linked-folder/secret.jpg"
    export.add_line(detection_line(direct, [], {}))
    export.add_line(detection_line(through_folder, [], {}))
    output = tmp_path / "out"

    _run(export, output)

    records = records_by_source_id(output)
    assert sorted(records) == [good]
    assert all(outside.read_bytes() not in record["image/encoded"] for record in records.values())
    report = load_report(output)
    assert skipped_by_line(report) == {2: "unsafe_path", 3: "unsafe_path"}


# ---------------------------------------------------------------------------
# Pinned classes


def _classes_export(root: Path, with_bird: bool) -> Export:
    export = Export(root)
    export.add_detection("dog.jpg", [GtBox(0, 1, 1, 10, 10)], {0: "dog"})
    export.add_detection("cat.jpg", [GtBox(1, 2, 2, 10, 10)], {1: "cat"})
    export.add_detection("both.jpg", [GtBox(1, 2, 2, 10, 10), GtBox(0, 20, 20, 5, 5)], {0: "dog", 1: "cat"})
    if with_bird:
        export.add_detection("bird.jpg", [GtBox(2, 3, 3, 10, 10)], {2: "bird"})
    return export


def _pinned_classes_file(tmp_path: Path, form: str) -> Path:
    """A --classes file pinning [cat, dog] (the reverse of the export's own order)."""
    if form == "text":
        path = tmp_path / "classes.txt"
        path.write_text("# our label map\ncat\n\ndog\n", encoding="utf-8")
        return path
    previous = Export(tmp_path / "previous")
    previous.add_detection("p.jpg", [GtBox(0, 1, 1, 5, 5), GtBox(1, 9, 9, 5, 5)], {0: "cat", 1: "dog"})
    _run(previous, tmp_path / "previous-out")
    assert load_info(tmp_path / "previous-out")["classes"] == ["cat", "dog"]
    return tmp_path / "previous-out" / "dataset_info.yaml"


@pytest.mark.parametrize("form", ["text", "dataset_info"])
def test_classes_file_pins_order_and_skips_unknown_classes(tmp_path: Path, form: str) -> None:
    export = _classes_export(tmp_path / "export", with_bird=True)
    classes_file = _pinned_classes_file(tmp_path, form)
    output = tmp_path / "out"

    _run(export, output, "--classes", str(classes_file))

    info = load_info(output)
    assert info["classes"] == ["cat", "dog"]
    records = records_by_source_id(output)
    bird = f"{BUCKET}/bird.jpg"
    assert bird not in records
    (entry,) = load_report(output)["skipped"]
    assert (entry["line"], entry["code"], entry["key"]) == (export.line_of(bird), "unknown_class", bird)
    assert "bird" in entry["reason"]
    assert "--allow-new-classes" in entry["reason"]
    assert records[f"{BUCKET}/dog.jpg"]["image/object/class/label"] == [2]
    assert records[f"{BUCKET}/cat.jpg"]["image/object/class/label"] == [1]
    assert records[f"{BUCKET}/both.jpg"]["image/object/class/label"] == [1, 2]


@pytest.mark.parametrize("form", ["text", "dataset_info"])
def test_allow_new_classes_appends_them_after_the_pinned_ones(tmp_path: Path, form: str) -> None:
    export = _classes_export(tmp_path / "export", with_bird=True)
    classes_file = _pinned_classes_file(tmp_path, form)
    output = tmp_path / "out"

    _run(export, output, "--classes", str(classes_file), "--allow-new-classes")

    info = load_info(output)
    assert info["classes"] == ["cat", "dog", "bird"]
    records = records_by_source_id(output)
    assert records[f"{BUCKET}/bird.jpg"]["image/object/class/label"] == [3]
    assert records[f"{BUCKET}/bird.jpg"]["image/object/class/text"] == [b"bird"]
    assert records[f"{BUCKET}/dog.jpg"]["image/object/class/label"] == [2]
    assert load_report(output)["skipped"] == []


def test_class_ids_never_shift_when_new_data_brings_a_new_class(tmp_path: Path) -> None:
    export = _classes_export(tmp_path / "export", with_bird=False)
    first = tmp_path / "first"
    _run(export, first)
    first_classes = load_info(first)["classes"]
    assert first_classes == ["dog", "cat"]
    # The new line's class-map gives the new class Ground Truth id 0: on its own it would sort first.
    ant = export.add_detection("ant.jpg", [GtBox(0, 4, 4, 6, 6)], {0: "ant"})
    unpinned = tmp_path / "unpinned"
    _run(export, unpinned)
    assert load_info(unpinned)["classes"][0] == "ant"

    second = tmp_path / "second"
    _run(export, second, "--classes", str(first / "dataset_info.yaml"), "--allow-new-classes")

    info = load_info(second)
    assert info["classes"] == [*first_classes, "ant"]
    before, after = records_by_source_id(first), records_by_source_id(second)
    for reference, record in before.items():
        assert after[reference]["image/object/class/label"] == record["image/object/class/label"]
        assert after[reference]["image/object/class/text"] == record["image/object/class/text"]
    assert after[ant]["image/object/class/label"] == [3]


# ---------------------------------------------------------------------------
# Bad lines: every one is reported with its file, line and reason


def _truncated_jpeg(export: Export, name: str) -> str:
    reference = export.add_image(name, size=(64, 48))
    path = export.images / name
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    return reference


def _empty_file(export: Export, name: str) -> str:
    reference = export.add_image(name)
    (export.images / name).write_bytes(b"")
    return reference


def _bad_line(kind: str, export: Export) -> Mapping[str, Any] | str:
    if kind == "malformed_json":
        return '{"source-ref": "s3://bucket/x.jpg", "bbox": {'
    if kind == "json_array":
        return "[1, 2, 3]"
    if kind == "missing_image":
        return detection_line(f"{BUCKET}/not-there.jpg", [GtBox(0, 1, 1, 5, 5)], {0: "cat"})
    if kind == "truncated_jpeg":
        return detection_line(_truncated_jpeg(export, "truncated.jpg"), [], {})
    if kind == "empty_file":
        return detection_line(_empty_file(export, "empty.jpg"), [], {})
    if kind == "unknown_job_type":
        line = detection_line(export.add_image("video.jpg"), [], {})
        line["bbox-metadata"]["type"] = "groundtruth/video-object-tracking"
        return line
    if kind == "text_job":
        return {"source": "a sentence to classify", "bbox": 0, "bbox-metadata": metadata(CLASSIFICATION)}
    if kind == "malformed_box":
        return detection_line(export.add_image("box.jpg"), [GtBox(0, 1, 1, 5, 5)], {0: "cat"}) | {
            "bbox": {"annotations": [{"class_id": 0, "left": "1", "top": 1, "width": 5, "height": 5}]}
        }
    if kind == "unknown_class_id":
        return detection_line(export.add_image("cid.jpg"), [GtBox(7, 1, 1, 5, 5)], {0: "cat"})
    raise AssertionError(kind)


BAD_LINES = [
    ("malformed_json", "malformed_json", "malformed JSON"),
    ("json_array", "malformed_json", "not an object"),
    ("missing_image", "missing_image", "not found"),
    ("truncated_jpeg", "corrupt_image", "truncated"),
    ("empty_file", "corrupt_image", "empty"),
    ("unknown_job_type", "unsupported_type", "groundtruth/video-object-tracking"),
    ("text_job", "not_an_image", "`source`"),
    ("malformed_box", "malformed_annotation", "`left`"),
    ("unknown_class_id", "unknown_class_id", "class_id 7"),
]


@pytest.mark.parametrize(("kind", "code", "fragment"), BAD_LINES, ids=[case[0] for case in BAD_LINES])
def test_a_bad_line_is_skipped_with_its_line_number_and_reason(
    tmp_path: Path, kind: str, code: str, fragment: str
) -> None:
    export = detection_export(tmp_path / "export", 2)
    export.add_line("")  # blank lines count as lines
    export.add_line("   ")
    bad_line = export.add_line(_bad_line(kind, export))
    last = export.add_detection("last.jpg", [GtBox(0, 1, 1, 5, 5)], {0: "cat"})
    output = tmp_path / "out"

    _run(export, output)

    report = load_report(output)
    (entry,) = report["skipped"]
    assert bad_line == 5
    assert (entry["file"], entry["line"], entry["code"]) == (str(export.manifest), bad_line, code)
    assert fragment in entry["reason"]
    assert report["summary"]["skipped_by_code"] == {code: 1}
    assert report["summary"]["input_samples"] == 4
    assert report["summary"]["converted"] == 3
    assert sorted(records_by_source_id(output)) == sorted([*export.references()[:2], last])


def test_nothing_is_lost_every_line_is_a_record_or_a_skip(tmp_path: Path) -> None:
    export = detection_export(tmp_path / "export", 6)
    bad_lines: dict[int, str] = {}
    for kind, code, _ in BAD_LINES:
        export.add_line("")
        bad_lines[export.add_line(_bad_line(kind, export))] = code
        export.add_detection(f"after-{kind}.jpg", [GtBox(0, 2, 2, 8, 8)], {0: "cat"})
    output = tmp_path / "out"

    _run(export, output)

    report = load_report(output)
    records = records_by_source_id(output)
    converted_lines = {export.line_of(reference) for reference in records}
    skipped_lines = skipped_by_line(report)
    non_blank = {number for number, line in enumerate(export.lines, start=1) if not isinstance(line, str) or line}
    assert converted_lines.isdisjoint(skipped_lines)
    assert converted_lines | set(skipped_lines) == non_blank
    assert skipped_lines == bad_lines
    assert all(entry["file"] == str(export.manifest) for entry in report["skipped"])
    summary = report["summary"]
    assert summary["input_samples"] == summary["converted"] + summary["skipped"] == len(non_blank)
    assert summary["converted"] == len(records) == sum(summary["converted_by_split"].values())


def test_corrupt_image_found_while_writing_is_logged_with_file_line_and_key(tmp_path: Path) -> None:
    export = detection_export(tmp_path / "export", 2)
    reference = _truncated_jpeg(export, "half.jpg")
    export.add_line(detection_line(reference, [GtBox(0, 1, 1, 5, 5)], {0: "cat"}))
    output = tmp_path / "out"
    export.write()

    result = convert("-a", export.manifest, "-i", export.images, "-o", output)

    assert result.exit_code == 0
    (event,) = [event for event in json_events(result.stderr) if event["event"] == "skipped"]
    assert event["code"] == "corrupt_image"
    assert (event["file"], event["line"], event["key"]) == (str(export.manifest), 3, reference)
    (entry,) = load_report(output)["skipped"]
    assert (entry["line"], entry["key"]) == (3, reference)


def test_label_attribute_that_no_line_has_is_a_usage_error(tmp_path: Path) -> None:
    export, _ = _adjustment_export(tmp_path / "export")
    export.write()

    result = convert("-a", export.manifest, "-o", tmp_path / "out", "--label-attribute", "bounding-box")

    assert result.exit_code == 2
    message = flat(result.stderr)
    assert "'bounding-box'" in message
    assert "adjusted-bbox (3 lines)" in message

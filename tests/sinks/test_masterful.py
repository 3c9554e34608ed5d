"""`-f masterful`: Masterful CLI CSVs read back by hand and compared with the inputs exactly.

The reading follows Masterful's documented layout, not the converter's code: label_map.csv
holds `index, label` lines, each records file one image per line with fields joined by
", ", paths relative to the CSV's folder; detection boxes are `class, ymin, xmin, ymax,
xmax` (Masterful's Scale converter's order), classes 0-based except after segmentation's
`0, background`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from builders import convert, flat, load_info, verify
from labelstudio_tasks import annotation, choices, polygon, rectangle, task, write_export, write_stand_in
from PIL import Image

from . import Input, classification_input, detection_input, multilabel_input, segmentation_input

SEPARATOR = ", "
SPLIT_RECORDS = {"train": "records_train.csv", "validation": "records_val.csv", "test": "records_test.csv"}


def read_label_map(output: Path) -> list[tuple[int, str]]:
    text = (output / "label_map.csv").read_text(encoding="utf-8")
    assert text.endswith("\n")
    rows = [line.split(SEPARATOR, 1) for line in text.splitlines()]
    return [(int(index), label) for index, label in rows]


def read_records(output: Path) -> dict[str, list[list[str]]]:
    """Every split's records file as rows of fields, by split; checks the file's framing."""
    info = load_info(output)
    rows: dict[str, list[list[str]]] = {}
    for split, records_file in SPLIT_RECORDS.items():
        if split not in info:
            assert not (output / records_file).exists()
            continue
        assert Path(info[split]["annotations"]) in (Path(records_file), output.absolute() / records_file)
        text = (output / records_file).read_text(encoding="utf-8")
        assert text == "" or text.endswith("\n")
        rows[split] = [line.split(SEPARATOR) for line in text.splitlines()]
        assert len(rows[split]) == info[split]["samples"]
    return rows


def rows_by_image(output: Path, data: Input) -> dict[str, list[str]]:
    """Every row, by its image's file name; each image exactly once, its bytes as they came in."""
    rows: dict[str, list[str]] = {}
    for split_rows in read_records(output).values():
        for row in split_rows:
            image = output / row[0]  # relative to the CSV's folder, the output folder
            assert image.name not in rows
            assert image.read_bytes() == data.expected[image.name].image_bytes
            rows[image.name] = row
    assert sorted(rows) == sorted(data.expected)
    return rows


def test_detection_rows_are_class_ymin_xmin_ymax_xmax_in_whole_pixels(tmp_path: Path) -> None:
    data = detection_input(tmp_path / "export")
    output = tmp_path / "out"

    result = data.convert(output, "-f", "masterful", "-s", "0.6,0.2,0.2")

    assert result.exit_code == 0, result.stderr
    info = load_info(output)
    assert read_label_map(output) == list(enumerate(info["classes"]))  # 0-based, as Masterful's converter writes
    assert info["record_layout"]["task"] == "detection"
    for name, row in rows_by_image(output, data).items():
        expected = data.expected[name]
        assert len(row) == 1 + 5 * len(expected.boxes)
        boxes = [row[start : start + 5] for start in range(1, len(row), 5)]
        for written, (class_name, (x_min, y_min, x_max, y_max)) in zip(boxes, expected.boxes, strict=True):
            truncated = [math.trunc(value) for value in (y_min, x_min, y_max, x_max)]
            assert [int(value) for value in written] == [info["classes"].index(class_name), *truncated]
    assert rows_by_image(output, data)["reaching-out.jpg"][1:] == ["0", "40", "50", "48", "64"]  # clipped first
    assert rows_by_image(output, data)["negative.jpg"] == [f"{_split_folder(output, 'negative.jpg')}/negative.jpg"]
    checked = verify(output)
    assert checked.exit_code == 0, checked.stderr
    assert f"OK: {len(data.expected)} records in the files listed by" in checked.stdout


def _split_folder(output: Path, image_name: str) -> str:
    [image] = output.glob(f"*/images/{image_name}")
    return image.parent.relative_to(output).as_posix()


def test_segmentation_rows_pair_each_image_with_a_single_channel_png_mask(tmp_path: Path) -> None:
    data = segmentation_input(tmp_path / "export")
    output = tmp_path / "out"

    result = data.convert(output, "-f", "masterful", "-s", "0.5")

    assert result.exit_code == 0, result.stderr
    info = load_info(output)
    assert info["classes"] == ["road", "car", "tree"]
    assert read_label_map(output) == [(0, "background"), (1, "road"), (2, "car"), (3, "tree")]
    assert info["record_layout"]["task"] == "semantic_segmentation"
    for name, row in rows_by_image(output, data).items():
        image_path, mask_path = row
        assert Path(mask_path).name == Path(image_path).stem + ".png"
        with Image.open(output / mask_path) as mask:
            assert (mask.format, mask.mode) == ("PNG", "L")
            np.testing.assert_array_equal(np.asarray(mask), data.expected[name].class_mask(info["classes"]))
    assert verify(output).exit_code == 0


@pytest.mark.parametrize("build", [classification_input, multilabel_input], ids=["single-label", "multi-label"])
def test_classification_rows_list_0_based_class_indices(tmp_path: Path, build: Callable[[Path], Input]) -> None:
    data = build(tmp_path / "export")
    output = tmp_path / "out"

    result = data.convert(output, "-f", "masterful", "-s", "0.5")

    assert result.exit_code == 0, result.stderr
    info = load_info(output)
    assert read_label_map(output) == list(enumerate(info["classes"]))
    assert info["record_layout"]["task"] == "classification"
    for name, row in rows_by_image(output, data).items():
        assert row[1:] == [str(info["classes"].index(label)) for label in data.expected[name].labels]
    assert verify(output).exit_code == 0


def test_absolute_paths_name_the_final_location(tmp_path: Path) -> None:
    data = segmentation_input(tmp_path / "export")
    output = tmp_path / "out"

    result = data.convert(output, "-f", "masterful", "--absolute-paths")

    assert result.exit_code == 0, result.stderr
    rows = [row for split_rows in read_records(output).values() for row in split_rows]
    assert rows
    for row in rows:
        for path in map(Path, row):
            assert path.is_absolute() and path.is_relative_to(output.absolute()) and path.is_file()
    assert verify(output).exit_code == 0


def _labelstudio_input(root: Path, results: list[dict[str, Any]]) -> Path:
    write_stand_in(root / "a.jpg", (64, 48))
    return write_export(root / "export.json", [task("/data/upload/1/a.jpg", annotation(results))])


def test_the_task_follows_the_data_and_drops_what_masterful_has_no_place_for(tmp_path: Path) -> None:
    """Boxes beside image labels: detection, labels dropped. A shape beside boxes: segmentation, boxes dropped."""
    size = (64, 48)
    boxes_and_labels = _labelstudio_input(
        tmp_path / "detection", [rectangle(25, 25, 50, 50, ["cat"], size), choices(["indoor"])]
    )
    shape_and_box = _labelstudio_input(
        tmp_path / "segmentation",
        [polygon([(0, 0), (50, 0), (50, 50)], ["cat"], size), rectangle(50, 50, 25, 25, ["dog"], size)],
    )

    for export, task_kind, row_tail in (
        (boxes_and_labels, "detection", ["12", "16", "36", "48"]),  # the cat box; `indoor` has no place
        (shape_and_box, "semantic_segmentation", ["train/masks/a.png"]),  # the dog box has none
    ):
        output = export.parent / "out"
        result = convert("-a", export, "-i", export.parent, "-o", output, "-f", "masterful", "-s", "0")
        assert result.exit_code == 0, result.stderr
        info = load_info(output)
        assert info["record_layout"]["task"] == task_kind
        [row] = [row for rows in read_records(output).values() for row in rows]
        if task_kind == "detection":
            row_tail = [str(info["classes"].index("cat")), *row_tail]
        assert row[1:] == row_tail


def test_instance_masks_are_refused_rather_than_dropped(tmp_path: Path) -> None:
    data = segmentation_input(tmp_path / "export")

    result = data.convert(tmp_path / "out", "-f", "masterful", "--instance-masks")

    assert result.exit_code == 2
    assert "--instance-masks: -f masterful holds classification or detection or segmentation only" in flat(
        result.stderr
    )
    assert not (tmp_path / "out").exists()  # refused before any reading


def test_verify_catches_a_changed_image_and_a_missing_label_map(tmp_path: Path) -> None:
    data = detection_input(tmp_path / "export")
    output = tmp_path / "out"
    assert data.convert(output, "-f", "masterful").exit_code == 0
    image = next(output.glob("train/images/*.jpg"))
    damaged = bytearray(image.read_bytes())
    damaged[100] ^= 0x01
    image.write_bytes(bytes(damaged))
    (output / "label_map.csv").unlink()

    result = verify(output)

    assert result.exit_code == 1
    assert f"ERROR: {image}: sha256 differs from {output / 'train' / 'SHA256SUMS'}" in result.stderr
    assert f"ERROR: {output / 'label_map.csv'}: missing" in result.stderr


def test_a_class_name_with_a_comma_is_refused_before_any_work(tmp_path: Path) -> None:
    """label_map.csv has no quoting: `dog, brown` would read as two fields."""
    data = classification_input(tmp_path / "export")
    classes = tmp_path / "classes.txt"
    classes.write_text("cat\ndog\ndog, brown\n")

    result = data.convert(tmp_path / "out", "-f", "masterful", "--classes", str(classes))

    assert result.exit_code == 2
    assert "['dog, brown'] cannot be written to Masterful's label_map.csv" in flat(result.stderr)
    assert not (tmp_path / "out" / "dataset_info.yaml").exists()

"""Real Ground Truth exports from ../shared/samples, converted end to end and read back with TensorFlow.

The samples are read in place; only the semantic-segmentation export is rebuilt in
tmp_path, because its manifest names the mask by an S3 key that upstream saved as `mask.png`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from builders import convert, load_info, load_report, sha256_hex, verify
from PIL import Image
from readback import OD_API_KEYS, decode_png, read_all

pytestmark = pytest.mark.shared_samples


def _records_by_source_id(output: Path) -> dict[str, tuple[str, dict[str, list[Any]]]]:
    return {
        record["image/source_key"][0].decode(): (split, record)
        for split, records in read_all(output).items()
        for record in records
    }


def test_cat_bbox_export_converts_every_line_exactly(shared_samples: Path, tmp_path: Path) -> None:
    export = shared_samples / "sagemaker_gt" / "cat_bbox"
    manifest_lines = [json.loads(line) for line in (export / "output.manifest").read_text().splitlines()]
    assert len(manifest_lines) == 4
    output = tmp_path / "out"

    # -a is the folder: the output manifest is found, the input manifest (source-ref only) is ignored.
    result = convert("-a", export, "-o", output)

    assert result.exit_code == 0, result.stderr
    info = load_info(output)
    assert info["classes"] == ["Cat"]
    assert info["input"]["label_attribute"] == "cat-ground-truth"
    records = _records_by_source_id(output)
    assert sorted(records) == sorted(line["source-ref"] for line in manifest_lines)
    assert load_report(output)["summary"]["input_samples"] == 4
    assert load_report(output)["summary"]["converted"] == 4

    for line in manifest_lines:
        reference = line["source-ref"]
        image_path = export / "input-images" / reference.rsplit("/", 1)[-1]
        original = image_path.read_bytes()
        _, record = records[reference]
        assert set(OD_API_KEYS) <= set(record)
        assert record["image/encoded"] == [original]
        assert record["image/key/sha256"] == [sha256_hex(original).encode()]
        assert record["image/format"] == [b"jpeg"]
        assert record["image/height"] == [453]
        assert record["image/width"] == [601]
        assert record["image/source_key"] == [reference.encode()]
        assert record["image/filename"] == [image_path.relative_to(export).as_posix().encode()]

        size = line["cat-ground-truth"]["image_size"][0]
        class_map = line["cat-ground-truth-metadata"]["class-map"]
        boxes = line["cat-ground-truth"]["annotations"]
        assert record["image/object/bbox/xmin"] == pytest.approx([b["left"] / size["width"] for b in boxes], abs=1e-6)
        assert record["image/object/bbox/ymin"] == pytest.approx([b["top"] / size["height"] for b in boxes], abs=1e-6)
        assert record["image/object/bbox/xmax"] == pytest.approx(
            [(b["left"] + b["width"]) / size["width"] for b in boxes], abs=1e-6
        )
        assert record["image/object/bbox/ymax"] == pytest.approx(
            [(b["top"] + b["height"]) / size["height"] for b in boxes], abs=1e-6
        )
        assert record["image/object/class/text"] == [class_map[str(b["class_id"])].encode() for b in boxes]
        assert record["image/object/class/label"] == [info["classes"].index("Cat") + 1] * len(boxes)
        assert record["image/object/area"] == pytest.approx([b["width"] * b["height"] for b in boxes], rel=1e-6)
        assert record["image/object/is_crowd"] == [0] * len(boxes)

    # The first line has no objects: a negative image, kept with empty object lists.
    _, negative = records[manifest_lines[0]["source-ref"]]
    assert manifest_lines[0]["cat-ground-truth"]["annotations"] == []
    for key in OD_API_KEYS:
        if key.startswith("image/object/"):
            assert negative[key] == []
    assert verify(output).exit_code == 0


def _pcb_export(shared_samples: Path, root: Path) -> tuple[Path, dict[str, Any]]:
    """The pcb export laid out like its bucket: label/s10.png and the mask at its S3 key."""
    sample = shared_samples / "sagemaker_gt" / "pcb_semseg"
    manifest_text = (sample / "output.manifest").read_text()
    line = json.loads(manifest_text.splitlines()[0])
    assert line["source-ref"] == "s3://pcbtest22/label/s10.png"
    mask_key = line["S10-label3-ref"].removeprefix("s3://pcbtest22/")
    assert mask_key == "label/S10-label3/annotations/consolidated-annotation/output/0_2022-09-09T17:25:31.918770.png"
    (root / "label").mkdir(parents=True)
    shutil.copyfile(sample / "s10.png", root / "label" / "s10.png")
    (root / mask_key).parent.mkdir(parents=True)
    shutil.copyfile(sample / "mask.png", root / mask_key)
    (root / "output.manifest").write_text(manifest_text)
    return root, line


def test_pcb_semantic_segmentation_mask_is_remapped_pixel_for_pixel(shared_samples: Path, tmp_path: Path) -> None:
    export, line = _pcb_export(shared_samples, tmp_path / "export")
    output = tmp_path / "out"

    result = convert("-a", export / "output.manifest", "-o", output, "-s", "0.5")

    assert result.exit_code == 0, result.stderr
    info = load_info(output)
    color_map = line["S10-label3-ref-metadata"]["internal-color-map"]
    gt_names = {int(index): entry["class-name"] for index, entry in color_map.items()}
    assert gt_names[0] == "BACKGROUND"
    # Classes by Ground Truth index, background (index 0) excluded.
    assert info["classes"] == [gt_names[index] for index in sorted(gt_names) if index != 0]

    (record,) = [record for records in read_all(output).values() for record in records]
    original = (export / "label" / "s10.png").read_bytes()
    assert record["image/encoded"] == [original]
    assert record["image/format"] == [b"png"]
    assert record["image/width"] == [1696]
    assert record["image/height"] == [959]
    with Image.open(export / "label" / "s10.png") as image:
        assert image.mode == "RGBA"
        assert image.size == (1696, 959)
    assert record["image/segmentation/class/format"] == [b"png"]

    with Image.open(shared_samples / "sagemaker_gt" / "pcb_semseg" / "mask.png") as mask_image:
        assert mask_image.mode == "P"
        gt_indices = np.asarray(mask_image)
    lookup = np.zeros(max(gt_names) + 1, dtype=np.uint8)
    for index, name in gt_names.items():
        lookup[index] = 0 if index == 0 else info["classes"].index(name) + 1
    expected = lookup[gt_indices]
    written = decode_png(record["image/segmentation/class/encoded"][0])
    assert written.shape == (959, 1696)
    np.testing.assert_array_equal(written, expected)
    # Every class really occurs, so the comparison exercised every mapping entry.
    assert sorted(np.unique(written).tolist()) == [0, 1, 2, 3]

    split = next(split for split in ("train", "validation") if info[split]["samples"] == 1)
    counts = info[split]["class_counts"]
    assert {name: counts[name]["images"] for name in info["classes"]} == dict.fromkeys(info["classes"], 1)
    assert verify(output).exit_code == 0

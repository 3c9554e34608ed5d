"""Datumaro opens our records with its `tf_detection_api` importer, and finds what the source holds.

Datumaro runs in its own venv (tests/reader_envs.py, `.readers/datumaro/`);
tests/readers/datumaro_import.py calls `dm.Dataset.import_from(PATH, "tf_detection_api")`
and prints every item. Its importer needs `label_map.pbtxt` beside the shards (without one
it fails), names a subset after each shard file, reads an object as a Mask instead of a Bbox
when the record has `image/object/mask`, and names an item after `image/filename`. Each
test reads the source annotations itself (the manifest, the COCO JSON decoded with
pycocotools) and compares them with what Datumaro found.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from builders import convert, load_info
from pycocotools import mask as mask_utils
from reader_envs import run_reader

pytestmark = pytest.mark.reader("datumaro")

PROJECT_ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = PROJECT_ROOT / "examples" / "sagemaker_gt"
PIXEL_TOLERANCE = 0.01  # boxes travel as float32 fractions of the image size


def _import(*paths: Path) -> list[dict[str, Any]]:
    imported: list[dict[str, Any]] = run_reader("datumaro", "datumaro_import.py", *paths, timeout=600)
    return imported


def _shard_subsets(info: dict[str, Any], splits: Sequence[str] = ("train", "validation", "test")) -> list[str]:
    """One Datumaro subset per shard file, named by its stem."""
    return sorted(Path(shard["file"]).stem for split in splits if split in info for shard in info[split]["shards"])


def _assert_label_maps(output: Path, info: dict[str, Any]) -> None:
    """The root label map and one beside every split's shards, as Datumaro and the OD API look for them."""
    assert (output / "label_map.pbtxt").is_file()
    for split in ("train", "validation", "test"):
        if split in info and info[split]["shards"]:
            assert (output / info[split]["annotations"] / "label_map.pbtxt").is_file(), split


def _boxes(item: dict[str, Any]) -> list[tuple[str, list[float]]]:
    assert all(annotation["type"] == "bbox" for annotation in item["annotations"]), item
    return [(annotation["label"], annotation["bbox"]) for annotation in item["annotations"]]


def _assert_boxes_equal(found: list[tuple[str, list[float]]], expected: list[tuple[str, list[float]]]) -> None:
    assert [label for label, _ in found] == [label for label, _ in expected]
    for (_, box), (_, wanted) in zip(found, expected, strict=True):
        assert box == pytest.approx(wanted, abs=PIXEL_TOLERANCE)


# ---------------------------------------------------------------------------
# Ground Truth boxes


def _ground_truth_boxes(manifest: Path) -> dict[str, list[tuple[str, list[float]]]]:
    """Per image file stem, the manifest's boxes as (class name, [x, y, w, h] pixels clipped to the image)."""
    expected = {}
    for text in manifest.read_text(encoding="utf-8").splitlines():
        line = json.loads(text)
        size = line["shapes"]["image_size"][0]
        class_map = line["shapes-metadata"]["class-map"]
        boxes = []
        for box in line["shapes"]["annotations"]:
            x0, y0 = max(box["left"], 0), max(box["top"], 0)
            x1 = min(box["left"] + box["width"], size["width"])
            y1 = min(box["top"] + box["height"], size["height"])
            boxes.append((class_map[str(box["class_id"])], [x0, y0, x1 - x0, y1 - y0]))
        expected[Path(line["source-ref"].rsplit("/", 1)[-1]).stem] = boxes
    return expected


def test_datumaro_imports_ground_truth_boxes_with_their_labels(tmp_path: Path) -> None:
    output = tmp_path / "out"
    result = convert("-a", EXAMPLE, "-o", output, "-s", "0.8,0.1,0.1")
    assert result.exit_code == 0, result.stderr
    info = load_info(output)
    _assert_label_maps(output, info)
    expected = _ground_truth_boxes(EXAMPLE / "output.manifest")
    val_folder = output / info["validation"]["annotations"]

    whole, one_split = _import(output, val_folder)

    assert whole["subsets"] == _shard_subsets(info)
    assert len(whole["subsets"]) == 3  # train, validation, test: one shard each
    assert whole["labels"] == info["classes"] == ["circle", "square", "triangle"]
    assert sorted(Path(item["id"]).name for item in whole["items"]) == sorted(expected)
    source_ids = [item["source_id"] for item in whole["items"]]
    assert all(source_id.isdigit() for source_id in source_ids), source_ids  # Model Garden parses it as a number
    assert len(set(source_ids)) == len(source_ids)
    for item in whole["items"]:
        assert item["has_image"] and item["size"] == [240, 320], item["id"]
        _assert_boxes_equal(_boxes(item), expected[Path(item["id"]).name])

    # A split's folder alone: its shards only, the same items as in the whole import.
    assert one_split["subsets"] == _shard_subsets(info, ["validation"])
    assert one_split["labels"] == info["classes"]
    assert one_split["items"] == [item for item in whole["items"] if item["subset"] in one_split["subsets"]]
    assert len(one_split["items"]) == info["validation"]["samples"] > 0


# ---------------------------------------------------------------------------
# COCO: boxes, polygons, an RLE crowd region, and a box without a shape


def _coco_mask(annotation: dict[str, Any], height: int, width: int) -> npt.NDArray[np.uint8]:
    """The object's mask as COCO defines it (pycocotools); a box alone is its painted rectangle (README)."""
    segmentation = annotation.get("segmentation")
    if not segmentation:
        x, y, w, h = annotation["bbox"]
        assert all(float(value).is_integer() for value in (x, y, w, h)), "a box on pixel edges paints exactly"
        mask = np.zeros((height, width), dtype=np.uint8)
        mask[int(y) : int(y + h), int(x) : int(x + w)] = 1
        return mask
    if isinstance(segmentation, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    else:
        rle = mask_utils.frPyObjects(segmentation, height, width)
    decoded: npt.NDArray[np.uint8] = mask_utils.decode(rle)
    return decoded


def _rle_mask(rle: dict[str, Any]) -> npt.NDArray[np.uint8]:
    decoded: npt.NDArray[np.uint8] = mask_utils.decode(mask_utils.frPyObjects(rle, *rle["size"]))
    return decoded


@pytest.mark.shared_samples
def test_datumaro_imports_coco_boxes_and_instance_masks_as_the_source_has_them(
    shared_samples: Path, tmp_path: Path
) -> None:
    coco = shared_samples / "coco" / "datumaro"
    runs = {  # output name -> (annotation subset, converter options)
        "val-boxes": ("val", ()),
        "val-masks": ("val", ("--instance-masks",)),
        "train-masks": ("train", ("--instance-masks",)),  # a box without a segmentation
    }
    documents = {}
    for name, (subset, options) in runs.items():
        annotations = coco / "annotations" / f"instances_{subset}.json"
        documents[name] = json.loads(annotations.read_text(encoding="utf-8"))
        result = convert("-a", annotations, "-i", coco / "images" / subset, "-o", tmp_path / name, "-s", "0", *options)
        assert result.exit_code == 0, result.stderr
        _assert_label_maps(tmp_path / name, load_info(tmp_path / name))

    imported = dict(zip(runs, _import(*(tmp_path / name for name in runs)), strict=True))

    for name, (_, options) in runs.items():
        document, found = documents[name], imported[name]
        info = load_info(tmp_path / name)
        categories = {category["id"]: category["name"] for category in document["categories"]}
        assert found["labels"] == info["classes"] == [categories[key] for key in sorted(categories)]
        assert found["subsets"] == _shard_subsets(info)
        items = {item["source_id"]: item for item in found["items"]}
        assert sorted(items) == sorted(str(image["id"]) for image in document["images"])  # source_id: COCO's id
        for image in document["images"]:
            item = items[str(image["id"])]
            assert item["id"] == Path(image["file_name"]).stem
            assert item["size"] == [image["height"], image["width"]]
            objects = [annotation for annotation in document["annotations"] if annotation["image_id"] == image["id"]]
            assert [annotation["label"] for annotation in item["annotations"]] == [
                categories[annotation["category_id"]] for annotation in objects
            ]
            if not options:
                expected = [
                    (categories[obj["category_id"]], [float(value) for value in obj["bbox"]]) for obj in objects
                ]
                _assert_boxes_equal(_boxes(item), expected)
                continue
            assert [annotation["type"] for annotation in item["annotations"]] == ["mask"] * len(objects)
            for annotation, obj in zip(item["annotations"], objects, strict=True):
                assert annotation["values"] in ([0, 1], [1], [0])
                np.testing.assert_array_equal(
                    _rle_mask(annotation["rle"]),
                    _coco_mask(obj, image["height"], image["width"]),
                    err_msg=f"{name}: annotation {obj['id']}",
                )
    # The sample's crowd RLE really is a mask larger than its declared box: the mask, not the box, came through.
    crowd = next(
        annotation for annotation in imported["val-masks"]["items"][0]["annotations"] if annotation["label"] == "b"
    )
    assert crowd["area"] == 20

"""TFDS loads our TFRecord output in place: `tfds.builder_from_directory(OUT)`, every split, decoded.

Each test converts an export with the CLI, then runs tests/readers/tfds_load.py in the
TFDS reader venv (tests/reader_envs.py). That script knows nothing of our layout: it reads
the splits, shards and features from the dataset_info.json/features.json we wrote, iterates
every split to its end through TFDS's parser and decoders, and prints what it decoded.
Expected values come from the export itself (manifest boxes, COCO masks through
pycocotools, the Ground Truth mask PNG, Label Studio percentages), not from our records.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from builders import PERSON_KEYPOINTS, convert, load_info, person_keypoints_export
from labelstudio_tasks import annotation, choices, keypoint, task, write_export, write_stand_in
from PIL import Image
from pycocotools import mask as coco_mask
from reader_envs import run_reader

from converter.core.materialize import RecordOptions
from converter.core.shard import ShardInfo
from converter.sinks.tfds_metadata import write_tfds_metadata

pytestmark = pytest.mark.reader("tfds")

PROJECT_ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = PROJECT_ROOT / "examples" / "sagemaker_gt"
TFDS_SPLITS = {"train": "train", "validation": "validation", "test": "test"}  # dataset_info.yaml -> TFDS
IMAGE = "image/encoded"
CLASS_MASK = "image/segmentation/class/encoded"
INSTANCE_MASKS = "image/object/mask"
LABELS = "image/object/class/label"
IMAGE_LABELS = "image/class/label"
BOX_KEYS = ("image/object/bbox/xmin", "image/object/bbox/ymin", "image/object/bbox/xmax", "image/object/bbox/ymax")

THUMBNAIL_TOLERANCE = 1.5  # mean over tiles and channels, out of 255: about 0.9 measured, other pictures 1.9+
Loaded = dict[str, Any]
Record = dict[str, Any]


def _load(output: Path) -> Loaded:
    """What TFDS read from `output`, after the checks every converted output must pass."""
    loaded: Loaded = run_reader("tfds", "tfds_load.py", str(output))
    info = load_info(output)
    assert loaded["name"] == "dataset_converter"
    # Every split with records, under TFDS's names, read to its end from the shards we wrote.
    splits = {TFDS_SPLITS[split]: info[split] for split in TFDS_SPLITS if split in info and info[split]["samples"]}
    assert sorted(loaded["splits"]) == sorted(splits)
    for name, split in splits.items():
        read = loaded["splits"][name]
        assert read["count"] == read["num_examples"] == split["samples"] == len(read["records"])
        assert read["shards"] == [shard["file"] for shard in split["shards"]]
    # In place: the shards TFDS read are the only record files in the output (nothing copied or moved).
    on_disk = sorted(path.relative_to(output).as_posix() for path in output.glob("*/*.tfrecord"))
    assert on_disk == sorted(shard for read in loaded["splits"].values() for shard in read["shards"])
    # Exactly the keys every record carries are declared: a declared key a record lacked would fail above.
    assert sorted(loaded["features"]) == sorted(info["record_layout"]["keys"])
    assert loaded["features"][IMAGE] == "Image"
    return loaded


def _records(loaded: Loaded) -> dict[str, tuple[str, Record]]:
    """source_key -> (TFDS split, record), each sample once."""
    records = [(split, record) for split, read in loaded["splits"].items() for record in read["records"]]
    by_key = {record["image/source_key"]: (split, record) for split, record in records}
    assert len(by_key) == len(records)
    return by_key


def _boxes(record: Record) -> list[tuple[float, ...]]:
    return list(zip(*(record[key] for key in BOX_KEYS), strict=True))


def _pixels_sha256(array: npt.NDArray[np.uint8]) -> str:
    """The checksum tfds_load.py prints for a decoded mask: its (height, width) uint8 pixels."""
    return hashlib.sha256(np.ascontiguousarray(array, dtype=np.uint8).tobytes()).hexdigest()


def _thumbnail(pixels: npt.NDArray[np.uint8], grid: int = 16) -> npt.NDArray[np.float64]:
    """tfds_load.py's thumbnail: each channel's mean over a `grid` x `grid` tiling."""
    rows, columns = min(grid, pixels.shape[0]), min(grid, pixels.shape[1])
    return np.array(
        [
            [tile.reshape(-1, tile.shape[-1]).mean(axis=0) for tile in np.array_split(row, columns, 1)]
            for row in np.array_split(pixels.astype(np.float64), rows, 0)
        ]
    )


def _image_distance(record: Record, source: Path) -> float:
    """Mean difference between the thumbnails of TFDS's decoding and PIL's decoding of `source`."""
    with Image.open(source) as image:
        reference = _thumbnail(np.asarray(image.convert("RGB")))
    return float(np.abs(np.array(record[IMAGE]["thumbnail"]) - reference).mean())


def _assert_image(record: Record, source: Path, size: tuple[int, int]) -> None:
    """TFDS decoded the record's image to `size` (width, height) in 3 channels, and it is `source`'s picture."""
    decoded = record[IMAGE]
    assert (decoded["shape"], decoded["dtype"]) == ([size[1], size[0], 3], "uint8")
    # JPEG decoders differ by a unit or two per pixel (TensorFlow's default DCT is not PIL's), so no checksum.
    assert _image_distance(record, source) < THUMBNAIL_TOLERANCE


# ---------------------------------------------------------------------------
# Ground Truth boxes: three splits, several shards


def test_ground_truth_boxes_load_in_every_split_with_their_names(tmp_path: Path) -> None:
    lines = [json.loads(line) for line in (EXAMPLE / "output.manifest").read_text(encoding="utf-8").splitlines()]
    output = tmp_path / "out"

    # 0.02 MiB shards: the train split spans several files, all found through one template.
    result = convert("-a", EXAMPLE, "-o", output, "-s", "0.8,0.1,0.1", "-p", "0.02")

    assert result.exit_code == 0, result.stderr
    info = load_info(output)
    assert len(info["train"]["shards"]) > 1
    loaded = _load(output)
    assert sorted(loaded["splits"]) == ["test", "train", "validation"]
    assert loaded["class_names"][LABELS] == ["background", *info["classes"]]
    records = _records(loaded)
    assert sorted(records) == sorted(line["source-ref"] for line in lines)
    for line in lines:
        split, record = records[line["source-ref"]]
        size = line["shapes"]["image_size"][0]
        width, height = size["width"], size["height"]
        source = EXAMPLE / "images" / line["source-ref"].rsplit("/", 1)[-1]
        _assert_image(record, source, (width, height))
        # The noise backgrounds look alike: the shapes make each picture nearest to its own source.
        distances = {path: _image_distance(record, path) for path in (EXAMPLE / "images").iterdir()}
        assert min(distances, key=distances.__getitem__) == source
        boxes = line["shapes"]["annotations"]
        class_map = line["shapes-metadata"]["class-map"]
        # Class ids decode through the ClassLabel to the export's own names.
        assert record[f"{LABELS}:names"] == record["image/object/class/text"]
        assert record[f"{LABELS}:names"] == [class_map[str(box["class_id"])] for box in boxes]
        expected = [
            (
                box["left"] / width,
                box["top"] / height,
                (box["left"] + box["width"]) / width,
                (box["top"] + box["height"]) / height,
            )
            for box in boxes
        ]
        assert len(_boxes(record)) == len(expected)
        for got, want in zip(_boxes(record), expected, strict=True):
            assert got == pytest.approx(want, abs=1e-6)
        assert record["image/object/is_crowd"] == [0] * len(boxes)
        assert (record["image/height"], record["image/width"]) == (height, width)
        assert split in loaded["splits"]
    negatives = [record for _, record in records.values() if not record[LABELS]]
    assert negatives and all(_boxes(record) == [] for record in negatives)  # empty lists, not a parse error


# ---------------------------------------------------------------------------
# COCO polygons and RLE: class masks and --instance-masks


def _coco_pixels(segmentation: Any, height: int, width: int) -> npt.NDArray[np.uint8]:
    """pycocotools' own rasterization of a polygon list or an uncompressed RLE."""
    rles = coco_mask.frPyObjects(segmentation, height, width)
    merged = coco_mask.merge(rles) if isinstance(rles, list) else rles
    return np.asarray(coco_mask.decode(merged), dtype=np.uint8)


@pytest.mark.shared_samples
def test_coco_polygon_and_crowd_rle_decode_as_class_and_instance_masks(shared_samples: Path, tmp_path: Path) -> None:
    dataset = shared_samples / "coco" / "datumaro"
    annotations_file = dataset / "annotations" / "instances_val.json"
    document = json.loads(annotations_file.read_text(encoding="utf-8"))
    output = tmp_path / "out"

    result = convert("-a", annotations_file, "-i", dataset, "-o", output, "-s", "0", "--instance-masks")

    assert result.exit_code == 0, result.stderr
    info = load_info(output)
    loaded = _load(output)
    assert {CLASS_MASK, INSTANCE_MASKS} <= set(loaded["features"])
    assert loaded["class_names"][LABELS] == ["background", "a", "b", "c"]
    (image,) = document["images"]
    height, width = image["height"], image["width"]
    annotations = document["annotations"]
    categories = {category["id"]: category["name"] for category in document["categories"]}
    split, record = _records(loaded)[image["file_name"]]
    assert split == "train"
    _assert_image(record, dataset / "images" / "val" / image["file_name"], (width, height))
    assert record["image/source_id"] == str(image["id"])
    assert record[f"{LABELS}:names"] == [categories[a["category_id"]] for a in annotations]
    assert record["image/object/is_crowd"] == [a["iscrowd"] for a in annotations] == [0, 1]
    for got, a in zip(_boxes(record), annotations, strict=True):
        x, y, w, h = a["bbox"]
        assert got == pytest.approx((x / width, y / height, (x + w) / width, (y + h) / height), abs=1e-6)

    # Instance masks: one decoded (height, width, 1) 0/1 mask per object, pixel for pixel pycocotools'.
    expected = [_coco_pixels(a["segmentation"], height, width) for a in annotations]
    masks = record[INSTANCE_MASKS]
    assert [mask["shape"] for mask in masks] == [[height, width, 1]] * len(annotations)
    assert [mask["sha256"] for mask in masks] == [_pixels_sha256(pixels) for pixels in expected]
    assert [mask["pixels"] for mask in masks] == [int(pixels.sum()) for pixels in expected] == [2, 20]
    assert record["image/object/area"] == pytest.approx([a["area"] for a in annotations])

    # Class mask: ids painted in annotation order (the crowd RLE of b covers the polygon of a).
    painted = np.zeros((height, width), dtype=np.uint8)
    for a, pixels in zip(annotations, expected, strict=True):
        painted[pixels.astype(bool)] = info["classes"].index(categories[a["category_id"]]) + 1
    class_mask = record[CLASS_MASK]
    assert (class_mask["shape"], class_mask["dtype"]) == ([height, width, 1], "uint8")
    assert class_mask["sha256"] == _pixels_sha256(painted)
    assert class_mask["values"] == [0, 2]
    assert record["image/segmentation/class/format"] == "png"


# ---------------------------------------------------------------------------
# Ground Truth semantic segmentation: an RGBA PNG image and a 4-class mask


def _pcb_export(shared_samples: Path, root: Path) -> tuple[Path, dict[str, Any]]:
    """The pcb export laid out like its bucket: the image at label/s10.png, the mask at its S3 key
    (upstream saved the mask as `mask.png`), so the manifest resolves both."""
    sample = shared_samples / "sagemaker_gt" / "pcb_semseg"
    manifest_text = (sample / "output.manifest").read_text(encoding="utf-8")
    line = json.loads(manifest_text.splitlines()[0])
    mask_key = line["S10-label3-ref"].removeprefix("s3://pcbtest22/")
    (root / "label").mkdir(parents=True)
    shutil.copyfile(sample / "s10.png", root / "label" / "s10.png")
    (root / mask_key).parent.mkdir(parents=True)
    shutil.copyfile(sample / "mask.png", root / mask_key)
    (root / "output.manifest").write_text(manifest_text, encoding="utf-8")
    return root, line


@pytest.mark.shared_samples
def test_ground_truth_segmentation_mask_decodes_pixel_for_pixel(shared_samples: Path, tmp_path: Path) -> None:
    export, line = _pcb_export(shared_samples, tmp_path / "export")
    output = tmp_path / "out"

    result = convert("-a", export / "output.manifest", "-o", output, "-s", "0")

    assert result.exit_code == 0, result.stderr
    info = load_info(output)
    loaded = _load(output)
    assert CLASS_MASK in loaded["features"] and INSTANCE_MASKS not in loaded["features"]
    (record,) = [record for _, record in _records(loaded).values()]
    with Image.open(export / "label" / "s10.png") as image:
        assert image.mode == "RGBA"  # decoded to 3 channels all the same
        rgb = np.asarray(image.convert("RGB"))
    assert record[IMAGE]["shape"] == [959, 1696, 3]
    assert record[IMAGE]["sha256"] == hashlib.sha256(rgb.tobytes()).hexdigest()  # PNG: lossless, exact

    color_map = line["S10-label3-ref-metadata"]["internal-color-map"]
    names = {int(index): entry["class-name"] for index, entry in color_map.items()}
    lookup = np.zeros(max(names) + 1, dtype=np.uint8)
    for index, name in names.items():
        lookup[index] = 0 if index == 0 else info["classes"].index(name) + 1
    with Image.open(shared_samples / "sagemaker_gt" / "pcb_semseg" / "mask.png") as mask_image:
        expected = lookup[np.asarray(mask_image)]
    class_mask = record[CLASS_MASK]
    assert class_mask["shape"] == [959, 1696, 1]
    assert class_mask["sha256"] == _pixels_sha256(expected)
    assert class_mask["values"] == [0, 1, 2, 3]
    assert loaded["class_names"][LABELS][1:] == info["classes"]


# ---------------------------------------------------------------------------
# Label Studio keypoints and image-level classes; names TFDS's own label files could not hold


def test_keypoints_image_classes_and_awkward_class_names_decode(tmp_path: Path) -> None:
    size = (200, 100)
    write_stand_in(tmp_path / "images" / "a.png", size)
    odd = ["background", " spaced ", "two\nlines", "ünï/cødé"]
    results = [keypoint(25, 50, ["eye"], size), choices(odd), keypoint(75.5, 10, ["nose"], size)]
    export = write_export(tmp_path / "export.json", [task("a.png", annotation(results))])
    output = tmp_path / "out"

    result = convert("-a", export, "-i", tmp_path / "images", "-o", output, "-s", "0")

    assert result.exit_code == 0, result.stderr
    info = load_info(output)
    assert sorted(info["classes"]) == sorted([*odd, "eye", "nose"])
    loaded = _load(output)
    assert {"image/keypoint/x", "image/keypoint/y", "image/keypoint/text"} <= set(loaded["features"])
    # A class named `background` keeps its name and id; index 0 (never used) takes another.
    assert loaded["class_names"][IMAGE_LABELS] == ["_background", *info["classes"]]
    assert loaded["class_names"][LABELS] == loaded["class_names"][IMAGE_LABELS]
    (record,) = [record for _, record in _records(loaded).values()]
    assert record[f"{IMAGE_LABELS}:names"] == record["image/class/text"] == odd  # names exact, edges and \n kept
    assert record["image/keypoint/x"] == pytest.approx([0.25, 0.755], abs=1e-6)
    assert record["image/keypoint/y"] == pytest.approx([0.5, 0.1], abs=1e-6)
    assert record["image/keypoint/text"] == ["eye", "nose"]
    _assert_image(record, tmp_path / "images" / "a.png", size)


# ---------------------------------------------------------------------------
# What write_tfds_metadata refuses (no TFDS needed)


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (
            ["tfrecord_train/train-00000-of-00002.tfrecord", "tfrecord_train/train-00002-of-00002.tfrecord"],
            "train shard 1 is 'tfrecord_train/train-00002-of-00002.tfrecord'; TFDS would look for "
            "'tfrecord_train/train-00001-of-00002.tfrecord'",
        ),
        (["tfrecord_train/train-0-of-1.tfrecord"], "is not named PREFIX-NNNNN-of-NNNNN.SUFFIX"),
    ],
)
def test_shards_a_template_cannot_name_are_refused(tmp_path: Path, files: list[str], message: str) -> None:
    shards = [ShardInfo(file, 1, 10, "0" * 64) for file in files]

    with pytest.raises(ValueError, match=re.escape(message)):
        write_tfds_metadata(tmp_path, "dataset_converter", ["cat"], {"train": shards}, RecordOptions())

    assert list(tmp_path.iterdir()) == []


def test_dataset_name_must_be_a_tfds_identifier(tmp_path: Path) -> None:
    shards = {"train": [ShardInfo("tfrecord_train/train-00000-of-00001.tfrecord", 1, 10, "0" * 64)]}

    with pytest.raises(ValueError, match="snake_case"):
        write_tfds_metadata(tmp_path, "My Dataset", ["cat"], shards, RecordOptions())


def test_object_keypoints_decode_per_object(tmp_path: Path) -> None:
    export, keypoints_by_annotation = person_keypoints_export(tmp_path / "coco")
    output = tmp_path / "out"

    result = convert("-a", export.path, "-i", export.image_folder, "-o", output, "-s", "0")

    assert result.exit_code == 0, result.stderr
    loaded = _load(output)
    by_name = {image["file_name"]: image for image in export.images}
    for _, record in _records(loaded).values():
        image = by_name[record["image/source_key"]]
        (person,) = [a for a in export.annotations if a["image_id"] == image["id"] and a["category_id"] == 1]
        points = np.array(keypoints_by_annotation[person["id"]]).reshape(17, 3)
        xs = np.array(record["image/object/keypoint/x"]).reshape(-1, 17)  # [objects, keypoints]
        visibility = np.array(record["image/object/keypoint/visibility"]).reshape(-1, 17)
        assert xs[0] == pytest.approx(points[:, 0] / image["width"], abs=1e-6)
        assert visibility.tolist() == [points[:, 2].astype(int).tolist(), [0] * 17]
        assert record["image/object/keypoint/text"][:17] == PERSON_KEYPOINTS
        assert record["image/object/keypoint/num"] == [int((points[:, 2] > 0).sum()), 0]

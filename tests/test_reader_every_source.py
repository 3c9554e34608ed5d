"""Every source's output in the real readers: TFDS, Model Garden and Datumaro.

The other reader tests cover Ground Truth and COCO; this one covers the sources they do not:
Label Studio (rectangles, rotated rectangles, polygons, brushes; built with
tests/labelstudio_tasks.py, and the real exports in ../shared/samples/label_studio), Scale AI
(boxes, rotated boxes, polygons, points, segmentation tasks; tests/scale_tasks.py), mask folders
and GeoJSON. Each export is small and converted with the CLI, plain and (where it has shapes)
with `--instance-masks`; then each reader runs once over every output (TensorFlow and Model
Garden take seconds to start, and CI has two CPUs): tests/readers/*_each.py run the single-output
reader scripts in one process and report a failure per output, so each output's test fails alone.

- The records (TensorFlow's parsing, tests/readback.py) hold what the export says, computed here
  from the export: labels, boxes, image-level labels, polygon and brush pixels, class masks.
- TFDS: `tfds.builder_from_directory` loads every split to its end; counts equal dataset_info.yaml;
  labels, boxes, class masks and instance masks equal the records' as TensorFlow parses them
  (tests/readback.py).
- Model Garden: `build_inputs` for training and evaluation with each written
  `configs/model_garden_*.yaml`; detection scores its own ground truth at AP 1.0 against the
  written COCO file (masks too, with `--instance-masks`); segmentation and classification
  evaluation labels equal the records'.
- Datumaro: its `tf_detection_api` importer finds every record with its labels; boxes equal the
  source's (computed here from the export) and the records'; masks equal the records' and, for
  polygons and brushes, the source's pixels.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import yaml
from builders import convert, image_pixels, load_info, write_image
from labelstudio_tasks import annotation, brush, mask_to_brush, polygon, rectangle, task, write_export, write_stand_in
from PIL import Image
from pycocotools import mask as coco_mask
from readback import Record, decode_png, read_split
from reader_envs import run_reader
from scale_tasks import box as scale_box
from scale_tasks import (
    image_task,
    mapping_entry,
    point,
    rotated_box,
    rotated_corners,
    segment_task,
    write_index_mask,
    write_json_list,
)
from scale_tasks import polygon as scale_polygon

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels
Points = Sequence[tuple[float, float]]
BoolMask = npt.NDArray[np.bool_]

SPLITS = ("train", "validation", "test")
COCO_SPLITS = {"train": "train", "val": "validation", "test": "test"}  # coco/instances_<name>.json -> split
EXPERIMENTS = {  # written config -> the Model Garden experiment it overrides
    "model_garden_retinanet.yaml": "retinanet_resnetfpn_coco",
    "model_garden_maskrcnn.yaml": "maskrcnn_resnetfpn_coco",
    "model_garden_segmentation.yaml": "seg_deeplabv3_pascal",
    "model_garden_classification.yaml": "resnet_imagenet",
}
BOX_KEYS = ("image/object/bbox/xmin", "image/object/bbox/ymin", "image/object/bbox/xmax", "image/object/bbox/ymax")
LABELS = "image/object/class/label"
CLASS_MASK = "image/segmentation/class/encoded"
INSTANCE_MASKS = "image/object/mask"
TRAIN_BATCHES = 2
IGNORE_LABEL = 255  # Model Garden's segmentation pads labels with it
PIXEL_TOLERANCE = 0.01  # boxes travel as float32 fractions of the image size
SHARED_SAMPLES = Path(__file__).resolve().parent.parent.parent / "shared" / "samples"  # as conftest.py finds them


# ---------------------------------------------------------------------------
# What the source says, computed here from the export (never by the converter's code)


@dataclass(frozen=True)
class Expected:
    """One object as its source defines it: its class, its box, and its pixels where the source has them."""

    label: str
    box: Box
    mask: BoolMask | None = None  # a polygon's or brush's pixels; None for a plain box (painted, not drawn)


@dataclass
class Case:
    """One converted output and what its source holds, by `image/source_key`."""

    name: str
    output: Path
    objects: dict[str, list[Expected]]
    sizes: dict[str, tuple[int, int]]  # (width, height) of each image
    instance_masks: bool = False
    class_masks: dict[str, npt.NDArray[np.uint8]] = field(default_factory=dict)  # where the source is a mask
    image_labels: dict[str, list[str]] = field(default_factory=dict)  # image-level classes; none where absent


def _clipped(xs: Sequence[float], ys: Sequence[float], size: tuple[int, int]) -> Box:
    """The extent of points, clipped to the image (every source clips boxes to the image)."""
    width, height = size
    return (
        min(max(min(xs), 0.0), width),
        min(max(min(ys), 0.0), height),
        min(max(max(xs), 0.0), width),
        min(max(max(ys), 0.0), height),
    )


def _extent(points: Points, size: tuple[int, int]) -> Box:
    return _clipped([x for x, _ in points], [y for _, y in points], size)


def _ring_mask(points: Points, size: tuple[int, int]) -> BoolMask:
    """pycocotools' rasterization of one ring: the pixel convention the converter documents for shapes."""
    width, height = size
    flat = [float(number) for point_ in points for number in point_]
    decoded = coco_mask.decode(coco_mask.frPyObjects([flat], height, width))
    return np.asarray(decoded[..., 0], dtype=bool)


def _mask_extent(mask: BoolMask) -> Box:
    rows, columns = np.nonzero(mask)
    return (float(columns.min()), float(rows.min()), float(columns.max() + 1), float(rows.max() + 1))


def _ls_rotated(x: float, y: float, width: float, height: float, degrees: float) -> list[tuple[float, float]]:
    """Label Studio's rotated rectangle: corners turned `degrees` clockwise on screen about the top-left one."""
    cos, sin = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return [
        (x, y),
        (x + width * cos, y + width * sin),
        (x + width * cos - height * sin, y + width * sin + height * cos),
        (x - height * sin, y + height * cos),
    ]


# ---------------------------------------------------------------------------
# Label Studio, built: rectangles (one rotated), polygons, brushes and a negative image

LS_SIZE = (48, 32)


def _percent(value: float, total: int) -> float:
    return value / total * 100


def _label_studio(root: Path) -> tuple[Path, Path, dict[str, list[Expected]], dict[str, tuple[int, int]]]:
    width, height = LS_SIZE
    images, tasks = root / "images", []
    objects: dict[str, list[Expected]] = {}
    for index in range(8):
        name = f"photo{index}.{'png' if index % 2 else 'jpg'}"
        write_stand_in(images / name, LS_SIZE, seed=index + 1)
        results: list[dict[str, Any]] = []
        expected: list[Expected] = []
        if index != 7:  # the last image is a negative: an annotation with an empty result
            x, y, w, h = 2.0 + index, 3.0, 14.0, 10.0
            results.append(
                rectangle(
                    _percent(x, width), _percent(y, height), _percent(w, width), _percent(h, height), ["cat"], LS_SIZE
                )
            )
            expected.append(Expected("cat", _clipped([x, x + w], [y, y + h], LS_SIZE)))
            ring = [(20.0, 4.0), (40.0 - index, 8.0), (30.0, 26.0 - index)]
            results.append(polygon([(_percent(px, width), _percent(py, height)) for px, py in ring], ["dog"], LS_SIZE))
            expected.append(Expected("dog", _extent(ring, LS_SIZE), _ring_mask(ring, LS_SIZE)))
            region = np.zeros((height, width), dtype=bool)
            region[18 : 28 - index % 3, 4 + index : 16] = True
            region[20, 30 : 34 + index] = True  # a second, thin part of the same brush stroke
            results.append(brush(mask_to_brush(region), ["bird"], LS_SIZE))
            expected.append(Expected("bird", _mask_extent(region), region))
            if index % 3 == 0:  # rotated 30 degrees clockwise about its top-left corner; its tip leaves the image
                x, y, w, h = 36.0, 20.0, 12.0, 6.0
                results.append(
                    rectangle(
                        _percent(x, width),
                        _percent(y, height),
                        _percent(w, width),
                        _percent(h, height),
                        ["cat"],
                        LS_SIZE,
                        rotation=30.0,
                    )
                )
                corners = _ls_rotated(x, y, w, h, 30.0)
                expected.append(Expected("cat", _extent(corners, LS_SIZE), _ring_mask(corners, LS_SIZE)))
        tasks.append(task(name, annotation(results), task_id=index + 1))
        objects[name] = expected
    export = write_export(root / "export.json", tasks)
    return export, images, objects, dict.fromkeys(objects, LS_SIZE)


# ---------------------------------------------------------------------------
# Label Studio, real exports (HumanSignal's test data) over stand-in images of the sizes they declare

REAL_EXPORTS = {
    "polygons_export.json": {"image2": (640, 426)},
    "rotated_rectangles_export.json": {"image1": (597, 768), "image2": (433, 768), "image3": (716, 768)},
}


def _real_label_studio(name: str, images: Path) -> tuple[Path, dict[str, list[Expected]], dict[str, tuple[int, int]]]:
    export = SHARED_SAMPLES / "label_studio" / name
    sizes = {f"/{reference}": size for reference, size in REAL_EXPORTS[name].items()}
    for index, (reference, size) in enumerate(REAL_EXPORTS[name].items()):
        write_stand_in(images / reference, size, seed=index + 1)
    objects: dict[str, list[Expected]] = {}
    for entry in json.loads(export.read_text(encoding="utf-8")):
        (result_list,) = [item["result"] for item in entry["annotations"]]
        expected = []
        for result in result_list:
            size = (result["original_width"], result["original_height"])
            value = result["value"]
            (label,) = value[result["type"]]
            if result["type"] == "polygonlabels":
                ring = [(x / 100 * size[0], y / 100 * size[1]) for x, y in value["points"]]
                expected.append(Expected(label, _extent(ring, size), _ring_mask(ring, size)))
                continue
            assert result["type"] == "rectanglelabels"
            x, y = value["x"] / 100 * size[0], value["y"] / 100 * size[1]
            w, h = value["width"] / 100 * size[0], value["height"] / 100 * size[1]
            corners = _ls_rotated(x, y, w, h, value.get("rotation", 0.0))
            expected.append(Expected(label, _extent(corners, size), _ring_mask(corners, size)))
        objects[entry["data"]["image"]] = expected
    assert sorted(objects) == sorted(sizes)
    return export, objects, sizes


# ---------------------------------------------------------------------------
# Scale AI: boxes, rotated boxes (with and without vertices), polygons, points, segmentation tasks

SCALE_URL = "https://scale-uploads.s3.amazonaws.com/kittens"
SCALE_SIZES = {
    "a.png": (48, 32),
    "b.jpg": (40, 30),
    "c.png": (48, 32),
    "d.jpg": (40, 30),
    "e.png": (48, 32),
    "f.jpg": (40, 30),
    "g.png": (40, 30),
    "h.png": (48, 32),
}


SCALE_IMAGE_LABELS = {"task-1": ["eye"], "task-6": ["road", "sky"], "task-7": ["road", "sky"]}  # sorted


def _scale(root: Path) -> tuple[Path, Path, dict[str, list[Expected]], dict[str, tuple[int, int]]]:
    images, tasks = root / "images", []
    objects: dict[str, list[Expected]] = {}
    sizes: dict[str, tuple[int, int]] = {}
    for index, (name, size) in enumerate(SCALE_SIZES.items()):
        write_image(images / name, image_pixels(*size, seed=index + 1))
        task_id = f"task-{index}"
        sizes[task_id] = size
        if name in ("g.png", "h.png"):  # segmentation tasks: an index mask, no objects
            indices = np.zeros(size[::-1], dtype=np.uint8)
            indices[: size[1] // 3] = 1  # sky
            indices[size[1] // 2 :, 5 : 20 + index] = 2  # road
            write_index_mask(images / "masks" / f"{name}-index.png", indices)
            mapping = {"sky": mapping_entry(1, "#0000ff"), "road": mapping_entry(2, "#777777")}
            tasks.append(segment_task(task_id, f"{SCALE_URL}/{name}", f"{SCALE_URL}/masks/{name}-index.png", mapping))
            objects[task_id] = []
            continue
        left, top = 2.0 + index, 4.0
        annotations = [scale_box("cat", left, top, 15.0, 12.0)]
        expected = [Expected("cat", _clipped([left, left + 15], [top, top + 12], size))]
        leaf = [(25.0, 2.0), (38.0 - index, 6.0), (30.0, 20.0 + index)]
        annotations.append(scale_polygon("leaf", leaf))
        expected.append(Expected("leaf", _extent(leaf, size), _ring_mask(leaf, size)))
        if index % 2 == 0:  # rotated boxes: radians clockwise about the centre; one reaches outside the image
            dog = (20.0, 18.0, 16.0, 8.0, 0.4 + index / 10)
            annotations.append(rotated_box("dog", *dog, vertices=index % 4 == 0))
            corners = rotated_corners(*dog)
            expected.append(Expected("dog", _extent(corners, size), _ring_mask(corners, size)))
        if index == 1:
            annotations.append(point("eye", 5.0, 5.0))  # an image-level label, no object
        tasks.append(
            image_task(
                task_id,
                f"{SCALE_URL}/{name}",
                annotations,
                geometries={"box": ["cat", "dog"], "polygon": ["leaf"], "point": ["eye"]},
            )
        )
        objects[task_id] = expected
    export = write_json_list(root / "export.json", tasks)
    return export, images, objects, sizes


# ---------------------------------------------------------------------------
# GeoJSON: polygons, a polygon with a hole, a MultiPolygon; class ids and names

GEO_SIZES = {
    "a.png": (48, 32),
    "b.png": (40, 30),
    "c.jpg": (48, 32),
    "d.png": (40, 30),
    "e.jpg": (48, 32),
    "f.png": (40, 30),
}


def _closed(points: Points) -> list[list[float]]:
    return [[x, y] for x, y in [*points, points[0]]]


def _geojson(root: Path) -> tuple[Path, Path, dict[str, list[Expected]], dict[str, tuple[int, int]]]:
    features: list[dict[str, Any]] = []
    objects: dict[str, list[Expected]] = {}
    for index, (name, size) in enumerate(GEO_SIZES.items()):
        write_image(root / "images" / name, image_pixels(*size, seed=index + 1))
        square = [(3.0 + index, 3.0), (21.0, 3.0), (21.0, 21.0), (3.0 + index, 21.0)]
        hole = [(8.0 + index, 8.0), (14.0, 8.0), (14.0, 14.0), (8.0 + index, 14.0)]
        field_ = {"type": "Polygon", "coordinates": [_closed(square), _closed(hole)]}
        features.append(
            {
                "type": "Feature",
                "geometry": field_,
                "properties": {"image_filename": name, "class_id": 2, "class_name": "field"},
            }
        )
        expected = [Expected("field", _extent(square, size), _ring_mask(square, size) & ~_ring_mask(hole, size))]
        if index % 2 == 0:
            parts = ([(25.0, 2.0), (35.0, 2.0), (30.0, 12.0 + index)], [(26.0, 18.0), (38.0, 18.0), (38.0, 29.0)])
            multi = {"type": "MultiPolygon", "coordinates": [[_closed(part)] for part in parts]}
            features.append(
                {
                    "type": "Feature",
                    "geometry": multi,
                    "properties": {"image_filename": name, "class_id": 1, "class_name": "tree"},
                }
            )
            union = _ring_mask(parts[0], size) | _ring_mask(parts[1], size)
            expected.append(Expected("tree", _extent([*parts[0], *parts[1]], size), union))
        objects[name] = expected
    path = root / "labels.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}), encoding="utf-8")
    return path, root / "images", objects, dict(GEO_SIZES)


# ---------------------------------------------------------------------------
# Mask folder: images, index masks and a label map; class masks only, no objects

MASK_SIZE = (40, 30)


def _mask_folder(root: Path) -> tuple[Path, dict[str, npt.NDArray[np.uint8]]]:
    (root / "labels.yaml").parent.mkdir(parents=True, exist_ok=True)
    (root / "labels.yaml").write_text(yaml.safe_dump({0: "background", 1: "person", 2: "car"}), encoding="utf-8")
    width, height = MASK_SIZE
    masks: dict[str, npt.NDArray[np.uint8]] = {}
    for index in range(6):
        name = f"street{index}"
        write_image(root / "images" / f"{name}.jpg", image_pixels(width, height, seed=index + 1))
        values = np.zeros((height, width), dtype=np.uint8)
        values[5 : 20 + index, 2 + index : 15] = 1
        if index % 2:
            values[18:28, 20:36] = 2
        (root / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(values, mode="L").save(root / "masks" / f"{name}.png")
        masks[f"{name}.jpg"] = values
    return root, masks


# ---------------------------------------------------------------------------
# Converting every export


def _convert(*arguments: str | Path) -> Path:
    output = Path(arguments[arguments.index("-o") + 1])
    result = convert(*arguments)
    assert result.exit_code == 0, result.stderr
    return output


def _build_cases(root: Path) -> dict[str, Case]:
    """Every export converted; the splits (`-s`, `--seed`) chosen so each split has a few images."""
    cases: dict[str, Case] = {}
    built = {
        "labelstudio": (_label_studio(root / "labelstudio"), ("-s", "0.5,0.25,0.25", "--seed", "4")),
        "scale": (_scale(root / "scale"), ("-s", "0.5", "--seed", "2")),
        "geojson": (_geojson(root / "geojson"), ("-s", "0.5", "--seed", "2")),
    }
    for name, ((export, images, objects, sizes), split) in built.items():
        for suffix, options in (("", ()), ("-masks", ("--instance-masks",))):
            output = _convert("-a", export, "-i", images, "-o", root / f"{name}{suffix}", *split, *options)
            cases[name + suffix] = Case(name + suffix, output, objects, sizes, bool(options))
    cases["scale"].image_labels = cases["scale-masks"].image_labels = SCALE_IMAGE_LABELS

    if SHARED_SAMPLES.is_dir():  # without them, their tests skip (fail in CI) through conftest's shared_samples
        real: list[tuple[str, str, tuple[str, ...]]] = [
            ("rotated_rectangles_export.json", "labelstudio-real-rotated", ("-s", "0.5", "--seed", "3")),
            ("polygons_export.json", "labelstudio-real-polygons-masks", ("-s", "0", "--instance-masks")),  # 1 image
        ]
        for name, case_name, real_options in real:
            real_images = root / case_name / "images"
            export, objects, sizes = _real_label_studio(name, real_images)
            output = _convert("-a", export, "-i", real_images, "-o", root / case_name / "out", *real_options)
            cases[case_name] = Case(case_name, output, objects, sizes, "--instance-masks" in real_options)

    folder, class_masks = _mask_folder(root / "maskfolder")
    output = _convert("-a", folder, "-o", root / "maskfolder-out", "-s", "0.4,0.3,0.3")
    objects = {key: [] for key in class_masks}
    cases["maskfolder"] = Case("maskfolder", output, objects, dict.fromkeys(class_masks, MASK_SIZE), False, class_masks)
    return cases


REAL = pytest.mark.shared_samples
CASES = (
    "labelstudio",
    "labelstudio-masks",
    pytest.param("labelstudio-real-rotated", marks=REAL),
    pytest.param("labelstudio-real-polygons-masks", marks=REAL),
    "scale",
    "scale-masks",
    "geojson",
    "geojson-masks",
    "maskfolder",
)


@pytest.fixture(scope="session")  # the reader tests run grouped by reader (conftest.py): built once
def cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Case]:
    return _build_cases(tmp_path_factory.mktemp("every-source"))


@pytest.fixture
def case(request: pytest.FixtureRequest, cases: dict[str, Case]) -> Case:
    """The parametrized case; one read from ../shared/samples skips (fails in CI) without them."""
    name: str = request.param
    if name not in cases:
        request.getfixturevalue("shared_samples")  # skips or fails saying why
    return cases[name]


# ---------------------------------------------------------------------------
# The records as TensorFlow parses them


@dataclass
class Written:
    """An output's dataset_info.yaml and records, by split in file order and by source_id."""

    info: dict[str, Any]
    splits: dict[str, list[Record]]

    @property
    def by_source_id(self) -> dict[str, Record]:
        records = {r["image/source_id"][0].decode(): r for split in self.splits.values() for r in split}
        assert len(records) == sum(len(split) for split in self.splits.values())
        return records


def _written(output: Path) -> Written:
    info = load_info(output)
    return Written(info, {split: read_split(output, split) for split in SPLITS if split in info})


def _text(record: Record, key: str) -> list[str]:
    return [value.decode() for value in record[key]]


def _record_boxes(record: Record, size: tuple[int, int]) -> list[Box]:
    width, height = size
    return [
        (xmin * width, ymin * height, xmax * width, ymax * height)
        for xmin, ymin, xmax, ymax in zip(*(record[key] for key in BOX_KEYS), strict=True)
    ]


@pytest.mark.parametrize("case", CASES, indirect=True)
def test_the_records_hold_the_source(case: Case) -> None:
    """The converter's own statement of the source, which the readers' results are compared with below."""
    written = _written(case.output)
    records = [record for split in written.splits.values() for record in split]
    assert sorted(_text(record, "image/source_key")[0] for record in records) == sorted(case.objects)
    for record in records:
        key = _text(record, "image/source_key")[0]
        size = case.sizes[key]
        assert (record["image/width"], record["image/height"]) == ([size[0]], [size[1]]), key
        expected = case.objects[key]
        assert _text(record, "image/object/class/text") == [obj.label for obj in expected], key
        for got, want in zip(_record_boxes(record, size), (obj.box for obj in expected), strict=True):
            assert got == pytest.approx(want, abs=PIXEL_TOLERANCE), key
        assert (INSTANCE_MASKS in record) == case.instance_masks
        if case.instance_masks:
            assert len(record[INSTANCE_MASKS]) == len(expected)
            for data, obj in zip(record[INSTANCE_MASKS], expected, strict=True):
                if obj.mask is not None:
                    np.testing.assert_array_equal(decode_png(data).astype(bool), obj.mask, err_msg=key)
        assert sorted(_text(record, "image/class/text")) == case.image_labels.get(key, []), key
        if key in case.class_masks:
            np.testing.assert_array_equal(decode_png(record[CLASS_MASK][0]), case.class_masks[key], err_msg=key)


# ---------------------------------------------------------------------------
# The readers, each run once over every output


def _by_output(entries: list[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    return {entry[key]: entry for entry in entries}


@pytest.fixture(scope="session")
def tfds_loaded(cases: dict[str, Case]) -> dict[str, dict[str, Any]]:
    entries = run_reader("tfds", "tfds_load_each.py", *(case.output for case in cases.values()), timeout=600)
    return _by_output(entries, "out")


def _model_garden_runs(case: Case) -> list[tuple[str, str]]:
    """(experiment, config) for every Model Garden config the output has."""
    configs = sorted(path.name for path in (case.output / "configs").glob("model_garden_*.yaml"))
    assert configs and set(configs) <= set(EXPERIMENTS), configs
    return [(EXPERIMENTS[name], f"configs/{name}") for name in configs]


@pytest.fixture(scope="session")
def model_garden(cases: dict[str, Case]) -> dict[tuple[str, str], dict[str, Any]]:
    arguments = [
        str(value)
        for case in cases.values()
        for experiment, config in _model_garden_runs(case)
        for value in (case.output, experiment, config)
    ]
    entries = run_reader("modelgarden", "modelgarden_inputs_each.py", str(TRAIN_BATCHES), *arguments, timeout=900)
    return {(entry["out"], entry["config"]): entry for entry in entries}


@pytest.fixture(scope="session")
def datumaro(cases: dict[str, Case]) -> dict[str, dict[str, Any]]:
    entries = run_reader("datumaro", "datumaro_import_each.py", *(case.output for case in cases.values()), timeout=600)
    return _by_output(entries, "path")


def _ok(entry: dict[str, Any], key: str) -> Any:
    assert "error" not in entry, f"the reader failed on this output:\n{entry['error']}"
    return entry[key]


# ---------------------------------------------------------------------------
# TFDS


TFDS_SPLITS = {"train": "train", "validation": "validation", "test": "test"}


def _sha256(pixels: npt.NDArray[Any]) -> str:
    return hashlib.sha256(np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()).hexdigest()


@pytest.mark.reader("tfds")
@pytest.mark.parametrize("case", CASES, indirect=True)
def test_tfds_loads_every_split_as_written(case: Case, tfds_loaded: dict[str, dict[str, Any]]) -> None:
    loaded = _ok(tfds_loaded[str(case.output)], "loaded")
    written = _written(case.output)
    info = written.info
    with_records = {TFDS_SPLITS[split]: split for split in SPLITS if split in info and info[split]["samples"]}
    assert sorted(loaded["splits"]) == sorted(with_records)
    assert len(with_records) >= 2 or case.name == "labelstudio-real-polygons-masks"  # one image: one split
    if LABELS in loaded["class_names"]:
        assert loaded["class_names"][LABELS] == ["background", *info["classes"]]
    for name, split in with_records.items():
        read, records = loaded["splits"][name], written.splits[split]
        assert read["count"] == read["num_examples"] == info[split]["samples"] == len(records)
        assert read["shards"] == [shard["file"] for shard in info[split]["shards"]]
        for decoded, record in zip(read["records"], records, strict=True):
            key = _text(record, "image/source_key")[0]
            assert decoded["image/source_key"] == key
            assert decoded["image/source_id"] == _text(record, "image/source_id")[0]
            width, height = case.sizes[key]
            assert decoded["image/encoded"]["shape"] == [height, width, 3]
            assert decoded[LABELS] == record[LABELS]
            assert decoded[f"{LABELS}:names"] == _text(record, "image/object/class/text")
            for box_key in BOX_KEYS:
                assert decoded[box_key] == record[box_key], (key, box_key)
            assert decoded["image/object/area"] == pytest.approx(record["image/object/area"], rel=1e-6)
            assert decoded["image/object/is_crowd"] == record["image/object/is_crowd"]
            assert decoded["image/class/label"] == record["image/class/label"]
            assert decoded["image/class/label:names"] == _text(record, "image/class/text")
            if CLASS_MASK in record:
                mask = decode_png(record[CLASS_MASK][0])
                assert decoded[CLASS_MASK]["shape"] == [height, width, 1]
                assert decoded[CLASS_MASK]["sha256"] == _sha256(mask), key
            else:
                assert CLASS_MASK not in decoded
            if case.instance_masks:
                masks = [decode_png(data) for data in record[INSTANCE_MASKS]]
                assert [m["shape"] for m in decoded[INSTANCE_MASKS]] == [[height, width, 1]] * len(masks)
                assert [m["sha256"] for m in decoded[INSTANCE_MASKS]] == [_sha256(m) for m in masks], key
            else:
                assert INSTANCE_MASKS not in decoded


# ---------------------------------------------------------------------------
# Model Garden


def _evaluated_split(document: dict[str, Any]) -> str:
    """The split a config evaluates: its annotation file's (the train split when there is no validation)."""
    validation = document["task"]["validation_data"]["input_path"]
    for name, split in COCO_SPLITS.items():
        if validation.startswith(f"tfrecord_{name}/"):
            return split
    raise AssertionError(f"unexpected validation input {validation}")


def _assert_detection(case: Case, written: Written, document: dict[str, Any], report: dict[str, Any]) -> None:
    split = _evaluated_split(document)
    annotation_file = document["task"]["annotation_file"]
    assert annotation_file == f"coco/instances_{'val' if split == 'validation' else split}.json"
    coco = json.loads((case.output / annotation_file).read_text(encoding="utf-8"))
    records = written.splits[split]
    assert any(record[LABELS] for record in records), "the evaluated split must hold objects"
    detection = report["detection"]
    assert detection["source_ids"] == [int(record["image/source_id"][0]) for record in records]
    assert sorted(detection["source_ids"]) == sorted(image["id"] for image in coco["images"])
    metrics = detection["metrics"]
    assert (metrics["AP"], metrics["AP50"], metrics["AP75"]) == (1.0, 1.0, 1.0), metrics
    classes = report["validation"]["values"]["groundtruths/classes"]["values"]
    assert set(classes) - {-1.0} == {float(a["category_id"]) for a in coco["annotations"]}
    assert len(coco["annotations"]) == sum(len(record[LABELS]) for record in records)
    if document["task"]["model"].get("include_mask"):
        assert metrics["mask_AP50"] == 1.0, metrics  # cropped to 112 x 112 and pasted back: AP50 survives
        exact = report["instance_masks"]
        assert exact["equal"] == exact["objects"] == len(coco["annotations"]), exact
        # pycocotools divides by tp + fp + eps: one object alone (the real polygon export) scores 1 - 2.2e-16.
        assert exact["mask_AP"] == pytest.approx(1.0, abs=1e-12)


def _assert_segmentation(case: Case, written: Written, document: dict[str, Any], report: dict[str, Any]) -> None:
    classes = written.info["classes"]
    allowed = {float(value) for value in range(len(classes) + 1)} | {float(IGNORE_LABEL)}
    assert set(report["train"]["values"]["masks"]["values"]) <= allowed
    labels = report["validation"]["labels"]
    records = written.splits[_evaluated_split(document)]
    assert len(labels) == len(records) > 0
    for label, record in zip(labels, records, strict=True):
        expected = decode_png(record[CLASS_MASK][0])
        height, width = expected.shape
        label = np.array(label)
        np.testing.assert_array_equal(label[:height, :width], expected)
        assert (label[height:, :] == IGNORE_LABEL).all() and (label[:, width:] == IGNORE_LABEL).all()


def _assert_classification(written: Written, document: dict[str, Any], report: dict[str, Any]) -> None:
    classes = written.info["classes"]
    labels = report["validation"]["labels"]
    records = written.splits[_evaluated_split(document)]
    assert len(labels) == len(records) > 0
    multilabel = document["task"]["validation_data"].get("is_multilabel", False)
    for label, record in zip(labels, records, strict=True):
        ids = sorted(record["image/class/label"])
        if multilabel:
            assert len(label) == len(classes) + 1
            assert [index for index, value in enumerate(label) if value] == ids
        else:
            assert [label] == ids


@pytest.mark.reader("modelgarden")
@pytest.mark.parametrize("case", CASES, indirect=True)
def test_model_garden_builds_training_and_evaluation_inputs(
    case: Case, model_garden: dict[tuple[str, str], dict[str, Any]]
) -> None:
    written = _written(case.output)
    runs = _model_garden_runs(case)
    expected_configs = (
        {"model_garden_segmentation.yaml"}
        if case.name == "maskfolder"
        else {"model_garden_retinanet.yaml", "model_garden_segmentation.yaml"}
    )
    if case.instance_masks:
        expected_configs.add("model_garden_maskrcnn.yaml")
    if case.name.startswith("scale"):  # points and segmentation tasks give image-level labels
        expected_configs.add("model_garden_classification.yaml")
    assert {Path(config).name for _, config in runs} == expected_configs
    for experiment, config in runs:
        document = yaml.safe_load((case.output / config).read_text(encoding="utf-8"))
        assert f"`{experiment}`" in (case.output / config).read_text(encoding="utf-8").splitlines()[0]
        report = _ok(model_garden[(str(case.output), config)], "report")
        assert report["num_classes"] == document["task"]["model"]["num_classes"] == len(written.info["classes"]) + 1
        assert report["train"]["batches"] == TRAIN_BATCHES, config
        train_batch = document["task"]["train_data"]["global_batch_size"]
        assert report["train"]["shapes"]["features"]["shape"][0] == train_batch
        assert report["train"]["shapes"]["features"]["shape"][-1] == 3
        if experiment in ("retinanet_resnetfpn_coco", "maskrcnn_resnetfpn_coco"):
            _assert_detection(case, written, document, report)
        elif experiment == "seg_deeplabv3_pascal":
            _assert_segmentation(case, written, document, report)
        else:
            _assert_classification(written, document, report)


# ---------------------------------------------------------------------------
# Datumaro


def _datumaro_box(annotation_: dict[str, Any]) -> Box:
    x, y, w, h = annotation_["bbox"]
    return (x, y, x + w, y + h)


def _rle_mask(rle: dict[str, Any]) -> BoolMask:
    decoded = coco_mask.decode(coco_mask.frPyObjects(rle, *rle["size"]))
    return np.asarray(decoded, dtype=bool)


@pytest.mark.reader("datumaro")
@pytest.mark.parametrize("case", CASES, indirect=True)
def test_datumaro_imports_the_sources_boxes_and_masks(case: Case, datumaro: dict[str, dict[str, Any]]) -> None:
    found = _ok(datumaro[str(case.output)], "imported")
    written = _written(case.output)
    info = written.info
    assert found["labels"] == info["classes"]
    stems = sorted(Path(shard["file"]).stem for split in SPLITS if split in info for shard in info[split]["shards"])
    assert found["subsets"] == stems  # one subset per shard file
    records = written.by_source_id
    assert sorted(item["source_id"] for item in found["items"]) == sorted(records)
    for item in found["items"]:
        record = records[item["source_id"]]
        key = _text(record, "image/source_key")[0]
        width, height = case.sizes[key]
        assert item["has_image"] and item["size"] == [height, width], key
        assert item["id"] == str(Path(_text(record, "image/filename")[0]).with_suffix(""))
        expected = case.objects[key]
        annotations = item["annotations"]
        assert (
            [a["label"] for a in annotations]
            == [obj.label for obj in expected]
            == _text(record, "image/object/class/text")
        ), key
        if not case.instance_masks:
            assert [a["type"] for a in annotations] == ["bbox"] * len(expected), key
            for annotation_, obj, box in zip(
                annotations, expected, _record_boxes(record, (width, height)), strict=True
            ):
                assert _datumaro_box(annotation_) == pytest.approx(obj.box, abs=PIXEL_TOLERANCE), key  # the source's
                assert _datumaro_box(annotation_) == pytest.approx(box, abs=PIXEL_TOLERANCE), key  # the record's
            continue
        assert [a["type"] for a in annotations] == ["mask"] * len(expected), key
        for annotation_, obj, data in zip(annotations, expected, record[INSTANCE_MASKS], strict=True):
            pixels = _rle_mask(annotation_["rle"])
            np.testing.assert_array_equal(pixels, decode_png(data).astype(bool), err_msg=key)  # the record's
            if obj.mask is not None:
                np.testing.assert_array_equal(pixels, obj.mask, err_msg=key)  # the source's pixels
            else:  # a plain box is painted: its pixels lie within the source's box
                x0, y0, x1, y1 = _datumaro_box(annotation_)
                assert obj.box[0] - 1 < x0 and obj.box[1] - 1 < y0, key
                assert x1 < obj.box[2] + 1 and y1 < obj.box[3] + 1, key

"""Reading a converted dataset back, one record at a time, as `WrittenRecord`s.

`dataset-converter stats OUT` and the previews drawn at conversion time look at what
training will read, so they read the dataset itself rather than trusting the export:
every output format (`tfrecord` in both layouts, `masterful`, `json`, `masks`) is read
back into the one view of `converter.stats.records`. Class ids count from 1 there,
whatever the format's own offset (`record_layout.class_id_offset`), and class names come
from dataset_info.yaml's `classes`, the dataset's own label map. A record carries what its
format stores and nothing more: polygons only from `json` (the one format that keeps
them; its RLE shapes have no place in the view), areas from `json` and the Object
Detection API layout, keys from the formats that store the sample key (else the image's
path in its split folder, or ModelPack's `image_name`).

Records stream in the order they are stored: TFRecord shards in dataset_info.yaml's
order, record by record; Masterful's records file line by line; `json` and `masks`, which
store one file per image and so have no record order of their own, in path order as the
split's SHA256SUMS lists them (sorted), read line by line, so no listing of a split's
folder is ever held. Memory stays that of one record however large the split.

TFRecords are read with the converter's own reader and strict Example decoder, never
TensorFlow: stats must work in the small image, which has none. Paths a dataset names
are read inside the folder given, also where an `--absolute-paths` run wrote absolute
ones (their last parts are the dataset's fixed layout), so a moved dataset still reads.
A record that cannot be read stops the stream with a `UsageError` naming the file (and
record or line) and pointing at `dataset-converter verify`, which says what is wrong.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar, get_args

import yaml

from converter.core.classes import FIRST_CLASS_ID
from converter.core.commit import DATASET_INFO
from converter.core.images import probe_image
from converter.core.sample import Polygon
from converter.core.split import SPLIT_NAMES, SplitName
from converter.errors import SampleError, UsageError, quoted
from converter.formats.example_proto import DecodedFeatures, decode_example
from converter.formats.tfrecord import BytesFeature, Feature, FloatFeature, Int64Feature, read_records
from converter.sinks._files import CHECKSUMS_FILE, IMAGES_FOLDER, MASK_SUFFIX, MASKS_FOLDER, SPLIT_FOLDERS
from converter.sinks.json_files import ANNOTATION_SUFFIX, ANNOTATIONS_FOLDER
from converter.sinks.masterful import FIELD_SEPARATOR, RECORDS_FILES, MasterfulTask
from converter.sinks.tfrecord import (
    MODELPACK_BBOXES,
    MODELPACK_HEIGHT,
    MODELPACK_IMAGE,
    MODELPACK_IMAGE_NAME,
    MODELPACK_OBJECTS,
    MODELPACK_VALUES_PER_BOX,
    MODELPACK_WIDTH,
)
from converter.sinks.tfrecord_keys import (
    BBOX_XMAX,
    BBOX_XMIN,
    BBOX_YMAX,
    BBOX_YMIN,
    IMAGE_CLASS_LABEL,
    IMAGE_ENCODED,
    IMAGE_HEIGHT,
    IMAGE_SOURCE_KEY,
    IMAGE_WIDTH,
    KEYPOINT_TEXT,
    KEYPOINT_X,
    KEYPOINT_Y,
    LAYOUT_NAMES,
    MODELPACK,
    OBJECT_AREA,
    OBJECT_CLASS_LABEL,
    OBJECT_DETECTION_API,
    OBJECT_KEYPOINT_TEXT,
    OBJECT_KEYPOINT_VISIBILITY,
    OBJECT_KEYPOINT_X,
    OBJECT_KEYPOINT_Y,
    OBJECT_MASK,
    SEGMENTATION_ENCODED,
)
from converter.stats.records import BoxXYXY, WrittenKeypoint, WrittenObject, WrittenRecord

_VISIBLE = 2  # COCO's visibility of a point a format stores without one (free-standing keypoints)
_SHARD_DEPTH = 2  # `tfrecord_train/train-00000-of-00001.tfrecord`: split folder, file
_SPLIT_FILE_DEPTH = 2  # `images/a.jpg`, `masks/a.png`, from a split folder
_INSTANCE_MASK_DEPTH = 3  # `instance_masks/a/0.png`, from a split folder
_DATASET_FILE_DEPTH = 3  # `train/images/a.jpg`, from the dataset folder
_MASTERFUL_SEGMENTATION_FIELDS = 2  # image path, mask path
_MASTERFUL_BOX_FIELDS = 5  # class, ymin, xmin, ymax, xmax

# What a damaged or foreign dataset raises while one record is read: bad framing or protobuf
# (ValueError subclasses), missing or mistyped fields, unreadable files, images that do not probe.
_UNREADABLE = (ValueError, KeyError, TypeError, IndexError, OSError, SampleError)

_Kind = TypeVar("_Kind", BytesFeature, FloatFeature, Int64Feature)
_RecordReader = Callable[["_Dataset", SplitName, bool], Iterator[WrittenRecord]]


@dataclass(frozen=True)
class _Dataset:
    """A dataset folder and what its dataset_info.yaml says about reading it."""

    root: Path
    info: Mapping[str, Any]
    classes: tuple[str, ...]
    layout: Mapping[str, Any]
    class_id_offset: int

    def class_of(self, stored: Any) -> tuple[int, str]:
        """`(class id from 1, class name)` of a class as the format stores it (with its own offset)."""
        class_id = _integer(stored) - self.class_id_offset + FIRST_CLASS_ID
        if not FIRST_CLASS_ID <= class_id < FIRST_CLASS_ID + len(self.classes):
            raise ValueError(
                f"class {stored} is none of dataset_info.yaml's {len(self.classes)} classes "
                f"(class_id_offset {self.class_id_offset})"
            )
        return class_id, self.classes[class_id - FIRST_CLASS_ID]

    def class_named(self, name: str) -> int:
        """The id (from 1) of a class a record names by text (free-standing keypoints)."""
        try:
            return self.classes.index(name) + FIRST_CLASS_ID
        except ValueError:
            raise ValueError(f"class {quoted(name)} is not in dataset_info.yaml's classes") from None


def dataset_splits(dataset: Path) -> list[str]:
    """The splits dataset_info.yaml lists, in the order train, validation, test."""
    return list(_present_splits(_load(dataset).info))


def read_written_records(
    dataset: Path, split: str, *, with_images: bool = True, limit: int | None = None
) -> Iterator[WrittenRecord]:
    """The records of one split of `dataset`, streamed in stored order (see the module docstring).

    dataset_info.yaml and `split` are checked now, before the first record, so a wrong
    folder or split is a `UsageError` at the call; a record that cannot be read raises one
    when it is reached. `image_bytes` is None unless `with_images`; Masterful and masks
    datasets read each image all the same, since the image's header is where their
    record's size is (Masterful's boxes are in pixels). `limit` stops after that many.
    """
    loaded = _load(dataset)
    present = _present_splits(loaded.info)
    if split not in present:
        raise UsageError(
            f"{dataset} has no {quoted(split)} split; its dataset_info.yaml lists {', '.join(present) or 'none'}"
        )
    records = _reader(loaded)(loaded, present[present.index(split)], with_images)
    return records if limit is None else islice(records, limit)


def _present_splits(info: Mapping[str, Any]) -> tuple[SplitName, ...]:
    return tuple(name for name in SPLIT_NAMES if isinstance(info.get(name), Mapping))


def _load(dataset: Path) -> _Dataset:
    """dataset_info.yaml, checked for what reading needs; a `UsageError` saying what to do where it cannot be."""
    path = dataset / DATASET_INFO
    not_a_dataset = (
        f"{dataset} is not a converted dataset: pass the folder a `dataset-converter convert` run wrote "
        f"(its -o), which holds {DATASET_INFO}"
    )
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{not_a_dataset}; there is none") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"cannot read {path} ({error}); {not_a_dataset}") from None
    try:
        info = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise UsageError(f"{path} is not valid YAML ({str(error).splitlines()[0]}); {not_a_dataset}") from None
    layout = info.get("record_layout") if isinstance(info, Mapping) else None
    classes = info.get("classes") if isinstance(info, Mapping) else None
    offset = layout.get("class_id_offset") if isinstance(layout, Mapping) else None
    if (
        not isinstance(info, Mapping)
        or not isinstance(layout, Mapping)
        or not isinstance(classes, list)
        or not all(isinstance(name, str) for name in classes)
        or not isinstance(offset, int)
    ):
        raise UsageError(
            f"{path} lacks the `classes` and `record_layout` (with its `class_id_offset`) this converter writes; "
            f"{not_a_dataset}, and convert again with this version if it is from an older one"
        )
    return _Dataset(dataset, info, tuple(classes), layout, offset)


def _reader(dataset: _Dataset) -> _RecordReader:
    """The reader of the dataset's format (and TFRecord layout)."""
    output_format = dataset.layout.get("format")
    if output_format == "tfrecord":
        layout = dataset.layout.get("layout")
        if layout == LAYOUT_NAMES[OBJECT_DETECTION_API]:
            return _tfrecord_reader(_od_api_record)
        if layout == LAYOUT_NAMES[MODELPACK]:
            return _tfrecord_reader(_modelpack_record)
        raise UsageError(f"{dataset.root}: record layout {quoted(layout)} is not one this converter reads")
    readers: dict[str, _RecordReader] = {
        "json": _json_records,
        "masterful": _masterful_records,
        "masks": _masks_records,
    }
    if output_format not in readers:
        raise UsageError(
            f"{dataset.root}: output format {quoted(output_format)} in {DATASET_INFO} is not one this converter reads "
            f"({', '.join(['tfrecord', *readers])})"
        )
    if output_format == "masterful" and dataset.layout.get("task") not in get_args(MasterfulTask):
        raise UsageError(f"{dataset.root}: Masterful task {quoted(dataset.layout.get('task'))} is not one it writes")
    return readers[str(output_format)]


# ---------------------------------------------------------------------------
# Files


@contextmanager
def _reading(where: object, dataset: Path) -> Iterator[None]:
    """Turn what a damaged dataset raises while `where` is read into one `UsageError` that names it."""
    try:
        yield
    except _UNREADABLE as error:
        raise UsageError(
            f"{where}: cannot be read as this converter writes it ({type(error).__name__}: {quoted(str(error), 200)}); "
            f"`dataset-converter verify {dataset}` checks the dataset"
        ) from None


def _inside(base: Path, reference: Any, depth: int) -> Path:
    """A file a dataset names, inside `base`: a relative reference as it is, an absolute one
    (`--absolute-paths`) by its last `depth` parts, which the format's layout fixes."""
    if not isinstance(reference, str) or not reference:
        raise TypeError(f"file reference {quoted(reference)} is not a path")
    path = PurePosixPath(reference)
    parts = path.parts[-depth:] if path.is_absolute() else path.parts
    if ".." in parts:
        raise ValueError(f"file reference {quoted(reference)} leaves the dataset folder")
    return base.joinpath(*parts)


def _lines(path: Path, dataset: Path) -> Iterator[tuple[str, str]]:
    """`(where, line)` for each line of a text file, one at a time; a read error names the file and line."""
    with _reading(path, dataset):
        stream = path.open(encoding="utf-8")
    with stream:
        number = 1
        while True:
            where = f"{path}:{number}"
            with _reading(where, dataset):
                line = stream.readline()
            if not line:
                return
            yield where, line.rstrip("\n")
            number += 1


def _listed_files(dataset: _Dataset, split: SplitName, folder: str, suffix: str) -> Iterator[str]:
    """The path (relative to the dataset) of each file directly in `<split folder>/<folder>` whose name
    ends in `suffix`, in the split's SHA256SUMS order (sorted paths): the formats with a file per image keep
    no other record order, and the manifest streams where a folder listing would have to be held and sorted."""
    split_folder = SPLIT_FOLDERS[split]
    prefix = f"{split_folder}/{folder}/"
    for where, line in _lines(dataset.root / split_folder / CHECKSUMS_FILE, dataset.root):
        with _reading(where, dataset.root):
            _, relative = line.split("  ", 1)  # GNU sha256sum: digest, two spaces, path
        name = relative.removeprefix(prefix)
        if relative.startswith(prefix) and "/" not in name and name.endswith(suffix):
            yield relative


def _size(width: Any, height: Any) -> tuple[int, int]:
    if not all(isinstance(side, int) and not isinstance(side, bool) and side > 0 for side in (width, height)):
        raise ValueError(f"image size {quoted(width)} x {quoted(height)} is not two positive integers")
    return width, height


# ---------------------------------------------------------------------------
# TFRecord


def _tfrecord_reader(parse: Callable[[_Dataset, DecodedFeatures, bool], WrittenRecord]) -> _RecordReader:
    def records(dataset: _Dataset, split: SplitName, with_images: bool) -> Iterator[WrittenRecord]:
        with _reading(f"{dataset.root / DATASET_INFO} ({split}'s shards)", dataset.root):
            shards = [_inside(dataset.root, shard["file"], _SHARD_DEPTH) for shard in dataset.info[split]["shards"]]
        for path in shards:
            with _reading(path, dataset.root):
                stream = path.open("rb")
            with stream:
                payloads = read_records(stream)
                index = 0
                while True:
                    with _reading(f"{path} record {index}", dataset.root):
                        payload = next(payloads, None)
                        if payload is None:
                            break
                        record = parse(dataset, decode_example(payload), with_images)
                    yield record
                    index += 1

    return records


def _values(features: DecodedFeatures, key: str, kind: type[_Kind]) -> _Kind:
    """The values of `key`, of `kind`; an absent key or a Feature of no kind reads as an empty list, as in protobuf."""
    feature: Feature | None = features.get(key)
    if feature is None:
        return kind()
    if not isinstance(feature, kind):
        raise TypeError(f"{key} holds a {type(feature).__name__}, not a {kind.__name__}")
    return feature


def _one(features: DecodedFeatures, key: str, kind: type[_Kind]) -> Any:
    values = _values(features, key, kind)
    if len(values) != 1:
        raise ValueError(f"{key} holds {len(values)} values, not one")
    return values[0]


def _text(value: bytes) -> str:
    return value.decode("utf-8")


def _od_api_record(dataset: _Dataset, features: DecodedFeatures, with_images: bool) -> WrittenRecord:
    """One Object Detection API record: every key it holds, masks and keypoints where the run wrote them."""
    edges = [_values(features, key, FloatFeature) for key in (BBOX_XMIN, BBOX_YMIN, BBOX_XMAX, BBOX_YMAX)]
    labels = _values(features, OBJECT_CLASS_LABEL, Int64Feature)
    count = len(labels)
    areas = _values(features, OBJECT_AREA, FloatFeature)
    masks = _values(features, OBJECT_MASK, BytesFeature)
    points = _object_keypoints(features, count)
    for key, values in zip((BBOX_XMIN, BBOX_YMIN, BBOX_XMAX, BBOX_YMAX, OBJECT_AREA), (*edges, areas), strict=True):
        if len(values) != count:
            raise ValueError(f"{count} class labels but {len(values)} {key} values")
    if masks and len(masks) != count:
        raise ValueError(f"{count} class labels but {len(masks)} {OBJECT_MASK} values")
    objects = []
    for index, (label, *box) in enumerate(zip(labels, *edges, strict=True)):
        class_id, class_name = dataset.class_of(label)
        objects.append(
            WrittenObject(
                class_id,
                class_name,
                _box(box),
                mask_png=(masks[index] or None) if masks else None,  # b"": an object without one
                area=areas[index],
                keypoints=points[index],
            )
        )
    xs, ys = _values(features, KEYPOINT_X, FloatFeature), _values(features, KEYPOINT_Y, FloatFeature)
    keypoints = []
    for x, y, text in zip(xs, ys, _values(features, KEYPOINT_TEXT, BytesFeature), strict=True):
        name = _text(text)
        keypoints.append((dataset.class_named(name), name, WrittenKeypoint(name, x, y, _VISIBLE)))
    segmentation = _values(features, SEGMENTATION_ENCODED, BytesFeature)
    if len(segmentation) > 1:
        raise ValueError(f"{SEGMENTATION_ENCODED} holds {len(segmentation)} masks, not one")
    width, height = _size(_one(features, IMAGE_WIDTH, Int64Feature), _one(features, IMAGE_HEIGHT, Int64Feature))
    return WrittenRecord(
        key=_text(_one(features, IMAGE_SOURCE_KEY, BytesFeature)),
        width=width,
        height=height,
        objects=tuple(objects),
        image_labels=tuple(dataset.class_of(label) for label in _values(features, IMAGE_CLASS_LABEL, Int64Feature)),
        keypoints=tuple(keypoints),
        class_mask_png=segmentation[0] if segmentation else None,
        image_bytes=_one(features, IMAGE_ENCODED, BytesFeature) if with_images else None,
    )


def _box(edges: Sequence[float]) -> BoxXYXY:
    x_min, y_min, x_max, y_max = edges
    return x_min, y_min, x_max, y_max


def _object_keypoints(features: DecodedFeatures, objects: int) -> list[tuple[WrittenKeypoint, ...]]:
    """Each object's keypoints, without the padding (unnamed, unlabelled points) that gives every object
    of the record the same count; a named point that is not labelled (visibility 0) is the export's and stays."""
    xs = _values(features, OBJECT_KEYPOINT_X, FloatFeature)
    ys = _values(features, OBJECT_KEYPOINT_Y, FloatFeature)
    visibilities = _values(features, OBJECT_KEYPOINT_VISIBILITY, Int64Feature)
    names = _values(features, OBJECT_KEYPOINT_TEXT, BytesFeature)
    if not objects or not xs:
        return [()] * objects
    per_object, rest = divmod(len(xs), objects)
    if rest or not len(xs) == len(ys) == len(visibilities) == len(names):
        raise ValueError(f"{len(xs)} object keypoints cannot be shared evenly by {objects} objects")
    points = [
        WrittenKeypoint(_text(name), x, y, visibility)
        for x, y, visibility, name in zip(xs, ys, visibilities, names, strict=True)
    ]
    return [
        tuple(point for point in points[start : start + per_object] if point.name or point.visibility)
        for start in range(0, len(points), per_object)
    ]


def _modelpack_record(dataset: _Dataset, features: DecodedFeatures, with_images: bool) -> WrittenRecord:
    """One ModelPack record: boxes only, centre form turned back into corners (clamped: float32 rounding may
    put an edge a hair outside [0, 1]); the key is `image_name`, the only name the layout stores."""
    indices = _values(features, MODELPACK_OBJECTS, Int64Feature)
    bboxes = _values(features, MODELPACK_BBOXES, FloatFeature)
    if len(bboxes) != MODELPACK_VALUES_PER_BOX * len(indices):
        raise ValueError(f"{len(indices)} objects but {len(bboxes)} {MODELPACK_BBOXES} values")
    objects = []
    for position, index in enumerate(indices):
        x_center, y_center, box_width, box_height = bboxes[
            position * MODELPACK_VALUES_PER_BOX : (position + 1) * MODELPACK_VALUES_PER_BOX
        ]
        corners = (
            x_center - box_width / 2,
            y_center - box_height / 2,
            x_center + box_width / 2,
            y_center + box_height / 2,
        )
        objects.append(WrittenObject(*dataset.class_of(index), _box([min(max(edge, 0.0), 1.0) for edge in corners])))
    width, height = _size(_one(features, MODELPACK_WIDTH, Int64Feature), _one(features, MODELPACK_HEIGHT, Int64Feature))
    return WrittenRecord(
        key=_text(_one(features, MODELPACK_IMAGE_NAME, BytesFeature)),
        width=width,
        height=height,
        objects=tuple(objects),
        image_bytes=_one(features, MODELPACK_IMAGE, BytesFeature) if with_images else None,
    )


# ---------------------------------------------------------------------------
# json


def _json_records(dataset: _Dataset, split: SplitName, with_images: bool) -> Iterator[WrittenRecord]:
    split_folder = dataset.root / SPLIT_FOLDERS[split]
    for relative in _listed_files(dataset, split, ANNOTATIONS_FOLDER, ANNOTATION_SUFFIX):
        path = dataset.root / relative
        with _reading(path, dataset.root):
            record = _json_record(dataset, split_folder, json.loads(path.read_bytes()), with_images)
        yield record


def _json_record(
    dataset: _Dataset, split_folder: Path, document: Mapping[str, Any], with_images: bool
) -> WrittenRecord:
    """One annotation file; its file references are relative to the split folder."""
    image = document["image"]
    width, height = _size(image["width"], image["height"])
    keypoints = []
    for point in document["keypoints"]:
        class_id, class_name = dataset.class_of(point["class_id"])
        position = WrittenKeypoint(class_name, _number(point["x_normalized"]), _number(point["y_normalized"]), _VISIBLE)
        keypoints.append((class_id, class_name, position))
    mask = document["mask"]
    return WrittenRecord(
        key=_string(image["source_id"]),
        width=width,
        height=height,
        objects=tuple(_json_object(dataset, split_folder, obj) for obj in document["objects"]),
        image_labels=tuple(dataset.class_of(label["class_id"]) for label in document["image_labels"]),
        keypoints=tuple(keypoints),
        class_mask_png=_inside(split_folder, mask, _SPLIT_FILE_DEPTH).read_bytes() if mask is not None else None,
        image_bytes=_inside(split_folder, image["file"], _SPLIT_FILE_DEPTH).read_bytes() if with_images else None,
    )


def _json_object(dataset: _Dataset, split_folder: Path, obj: Mapping[str, Any]) -> WrittenObject:
    mask = obj["mask"]
    area = obj["area_pixels"]
    return WrittenObject(
        *dataset.class_of(obj["class_id"]),
        _box([_number(edge) for edge in obj["bbox_normalized_xyxy"]]),
        polygons=tuple(
            Polygon(_flat(polygon["exterior"]), tuple(_flat(hole) for hole in polygon["holes"]))
            for polygon in obj["polygons_pixels"]
        ),
        mask_png=_inside(split_folder, mask, _INSTANCE_MASK_DEPTH).read_bytes() if mask is not None else None,
        area=_number(area) if area is not None else None,
        keypoints=tuple(
            WrittenKeypoint(
                _string(point["name"]),
                _number(point["x_normalized"]),
                _number(point["y_normalized"]),
                _integer(point["visibility"]),
            )
            for point in obj["keypoints"]
        ),
    )


def _number(value: Any) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise TypeError(f"{quoted(value)} is not a number")
    return float(value)


def _integer(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{quoted(value)} is not an integer")
    return value


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{quoted(value)} is not text")
    return value


def _flat(ring: Sequence[Sequence[Any]]) -> tuple[float, ...]:
    """`[[x0, y0], [x1, y1], ...]` -> `(x0, y0, x1, y1, ...)`, the ring form of `Polygon`."""
    return tuple(_number(value) for point in ring for value in _pair(point))


def _pair(point: Sequence[Any]) -> tuple[Any, Any]:
    x, y = point
    return x, y


# ---------------------------------------------------------------------------
# masterful and masks: sizes from the images themselves


def _masterful_records(dataset: _Dataset, split: SplitName, with_images: bool) -> Iterator[WrittenRecord]:
    """Masterful's records file line by line: one task per dataset (`record_layout.task`), paths relative
    to the dataset folder; detection boxes are displayed pixels, normalized here by the image's own size."""
    task: MasterfulTask = dataset.layout["task"]
    for where, line in _lines(dataset.root / RECORDS_FILES[split], dataset.root):
        if not line.strip():
            continue
        with _reading(where, dataset.root):
            record = _masterful_record(dataset, task, line.split(FIELD_SEPARATOR), with_images)
        yield record


def _masterful_record(
    dataset: _Dataset, task: MasterfulTask, fields: Sequence[str], with_images: bool
) -> WrittenRecord:
    image_path = _inside(dataset.root, fields[0], _DATASET_FILE_DEPTH)
    image_bytes = image_path.read_bytes()
    image = probe_image(image_bytes)
    objects: list[WrittenObject] = []
    image_labels: list[tuple[int, str]] = []
    mask = None
    if task == "semantic_segmentation":
        if len(fields) != _MASTERFUL_SEGMENTATION_FIELDS:
            raise ValueError(f"a segmentation line holds an image and a mask path, not {len(fields)} fields")
        mask = _inside(dataset.root, fields[1], _DATASET_FILE_DEPTH).read_bytes()
    elif task == "detection":
        values = [int(field) for field in fields[1:]]
        if len(values) % _MASTERFUL_BOX_FIELDS:
            raise ValueError(f"{len(values)} numbers after the path are not boxes of class, ymin, xmin, ymax, xmax")
        for start in range(0, len(values), _MASTERFUL_BOX_FIELDS):
            index, y_min, x_min, y_max, x_max = values[start : start + _MASTERFUL_BOX_FIELDS]
            box = (x_min / image.width, y_min / image.height, x_max / image.width, y_max / image.height)
            objects.append(WrittenObject(*dataset.class_of(index), box))
    else:  # classification (`_reader` checked the task)
        image_labels = [dataset.class_of(int(field)) for field in fields[1:]]
    return WrittenRecord(
        key=_split_relative(image_path),
        width=image.width,
        height=image.height,
        objects=tuple(objects),
        image_labels=tuple(image_labels),
        class_mask_png=mask,
        image_bytes=image_bytes if with_images else None,
    )


def _split_relative(image_path: Path) -> str:
    """`images/a.jpg`: the key of a record whose format stores no sample key, its image's path in the split."""
    return PurePosixPath(*image_path.parts[-_SPLIT_FILE_DEPTH:]).as_posix()


def _masks_records(dataset: _Dataset, split: SplitName, with_images: bool) -> Iterator[WrittenRecord]:
    """Each image and its same-stem PNG class mask (pixels are class ids from 1, as in every record here)."""
    masks = dataset.root / SPLIT_FOLDERS[split] / MASKS_FOLDER
    for relative in _listed_files(dataset, split, IMAGES_FOLDER, ""):
        image_path = dataset.root / relative
        with _reading(image_path, dataset.root):
            image_bytes = image_path.read_bytes()
            image = probe_image(image_bytes)
            mask = (masks / f"{image_path.stem}{MASK_SUFFIX}").read_bytes()
        yield WrittenRecord(
            key=_split_relative(image_path),
            width=image.width,
            height=image.height,
            class_mask_png=mask,
            image_bytes=image_bytes if with_images else None,
        )

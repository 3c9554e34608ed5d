"""TFDS metadata beside the TFRecord shards, so `tfds.builder_from_directory(OUT)` loads them in place.

TensorFlow Datasets opens a prepared dataset from two JSON files in its folder:
`dataset_info.json` (a `DatasetInfo` proto in protobuf's JSON mapping: name, version,
file format, and per split its shard lengths and where its shards are) and
`features.json` (a `Feature` proto tree: how to parse and decode each record key). They
are written here as plain JSON in the shape TFDS 4.9's own `DatasetInfo.write_to_directory`
writes (but for the class names, see `_class_label`), so converting needs neither
TensorFlow nor TFDS installed. Per-split templates need a TFDS that knows
`filepathTemplate` (4.9 does; older ones refuse the field).

Shards stay where the sink wrote them: each split's `filepathTemplate`
(`tfrecord_val/val-{SHARD_X_OF_Y}.tfrecord`) names its folder and file prefix, which
TFDS resolves relative to the dataset folder. TFDS's own `write_metadata` cannot say this
(one template for every split), hence writing the JSON ourselves.

Features: a nested FeaturesDict whose keys joined by `/` are the record keys (TFDS
flattens nested features with `/` when it parses a `tf.train.Example`). Only the keys
every record of the run carries are declared: TFDS parses each declared key as required,
so declaring a key some record lacks fails that record, while an undeclared key is just
not read.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from converter.core.materialize import RecordOptions
from converter.core.shard import ShardInfo
from converter.core.split import SPLIT_NAMES, SplitName

DATASET_INFO_FILE = "dataset_info.json"
FEATURES_FILE = "features.json"
TFDS_VERSION = "1.0.0"  # TFDS requires a MAJOR.MINOR.PATCH version; ours has no meaning to it
BACKGROUND = "background"  # the name of ClassLabel index 0, which no record uses (ids start at 1)

Json = dict[str, Any]

# TFDS finds a feature's class by this dotted name when it reads features.json.
_FEATURES = "tensorflow_datasets.core.features."
_FEATURES_DICT = _FEATURES + "features_dict.FeaturesDict"
_TENSOR = _FEATURES + "tensor_feature.Tensor"
_TEXT = _FEATURES + "text_feature.Text"
_IMAGE = _FEATURES + "image_feature.Image"
_CLASS_LABEL = _FEATURES + "class_label_feature.ClassLabel"
_SEQUENCE = _FEATURES + "sequence_feature.Sequence"

_UNKNOWN = "-1"  # protobuf's JSON mapping writes int64 as strings; -1 is TFDS's unknown dimension
_SHARD_NAME = re.compile(r"(?P<stem>.+)-(?P<index>\d{5,})-of-(?P<count>\d{5,})(?P<suffix>\.[^./]+)")


def write_tfds_metadata(
    output_dir: Path,
    dataset_name: str,
    class_names: Sequence[str],
    split_shards: Mapping[SplitName, Sequence[ShardInfo]],
    options: RecordOptions,
) -> tuple[str, ...]:
    """Write `dataset_info.json` and `features.json` into `output_dir`; return their names.

    `split_shards` are each split's shards in order (`file` relative to `output_dir`); a
    split without shards is left out, since TFDS has no file to read it from.
    `dataset_name` becomes the TFDS dataset name (`builder.info.name`): TFDS expects a
    snake_case identifier, so it must be one (`ValueError` otherwise).
    """
    if not re.fullmatch(r"[a-z][a-z0-9_]*", dataset_name):
        raise ValueError(f"TFDS dataset name {dataset_name!r} must be snake_case: [a-z][a-z0-9_]*")
    info = dataset_info(dataset_name, split_shards)
    features = features_json(class_names, options)
    (output_dir / DATASET_INFO_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    (output_dir / FEATURES_FILE).write_text(json.dumps(features, indent=4, sort_keys=True) + "\n", encoding="utf-8")
    return (DATASET_INFO_FILE, FEATURES_FILE)


def dataset_info(dataset_name: str, split_shards: Mapping[SplitName, Sequence[ShardInfo]]) -> Json:
    """The `DatasetInfo` proto as JSON: splits train/validation/test, each with its own template."""
    splits = [_split_info(split, split_shards[split]) for split in SPLIT_NAMES if split_shards.get(split)]
    return {
        "name": dataset_name,
        "version": TFDS_VERSION,
        "fileFormat": "tfrecord",
        "description": "Converted by dataset-converter; dataset_info.yaml beside this file describes the source, "
        "classes and splits.",
        "splits": splits,
    }


def _split_info(split: SplitName, shards: Sequence[ShardInfo]) -> Json:
    """One split: shard lengths in shard order, and the template TFDS expands to each shard's path.

    TFDS formats `{SHARD_X_OF_Y}` as `00000-of-00003`, padding both numbers to
    max(5, digits of the count); every shard name is checked against that expansion, so
    the template can never point TFDS at a file that is not there.
    """
    first = _SHARD_NAME.fullmatch(shards[0].file)
    if first is None:
        raise ValueError(f"shard {shards[0].file!r} is not named PREFIX-NNNNN-of-NNNNN.SUFFIX")
    stem, suffix = first["stem"], first["suffix"]
    digits = max(5, len(str(len(shards))))
    for index, shard in enumerate(shards):
        expected = f"{stem}-{index:0{digits}d}-of-{len(shards):0{digits}d}{suffix}"
        if shard.file != expected:
            raise ValueError(f"{split} shard {index} is {shard.file!r}; TFDS would look for {expected!r}")
    return {
        "name": split,
        "shardLengths": [str(shard.records) for shard in shards],
        "numBytes": str(sum(shard.bytes for shard in shards)),
        "filepathTemplate": _escape_format(stem) + "-{SHARD_X_OF_Y}" + _escape_format(suffix),
    }


def _escape_format(text: str) -> str:
    """TFDS expands the template with `str.format`: literal braces must be doubled."""
    return text.replace("{", "{{").replace("}", "}}")


def features_json(class_names: Sequence[str], options: RecordOptions) -> Json:
    """The `Feature` proto tree of the object-detection-api record layout as JSON.

    Images are `Image` (decoded with `tf.image.decode_image`, so any JPEG, PNG or BMP; forced
    to 3 channels, so grayscale and RGBA sources decode alike); masks single-channel `Image`s.
    TFDS's Image cannot decode GIF or WebP (they come out as 4-D animations) nor TIFF;
    nothing in features.json can change that.
    Class ids become `ClassLabel`s named `[background, *class_names]`, so id N (from 1)
    decodes to the Nth class name. Per-object and per-point values are rank-1 tensors of
    unknown length: TFDS parses them as variable-length lists, empty on negative images.
    """
    names = _label_names(class_names)
    flat: dict[str, Json] = {
        "image/encoded": _image(channels=3),
        "image/format": _text(),
        "image/height": _tensor("int64"),
        "image/width": _tensor("int64"),
        "image/filename": _text(),
        "image/source_id": _text(),
        "image/source_key": _text(),
        "image/key/sha256": _text(),
        "image/object/bbox/xmin": _tensor("float32", rank=1),
        "image/object/bbox/ymin": _tensor("float32", rank=1),
        "image/object/bbox/xmax": _tensor("float32", rank=1),
        "image/object/bbox/ymax": _tensor("float32", rank=1),
        "image/object/class/label": _sequence(_class_label(names)),
        "image/object/class/text": _sequence(_text()),
        "image/object/area": _tensor("float32", rank=1),
        "image/object/is_crowd": _tensor("int64", rank=1),
        "image/class/label": _sequence(_class_label(names)),
        "image/class/text": _sequence(_text()),
    }
    if options.class_masks:
        flat["image/segmentation/class/encoded"] = _image(channels=1)
        flat["image/segmentation/class/format"] = _text()
    if options.instance_masks:
        flat["image/object/mask"] = _sequence(_image(channels=1))
    if options.keypoints:
        flat["image/keypoint/x"] = _tensor("float32", rank=1)
        flat["image/keypoint/y"] = _tensor("float32", rank=1)
        flat["image/keypoint/text"] = _sequence(_text())
    if options.keypoints_per_object:  # per object, `keypoints_per_object` entries each, in object order
        flat["image/object/keypoint/x"] = _tensor("float32", rank=1)
        flat["image/object/keypoint/y"] = _tensor("float32", rank=1)
        flat["image/object/keypoint/visibility"] = _tensor("int64", rank=1)
        flat["image/object/keypoint/num"] = _tensor("int64", rank=1)
        flat["image/object/keypoint/text"] = _sequence(_text())
    return _nest(flat)


def _label_names(class_names: Sequence[str]) -> list[str]:
    """`[background, *class_names]`; index 0 gets a name no class has, since ClassLabel names must be unique."""
    background = BACKGROUND
    while background in class_names:
        background = "_" + background
    return [background, *class_names]


def _nest(flat: Mapping[str, Json]) -> Json:
    """{"image/encoded": f} -> FeaturesDict{image: FeaturesDict{encoded: f}}, the tree TFDS flattens back."""
    tree: dict[str, Any] = {}
    for key, feature in flat.items():
        *parents, leaf = key.split("/")
        node = tree
        for parent in parents:
            node = node.setdefault(parent, {})
            if not isinstance(node, dict) or "pythonClassName" in node:
                raise ValueError(f"record key {key!r} nests under another key's feature")
        node[leaf] = feature
    return _features_dict(tree)


def _features_dict(tree: Mapping[str, Any]) -> Json:
    return {
        "pythonClassName": _FEATURES_DICT,
        "featuresDict": {
            "features": {
                name: value if "pythonClassName" in value else _features_dict(value) for name, value in tree.items()
            }
        },
    }


def _shape(*dimensions: int | None) -> Json:
    return {"dimensions": [_UNKNOWN if size is None else str(size) for size in dimensions]} if dimensions else {}


def _tensor(dtype: str, rank: int = 0) -> Json:
    return {
        "pythonClassName": _TENSOR,
        "tensor": {"dtype": dtype, "encoding": "none", "shape": _shape(*[None] * rank)},
    }


def _text() -> Json:
    return {"pythonClassName": _TEXT, "text": {}}


def _image(channels: int) -> Json:
    return {"pythonClassName": _IMAGE, "image": {"dtype": "uint8", "shape": _shape(None, None, channels)}}


def _sequence(feature: Json) -> Json:
    return {"pythonClassName": _SEQUENCE, "sequence": {"feature": feature, "length": _UNKNOWN}}


def _class_label(names: Sequence[str]) -> Json:
    """A ClassLabel whose names live in features.json itself.

    TFDS's own writer stores only `numClasses` there and the names in a
    `<feature-key>.labels.txt` file per label feature (one name a line, stripped, so a
    name with a line break or edge spaces would not survive). `jsonFeature` is the
    proto's generic content, which TFDS passes to `ClassLabel(**content)`: the names
    travel exactly, and no extra files are needed.
    """
    return {"pythonClassName": _CLASS_LABEL, "jsonFeature": {"json": json.dumps({"names": list(names)})}}

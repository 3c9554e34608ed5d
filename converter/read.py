"""Read a converted dataset back as a parsed, decoded `tf.data.Dataset`.

    from converter.read import tf_dataset
    for example in tf_dataset("out", "train").take(1):
        example["image"]            # uint8 [height, width, 3]
        example["objects"]["bbox"]  # float32 [objects, 4]: ymin, xmin, ymax, xmax, normalized
        example["objects"]["label"] # int64 [objects]: ids from 1, names in dataset_info.yaml's `classes`

The feature spec comes from the dataset's own `dataset_info.yaml` (its shards and the keys
its records carry), so the caller writes none. TensorFlow is imported here, when called,
never by the converter's writer. Only the Object Detection API layout (the default) is
read; ModelPack records are for ModelPack's own loader.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from converter.core.split import SPLIT_NAMES
from converter.sinks.tfrecord_keys import (
    BBOX_XMAX,
    BBOX_XMIN,
    BBOX_YMAX,
    BBOX_YMIN,
    IMAGE_CLASS_LABEL,
    IMAGE_CLASS_TEXT,
    IMAGE_ENCODED,
    IMAGE_FILENAME,
    IMAGE_FORMAT,
    IMAGE_HEIGHT,
    IMAGE_SHA256,
    IMAGE_SOURCE_ID,
    IMAGE_SOURCE_KEY,
    IMAGE_WIDTH,
    KEYPOINT_TEXT,
    KEYPOINT_X,
    KEYPOINT_Y,
    OBJECT_AREA,
    OBJECT_CLASS_LABEL,
    OBJECT_CLASS_TEXT,
    OBJECT_IS_CROWD,
    OBJECT_KEYPOINT_TEXT,
    OBJECT_KEYPOINT_VISIBILITY,
    OBJECT_KEYPOINT_X,
    OBJECT_KEYPOINT_Y,
    OBJECT_MASK,
    SEGMENTATION_ENCODED,
    SEGMENTATION_FORMAT,
)

if TYPE_CHECKING:
    import tensorflow as tf

_OBJECT_KEYPOINT_KEYS = (OBJECT_KEYPOINT_X, OBJECT_KEYPOINT_Y, OBJECT_KEYPOINT_VISIBILITY, OBJECT_KEYPOINT_TEXT)

# The keys the records carry (converter.sinks.tfrecord_keys), by the type they are parsed as.
_SCALARS = {
    IMAGE_ENCODED: "string",
    IMAGE_FORMAT: "string",
    IMAGE_HEIGHT: "int64",
    IMAGE_WIDTH: "int64",
    IMAGE_FILENAME: "string",
    IMAGE_SOURCE_ID: "string",
    IMAGE_SOURCE_KEY: "string",
    IMAGE_SHA256: "string",
}
_LISTS = {
    BBOX_XMIN: "float32",
    BBOX_YMIN: "float32",
    BBOX_XMAX: "float32",
    BBOX_YMAX: "float32",
    OBJECT_CLASS_LABEL: "int64",
    OBJECT_CLASS_TEXT: "string",
    OBJECT_AREA: "float32",
    OBJECT_IS_CROWD: "int64",
    IMAGE_CLASS_LABEL: "int64",
    IMAGE_CLASS_TEXT: "string",
    SEGMENTATION_ENCODED: "string",
    SEGMENTATION_FORMAT: "string",
    OBJECT_MASK: "string",
    KEYPOINT_X: "float32",
    KEYPOINT_Y: "float32",
    KEYPOINT_TEXT: "string",
    OBJECT_KEYPOINT_X: "float32",
    OBJECT_KEYPOINT_Y: "float32",
    OBJECT_KEYPOINT_VISIBILITY: "int64",
    OBJECT_KEYPOINT_TEXT: "string",
}


def _dataset_info(dataset: Path) -> dict[str, Any]:
    info = yaml.safe_load((dataset / "dataset_info.yaml").read_text(encoding="utf-8"))
    if not isinstance(info, dict):
        raise ValueError(f"{dataset / 'dataset_info.yaml'} is not a dataset_info.yaml the converter wrote")
    return info


def shard_paths(dataset: str | os.PathLike[str], split: str) -> list[str]:
    """The split's shards, as dataset_info.yaml lists them (never a glob that could catch a stray file)."""
    root = Path(dataset)
    info = _dataset_info(root)
    if split not in SPLIT_NAMES or not isinstance(info.get(split), dict):
        present = [name for name in SPLIT_NAMES if isinstance(info.get(name), dict)]
        raise ValueError(f"{root} has no split {split!r}; it has {', '.join(present)}")
    return [str(root / shard["file"]) for shard in info[split]["shards"]]


def tf_dataset(dataset: str | os.PathLike[str], split: str = "train") -> tf.data.Dataset:
    """The split's records, parsed and decoded (see the module docstring for the structure).

    `dataset` is the output folder (the one holding dataset_info.yaml); `split` is `train`,
    `validation` or `test`. Records come in their written order; shuffle and batch as usual
    (images differ in size: use `padded_batch` or resize first).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    root = Path(dataset)
    info = _dataset_info(root)
    layout = info.get("record_layout", {})
    if layout.get("layout") != "object_detection_api":
        raise ValueError(f"{root}: tf_dataset reads the object_detection_api layout, not {layout.get('layout')!r}")
    keys = set(layout["keys"])
    spec: dict[str, Any] = {key: tf.io.FixedLenFeature([], getattr(tf, kind)) for key, kind in _SCALARS.items()}
    spec.update({key: tf.io.VarLenFeature(getattr(tf, kind)) for key, kind in _LISTS.items() if key in keys})

    def decode(serialized: tf.Tensor) -> dict[str, Any]:
        parsed = tf.io.parse_single_example(serialized, spec)
        dense = {
            key: tf.sparse.to_dense(value) if isinstance(value, tf.SparseTensor) else value
            for key, value in parsed.items()
        }
        image = tf.io.decode_image(dense[IMAGE_ENCODED], channels=3, expand_animations=False)
        objects = {
            "bbox": tf.stack([dense[edge] for edge in (BBOX_YMIN, BBOX_XMIN, BBOX_YMAX, BBOX_XMAX)], -1),
            "label": dense[OBJECT_CLASS_LABEL],
            "text": dense[OBJECT_CLASS_TEXT],
            "area": dense[OBJECT_AREA],
            "is_crowd": dense[OBJECT_IS_CROWD],
        }
        if OBJECT_KEYPOINT_X in keys:
            per_object = int(layout["keypoints_per_object"])
            x, y, visibility, text = (dense[key] for key in _OBJECT_KEYPOINT_KEYS)
            objects["keypoints"] = tf.reshape(tf.stack([y, x], -1), [-1, per_object, 2])  # y, x as the boxes
            objects["keypoint_visibility"] = tf.reshape(visibility, [-1, per_object])
            objects["keypoint_text"] = tf.reshape(text, [-1, per_object])
        if OBJECT_MASK in keys:
            objects["mask"] = tf.map_fn(
                lambda png: tf.io.decode_png(png, channels=1)[..., 0],
                dense[OBJECT_MASK],
                fn_output_signature=tf.TensorSpec([None, None], tf.uint8),
            )
        example: dict[str, Any] = {
            "image": image,
            "height": dense[IMAGE_HEIGHT],
            "width": dense[IMAGE_WIDTH],
            "filename": dense[IMAGE_FILENAME],
            "source_id": tf.strings.to_number(dense[IMAGE_SOURCE_ID], tf.int64),
            "source_key": dense[IMAGE_SOURCE_KEY],
            "objects": objects,
            "image_labels": {"label": dense[IMAGE_CLASS_LABEL], "text": dense[IMAGE_CLASS_TEXT]},
        }
        if SEGMENTATION_ENCODED in keys:
            example["segmentation"] = tf.io.decode_png(dense[SEGMENTATION_ENCODED][0], channels=1)
        if KEYPOINT_X in keys:
            xy = tf.stack([dense[KEYPOINT_X], dense[KEYPOINT_Y]], -1)
            example["keypoints"] = {"xy": xy, "text": dense[KEYPOINT_TEXT]}
        return example

    return tf.data.TFRecordDataset(shard_paths(root, split)).map(decode)

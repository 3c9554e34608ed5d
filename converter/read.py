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

if TYPE_CHECKING:
    import tensorflow as tf

SEGMENTATION_KEY = "image/segmentation/class/encoded"
INSTANCE_MASK_KEY = "image/object/mask"
KEYPOINT_KEYS = ("image/keypoint/x", "image/keypoint/y", "image/keypoint/text")
OBJECT_KEYPOINT_KEYS = (
    "image/object/keypoint/x",
    "image/object/keypoint/y",
    "image/object/keypoint/visibility",
    "image/object/keypoint/text",
)

_SCALARS = {
    "image/encoded": "string",
    "image/format": "string",
    "image/height": "int64",
    "image/width": "int64",
    "image/filename": "string",
    "image/source_id": "string",
    "image/source_key": "string",
    "image/key/sha256": "string",
}
_LISTS = {
    "image/object/bbox/xmin": "float32",
    "image/object/bbox/ymin": "float32",
    "image/object/bbox/xmax": "float32",
    "image/object/bbox/ymax": "float32",
    "image/object/class/label": "int64",
    "image/object/class/text": "string",
    "image/object/area": "float32",
    "image/object/is_crowd": "int64",
    "image/class/label": "int64",
    "image/class/text": "string",
    SEGMENTATION_KEY: "string",
    "image/segmentation/class/format": "string",
    INSTANCE_MASK_KEY: "string",
    "image/keypoint/x": "float32",
    "image/keypoint/y": "float32",
    "image/keypoint/text": "string",
    "image/object/keypoint/x": "float32",
    "image/object/keypoint/y": "float32",
    "image/object/keypoint/visibility": "int64",
    "image/object/keypoint/text": "string",
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
        dense = {key: tf.sparse.to_dense(value) if isinstance(value, tf.SparseTensor) else value
                 for key, value in parsed.items()}
        image = tf.io.decode_image(dense["image/encoded"], channels=3, expand_animations=False)
        objects = {
            "bbox": tf.stack([dense[f"image/object/bbox/{edge}"] for edge in ("ymin", "xmin", "ymax", "xmax")], -1),
            "label": dense["image/object/class/label"],
            "text": dense["image/object/class/text"],
            "area": dense["image/object/area"],
            "is_crowd": dense["image/object/is_crowd"],
        }
        if OBJECT_KEYPOINT_KEYS[0] in keys:
            per_object = int(layout["keypoints_per_object"])
            x, y, visibility, text = (dense[key] for key in OBJECT_KEYPOINT_KEYS)
            objects["keypoints"] = tf.reshape(tf.stack([y, x], -1), [-1, per_object, 2])  # y, x as the boxes
            objects["keypoint_visibility"] = tf.reshape(visibility, [-1, per_object])
            objects["keypoint_text"] = tf.reshape(text, [-1, per_object])
        if INSTANCE_MASK_KEY in keys:
            objects["mask"] = tf.map_fn(
                lambda png: tf.io.decode_png(png, channels=1)[..., 0],
                dense[INSTANCE_MASK_KEY],
                fn_output_signature=tf.TensorSpec([None, None], tf.uint8),
            )
        example: dict[str, Any] = {
            "image": image,
            "height": dense["image/height"],
            "width": dense["image/width"],
            "filename": dense["image/filename"],
            "source_id": tf.strings.to_number(dense["image/source_id"], tf.int64),
            "source_key": dense["image/source_key"],
            "objects": objects,
            "image_labels": {"label": dense["image/class/label"], "text": dense["image/class/text"]},
        }
        if SEGMENTATION_KEY in keys:
            example["segmentation"] = tf.io.decode_png(dense[SEGMENTATION_KEY][0], channels=1)
        if KEYPOINT_KEYS[0] in keys:
            example["keypoints"] = {
                "xy": tf.stack([dense[KEYPOINT_KEYS[0]], dense[KEYPOINT_KEYS[1]]], -1),
                "text": dense[KEYPOINT_KEYS[2]],
            }
        return example

    return tf.data.TFRecordDataset(shard_paths(root, split)).map(decode)

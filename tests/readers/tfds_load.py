"""Load a converted output with `tfds.builder_from_directory` and print what TFDS decoded.

Run inside the TFDS reader venv (tests/reader_envs.py): `python tfds_load.py OUT`. The
script reads every split to its end through TFDS's own parsing and decoding (no feature
spec of ours), so a wrong or missing feature in dataset_info.json/features.json, a shard
TFDS cannot find, or a record that does not decode fails here. It prints one JSON line:

    {"tfds_version", "name", "splits": {tfds split name: {"num_examples" (from the
     metadata), "count" (records read), "shards" (the files TFDS resolved, relative to
     OUT), "records": [one summary per record, in file order]}},
     "class_names": {flattened key: ClassLabel names}, "features": {flattened key: repr}}

A record summary holds decoded values: the image's shape, a thumbnail and a checksum of its pixels,
labels as names (through the ClassLabel), boxes as lists, masks as shapes with their
pixel values or pixel counts, and every other declared scalar or list as JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter is not our output
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import numpy as np  # after the environment TensorFlow reads at import
import tensorflow_datasets as tfds
from nested import flatten

IMAGE = "image/encoded"
CLASS_MASK = "image/segmentation/class/encoded"
INSTANCE_MASKS = "image/object/mask"
THUMBNAIL_GRID = 16


def _class_labels(features: Any) -> dict[str, Any]:
    """The ClassLabel connectors by flattened key (directly or inside a Sequence)."""
    labels = {}
    for key, feature in flatten(_feature_tree(features)).items():
        inner = feature.feature if isinstance(feature, tfds.features.Sequence) else feature
        if isinstance(inner, tfds.features.ClassLabel):
            labels[key] = inner
    return labels


def _feature_tree(feature: Any) -> Any:
    if isinstance(feature, tfds.features.FeaturesDict):
        return {key: _feature_tree(value) for key, value in feature.items()}
    return feature


def _plain(value: Any) -> Any:
    """numpy values as JSON: bytes as text, arrays as lists."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray):
        return [_plain(item) for item in value.tolist()] if value.dtype == object else value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def thumbnail(pixels: Any, grid: int = THUMBNAIL_GRID) -> list[list[list[float]]]:
    """Mean of each channel over a `grid` x `grid` tiling (fewer tiles on a tinier image).

    Compares pictures across JPEG decoders, which may differ by a unit per pixel, where a
    checksum could not; tests/test_reader_tfds.py computes the same over PIL's decoding.
    """
    rows, columns = min(grid, pixels.shape[0]), min(grid, pixels.shape[1])  # no empty tile
    return [
        [
            [float(mean) for mean in tile.reshape(-1, tile.shape[-1]).mean(axis=0)]
            for tile in np.array_split(row, columns, 1)
        ]
        for row in np.array_split(pixels, rows, 0)
    ]


def _summarize(example: dict[str, Any], labels: dict[str, Any]) -> dict[str, Any]:
    flat = flatten(example)
    summary: dict[str, Any] = {}
    for key, value in flat.items():
        if key == IMAGE:
            summary[key] = {
                "shape": list(value.shape),
                "dtype": str(value.dtype),
                "thumbnail": thumbnail(value),
                "sha256": hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest(),
            }
        elif key == CLASS_MASK:
            summary[key] = {
                "shape": list(value.shape),
                "dtype": str(value.dtype),
                "values": sorted(np.unique(value).tolist()),
                "sha256": hashlib.sha256(np.ascontiguousarray(value[..., 0]).tobytes()).hexdigest(),
            }
        elif key == INSTANCE_MASKS:
            summary[key] = [
                {
                    "shape": list(mask.shape),
                    "values": sorted(np.unique(mask).tolist()),
                    "pixels": int(np.count_nonzero(mask)),
                    "sha256": hashlib.sha256(np.ascontiguousarray(mask[..., 0]).tobytes()).hexdigest(),
                }
                for mask in value
            ]
        elif key in labels:
            summary[key] = [int(label) for label in value]
            summary[key + ":names"] = [labels[key].int2str(int(label)) for label in value]
        else:
            summary[key] = _plain(value)
    return summary


def main(output: str) -> None:
    builder = tfds.builder_from_directory(output)
    labels = _class_labels(builder.info.features)
    splits = {}
    for name, split_info in builder.info.splits.items():
        dataset = builder.as_dataset(split=name, shuffle_files=False)
        records = [_summarize(example, labels) for example in tfds.as_numpy(dataset)]
        splits[name] = {
            "num_examples": split_info.num_examples,
            "count": len(records),
            "shards": [os.path.relpath(os.fspath(path), output) for path in split_info.filepaths],
            "records": records,
        }
    print(
        json.dumps(
            {
                "tfds_version": tfds.__version__,
                "name": builder.info.name,
                "version": str(builder.info.version),
                "splits": splits,
                "class_names": {key: list(feature.names) for key, feature in labels.items()},
                "features": {
                    key: type(feature).__name__
                    for key, feature in flatten(_feature_tree(builder.info.features)).items()
                },
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])

"""Read written TFRecords back with TensorFlow, the reference reader, into plain Python.

Tests compare these values with their inputs; nothing here is the converter's own code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

OD_API_KEYS = (
    "image/encoded",
    "image/format",
    "image/height",
    "image/width",
    "image/filename",
    "image/source_id",
    "image/source_key",
    "image/key/sha256",
    "image/object/bbox/xmin",
    "image/object/bbox/xmax",
    "image/object/bbox/ymin",
    "image/object/bbox/ymax",
    "image/object/class/label",
    "image/object/class/text",
    "image/object/area",
    "image/object/is_crowd",
    "image/class/label",
    "image/class/text",
)
"""The Object Detection API keys every record must carry, spelled out here rather than imported
from the converter, so a key renamed there fails the tests instead of moving with them."""


def parse_records(paths: list[Path]) -> list[dict[str, list[Any]]]:
    """Every record of the given shards, in order, as {feature key: list of values}.

    `tf.data.TFRecordDataset` checks both CRCs of every record; `tf.train.Example`
    parses the protobuf. Bytes stay bytes, floats are the stored float32 values.
    """
    import tensorflow as tf

    records = []
    for raw in tf.data.TFRecordDataset([str(path) for path in paths]):
        example = tf.train.Example.FromString(raw.numpy())
        parsed: dict[str, list[Any]] = {}
        for key, feature in example.features.feature.items():
            kind = feature.WhichOneof("kind")
            parsed[key] = list(getattr(feature, kind).value) if kind else []
        records.append(parsed)
    return records


def read_split(output_dir: Path, split: str) -> list[dict[str, list[Any]]]:
    """The records of one split, in shard order, as dataset_info.yaml lists the shards."""
    info = yaml.safe_load((output_dir / "dataset_info.yaml").read_text())
    return parse_records([output_dir / shard["file"] for shard in info[split]["shards"]])


def read_all(output_dir: Path) -> dict[str, list[dict[str, list[Any]]]]:
    """Records of every split dataset_info.yaml lists."""
    info = yaml.safe_load((output_dir / "dataset_info.yaml").read_text())
    return {split: read_split(output_dir, split) for split in ("train", "validation", "test") if split in info}


Record = dict[str, list[Any]]


def records_by_source_id(output_dir: Path) -> dict[str, Record]:
    """Every record of every split, by `image/source_key`; fails if one is written twice."""
    records: dict[str, Record] = {}
    for split_records in read_all(output_dir).values():
        for record in split_records:
            key = record["image/source_key"][0].decode()
            assert key not in records, f"{key} written twice"
            records[key] = record
    return records


def class_id(info: dict[str, Any], name: str) -> int:
    """The record id of a class in a dataset_info.yaml: its position in `classes`, from 1."""
    classes: list[str] = info["classes"]
    return classes.index(name) + 1


def decode_png(data: bytes) -> Any:
    """Decode a PNG with TensorFlow into a (height, width) uint8 numpy array."""
    import tensorflow as tf

    return tf.io.decode_png(data, channels=0).numpy()[..., 0]

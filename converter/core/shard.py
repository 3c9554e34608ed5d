"""Shard arithmetic: when a size-capped shard is full, and what shards are called.

Greedy in-order packing: a record goes into the current shard unless that would push
the shard past the cap, in which case it opens a new one. No shard exceeds the cap
unless one record alone does, and for records that must stay in order no packing uses
fewer shards (each shard is filled as far as the next record allows).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MEBIBYTE = 1 << 20  # `--partition` counts MB as MiB, like `ls -lh` and `du -h`


def megabytes_to_bytes(megabytes: float) -> int:
    """`--partition 100` -> 104857600."""
    if not (megabytes > 0 and math.isfinite(megabytes)):
        raise ValueError(f"shard size must be positive and finite, got {megabytes} MB")
    return int(megabytes * MEBIBYTE)


def starts_new_shard(current_shard_bytes: int, record_bytes: int, max_shard_bytes: int) -> bool:
    """Whether a record of `record_bytes` must open a new shard."""
    return current_shard_bytes > 0 and current_shard_bytes + record_bytes > max_shard_bytes


def shard_file_name(prefix: str, shard_index: int, num_shards: int, suffix: str) -> str:
    """`shard_file_name("train", 0, 12, ".tfrecord")` -> `"train-00000-of-00012.tfrecord"`."""
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"shard index {shard_index} outside 0..{num_shards - 1}")
    return f"{prefix}-{shard_index:05d}-of-{num_shards:05d}{suffix}"


@dataclass(frozen=True)
class ShardInfo:
    """One written shard, as dataset_info.yaml lists it. `file` is relative to the output folder."""

    file: str
    records: int
    bytes: int
    sha256: str

"""Check a written dataset against its dataset_info.yaml: every shard present and intact.

For each listed shard: the file exists, its size and SHA-256 match, its TFRecord framing
and both CRCs are sound, and it holds the listed number of records; each split's
`samples` equals the sum of its shards. This catches truncated copies and partial syncs
(an `aws s3 sync` interrupted halfway) before a training job does.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import yaml

from converter.formats.tfrecord import CorruptRecordError, read_records

_CHUNK_BYTES = 1 << 20


def _shard_problems(path: Path, shard: dict[str, Any]) -> list[str]:
    if not path.is_file():
        return [f"{path}: missing"]
    problems = []
    size = path.stat().st_size
    if size != shard.get("bytes"):
        problems.append(f"{path}: {size} bytes, dataset_info.yaml says {shard.get('bytes')}")
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK_BYTES):
            digest.update(chunk)
    if digest.hexdigest() != shard.get("sha256"):
        problems.append(f"{path}: sha256 {digest.hexdigest()} differs from dataset_info.yaml")
    try:
        with path.open("rb") as stream:
            records = sum(1 for _ in read_records(stream))
    except CorruptRecordError as error:
        return [*problems, f"{path}: {error}"]
    if records != shard.get("records"):
        problems.append(f"{path}: {records} records, dataset_info.yaml says {shard.get('records')}")
    return problems


def verify_dataset(dataset_info_path: Path) -> tuple[int, list[str]]:
    """Return (records checked, problems found); no problems means the dataset is intact."""
    try:
        info = yaml.safe_load(dataset_info_path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        return 0, [f"{dataset_info_path}: cannot be read ({error})"]
    if not isinstance(info, dict):
        return 0, [f"{dataset_info_path}: not a mapping"]
    base = dataset_info_path.parent
    problems: list[str] = []
    records = 0
    for split in ("train", "validation", "test"):
        entry = info.get(split)
        if not isinstance(entry, dict):
            continue
        shards = entry.get("shards", [])
        for shard in shards:
            problems += _shard_problems(base / shard["file"], shard)
            records += int(shard.get("records", 0))
        listed = sum(int(shard.get("records", 0)) for shard in shards)
        if listed != entry.get("samples"):
            problems.append(f"{split}: shards hold {listed} records but `samples` says {entry.get('samples')}")
    return records, problems

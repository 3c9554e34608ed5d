"""Check a written dataset against its dataset_info.yaml: every listed file present and intact.

Sharded formats (TFRecord): for each listed shard, the file exists, its size and SHA-256
match, its TFRecord framing and both CRCs are sound, and it holds the listed number of
records; each split's `samples` equals the sum of its shards.

Formats with a file per sample (Masterful, JSON, masks): each split's checksum manifest
(`checksums`, GNU `sha256sum` format) has its listed size and SHA-256, every file it lists
exists with that SHA-256, and the split's images folder holds `samples` files.

Dataset-level files (a label map) must exist. This catches truncated copies and partial
syncs (an `aws s3 sync` interrupted halfway) before a training job does.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from converter.core.split import SPLIT_NAMES
from converter.formats.tfrecord import CorruptRecordError, read_records

_CHUNK_BYTES = 1 << 20
_CHECKSUM_LINE = re.compile(r"([0-9a-f]{64})  (.+)")


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _file_problems(path: Path, listed: dict[str, Any]) -> list[str]:
    """A listed file's presence, size and sha256 against what dataset_info.yaml says."""
    if not path.is_file():
        return [f"{path}: missing"]
    problems = []
    size = path.stat().st_size
    if size != listed.get("bytes"):
        problems.append(f"{path}: {size} bytes, dataset_info.yaml says {listed.get('bytes')}")
    sha256 = _sha256_of(path)
    if sha256 != listed.get("sha256"):
        problems.append(f"{path}: sha256 {sha256} differs from dataset_info.yaml")
    return problems


def _shard_problems(path: Path, shard: dict[str, Any]) -> list[str]:
    problems = _file_problems(path, shard)
    if problems == [f"{path}: missing"]:
        return problems
    try:
        with path.open("rb") as stream:
            records = sum(1 for _ in read_records(stream))
    except CorruptRecordError as error:
        return [*problems, f"{path}: {error}"]
    if records != shard.get("records"):
        problems.append(f"{path}: {records} records, dataset_info.yaml says {shard.get('records')}")
    return problems


def _in_folder(path: str, folder: str) -> bool:
    """Whether `path` (relative to the dataset) lies directly in `folder` (relative, or absolute
    with --absolute-paths: then its relative form ends it)."""
    parent = PurePosixPath(path).parent.as_posix()
    return folder == parent or folder.endswith("/" + parent)


def _manifest_problems(base: Path, split: str, entry: dict[str, Any]) -> tuple[int, list[str]]:
    """(images listed, problems) for a split with a checksum manifest."""
    manifest = entry["checksums"]
    path = base / manifest["file"]
    problems = _file_problems(path, manifest)
    if problems:
        return 0, problems  # a damaged manifest cannot vouch for the files it lists
    lines = path.read_text(encoding="utf-8").splitlines()
    if len(lines) != manifest.get("files"):
        problems.append(f"{path}: lists {len(lines)} files, dataset_info.yaml says {manifest.get('files')}")
    images = 0
    for number, line in enumerate(lines, start=1):
        match = _CHECKSUM_LINE.fullmatch(line)
        relative = PurePosixPath(match.group(2) if match else "/")
        if match is None or relative.is_absolute() or ".." in relative.parts:  # never read outside the dataset
            problems.append(f"{path} line {number}: not `<sha256>  <path inside the dataset>`")
            continue
        listed = base / relative
        if not listed.is_file():
            problems.append(f"{listed}: missing")
        elif _sha256_of(listed) != match.group(1):
            problems.append(f"{listed}: sha256 differs from {path}")
        images += _in_folder(relative.as_posix(), str(entry.get("images", "")))
    if images != entry.get("samples"):
        problems.append(f"{split}: {path} lists {images} images but `samples` says {entry.get('samples')}")
    return images, problems


def _split_owned_names(base: Path, info: dict[str, Any]) -> set[str]:
    """The top-level names the splits' listed paths lie under (their own checks cover them)."""
    names = set()
    for split in SPLIT_NAMES:
        entry = info.get(split)
        if not isinstance(entry, dict):
            continue
        paths = [entry.get("annotations"), entry.get("images"), (entry.get("checksums") or {}).get("file")]
        paths += [shard.get("file") for shard in entry.get("shards", [])]
        for text in filter(None, paths):
            path = Path(text)
            if path.is_absolute():
                try:
                    path = path.relative_to(base.absolute())
                except ValueError:
                    continue
            names.add(path.parts[0])
    return names


def verify_dataset(dataset_info_path: Path) -> tuple[int, list[str]]:
    """Return (records or samples checked, problems found); no problems means the dataset is intact."""
    try:
        info = yaml.safe_load(dataset_info_path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        return 0, [f"{dataset_info_path}: cannot be read ({error})"]
    if not isinstance(info, dict):
        return 0, [f"{dataset_info_path}: not a mapping"]
    base = dataset_info_path.parent
    problems: list[str] = []
    records = 0
    for split in SPLIT_NAMES:
        entry = info.get(split)
        if not isinstance(entry, dict):
            continue
        if "checksums" in entry:
            images, manifest_problems = _manifest_problems(base, split, entry)
            records += images
            problems += manifest_problems
            continue
        shards = entry.get("shards", [])
        for shard in shards:
            problems += _shard_problems(base / shard["file"], shard)
            records += int(shard.get("records", 0))
        listed = sum(int(shard.get("records", 0)) for shard in shards)
        if listed != entry.get("samples"):
            problems.append(f"{split}: shards hold {listed} records but `samples` says {entry.get('samples')}")
    owned = _split_owned_names(base, info)
    for name in info.get("entries", []):
        if name not in owned and not (base / name).exists():
            problems.append(f"{base / name}: missing (dataset_info.yaml lists it in `entries`)")
    return records, problems

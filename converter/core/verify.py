"""Check a written dataset against its dataset_info.yaml: every listed file present and intact.

Sharded formats (TFRecord): for each listed shard, the file exists, its size and SHA-256
match, its TFRecord framing and both CRCs are sound, and it holds the listed number of
records; each split's `samples` equals the sum of its shards.

Formats with a file per sample (Masterful, JSON, masks): each split's checksum manifest
(`checksums`, GNU `sha256sum` format) has its listed size and SHA-256, every file it lists
exists with that SHA-256, and the split's images folder holds `samples` files.

Dataset-level files (a label map) must exist. This catches truncated copies and partial
syncs (an `aws s3 sync` interrupted halfway) before a training job does.

Nothing else may hide in the dataset: a file inside a listed folder that dataset_info.yaml
does not list (a stray shard that a glob would read), or a split folder it does not list
(`tfrecord_test/` left from a run with another split), is a problem. Every listed path must
stay inside the dataset folder, links followed: verify never reads a file elsewhere, whatever
a damaged or hostile dataset_info.yaml says. What an interrupted conversion left (a
generation nothing points at, a dangling link) is named as a note: the next run removes it.

A folder with no dataset_info.yaml holds no dataset: that is one problem, which says why
when the folder's report.json is a failed run's (a failed run commits only its report).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from converter.core.commit import CURRENT_LINK, DATASET_INFO, LOCK_FILE, REPORT, STATE_FOLDER
from converter.core.split import SPLIT_NAMES
from converter.errors import quoted
from converter.formats.tfrecord import CorruptRecordError, read_records

_CHUNK_BYTES = 1 << 20
# report.json starts with its summary (`Report.write`), and the entries after it may take
# gigabytes: the summary is parsed from the file's head alone.
_REPORT_HEAD_BYTES = 1 << 16
_REPORT_START = re.compile(r'\s*\{\s*"summary"\s*:\s*')
_FAILURE_CHARACTERS = 300  # of a failure shown in the one-line problem
_CHECKSUM_LINE = re.compile(r"([0-9a-f]{64})  (.+)")
_SPLIT_TOKEN = re.compile(r"(?<![a-z])(train|validation|val|test)(?![a-z])")


class DamagedInfoError(Exception):
    """dataset_info.yaml does not have the shape the converter writes."""


@dataclass
class Verification:
    """What `verify_dataset` found: records checked, problems (the dataset fails), notes (it does not)."""

    records: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _inside(base: Path, listed: str) -> Path:
    """The listed path under `base`, refused when it leaves the dataset folder (absolute elsewhere, `..`, links out)."""
    candidate = Path(listed)
    if candidate.is_absolute():
        try:
            candidate = candidate.relative_to(base.absolute())
        except ValueError:
            raise DamagedInfoError(f"lists {quoted(listed)}, outside the dataset folder") from None
    if ".." in candidate.parts:
        raise DamagedInfoError(f"lists {quoted(listed)}, which leaves the dataset folder")
    path = base / candidate
    if not path.resolve().is_relative_to(base.resolve()):
        raise DamagedInfoError(f"lists {quoted(listed)}, a link that leads outside the dataset folder")
    return path


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


def _manifest_problems(base: Path, split: str, entry: dict[str, Any], listed_files: set[Path]) -> tuple[int, list[str]]:
    """(images listed, problems) for a split with a checksum manifest; adds what it lists to `listed_files`."""
    manifest = entry["checksums"]
    path = _inside(base, manifest["file"])
    listed_files.add(path)
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
        listed_files.add(listed)
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
            names.add(_inside(base, str(text)).relative_to(base).parts[0])
    return names


def _stray_files(base: Path, folders: set[str], listed_files: set[Path]) -> list[str]:
    """Files inside the dataset's own folders that dataset_info.yaml does not list."""
    stray = []
    for name in sorted(folders):
        folder = base / name
        if not folder.is_dir():
            continue
        for root, _, files in os.walk(folder):  # the top-level link is followed, links below it are not
            for file_name in files:
                path = Path(root) / file_name
                if path not in listed_files:
                    stray.append(f"{path}: not listed by dataset_info.yaml (a stray file a reader may pick up)")
    return stray


def _stray_split_folders(base: Path, split_folders: set[str]) -> list[str]:
    """Folders named like one of the dataset's split folders but for a split it does not have."""
    stray = []
    for name in sorted(split_folders):
        if not _SPLIT_TOKEN.search(name):
            continue
        for token in ("train", "val", "validation", "test"):
            sibling = _SPLIT_TOKEN.sub(token, name, count=1)
            if sibling not in split_folders and (base / sibling).is_dir():
                stray.append(f"{base / sibling}: a split folder that dataset_info.yaml does not list (another run's?)")
    return sorted(set(stray))


def _leftovers(base: Path) -> list[str]:
    """What an interrupted conversion left: generations nothing points at, and dangling links into them."""
    state = base / STATE_FOLDER
    if not state.is_dir():
        return []
    notes = []
    referenced = set()
    current = state / CURRENT_LINK
    if current.is_symlink():
        referenced.add(str(current.readlink()))
    for path in sorted(base.iterdir()):
        if path.is_symlink() and str(path.readlink()).startswith(STATE_FOLDER + "/"):
            parts = str(path.readlink()).split("/")
            if len(parts) > 1 and parts[1] != CURRENT_LINK:
                referenced.add(parts[1])
            if not path.exists():
                notes.append(f"{path}: a dangling link left by an interrupted conversion (the next run removes it)")
    for path in sorted(state.iterdir()):
        if path.name not in (LOCK_FILE, CURRENT_LINK) and path.name not in referenced:
            notes.append(f"{path}: left by an interrupted conversion (the next run removes it)")
    return notes


def _failure_of_last_run(report: Path) -> str | None:
    """The `failure` in report.json's summary; None when there is none or the report cannot be read."""
    try:
        with report.open("rb") as stream:
            head = stream.read(_REPORT_HEAD_BYTES).decode("utf-8", "replace")
    except OSError:
        return None
    start = _REPORT_START.match(head)
    if start is None:
        return None
    try:
        summary, _ = json.JSONDecoder().raw_decode(head, start.end())
    except json.JSONDecodeError:
        return None
    failure = summary.get("failure") if isinstance(summary, dict) else None
    if not isinstance(failure, str) or not failure.strip():
        return None
    one_line = " ".join(failure.split())
    return one_line if len(one_line) <= _FAILURE_CHARACTERS else quoted(one_line, _FAILURE_CHARACTERS)


def _no_dataset(folder: Path) -> str:
    """Why a folder without dataset_info.yaml has no dataset, and what to do: one line."""
    report = folder / REPORT
    failure = _failure_of_last_run(report)
    if failure is not None:
        return f"no dataset here: {folder} has no {DATASET_INFO}; the last run failed: {failure}; see {report}"
    return f"no dataset here: {folder} has no {DATASET_INFO}; convert into it first"


def verify_dataset(dataset_info_path: Path) -> Verification:
    """Check a dataset against its dataset_info.yaml; no problems means it is intact and complete."""
    result = Verification()
    if not os.path.lexists(dataset_info_path):  # a dangling link is a damaged dataset, not an absent one
        result.problems.append(_no_dataset(dataset_info_path.parent))
        return result
    try:
        info = yaml.safe_load(dataset_info_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        result.problems.append(f"{dataset_info_path}: cannot be read ({quoted(str(error).splitlines()[0], 160)})")
        return result
    if not isinstance(info, dict):
        result.problems.append(f"{dataset_info_path}: damaged: not a mapping")
        return result
    try:
        _verify(dataset_info_path.parent, info, result)
    except DamagedInfoError as error:
        result.problems.append(f"{dataset_info_path}: damaged: {error}")
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        result.problems.append(
            f"{dataset_info_path}: damaged: not the shape the converter writes ({type(error).__name__}: "
            f"{quoted(str(error), 80)})"
        )
    return result


def _verify(base: Path, info: dict[str, Any], result: Verification) -> None:
    problems = result.problems
    malformed = [split for split in SPLIT_NAMES if split in info and not isinstance(info[split], dict)]
    if malformed or not any(isinstance(info.get(split), dict) for split in SPLIT_NAMES):
        raise DamagedInfoError(f"no readable split ({', '.join(SPLIT_NAMES)})")
    listed_files: set[Path] = set()
    for split in SPLIT_NAMES:
        entry = info.get(split)
        if not isinstance(entry, dict):
            continue
        if "checksums" in entry:
            images, manifest_problems = _manifest_problems(base, split, entry, listed_files)
            result.records += images
            problems += manifest_problems
            continue
        shards = entry.get("shards", [])
        for shard in shards:
            path = _inside(base, shard["file"])
            listed_files.add(path)
            problems += _shard_problems(path, shard)
            result.records += int(shard.get("records", 0))
        if entry.get("label_map"):
            label_map = _inside(base, str(entry["label_map"]))
            listed_files.add(label_map)
            if not label_map.is_file():
                problems.append(f"{label_map}: missing (dataset_info.yaml lists it as the {split} label map)")
        listed = sum(int(shard.get("records", 0)) for shard in shards)
        if listed != entry.get("samples"):
            problems.append(f"{split}: shards hold {listed} records but `samples` says {entry.get('samples')}")
    split_folders = _split_owned_names(base, info)
    for name in info.get("entries", []):
        path = _inside(base, str(name))
        if name not in split_folders and not path.exists():
            problems.append(f"{path}: missing (dataset_info.yaml lists it in `entries`)")
    problems += _stray_files(base, split_folders, listed_files)
    problems += _stray_split_folders(base, split_folders)
    report = info.get("report", REPORT)
    _inside(base, str(report))
    result.notes += _leftovers(base)

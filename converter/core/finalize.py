"""`dataset-converter finalize`: merge the parts of a scaled-out run into one dataset.

Each worker of a scaled-out run leaves `parts/worker-IIIII-of-NNNNN/` in the output: its
shards (named within the part), its `report.json` and, written last and only on success,
`part.yaml` (its slice's dataset_info). Finalize checks that every part of 0..N-1 is there
and that all were made with the same settings, then gives the shards their dataset-wide
names (`train-00000-of-00012.tfrecord`, worker order, so record order is exactly a single
machine's), merges the reports, and writes `dataset_info.yaml` last.

Finalize never moves the parts' files: it links them (local disks) or copies them (object
stores, where a copy is server-side) and removes `parts/` only once `dataset_info.yaml` is
written. An interrupted finalize can therefore simply be run again. The output may be a
local folder or an `s3://` / `gs://` URI: every file operation goes through fsspec.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, cast

import yaml

from converter.core.pipeline import DATASET_INFO, REPORT
from converter.core.report import Report, ReportDocument
from converter.core.scaleout import PART_MANIFEST, PARTS_FOLDER
from converter.core.split import SPLIT_NAMES
from converter.core.storage import as_location, filesystem, owned_entries
from converter.errors import ConverterError, UsageError

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

_PART_FOLDER = re.compile(r"^worker-(\d{5})-of-(\d{5})$")
_SHARD_NAME = re.compile(r"^(?P<prefix>.+)-\d{5}-of-\d{5}(?P<suffix>\.[^.]+)$")
# What every part must agree on; the rest (shards, counts) is the part's own.
_SHARED_KEYS = ("classes", "record_layout", "masks", "seed", "split", "converter")
_PER_PART_INPUT_KEYS = ("converted", "skipped")


@dataclass(frozen=True)
class FinalizeResult:
    report: ReportDocument
    succeeded: bool
    parts: int


@dataclass(frozen=True)
class _Part:
    index: int
    count: int
    folder: str  # relative to the output root, e.g. parts/worker-00001-of-00004
    info: dict[str, Any]
    report: ReportDocument


class _Output:
    """The output folder, local or remote, addressed by paths relative to it."""

    def __init__(self, location: str) -> None:
        from fsspec.implementations.local import LocalFileSystem  # not at import: the CLI starts without fsspec

        self.location = location
        parsed = as_location(location)
        self.local = isinstance(parsed, Path)
        self.fs: AbstractFileSystem
        if isinstance(parsed, Path):
            self.fs, self.root = LocalFileSystem(), str(parsed.absolute())
        else:
            self.fs, self.root = filesystem(parsed.protocol), parsed.path

    def path(self, relative: str) -> str:
        return f"{self.root}/{relative}" if relative else self.root

    def read_text(self, relative: str) -> str:
        return cast(bytes, self.fs.cat_file(self.path(relative))).decode("utf-8")

    def write_text(self, relative: str, text: str) -> None:
        self.fs.pipe_file(self.path(relative), text.encode("utf-8"))

    def exists(self, relative: str) -> bool:
        return bool(self.fs.exists(self.path(relative)))

    def folders(self, relative: str) -> list[str]:
        if not self.exists(relative):
            return []
        listed = self.fs.ls(self.path(relative), detail=True)
        return sorted(PurePosixPath(entry["name"]).name for entry in listed if entry["type"] == "directory")

    def remove(self, relative: str) -> None:
        if self.exists(relative):
            self.fs.rm(self.path(relative), recursive=True)

    def place(self, source: str, destination: str) -> None:
        """Make `destination` hold `source`'s bytes, leaving `source` where it is."""
        self.fs.makedirs(str(PurePosixPath(self.path(destination)).parent), exist_ok=True)
        if self.local:
            target = self.path(destination)
            Path(target).unlink(missing_ok=True)
            try:
                os.link(self.path(source), target)  # instant, and no second copy of the bytes
                return
            except OSError as error:
                if error.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                    raise
            shutil.copyfile(self.path(source), target)
        else:
            self.fs.copy(self.path(source), self.path(destination))


def finalize(location: str) -> FinalizeResult:
    """Merge every part under `<location>/parts` into one dataset at `location`.

    Raises `ConverterError` naming the missing or inconsistent parts; nothing in the
    output changes then.
    """
    output = _Output(location)
    parts = _load_parts(output)
    _check_consistent(parts)
    first = parts[0].info
    allowed_skips = first["worker"].get("allowed_skips")
    report = Report(
        skipped=[entry for part in parts for entry in part.report["skipped"]],
        objects=[entry for part in parts for entry in part.report["objects"]],
        warnings=[entry for part in parts for entry in part.report["warnings"]],
    )
    splits = [split for split in SPLIT_NAMES if split in first]
    converted: dict[str, int] = {split: sum(int(part.info[split]["samples"]) for part in parts) for split in splits}
    input_samples = int(first["input"]["samples"])
    failure = None
    if allowed_skips is not None and len(report.skipped) > allowed_skips:
        failure = (
            f"{len(report.skipped)} of {input_samples} input samples were skipped, more than "
            f"--max-skipped allows ({allowed_skips}); no dataset was written"
        )
    elif sum(converted.values()) == 0:
        failure = f"none of the {input_samples} input samples could be converted"
    document = report.document(input_samples=input_samples, converted_by_split=converted, failure=failure)
    report_text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    if failure:
        output.write_text(REPORT, report_text)
        return FinalizeResult(document, succeeded=False, parts=len(parts))

    info, placements = _merged_info(parts, splits, document)
    _remove_previous_dataset(output)
    for source, destination in placements:
        output.place(source, destination)
    output.write_text(REPORT, report_text)
    output.write_text(DATASET_INFO, yaml.safe_dump(info, sort_keys=False, allow_unicode=True))
    output.remove(PARTS_FOLDER)
    return FinalizeResult(document, succeeded=True, parts=len(parts))


def _load_parts(output: _Output) -> list[_Part]:
    found: dict[int, set[int]] = {}
    for name in output.folders(PARTS_FOLDER):
        match = _PART_FOLDER.match(name)
        if match:
            found.setdefault(int(match[2]), set()).add(int(match[1]))
    if not found:
        raise UsageError(f"no parts in {output.path(PARTS_FOLDER)}: run the workers (convert --num-workers N) first")
    if len(found) > 1:
        described = ", ".join(f"{count} ({len(indices)} parts)" for count, indices in sorted(found.items()))
        raise ConverterError(
            f"{output.path(PARTS_FOLDER)} holds parts of runs with different worker counts: {described}; "
            "remove the stale part folders and run finalize again"
        )
    count = next(iter(found))
    parts, missing = [], []
    for index in range(count):
        folder = f"{PARTS_FOLDER}/worker-{index:05d}-of-{count:05d}"
        if not output.exists(f"{folder}/{PART_MANIFEST}"):
            missing.append(f"worker {index} ({folder}{_why_missing(output, folder)})")
            continue
        info = yaml.safe_load(output.read_text(f"{folder}/{PART_MANIFEST}"))
        report = cast(ReportDocument, json.loads(output.read_text(f"{folder}/{REPORT}")))
        parts.append(_Part(index, count, folder, info, report))
    if missing:
        raise ConverterError(f"{len(missing)} of {count} parts are missing or failed: {'; '.join(missing)}")
    return parts


def _why_missing(output: _Output, folder: str) -> str:
    if not output.exists(folder):
        return ": not written; has that worker run?"
    if output.exists(f"{folder}/{REPORT}"):
        failure = json.loads(output.read_text(f"{folder}/{REPORT}"))["summary"].get("failure")
        return f": the worker failed: {failure}"
    return f": no {PART_MANIFEST}; the worker did not finish"


def _check_consistent(parts: Sequence[_Part]) -> None:
    first = parts[0]
    for key in _SHARED_KEYS:
        differing = [part.index for part in parts if part.info.get(key) != first.info.get(key)]
        if differing:
            raise ConverterError(
                f"parts disagree on {key!r}: workers {differing} differ from worker 0; every worker must run with "
                "the same input and options"
            )
    shared_input = {key: value for key, value in first.info["input"].items() if key not in _PER_PART_INPUT_KEYS}
    for part in parts:
        part_input = {key: value for key, value in part.info["input"].items() if key not in _PER_PART_INPUT_KEYS}
        if part_input != shared_input:
            raise ConverterError(f"worker {part.index} converted a different input than worker 0: {part_input}")


def _merged_info(
    parts: Sequence[_Part], splits: Sequence[str], document: ReportDocument
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The dataset's dataset_info.yaml, and which part file goes where."""
    first = parts[0].info
    classes = list(first["classes"])
    info: dict[str, Any] = {"classes": classes}
    placements: list[tuple[str, str]] = []
    entries: set[str] = set()
    for split in splits:
        shards = [(part, shard) for part in parts for shard in part.info[split]["shards"]]
        merged_shards = []
        for number, (part, shard) in enumerate(shards):
            relative = PurePosixPath(shard["file"])
            match = _SHARD_NAME.match(relative.name)
            if match is None:
                raise ConverterError(f"{part.folder}/{relative} is not a shard name finalize knows")
            final = (
                relative.parent / f"{match['prefix']}-{number:05d}-of-{len(shards):05d}{match['suffix']}"
            ).as_posix()
            placements.append((f"{part.folder}/{relative}", final))
            entries.add(relative.parts[0])
            merged_shards.append({**shard, "file": final})
        info[split] = {
            "annotations": first[split]["annotations"],
            "images": first[split]["images"],
            "samples": sum(int(part.info[split]["samples"]) for part in parts),
            "shards": merged_shards,
            "class_counts": _summed_class_counts([part.info[split]["class_counts"] for part in parts]),
        }
    for key in ("record_layout", "masks", "seed", "split", "converter"):
        if key in first:
            info[key] = first[key]
    info["input"] = {
        **first["input"],
        "converted": document["summary"]["converted"],
        "skipped": document["summary"]["skipped"],
        "workers": len(parts),
    }
    info["report"] = REPORT
    info["entries"] = sorted(entries)
    return info, placements


def _summed_class_counts(per_part: Sequence[dict[str, dict[str, int]]]) -> dict[str, dict[str, int]]:
    """Every part lists every class of the run (zeros included, in class-id order): sum them name by name."""
    return {
        name: {kind: sum(counts[name][kind] for counts in per_part) for kind in ("objects", "images")}
        for name in per_part[0]
    }


def _remove_previous_dataset(output: _Output) -> None:
    """Remove the previous dataset_info.yaml first, then what it owned, as a single run's commit does."""
    previous: Any = None
    if output.exists(DATASET_INFO):
        try:
            previous = yaml.safe_load(output.read_text(DATASET_INFO))
        except yaml.YAMLError:
            previous = None
        output.remove(DATASET_INFO)
    for entry in owned_entries(previous):
        if entry != PARTS_FOLDER:
            output.remove(entry)

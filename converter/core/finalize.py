"""`dataset-converter finalize`: merge the parts of a scaled-out run into one dataset.

Each worker of a scaled-out run leaves `parts/worker-IIIII-of-NNNNN/` in the output: its
shards (named within the part), its `report.json` and, written last and only on success,
`part.yaml` (its slice's dataset_info). Finalize checks that every part of 0..N-1 is there
and that all were made with the same settings, then gives the shards their dataset-wide
names (`train-00000-of-00012.tfrecord`, worker order, so record order is exactly a single
machine's), merges the reports, and writes `dataset_info.yaml` last.

Every check comes first, with nothing changed: all parts present and made alike, and each
part's shards of the size and SHA-256 its `part.yaml` lists (a corrupt or missing shard
stops finalize, naming it). Finalize never moves the parts' files. On a local disk it
links them into a new generation of the output folder and commits that as a single run
does (`converter.core.commit`: locked, atomic, never replacing what it does not own); on
an object store it copies them server-side and writes `dataset_info.yaml` last. `parts/` is
removed only after the commit, so an interrupted finalize can simply be run again, and one
killed while removing `parts/` leaves the merged dataset whole.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, cast

import yaml

from converter.core.commit import (
    DATASET_INFO,
    REPORT,
    OutputFolder,
    owned_entries,
    remove_path,
    write_durably,
    yaml_text,
)
from converter.core.report import Report, ReportDocument, ReportSummary
from converter.core.scaleout import PART_MANIFEST, PARTS_FOLDER
from converter.core.split import SPLIT_NAMES
from converter.core.storage import as_location, filesystem
from converter.errors import ConverterError, UsageError, quoted

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

PartReader = Callable[[str], bytes | None]
"""Reads one file of a part by its path inside the part's folder; None when the part has none."""

MergeExtras = Callable[[Path, dict[str, Any], Sequence[PartReader]], tuple[str, ...]]
"""A format's dataset-level files for the merged dataset (label maps, ground truth...), given
by the CLI so that core knows no format: writes them into a local folder, may add per-split
keys to the merged info, and returns the top-level names it wrote."""

_PART_FOLDER = re.compile(r"^worker-(\d{5})-of-(\d{5})$")
_SHARD_NAME = re.compile(r"^(?P<prefix>.+)-\d{5}-of-\d{5}(?P<suffix>\.[^.]+)$")
# What every part must agree on; the rest (shards, counts) is the part's own.
_SHARED_KEYS = ("classes", "record_layout", "masks", "seed", "split", "converter")
_PER_PART_INPUT_KEYS = ("converted", "skipped")


_HASH_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class FinalizeResult:
    summary: ReportSummary
    succeeded: bool
    parts: int
    already_merged: bool = False  # no parts left, and the live dataset is a merged one: nothing to do


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

    def read_bytes(self, relative: str) -> bytes | None:
        return cast(bytes, self.fs.cat_file(self.path(relative))) if self.exists(relative) else None

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

    def sha256_and_size(self, relative: str) -> tuple[str, int]:
        digest, size = hashlib.sha256(), 0
        with self.fs.open(self.path(relative), "rb") as stream:
            while chunk := stream.read(_HASH_CHUNK_BYTES):
                digest.update(chunk)
                size += len(chunk)
        return digest.hexdigest(), size


def finalize(location: str, extras: MergeExtras | None = None) -> FinalizeResult:
    """Merge every part under `<location>/parts` into one dataset at `location`.

    `extras` writes the format's dataset-level files beside the merged records. Raises
    `ConverterError` naming the missing, inconsistent or damaged parts; nothing in the
    output changes then.
    """
    output = _Output(location)
    if not output.local:
        return _merge(output, None, extras)
    folder = OutputFolder(Path(output.root))
    with folder.locked():
        folder.check_writable()
        folder.remove_leftovers()
        if not output.exists(PARTS_FOLDER):
            merged = _already_merged(folder)
            if merged is not None:
                return merged
        return _merge(output, folder, extras)


def _already_merged(folder: OutputFolder) -> FinalizeResult | None:
    """A rerun after a finalize that committed (and was perhaps killed while removing `parts/`)."""
    previous = folder.previous_info()
    workers = previous.get("input", {}).get("workers") if previous else None
    if not isinstance(workers, int):
        return None
    try:
        summary = json.loads((folder.root / REPORT).read_text(encoding="utf-8"))["summary"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return FinalizeResult(summary, succeeded=True, parts=workers, already_merged=True)


def _merge(output: _Output, folder: OutputFolder | None, extras: MergeExtras | None) -> FinalizeResult:
    """Check the parts, merge them, and commit the dataset (locally through `folder`)."""
    parts = _load_parts(output)
    _check_consistent(parts)
    _check_shards(output, parts)
    first = parts[0].info
    allowed_skips = first["worker"].get("allowed_skips")
    report = Report()
    try:
        for part in parts:
            report.add_document(part.report)
        splits = [split for split in SPLIT_NAMES if split in first]
        converted: dict[str, int] = {split: sum(int(part.info[split]["samples"]) for part in parts) for split in splits}
        input_samples = int(first["input"]["samples"])
        failure = None
        if allowed_skips is not None and report.skipped > allowed_skips:
            failure = (
                f"{report.skipped} of {input_samples} input samples were skipped, more than "
                f"--max-skipped allows ({allowed_skips}); no dataset was written"
            )
        elif sum(converted.values()) == 0:
            failure = f"none of the {input_samples} input samples could be converted"
        summary = report.summary(input_samples=input_samples, converted_by_split=converted, failure=failure)
        info, placements = _merged_info(parts, splits, summary)
        readers = [_part_reader(output, part.folder) for part in parts]
        merged = _Merged(None if failure else info, placements, extras, readers)
        if folder is None:
            _publish_remote(output, report, summary, merged)
        else:
            _commit_local(output, folder, report, summary, merged)
    finally:
        report.close()
    return FinalizeResult(summary, succeeded=failure is None, parts=len(parts))


def _part_reader(output: _Output, part_folder: str) -> PartReader:
    return lambda relative: output.read_bytes(f"{part_folder}/{relative}")


@dataclass(frozen=True)
class _Merged:
    """The merged dataset to commit: its info (None when the merge failed), where each part file
    goes, and the format's extra files with the readers of the parts they come from."""

    info: dict[str, Any] | None
    placements: Sequence[tuple[str, str]]
    extras: MergeExtras | None
    readers: Sequence[PartReader]

    def write_extras(self, folder: Path) -> None:
        """Write the format's files into `folder` and list them in the info's entries."""
        if self.info is not None and self.extras is not None:
            names = self.extras(folder, self.info, self.readers)
            self.info["entries"] = sorted({*self.info["entries"], *names})


def _commit_local(
    output: _Output, folder: OutputFolder, report: Report, summary: ReportSummary, merged: _Merged
) -> None:
    """Link the parts' shards into a new generation and commit it; then remove `parts/`."""
    info = merged.info
    if info is not None:
        folder.check_ownership([*info["entries"], REPORT, DATASET_INFO], overwrite=False)
    generation = folder.new_generation()
    try:
        report.write(generation / REPORT, summary)
        if info is None:
            folder.commit_report_only(generation)
            return
        for source, destination in merged.placements:
            _link_or_copy(Path(output.path(source)), generation / destination)
        merged.write_extras(generation)
        names = [*info["entries"], REPORT, DATASET_INFO]
        folder.check_ownership(names, overwrite=False)  # again: the format's files are named only now
        write_durably(generation / DATASET_INFO, yaml_text(info))
        folder.commit(generation, names, overwrite=False)
    except BaseException:
        folder.discard(generation)
        raise
    # One rename takes parts/ out of view, so a finalize killed while deleting it leaves no half
    # folder behind: what is left lies in the state folder, and the next run removes it.
    discarded = folder.state / f"tmp-parts-{uuid.uuid4().hex}"
    (folder.root / PARTS_FOLDER).replace(discarded)
    remove_path(discarded)


def _link_or_copy(source: Path, target: Path) -> None:
    """`target` holds `source`'s bytes: a hard link where the file system allows it (instant, no second copy)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
        return
    except OSError as error:
        if error.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
            raise
    shutil.copyfile(source, target)


def _publish_remote(output: _Output, report: Report, summary: ReportSummary, merged: _Merged) -> None:
    """An object store has no rename: copy server-side, `dataset_info.yaml` last, then remove `parts/`."""
    staging = Path(tempfile.mkdtemp(prefix="dataset-converter-finalize-"))
    try:
        report.write(staging / REPORT, summary)
        report_text = (staging / REPORT).read_text(encoding="utf-8")
        (staging / REPORT).unlink()
        info = merged.info
        if info is None:
            output.write_text(REPORT, report_text)
            return
        merged.write_extras(staging)
        _remove_previous_dataset(output)
        for source, destination in merged.placements:
            output.fs.copy(output.path(source), output.path(destination))
        for path in sorted(staging.rglob("*")):
            if path.is_file():
                output.fs.put_file(str(path), output.path(path.relative_to(staging).as_posix()))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    output.write_text(REPORT, report_text)
    output.write_text(DATASET_INFO, yaml_text(info))
    output.remove(PARTS_FOLDER)


def _check_shards(output: _Output, parts: Sequence[_Part]) -> None:
    """Every shard a part lists has the size and SHA-256 its part.yaml gives, before anything is merged."""
    damaged = []
    for part in parts:
        for split in SPLIT_NAMES:
            for shard in (part.info.get(split) or {}).get("shards", []):
                relative = f"{part.folder}/{shard['file']}"
                try:
                    sha256, size = output.sha256_and_size(relative)
                except FileNotFoundError:
                    damaged.append(f"{relative}: missing")
                    continue
                if size != shard.get("bytes") or sha256 != shard.get("sha256"):
                    damaged.append(f"{relative}: {size} bytes, sha256 {sha256}, unlike its part.yaml")
    if damaged:
        raise ConverterError(
            f"{len(damaged)} part shard(s) differ from their part.yaml: {'; '.join(damaged[:5])}"
            f"{'; …' if len(damaged) > 5 else ''}; rerun those workers, then finalize again"
        )


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
        try:
            info = yaml.safe_load(output.read_text(f"{folder}/{PART_MANIFEST}"))
            report = cast(ReportDocument, json.loads(output.read_text(f"{folder}/{REPORT}")))
        except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as error:
            missing.append(f"worker {index} ({folder}: unreadable, {quoted(str(error), 120)})")
            continue
        if not isinstance(info, dict) or not isinstance(info.get("worker"), dict):
            missing.append(f"worker {index} ({folder}/{PART_MANIFEST}: not a part manifest)")
            continue
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
    parts: Sequence[_Part], splits: Sequence[str], summary: ReportSummary
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
        statistics = [part.info[split].get("statistics") for part in parts]
        if all(isinstance(part_statistics, dict) for part_statistics in statistics):
            info[split]["statistics"] = {  # every statistic is a maximum over the split's records
                key: max(int(cast(dict[str, int], part_statistics)[key]) for part_statistics in statistics)
                for key in cast(dict[str, int], statistics[0])
            }
    for key in ("record_layout", "masks", "seed", "split", "converter"):
        if key in first:
            info[key] = first[key]
    info["input"] = {
        **first["input"],
        "converted": summary["converted"],
        "skipped": summary["skipped"],
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

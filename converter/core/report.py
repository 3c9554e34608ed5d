"""The run report (`report.json`): every input sample that was not written, and why.

Together with the shards it accounts for every input: `input_samples` equals
`converted` plus `skipped`. Object-level changes (clipped or dropped boxes, annotations
the source dropped or repaired inside a kept sample) and per-image warnings (EXIF
rotation, size mismatch) are listed too, each with the file, line and key of its sample,
so nothing changes silently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypedDict

from converter.errors import SampleLocation


class LocatedEntry(TypedDict):
    file: str
    line: int | None
    key: str | None


class SkippedEntry(LocatedEntry):
    code: str
    reason: str


class ObjectEntry(LocatedEntry):
    object: int | None  # index in the sample's objects; None for an annotation dropped while reading the export
    code: str
    message: str


class WarningEntry(LocatedEntry):
    message: str


class ReportSummary(TypedDict):
    status: Literal["ok", "failed"]
    input_samples: int
    converted: int
    skipped: int
    skipped_by_code: dict[str, int]
    converted_by_split: dict[str, int]
    clipped_boxes: int
    dropped_boxes: int
    object_notes_by_code: dict[str, int]
    warnings: int
    failure: str | None


class ReportDocument(TypedDict):
    summary: ReportSummary
    skipped: list[SkippedEntry]
    objects: list[ObjectEntry]
    warnings: list[WarningEntry]


def _located(location: SampleLocation) -> LocatedEntry:
    return {"file": location.file, "line": location.line, "key": location.key}


def _order(entry: LocatedEntry) -> tuple[str, int, str]:
    return entry["file"], entry["line"] or 0, entry["key"] or ""


def _object_order(index: int | None) -> int:
    """Notes from reading the export (no object index) come before the materializer's."""
    return -1 if index is None else index


@dataclass
class Report:
    """Collects what happened to every sample during a run."""

    skipped: list[SkippedEntry] = field(default_factory=list)
    objects: list[ObjectEntry] = field(default_factory=list)
    warnings: list[WarningEntry] = field(default_factory=list)

    def add_skipped(self, location: SampleLocation, code: str, reason: str) -> None:
        self.skipped.append({**_located(location), "code": code, "reason": reason})

    def add_object_note(self, location: SampleLocation, object_index: int | None, code: str, message: str) -> None:
        self.objects.append({**_located(location), "object": object_index, "code": code, "message": message})

    def add_warning(self, location: SampleLocation, message: str) -> None:
        self.warnings.append({**_located(location), "message": message})

    def document(
        self, *, input_samples: int, converted_by_split: dict[str, int], failure: str | None
    ) -> ReportDocument:
        """The report as written, entries sorted by file and line so runs compare equal."""
        skipped_by_code: dict[str, int] = {}
        for entry in self.skipped:
            skipped_by_code[entry["code"]] = skipped_by_code.get(entry["code"], 0) + 1
        object_notes_by_code: dict[str, int] = {}
        for object_entry in self.objects:
            object_notes_by_code[object_entry["code"]] = object_notes_by_code.get(object_entry["code"], 0) + 1
        summary: ReportSummary = {
            "status": "failed" if failure else "ok",
            "input_samples": input_samples,
            "converted": sum(converted_by_split.values()),
            "skipped": len(self.skipped),
            "skipped_by_code": dict(sorted(skipped_by_code.items())),
            "converted_by_split": converted_by_split,
            "clipped_boxes": sum(1 for entry in self.objects if entry["code"] == "clipped"),
            "dropped_boxes": sum(1 for entry in self.objects if entry["code"] == "degenerate_box"),
            "object_notes_by_code": dict(sorted(object_notes_by_code.items())),
            "warnings": len(self.warnings),
            "failure": failure,
        }
        return {
            "summary": summary,
            "skipped": sorted(self.skipped, key=_order),
            "objects": sorted(self.objects, key=lambda entry: (*_order(entry), _object_order(entry["object"]))),
            "warnings": sorted(self.warnings, key=_order),
        }


def write_json(path: Path, document: object) -> None:
    """Write JSON with a trailing newline, keys in the order given."""
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

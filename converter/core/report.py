"""The run report (`report.json`): every input sample that was not written, and why.

Together with the shards it accounts for every input: `input_samples` equals
`converted` plus `skipped`. Object-level changes (clipped or dropped boxes) and
per-image warnings (EXIF rotation, size mismatch) are listed too, each with the file,
line and key of its sample, so nothing changes silently.
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
    object: int
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


@dataclass
class Report:
    """Collects what happened to every sample during a run."""

    skipped: list[SkippedEntry] = field(default_factory=list)
    objects: list[ObjectEntry] = field(default_factory=list)
    warnings: list[WarningEntry] = field(default_factory=list)

    def add_skipped(self, location: SampleLocation, code: str, reason: str) -> None:
        self.skipped.append({**_located(location), "code": code, "reason": reason})

    def add_object_note(self, location: SampleLocation, object_index: int, code: str, message: str) -> None:
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
        summary: ReportSummary = {
            "status": "failed" if failure else "ok",
            "input_samples": input_samples,
            "converted": sum(converted_by_split.values()),
            "skipped": len(self.skipped),
            "skipped_by_code": dict(sorted(skipped_by_code.items())),
            "converted_by_split": converted_by_split,
            "clipped_boxes": sum(1 for entry in self.objects if entry["code"] == "clipped"),
            "dropped_boxes": sum(1 for entry in self.objects if entry["code"] == "degenerate_box"),
            "warnings": len(self.warnings),
            "failure": failure,
        }
        return {
            "summary": summary,
            "skipped": sorted(self.skipped, key=_order),
            "objects": sorted(self.objects, key=lambda entry: (*_order(entry), entry["object"])),
            "warnings": sorted(self.warnings, key=_order),
        }


def write_json(path: Path, document: object) -> None:
    """Write JSON with a trailing newline, keys in the order given."""
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

"""The run report (`report.json`): every input sample that was not written, and why.

Together with the shards it accounts for every input: `input_samples` equals
`converted` plus `skipped`. Object-level changes (clipped or dropped boxes, annotations
the source dropped or repaired inside a kept sample) and per-image warnings (EXIF
rotation, size mismatch) are listed too, each with the file, line and key of its sample,
so nothing changes silently.

Entries are kept on disk while a run collects them (a private temporary SQLite database),
never in memory: a file of a million garbage lines costs a million rows of a temporary
file and a few counters, and `write` streams them into `report.json` sorted by file and
line, with SQLite's external sort. Text is stored as the UTF-8 of its JSON form, lone
surrogates (hostile input) written as JSON `\\uXXXX` escapes, so any string round-trips.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any, Literal, TypedDict

from converter.core.secret import scrub, scrub_data
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


class LossEntry(TypedDict):
    """What the records do not carry from the input (`converter.core.lossiness`), with a count."""

    code: str
    count: int
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
    lossy: list[LossEntry]
    failure: str | None


class ReportDocument(TypedDict):
    summary: ReportSummary
    skipped: list[SkippedEntry]
    objects: list[ObjectEntry]
    warnings: list[WarningEntry]


_SKIPPED, _OBJECT, _WARNING = "skipped", "objects", "warnings"
_SECTIONS = (_SKIPPED, _OBJECT, _WARNING)


def _located(location: SampleLocation) -> LocatedEntry:
    return {"file": location.file, "line": location.line, "key": location.key}


def _sort_text(text: str | None) -> bytes:
    """Bytes that sort like the text's code points (UTF-8 does; `surrogatepass` keeps lone surrogates in place)."""
    return (text or "").encode("utf-8", "surrogatepass")


def _json_bytes(entry: LocatedEntry) -> bytes:
    """An entry's JSON as UTF-8, scrubbed of credentials (a server's error may quote one).

    A lone surrogate becomes the JSON escape `\\udXXX`, which parsers accept.
    """
    scrubbed = {name: scrub(value) if isinstance(value, str) else value for name, value in entry.items()}
    return json.dumps(scrubbed, ensure_ascii=False).encode("utf-8", "backslashreplace")


class Report:
    """Collects what happened to every sample during a run, on disk, with counts in memory."""

    def __init__(self) -> None:
        self._database = sqlite3.connect("")  # "": a private on-disk temporary database, deleted on close
        self._database.execute(
            "CREATE TABLE entry (section TEXT, file BLOB, line INTEGER, key BLOB, object INTEGER, body BLOB)"
        )
        self._skipped_by_code: Counter[str] = Counter()
        self._notes_by_code: Counter[str] = Counter()
        self._warnings = 0
        self._losses: list[LossEntry] = []

    def close(self) -> None:
        self._database.close()

    @property
    def skipped(self) -> int:
        """How many input samples were skipped so far."""
        return sum(self._skipped_by_code.values())

    def _insert(self, section: str, entry: LocatedEntry, object_index: int | None = None) -> None:
        self._database.execute(
            "INSERT INTO entry VALUES (?, ?, ?, ?, ?, ?)",
            (
                section,
                _sort_text(entry["file"]),
                entry["line"] or 0,
                _sort_text(entry["key"]),
                -1 if object_index is None else object_index,  # notes from reading the export come first
                _json_bytes(entry),
            ),
        )

    def add_skipped(self, location: SampleLocation, code: str, reason: str) -> None:
        self.add_skipped_entry({**_located(location), "code": code, "reason": reason})

    def add_skipped_entry(self, entry: SkippedEntry) -> None:
        self._skipped_by_code[entry["code"]] += 1
        self._insert(_SKIPPED, entry)

    def add_object_note(self, location: SampleLocation, object_index: int | None, code: str, message: str) -> None:
        self.add_object_entry({**_located(location), "object": object_index, "code": code, "message": message})

    def add_object_entry(self, entry: ObjectEntry) -> None:
        self._notes_by_code[entry["code"]] += 1
        self._insert(_OBJECT, entry, entry["object"])

    def add_warning(self, location: SampleLocation, message: str) -> None:
        self.add_warning_entry({**_located(location), "message": message})

    def add_warning_entry(self, entry: WarningEntry) -> None:
        self._warnings += 1
        self._insert(_WARNING, entry)

    def add_losses(self, losses: Iterable[LossEntry]) -> None:
        """What the run's records cannot carry; every scaled-out worker finds the same, so the first list stays."""
        if not self._losses:
            self._losses = list(losses)

    def add_document(self, document: ReportDocument) -> None:
        """Every entry of another report (a scaled-out worker's part)."""
        self.add_losses(document["summary"].get("lossy", []))
        for skipped in document["skipped"]:
            self.add_skipped_entry(skipped)
        for note in document["objects"]:
            self.add_object_entry(note)
        for warning in document["warnings"]:
            self.add_warning_entry(warning)

    def summary(self, *, input_samples: int, converted_by_split: dict[str, int], failure: str | None) -> ReportSummary:
        return {
            "status": "failed" if failure else "ok",
            "input_samples": input_samples,
            "converted": sum(converted_by_split.values()),
            "skipped": self.skipped,
            "skipped_by_code": dict(sorted(self._skipped_by_code.items())),
            "converted_by_split": converted_by_split,
            "clipped_boxes": self._notes_by_code["clipped"],
            "dropped_boxes": self._notes_by_code["degenerate_box"],
            "object_notes_by_code": dict(sorted(self._notes_by_code.items())),
            "warnings": self._warnings,
            "lossy": self._losses,
            "failure": failure,
        }

    def _entries(self, section: str) -> Iterator[bytes]:
        """One section's entries as JSON, sorted by file, line, key (and object), so runs compare equal."""
        cursor = self._database.execute(
            "SELECT body FROM entry WHERE section = ? ORDER BY file, line, key, object, rowid", (section,)
        )
        for (body,) in cursor:
            yield body

    def entries(self, section: str) -> Iterator[dict[str, Any]]:
        """One section's entries ("skipped", "objects", "warnings"), parsed, in the report's order."""
        for body in self._entries(section):
            yield json.loads(body)

    def write(self, path: Path, summary: ReportSummary, extra: Mapping[str, Any] | None = None) -> None:
        """Write report.json (summary, `extra` sections, then the sorted entries), streamed, and flush it to disk."""
        with path.open("wb") as stream:
            for index, (name, value) in enumerate({"summary": summary, **(extra or {})}.items()):
                stream.write(f'{"{" if index == 0 else ","}\n  "{name}": '.encode())
                text = json.dumps(scrub_data(value), indent=2, ensure_ascii=False).replace("\n", "\n  ")
                stream.write(text.encode("utf-8", "backslashreplace"))
            for section in _SECTIONS:
                stream.write(f',\n  "{section}": ['.encode())
                _write_list(stream, self._entries(section))
                stream.write(b"]")
            stream.write(b"\n}\n")
            stream.flush()
            os.fsync(stream.fileno())


def _write_list(stream: IO[bytes], bodies: Iterable[bytes]) -> None:
    first = True
    for body in bodies:
        stream.write(b"\n    " if first else b",\n    ")
        stream.write(body)
        first = False
    if not first:
        stream.write(b"\n  ")

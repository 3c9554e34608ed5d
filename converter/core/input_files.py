"""Reading the files a user names (annotation exports, label maps, class lists).

One place decides how such a file is read and what a failure says: UTF-8 with an
optional byte-order mark (Windows editors prepend one), and a `UsageError` that names
what the file was for and where it is, so the CLI exits 2 with one clear line.
"""

from __future__ import annotations

import codecs
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from converter.errors import UsageError


def read_text(path: Path, what: str) -> str:
    """The file's text; `what` names it in messages ("label map", "--classes file")."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except OSError as error:
        raise UsageError(f"cannot read {what} {path}: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise UsageError(f"{what} {path} is not UTF-8 text (byte {error.start})") from None


def load_json(path: Path, what: str) -> Any:
    """The file parsed as one JSON document."""
    try:
        return json.loads(read_text(path, what))
    except json.JSONDecodeError as error:
        raise UsageError(f"{what} {path} is not valid JSON: {error}") from None


MAX_LINE_BYTES = 64 << 20
"""A JSON Lines line longer than this is skipped unread: no real annotation line comes near
it, and reading it whole would let one line take the memory of the machine."""

_BOMS = ((codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be"),
         (codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))


@dataclass(frozen=True, slots=True)
class TextLine:
    """One line of a text file: its 1-based number, and its text or why it has none.

    A line that cannot be decoded, or is longer than `MAX_LINE_BYTES`, has `text` None and
    `problem` set: it costs that line alone, never the lines around it.
    """

    number: int
    text: str | None
    problem: str | None = None


def iter_lines(path: Path, what: str, max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[TextLine]:
    """The lines of a JSON Lines (or plain text) file, streamed, each decoded on its own.

    The encoding is UTF-8 unless a byte-order mark says UTF-16 or UTF-32 (Windows tools
    write those); the mark itself is never part of line 1. Lines end at `\\n`; a trailing
    `\\r` is dropped. Memory is bounded by `max_line_bytes`, whatever the file holds.
    """
    try:
        stream = path.open("rb")
    except OSError as error:
        raise UsageError(f"cannot read {what} {path}: {error.strerror}") from None
    with stream:
        try:
            start = stream.read(4)
        except OSError as error:
            raise UsageError(f"cannot read {what} {path}: {error.strerror}") from None
        encoding = "utf-8"
        for bom, name in _BOMS:
            if start.startswith(bom):
                encoding = name
                stream.seek(len(bom))
                break
        else:
            stream.seek(0)
        if encoding != "utf-8":
            yield from _wide_lines(stream, path, what, encoding, max_line_bytes)
            return
        number = 0
        while True:
            try:
                raw = stream.readline(max_line_bytes + 1)
            except OSError as error:
                raise UsageError(f"cannot read {what} {path}: {error.strerror}") from None
            if not raw:
                return
            number += 1
            if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
                while raw and not raw.endswith(b"\n"):  # skip the rest of the line, a bounded piece at a time
                    raw = stream.readline(max_line_bytes)
                yield TextLine(number, None, f"line longer than {max_line_bytes >> 20} MiB")
                continue
            try:
                yield TextLine(number, raw.decode("utf-8").rstrip("\r\n"))
            except UnicodeDecodeError as error:
                yield TextLine(number, None, f"not UTF-8 text (byte {error.start + 1} of the line)")


def _wide_lines(stream: BinaryIO, path: Path, what: str, encoding: str, max_line_bytes: int) -> Iterator[TextLine]:
    """Lines of a UTF-16 or UTF-32 file; an undecodable unit becomes U+FFFD and marks its line."""
    text = io.TextIOWrapper(stream, encoding=encoding, errors="replace", newline="")
    number = 0
    max_chars = max_line_bytes // 2
    while True:
        try:
            line = text.readline(max_chars + 1)
        except OSError as error:
            raise UsageError(f"cannot read {what} {path}: {error.strerror}") from None
        if not line:
            return
        number += 1
        if len(line) > max_chars and not line.endswith("\n"):
            while line and not line.endswith("\n"):
                line = text.readline(max_chars)
            yield TextLine(number, None, f"line longer than {max_line_bytes >> 20} MiB")
        elif "\ufffd" in line:
            yield TextLine(number, None, f"not valid {encoding.upper()} text")
        else:
            yield TextLine(number, line.rstrip("\r\n"))

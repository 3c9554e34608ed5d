"""Reading the files a user names (annotation exports, label maps, class lists).

One place decides how such a file is read and what a failure says: UTF-8 with an
optional byte-order mark (Windows editors prepend one), UTF-16 and UTF-32 told by their
mark or, for JSON, by the zero bytes around its first ASCII characters (RFC 4627); and a
`UsageError` that names what the file was for and where it is, so the CLI exits 2 with
one clear line.

JSON is parsed by one function, `parse_json`, that no input can crash: numbers too long
for an int become infinities (rejected where a finite number is needed, costing one
annotation or sample, not the file), NaN and Infinity parse as floats for the same
reason, and nesting deep enough to exhaust the recursion limit is a `SampleError`.
"""

from __future__ import annotations

import codecs
import io
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from converter.errors import QUOTED_CHARACTERS, SampleError, UsageError, quoted

_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)

_ZERO_PATTERNS = {"x000": "utf-32-le", "000x": "utf-32-be", "x0x0": "utf-16-le", "0x0x": "utf-16-be"}

MAX_INT_DIGITS = 308
"""Longer integer literals parse as floats (infinities): Python refuses to parse ints of
more than 4,300 digits at all, and an int of more than 308 cannot become a float, which
every coordinate and size check does. No real id or size comes near 308 digits."""


def text_encoding(start: bytes) -> tuple[str, int]:
    """The encoding of a text file from its first four bytes, and the length of its byte-order mark.

    Without a mark, zero bytes next to the first character (always ASCII in JSON and in a
    manifest) tell UTF-16 and UTF-32 and their byte order, as RFC 4627 describes.
    """
    for bom, name in _BOMS:
        if start.startswith(bom):
            return name, len(bom)
    zeros = "".join("0" if byte == 0 else "x" for byte in start[:4])  # RFC 4627: the first two characters
    encoding = _ZERO_PATTERNS.get(zeros)
    if encoding is not None:
        return encoding, 0
    return "utf-8", 0


def utf8_peek(head: bytes, tail: bytes = b"") -> tuple[bytes, bytes]:
    """A peek at both ends of a file (see `converter.sources._peek`) as UTF-8, whatever `head` says the file is.

    Recognizers match UTF-8 byte patterns; a UTF-16 or UTF-32 export is recognized by the
    same patterns once its ends are transcoded (a character a peek cuts in two is dropped).
    """
    encoding, bom = text_encoding(head[:4])
    if encoding == "utf-8":
        return head, tail
    return head[bom:].decode(encoding, errors="ignore").encode(), tail.decode(encoding, errors="ignore").encode()


def _decode(data: bytes, path: Path, what: str) -> str:
    encoding, bom = text_encoding(data[:4])
    try:
        return data[bom:].decode(encoding)
    except UnicodeDecodeError as error:
        if encoding == "utf-8":
            raise UsageError(f"{what} {path} is not UTF-8 text (byte {error.start + bom})") from None
        raise UsageError(f"{what} {path} is not valid {encoding.upper()} text (byte {error.start + bom})") from None


def read_text(path: Path, what: str) -> str:
    """The file's text; `what` names it in messages ("label map", "--classes file")."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise UsageError(f"cannot read {what} {path}: {error.strerror}") from None
    return _decode(data, path, what)


def _parse_int(literal: str) -> int | float:
    return int(literal) if len(literal) <= MAX_INT_DIGITS else float(literal)


def parse_json(text: str) -> Any:
    """One JSON value; raises `SampleError` (`malformed_json`) for anything that is not one.

    Never anything else, whatever the text: see the module docstring for numbers and nesting.
    """
    try:
        return json.loads(text, parse_int=_parse_int)
    except json.JSONDecodeError as error:
        raise SampleError("malformed_json", f"malformed JSON: {error}") from None
    except RecursionError:
        raise SampleError("malformed_json", "malformed JSON: nested too deeply to read") from None


def load_json(path: Path, what: str) -> Any:
    """The file parsed as one JSON document; any failure is one `UsageError`."""
    text = read_text(path, what)
    try:
        return parse_json(text)
    except SampleError as error:
        raise UsageError(f"{what} {path} is not valid JSON: {error.message.removeprefix('malformed JSON: ')}") from None


def finite_number(value: Any) -> float | None:
    """`value` as a finite float, or None: a bool, a string, NaN, infinity, or an int too large
    for a float (`float()` raises `OverflowError`) is no coordinate."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def named(text: str) -> str:
    """A name from the input as a message shows it: as is when plain, else escaped and shortened like `quoted`."""
    return text if text.isprintable() and len(text) <= QUOTED_CHARACTERS else quoted(text)


def shown(value: Any) -> str:
    """A JSON value as a message may quote it: scalars escaped and shortened, containers by their size.

    A container is never printed: one may hold a whole export, or be nested deeply
    enough that printing it exhausts the recursion limit.
    """
    if isinstance(value, dict):
        return f"an object of {len(value)} key{'' if len(value) == 1 else 's'}"
    if isinstance(value, list | tuple):
        return f"a list of {len(value)} item{'' if len(value) == 1 else 's'}"
    if isinstance(value, str):
        return quoted(value)
    text = repr(value)  # a number, a bool or None: JSON has nothing else
    return text if len(text) <= QUOTED_CHARACTERS else quoted(text)


MAX_LINE_BYTES = 64 << 20
"""A JSON Lines line longer than this is skipped unread: no real annotation line comes near
it, and reading it whole would let one line take the memory of the machine."""

_UNDECODABLE = "\udfff"  # what an undecodable UTF-16/32 unit becomes: no valid text holds a lone surrogate


def _mark_undecodable(error: UnicodeError) -> tuple[str, int]:
    if not isinstance(error, UnicodeDecodeError):
        raise error
    return _UNDECODABLE, error.end


codecs.register_error("converter-undecodable", _mark_undecodable)


@dataclass(frozen=True, slots=True)
class TextLine:
    """One line of a text file: its 1-based number, and its text or why it has none.

    A line that cannot be decoded, or is longer than `MAX_LINE_BYTES`, has `text` None,
    `problem` saying why and `code` naming it for the report (`undecodable_line`,
    `line_too_long`): it costs that line alone, never the lines around it.
    """

    number: int
    text: str | None
    problem: str | None = None
    code: str | None = None


def _too_long(number: int, max_line_bytes: int) -> TextLine:
    return TextLine(number, None, f"line longer than {max_line_bytes >> 20} MiB", "line_too_long")


def iter_lines(path: Path, what: str, max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[TextLine]:
    """The lines of a JSON Lines (or plain text) file, streamed, each decoded on its own.

    The encoding is UTF-8 unless a byte-order mark or the zero bytes of the first
    character say UTF-16 or UTF-32 (Windows tools write those); the mark itself is never
    part of line 1. Lines end at `\\n`; a trailing `\\r` is dropped. Memory is bounded by
    `max_line_bytes`, whatever the file holds.
    """
    try:
        stream = path.open("rb")
    except OSError as error:
        raise UsageError(f"cannot read {what} {path}: {error.strerror}") from None
    with stream:
        try:
            encoding, bom = text_encoding(stream.read(4))
            stream.seek(bom)
        except OSError as error:
            raise UsageError(f"cannot read {what} {path}: {error.strerror}") from None
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
                yield _too_long(number, max_line_bytes)
                continue
            try:
                yield TextLine(number, raw.decode("utf-8").rstrip("\r\n"))
            except UnicodeDecodeError as error:
                yield TextLine(number, None, f"not UTF-8 text (byte {error.start + 1} of the line)", "undecodable_line")


def _wide_lines(stream: BinaryIO, path: Path, what: str, encoding: str, max_line_bytes: int) -> Iterator[TextLine]:
    """Lines of a UTF-16 or UTF-32 file; an undecodable unit marks its line, and only its line."""
    text = io.TextIOWrapper(stream, encoding=encoding, errors="converter-undecodable", newline="\n")
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
            yield _too_long(number, max_line_bytes)
        elif _UNDECODABLE in line:
            yield TextLine(number, None, f"not valid {encoding.upper()} text", "undecodable_line")
        else:
            yield TextLine(number, line.rstrip("\r\n"))


def peek_lines(path: Path, count: int, max_chars: int) -> list[str]:
    """The first `count` lines of a file, each cut at `max_chars`, for recognizing its format.

    Decoded as `iter_lines` decodes them, undecodable parts replaced; never raises for a
    file it cannot read (it returns what it has), and reads at most `count * max_chars`
    characters, however long the lines.
    """
    try:
        with path.open("rb") as stream:
            encoding, bom = text_encoding(stream.read(4))
            stream.seek(bom)
            text = io.TextIOWrapper(stream, encoding=encoding, errors="replace", newline="\n")
            return [text.readline(max_chars) for _ in range(count)]
    except (OSError, UnicodeError):
        return []

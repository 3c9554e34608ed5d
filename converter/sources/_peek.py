"""A cheap look at both ends of a JSON file, for recognizing its format without parsing it.

Exports can be gigabytes, and recognition runs on every candidate file under `-a`, so a
format is recognized from at most `PEEK_BYTES` at each end of the file. Both ends,
because writers put the small sections wherever they like: COCO's own files end with
`categories`, after the large `images` and `annotations` lists. A file smaller than two
peeks is read whole, once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from converter.core.input_files import text_encoding

PEEK_BYTES = 1 << 20
_BYTE_ORDER_MARK = b"\xef\xbb\xbf"
_OBJECT_START = re.compile(rb"\s*\{")


@dataclass(frozen=True)
class FileEnds:
    """The first and last bytes of a file (`tail` is empty when `head` holds the whole file)."""

    head: bytes
    tail: bytes

    def starts_an_object(self) -> bool:
        """Whether the file starts with a JSON object (not a list, as Label Studio exports do)."""
        return _OBJECT_START.match(self.head.removeprefix(_BYTE_ORDER_MARK)) is not None

    def contains(self, pattern: re.Pattern[bytes]) -> bool:
        return pattern.search(self.head) is not None or pattern.search(self.tail) is not None


def json_file_ends(path: Path, suffixes: tuple[str, ...]) -> FileEnds | None:
    """Both ends of `path`, or None if it lacks one of `suffixes` or cannot be read."""
    if path.suffix.lower() not in suffixes or not path.is_file():
        return None
    try:
        with path.open("rb") as stream:
            head = stream.read(2 * PEEK_BYTES)
            if len(head) < 2 * PEEK_BYTES:
                return FileEnds(head, b"")
            stream.seek(-PEEK_BYTES, 2)
            return FileEnds(head[:PEEK_BYTES], stream.read(PEEK_BYTES))
    except OSError:
        return None


HEAD_PEEK_BYTES = 64 * 1024  # enough for the first task of a typical export


@dataclass(frozen=True)
class FileHead:
    """The start of a file as text, and whether the file goes on past it."""

    text: str
    cut_short: bool


def json_file_head(path: Path, suffixes: tuple[str, ...], size: int = HEAD_PEEK_BYTES) -> FileHead | None:
    """The first `size` bytes of `path` as text (leading white space and BOM dropped), or None
    if it lacks one of `suffixes` or cannot be read. UTF-16 and UTF-32 are told by their mark
    or their zero bytes; undecodable bytes are dropped: the peek may cut a character in two."""
    if path.suffix.lower() not in suffixes or not path.is_file():
        return None
    try:
        with path.open("rb") as stream:
            head = stream.read(size)
    except OSError:
        return None
    encoding, mark = text_encoding(head[:4])
    return FileHead(head[mark:].decode(encoding, errors="ignore").lstrip(), cut_short=len(head) == size)

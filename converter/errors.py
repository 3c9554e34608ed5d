"""The converter's error hierarchy.

Two kinds of failure are kept apart on purpose. A `UsageError` means the run cannot
start as asked (a missing manifest, contradictory options): the CLI exits with code 2.
A `SampleError` concerns one input sample (an absent image, a malformed line): the
pipeline lists it in the report and carries on, so one bad sample never sinks a run.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

QUOTED_CHARACTERS = 60


def quoted(value: object, limit: int = QUOTED_CHARACTERS) -> str:
    """User-supplied text as a message may show it: escaped and shortened.

    `repr` escapes control characters, lone surrogates and quotes, so a hostile class name
    can neither break a log line nor fail to encode; the middle of a long value is cut
    (`'aaaa…zzzz' (5000 characters)`), so one value never floods a message.
    """
    text = value if isinstance(value, str) else repr(value)
    escaped = repr(text)
    if len(escaped) <= limit:
        return escaped
    half = max(1, (limit - 1) // 2)
    return f"{escaped[:half]}…{escaped[-half:]} ({len(text)} characters)"


class ConverterError(Exception):
    """Base class of every error the converter raises on purpose."""


class UsageError(ConverterError):
    """The run cannot start as asked; the message says what to change."""


class RunFailedError(ConverterError):
    """The run finished but its result is unusable (nothing converted, too many skips)."""


@dataclass(frozen=True, slots=True)
class SampleLocation:
    """Where a sample came from: the input file, and the 1-based line when the format has lines."""

    file: str
    line: int | None = None
    key: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "file", sys.intern(self.file))  # one copy of the file name for all its samples

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return where if self.key is None else f"{where} ({self.key})"


class SampleError(ConverterError):
    """One sample cannot be converted. `code` is a stable machine-readable reason."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return self.message

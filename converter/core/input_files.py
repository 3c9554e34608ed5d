"""Reading the files a user names (annotation exports, label maps, class lists).

One place decides how such a file is read and what a failure says: UTF-8 with an
optional byte-order mark (Windows editors prepend one), and a `UsageError` that names
what the file was for and where it is, so the CLI exits 2 with one clear line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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

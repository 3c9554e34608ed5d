"""Datumaro's `tf_detection_api` importer on several converted outputs in one process.

Usage: datumaro_import_each.py PATH [PATH...]

Each PATH is imported exactly as `datumaro_import.py PATH` imports it (its `imported`). A path that
fails is reported with its traceback instead of stopping the others, so the test of one output
fails alone. Prints one JSON line: a list with, per PATH, `path` and either `imported` (what
datumaro_import.py prints for it) or `error`.
"""

from __future__ import annotations

import json
import sys
import traceback
from typing import Any

import datumaro_import  # beside this script: the single-path reader, reused as it is


def load(path: str) -> dict[str, Any]:
    try:
        return {"path": path, "imported": datumaro_import.imported(path)}
    except Exception:  # (any failure is this path's result, reported to its test)
        return {"path": path, "error": traceback.format_exc()}


if __name__ == "__main__":
    print(json.dumps([load(path) for path in sys.argv[1:]]))

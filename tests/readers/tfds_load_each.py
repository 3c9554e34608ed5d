"""`tfds.builder_from_directory` on several converted outputs in one process (TensorFlow starts once).

Usage: tfds_load_each.py OUT [OUT...]

Each OUT is read exactly as `tfds_load.py OUT` reads it (its `main`: every split to its end through
TFDS's own parsing and decoding). An output that fails is reported with its traceback instead of
stopping the others, so the test of one output fails alone. Prints one JSON line: a list with, per
OUT, `out` and either `loaded` (what tfds_load.py prints) or `error`.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import traceback
from typing import Any

import tfds_load  # beside this script: the single-output reader, reused as it is


def load(output: str) -> dict[str, Any]:
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            tfds_load.main(output)
        return {"out": output, "loaded": json.loads(printed.getvalue().strip().splitlines()[-1])}
    except Exception:  # (any failure is this output's result, reported to its test)
        return {"out": output, "error": traceback.format_exc(), "printed": printed.getvalue()[-2000:]}


if __name__ == "__main__":
    print(json.dumps([load(output) for output in sys.argv[1:]]))

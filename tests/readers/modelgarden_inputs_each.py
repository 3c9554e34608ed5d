"""Model Garden's inputs for several converted outputs and configs in one process (TensorFlow starts once).

Usage: modelgarden_inputs_each.py TRAIN_BATCHES OUT EXPERIMENT CONFIG [OUT EXPERIMENT CONFIG ...]

Each triple is run exactly as `modelgarden_inputs.py OUT EXPERIMENT CONFIG TRAIN_BATCHES` runs it
(its `main`, from OUT, the registered experiment overridden strictly by CONFIG, `build_inputs` for
training and evaluation, the COCO evaluator fed the ground truth for detection). Importing Model
Garden costs several seconds a process, and CI has two CPUs, so the runs share one process; a run
that raises is reported with its traceback instead of stopping the others, so the test of one
output fails alone. Prints one JSON line: a list with, per triple, `out`, `experiment`, `config`
and either `report` (what modelgarden_inputs.py prints) or `error`.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

import modelgarden_inputs  # beside this script: the single-run reader, whose checks are reused as they are
import tensorflow as tf

# Evaluation labels are printed whole up to this many numbers (the single-run script stops at a million):
# segmentation labels are padded to the largest image, and the real Label Studio exports' images are
# 768 pixels high, so two of them already pass a million.
modelgarden_inputs.MAX_LABEL_VALUES = 8_000_000


def run(output: str, experiment: str, config: str, train_batches: int) -> dict[str, Any]:
    entry: dict[str, Any] = {"out": output, "experiment": experiment, "config": config}
    printed = io.StringIO()
    here = Path.cwd()
    try:
        with contextlib.redirect_stdout(printed):
            modelgarden_inputs.main(Path(output), experiment, config, train_batches)
        entry["report"] = json.loads(printed.getvalue().strip().splitlines()[-1])
    except Exception:  # (any failure is this run's result, reported to its test)
        entry["error"] = traceback.format_exc()
        entry["printed"] = printed.getvalue()[-2000:]
    finally:
        os.chdir(here)  # main() moves into OUT
    return entry


if __name__ == "__main__":
    tf.config.set_visible_devices([], "GPU")
    batches, triples = int(sys.argv[1]), sys.argv[2:]
    if not triples or len(triples) % 3:
        sys.exit("usage: modelgarden_inputs_each.py TRAIN_BATCHES OUT EXPERIMENT CONFIG [OUT EXPERIMENT CONFIG ...]")
    runs = [triples[index : index + 3] for index in range(0, len(triples), 3)]
    print(json.dumps([run(output, experiment, config, batches) for output, experiment, config in runs]))

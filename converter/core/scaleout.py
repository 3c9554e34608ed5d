"""Which slice of a run this machine converts, when a run is spread over several machines.

No coordination service: every worker reads the whole (small) annotation export, computes
the same class list and the same seeded split plan, and takes its own contiguous range of
each split's record order. Concatenating the parts in worker order therefore gives exactly
the records, in exactly the order, of a single-machine run.

Where the slice comes from, first match wins:

1. `--worker-index` / `--num-workers` (or `DATASET_CONVERTER_WORKER_INDEX` /
   `DATASET_CONVERTER_NUM_WORKERS`);
2. Kubernetes Indexed Jobs: the index from `JOB_COMPLETION_INDEX`, which Kubernetes
   injects into every pod. Kubernetes does not inject the completion count, so the Job
   must set `DATASET_CONVERTER_NUM_WORKERS` to its `completions`;
3. SageMaker Processing: `/opt/ml/config/resourceconfig.json`, whose `hosts` lists every
   instance of the job (the count) and `current_host` names this one (the index is its
   position in `hosts`, which SageMaker gives in the same order to every instance).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from converter.errors import UsageError

PARTS_FOLDER = "parts"
PART_MANIFEST = "part.yaml"
KUBERNETES_INDEX_VARIABLE = "JOB_COMPLETION_INDEX"
NUM_WORKERS_VARIABLE = "DATASET_CONVERTER_NUM_WORKERS"
WORKER_INDEX_VARIABLE = "DATASET_CONVERTER_WORKER_INDEX"
RESOURCE_CONFIG_VARIABLE = "DATASET_CONVERTER_RESOURCE_CONFIG"  # tests point it elsewhere
SAGEMAKER_RESOURCE_CONFIG = Path("/opt/ml/config/resourceconfig.json")


@dataclass(frozen=True)
class WorkerSlice:
    """Worker `index` of `count` (0-based)."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise UsageError(f"worker index {self.index} is outside 0..{self.count - 1} (--num-workers {self.count})")

    @property
    def part_name(self) -> str:
        """`worker-00002-of-00004`: the folder under `parts/` this worker owns."""
        return f"worker-{self.index:05d}-of-{self.count:05d}"

    def bounds(self, total: int) -> tuple[int, int]:
        """This worker's [start, stop) of `total` items: contiguous, sizes differing by at most one."""
        return total * self.index // self.count, total * (self.index + 1) // self.count


def _sagemaker_slice(path: Path) -> WorkerSlice | None:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
        hosts, current = list(config["hosts"]), config["current_host"]
        return WorkerSlice(hosts.index(current), len(hosts))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UsageError(f"cannot read the SageMaker resource config {path}: {error!r}") from None


def resolve_worker_slice(
    num_workers: int | None, worker_index: int | None, environ: Mapping[str, str] = os.environ
) -> WorkerSlice | None:
    """This machine's slice, or None for a whole run (one worker, or no scale-out at all).

    `num_workers` and `worker_index` are the options' values (typer already read their
    `DATASET_CONVERTER_*` variables); the Kubernetes and SageMaker defaults are read here.
    """
    if worker_index is None and KUBERNETES_INDEX_VARIABLE in environ:
        raw = environ[KUBERNETES_INDEX_VARIABLE]
        if not raw.isdigit():
            raise UsageError(f"{KUBERNETES_INDEX_VARIABLE}={raw!r} is not a worker index")
        worker_index = int(raw)
        if num_workers is None:
            raise UsageError(
                f"{KUBERNETES_INDEX_VARIABLE} is set (a Kubernetes Indexed Job) but the number of workers is not: set "
                f"{NUM_WORKERS_VARIABLE} (or --num-workers) to the Job's spec.completions"
            )
    if worker_index is None and num_workers is None:
        chosen = _sagemaker_slice(Path(environ.get(RESOURCE_CONFIG_VARIABLE, SAGEMAKER_RESOURCE_CONFIG)))
    elif worker_index is None or num_workers is None:
        raise UsageError("--num-workers and --worker-index go together (or come from JOB_COMPLETION_INDEX)")
    else:
        chosen = WorkerSlice(worker_index, num_workers)
    return chosen if chosen is not None and chosen.count > 1 else None

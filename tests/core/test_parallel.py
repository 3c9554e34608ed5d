"""The ordered worker pool: order, bounded memory, early stop, CPU count, and no TensorFlow in workers."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from converter.core import parallel
from converter.core.parallel import CHUNKS_IN_FLIGHT_PER_WORKER, available_cpus, ordered_map


def _square_with_pid(value: int) -> tuple[int, int]:
    return value * value, os.getpid()


def _slow_square_with_pid(value: int) -> tuple[int, int]:
    time.sleep(0.002)  # long enough that idle workers take the queued chunks
    return value * value, os.getpid()


def _tensorflow_loaded(_: int) -> bool:
    return "tensorflow" in sys.modules


_offset = 0


def _set_offset(offset: int) -> None:
    global _offset
    _offset = offset


def _add_offset(value: int) -> int:
    return value + _offset


def test_results_come_back_in_input_order_from_several_processes() -> None:
    results = list(ordered_map(_slow_square_with_pid, range(300), workers=3, chunk_size=7))
    assert [square for square, _ in results] == [value * value for value in range(300)]
    worker_pids = {pid for _, pid in results}
    assert os.getpid() not in worker_pids
    assert len(worker_pids) >= 2


def test_one_worker_runs_in_this_process_through_the_same_functions() -> None:
    results = list(ordered_map(_square_with_pid, range(10), workers=1, chunk_size=4))
    assert results == [(value * value, os.getpid()) for value in range(10)]


@pytest.mark.parametrize("workers", [1, 2])
def test_the_initializer_hands_every_worker_its_settings(workers: int) -> None:
    assert list(ordered_map(_add_offset, range(50), workers, 4, _set_offset, (1000,))) == list(range(1000, 1050))


def test_workers_never_get_tensorflow_even_when_the_parent_has_it() -> None:
    import tensorflow  # noqa: F401  (the parent has it, as a test suite or a notebook would)

    assert "tensorflow" in sys.modules
    assert not any(ordered_map(_tensorflow_loaded, range(40), workers=2, chunk_size=5))


def test_the_parent_never_pulls_more_than_a_bounded_window_ahead() -> None:
    """A slow consumer (the writer on a slow disk) stalls the input instead of piling up results."""
    pulled = 0

    def counted(total: int) -> Iterator[int]:
        nonlocal pulled
        for value in range(total):
            pulled += 1
            yield value

    workers, chunk_size = 2, 5
    limit = (workers * CHUNKS_IN_FLIGHT_PER_WORKER + 1) * chunk_size
    ahead = []
    for consumed, _ in enumerate(ordered_map(_square_with_pid, counted(400), workers, chunk_size), start=1):
        ahead.append(pulled - consumed)
    assert max(ahead) <= limit
    assert pulled == 400


def test_closing_early_stops_the_pool_without_error() -> None:
    results = ordered_map(_square_with_pid, range(10_000), workers=2, chunk_size=10)
    assert next(results)[0] == 0
    results.close()


def test_the_cpu_count_honours_a_cgroup_quota(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cpu_max = tmp_path / "cpu.max"
    monkeypatch.setattr(parallel, "_CGROUP_CPU_MAX", cpu_max)
    unlimited = len(os.sched_getaffinity(0))
    cpu_max.write_text("max 100000\n")
    assert available_cpus() == unlimited
    cpu_max.write_text("50000 100000\n")  # half a CPU still gets one worker
    assert available_cpus() == 1
    cpu_max.write_text(f"{(unlimited + 4) * 100000} 100000\n")  # a quota above the affinity mask
    assert available_cpus() == unlimited


def test_the_pool_size_follows_the_request_the_work_and_the_run_size(monkeypatch: pytest.MonkeyPatch) -> None:
    from converter.core import plan
    from converter.core.materialize import RecordOptions

    monkeypatch.setattr(plan, "available_cpus", lambda: 8)
    masks, passthrough = RecordOptions(class_masks=True), RecordOptions(objects=True)
    assert plan.pool_size(None, masks, False, 10_000) == 8
    assert plan.pool_size(None, RecordOptions(instance_masks=True), False, 10_000) == 8
    assert plan.pool_size(None, passthrough, False, 10_000) == 7  # a CPU for the writer
    assert plan.pool_size(3, passthrough, False, 10_000) == 3  # asked for: given
    assert plan.pool_size(None, masks, True, 10_000) == 1  # combination classes: one process
    assert plan.pool_size(None, masks, False, 40) == 2  # 16 samples per worker at least
    monkeypatch.setattr(plan, "available_cpus", lambda: 2)
    assert plan.pool_size(None, passthrough, False, 10_000) == 1  # 2 CPUs: in this process

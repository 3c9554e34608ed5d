"""An ordered, bounded map over worker processes: what lets one writer keep the seeded order.

Why processes: reading, rasterizing and PNG-encoding are CPU work in Python and C
extensions that hold the GIL part of the time, so threads would not scale.

Why results come back in input order: each split has one writer, which must write the
records in the seeded order so that the output is byte-identical whatever the number of
workers. Results that finish early wait (at most `window` chunks of them), so memory stays
flat: a slow disk stalls the workers instead of filling the parent's memory.

Why `forkserver`: workers are forked from a small server process that imports only the
converter's worker modules, never from the parent. A parent that has imported TensorFlow
(a test suite, a notebook) therefore never hands a copy of it to its workers, and no
worker is forked from a process that runs threads. `fork` would start faster and `spawn`
would re-import everything in every worker; the server is started once per parent process
and reused by every later pool.

Why workers watch the parent: a worker blocks on its task queue, whose pipe it holds
both ends of, so it would not notice a parent killed with SIGKILL and would live on with
its memory. Each worker watches the parent process (a pidfd, or a poll where there is
none) and exits within a second of its death; the fork server exits by itself when the
parent's end of its pipe closes.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver
import os
import select
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, TypeVar

from converter.errors import ConverterError

Item = TypeVar("Item")
Result = TypeVar("Result")

# Imported once by the fork server, so forked workers start with them loaded. `converter.cli`
# is there because each worker re-imports the main script, as multiprocessing does, and the
# `dataset-converter` script imports it: scripts that call the converter need the usual
# `if __name__ == "__main__":` guard, or every worker runs them again.
WORKER_MODULES = ("converter.core.worker", "converter.sinks", "converter.cli")
CHUNKS_IN_FLIGHT_PER_WORKER = 2  # one being worked on, one waiting: workers never idle, memory bounded
_CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def available_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup v2 CPU quota.

    A container limited to 2 CPUs on a 64-core host sees 64 in `os.cpu_count()`; starting
    64 workers there would only add memory and context switches.
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = _CGROUP_CPU_MAX.read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, int(int(quota) // int(period))))
    except (OSError, ValueError):
        pass  # no cgroup v2 quota: the affinity mask is the limit
    return max(1, cpus)


def _context() -> multiprocessing.context.ForkServerContext:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(WORKER_MODULES))
    return context


def start_fork_server() -> None:
    """Start the fork server now, if it is not running yet.

    It imports the worker modules in its own process (about half a second); started
    before the export is read, that happens while the parent parses, instead of holding
    up the first task.
    """
    _context()
    multiprocessing.forkserver.ensure_running()


PARENT_POLL_SECONDS = 0.5


def watch_parent(parent_pid: int) -> None:
    """End this process as soon as `parent_pid` has exited, from a daemon thread."""

    def wait_and_exit() -> None:
        try:
            descriptor = os.pidfd_open(parent_pid)
        except (OSError, AttributeError):
            descriptor = None
        if descriptor is not None:
            select.select([descriptor], [], [])  # a pidfd turns readable when its process exits
        else:
            while _alive(parent_pid):
                time.sleep(PARENT_POLL_SECONDS)
        os._exit(1)

    threading.Thread(target=wait_and_exit, name="watch-parent", daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _start_worker(parent_pid: int, initializer: Callable[..., None] | None, initargs: tuple[Any, ...]) -> None:
    watch_parent(parent_pid)
    if initializer is not None:
        initializer(*initargs)


def _apply_to_chunk(function: Callable[[Item], Result], chunk: Sequence[Item]) -> list[Result]:
    return [function(item) for item in chunk]


def ordered_map(
    function: Callable[[Item], Result],
    items: Iterable[Item],
    workers: int,
    chunk_size: int,
    initializer: Callable[..., None] | None = None,
    initargs: tuple[Any, ...] = (),
) -> Generator[Result, None, None]:
    """`map(function, items)` on `workers` processes, yielding results in the order of `items`.

    `function` and `initializer` must be module-level functions (they are pickled by
    name); `initializer(*initargs)` runs once in each worker, to hand it what every item
    needs (the class list, the record options) without pickling that with every chunk.
    With `workers <= 1` everything runs in this process, through the same functions.
    Closing the iterator early cancels the work not yet started.
    """
    if workers <= 1:
        if initializer is not None:
            initializer(*initargs)
        yield from map(function, items)
        return
    window = workers * CHUNKS_IN_FLIGHT_PER_WORKER
    executor = ProcessPoolExecutor(
        workers, mp_context=_context(), initializer=_start_worker, initargs=(os.getpid(), initializer, initargs)
    )
    pending: deque[Future[list[Result]]] = deque()
    try:
        for chunk in _chunks(items, chunk_size):
            if len(pending) >= window:
                yield from _result_of(pending.popleft())
            pending.append(executor.submit(_apply_to_chunk, function, chunk))
        while pending:
            yield from _result_of(pending.popleft())
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def _result_of(future: Future[list[Result]]) -> list[Result]:
    try:
        return future.result()
    except BrokenProcessPool:
        raise ConverterError(
            "a worker process died (killed for memory?); rerun with fewer --workers or more memory"
        ) from None


def _chunks(items: Iterable[Item], size: int) -> Iterator[list[Item]]:
    chunk: list[Item] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk

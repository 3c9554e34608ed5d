"""The output folder as the converter owns it: a lock, ownership rules and an atomic switch.

Layout. A dataset's files live in a generation folder inside `.dataset-converter/`, and the
names a user sees at the top of the output folder are symbolic links through one link,
`current`, to the live generation:

    out/dataset_info.yaml  -> .dataset-converter/current/dataset_info.yaml
    out/report.json        -> .dataset-converter/current/report.json
    out/tfrecord_train     -> .dataset-converter/current/tfrecord_train
    out/.dataset-converter/current -> 5f0c...            (the live generation)
    out/.dataset-converter/5f0c.../...                  (its files)
    out/.dataset-converter/lock                          (held while a run writes)

Why links: the output folder is often a mount point, which cannot be renamed, and a
dataset is several top-level entries plus `dataset_info.yaml`; replacing them one by one
always leaves an instant where the old `dataset_info.yaml` lists a missing or a new entry.
Renaming one link over `current` switches every entry at once, so a process killed at any
instant leaves either the previous dataset whole or the new one whole. Kubernetes' atomic
writer publishes ConfigMap volumes the same way (`..data` -> a timestamped folder).

A commit: (1) the new generation is written and flushed to disk (`syncfs`); (2) top-level
links for names the previous dataset lacked are created (they dangle until the switch and
are listed by nothing); (3) a new `current` link is renamed over the old one and the folder
fsynced: this is the commit point; (4) the previous generation and the links only it used
are removed. Anything an interrupted run leaves (a generation `current` does not name, a
dangling link) is listed by no `dataset_info.yaml`, named by `verify`, and removed by the
next run once it holds the lock.

Ownership. A run removes or replaces only (a) what the previous `dataset_info.yaml` lists
(its `entries`, itself and its report), (b) top-level links into `.dataset-converter/`, and
(c) the contents of `.dataset-converter/`. Any other path in the way is a usage error
naming it, found before any work, unless the user passes `--overwrite`.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from converter.core.secret import scrub_data
from converter.errors import ConverterError, UsageError

STATE_FOLDER = ".dataset-converter"
CURRENT_LINK = "current"
LOCK_FILE = "lock"
DATASET_INFO = "dataset_info.yaml"
REPORT = "report.json"
_GENERATION_PREFIX = "g-"
_TEMPORARY_PREFIX = "tmp-"


class OutputLockedError(UsageError):
    """Another conversion holds the output folder's lock."""


def owned_entries(document: Any) -> list[str]:
    """The `entries` a dataset_info.yaml (or a remote publishing marker) lists, each one plain top-level name.

    A hand-edited file never makes a run remove anything outside the output folder or
    prefix, nor below a name the dataset does not own at the top.
    """
    entries = document.get("entries") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        return []
    return [entry for entry in entries if _is_plain_name(entry)]


def _is_plain_name(entry: object) -> bool:
    """One name in the folder: no path, and no glob character (fsspec expands globs in paths it removes)."""
    return (
        isinstance(entry, str)
        and entry not in ("", ".", "..", STATE_FOLDER)
        and not any(character in entry for character in "/\\\x00*?[]")
    )


def fsync_folder(folder: Path) -> None:
    """Make the names in `folder` (a rename, a new link) durable."""
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def flush_file_system(folder: Path) -> None:
    """Flush every file written under `folder`'s file system to disk, in one call.

    A generation holds thousands of files written by the sinks; `syncfs` makes all of
    them (data and names) durable at once, instead of an fsync per file. Where the C
    library lacks it, `os.sync` does the same for every file system.
    """
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.syncfs(descriptor) == 0:
                return
        except (OSError, AttributeError):
            pass
        os.sync()
    finally:
        os.close(descriptor)


def yaml_text(document: dict[str, Any]) -> str:
    """A dataset_info.yaml (or part.yaml) as written: scrubbed of credentials before it is serialized."""
    return yaml.safe_dump(scrub_data(document), sort_keys=False, allow_unicode=True)


def write_durably(path: Path, text: str) -> None:
    """Write a small text file under a temporary name, fsync it, rename it into place."""
    temporary = path.with_name(f".{path.name}.partial")
    with temporary.open("w", encoding="utf-8", errors="backslashreplace") as stream:
        stream.write(text)
        stream.flush()
        os.fsync(stream.fileno())
    temporary.replace(path)


def _link_target(path: Path) -> str | None:
    try:
        return str(path.readlink())
    except OSError:
        return None


def _is_ours(path: Path) -> bool:
    """A top-level link into the state folder is the converter's, whatever dataset made it."""
    target = _link_target(path)
    return target is not None and target.startswith(STATE_FOLDER + "/")


def remove_path(path: Path) -> None:
    """Remove a file, link or folder tree; absent is fine."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


class OutputFolder:
    """One output folder: its lock, its previous dataset, and the commit of a new one."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.state = root / STATE_FOLDER

    # --- the lock -------------------------------------------------------------------------

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the folder's exclusive lock for the block; fail at once if another run holds it.

        `flock` locks belong to the open file, so the kernel drops the lock of a process
        that dies, however it dies: a stale lock file is simply taken over.
        """
        self.check_is_folder()
        created = not self.root.exists()
        try:
            self.state.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(self.state / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as error:
            raise UsageError(_cannot_write(self.root, error)) from None
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            holder = os.pread(descriptor, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(descriptor)
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise OutputLockedError(
                    f"another conversion (pid {holder}) is writing to {self.root}; wait for it to finish, "
                    "or choose another -o"
                ) from None
            raise UsageError(_cannot_write(self.root, error)) from None
        try:
            os.ftruncate(descriptor, 0)
            os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
            yield
        except BaseException:
            if created:
                self._remove_if_unused()
            raise
        finally:
            os.close(descriptor)  # releases the lock

    def _remove_if_unused(self) -> None:
        """After a run that failed before writing anything, remove the folder it created for itself.

        Only while the lock is held, and only when the folder holds nothing but the converter's
        state: a failure report, or anything another process put there, keeps it.
        """
        with contextlib.suppress(OSError):  # a folder that cannot be removed stays: it holds no dataset
            if [entry.name for entry in self.root.iterdir()] == [STATE_FOLDER]:
                shutil.rmtree(self.state)
                self.root.rmdir()

    def check_is_folder(self) -> None:
        """Refuse an output path that is a file, or lies under one, before anything is read or created.

        `mkdir` would fail there too, but with "File exists" or "Not a directory", which reads
        like a permission problem; the fix is another path, not another user.
        """
        for path in (self.root, *self.root.parents):
            try:
                if not path.exists():
                    continue
                if path.is_dir():
                    return
            except OSError:  # not even inspectable (permissions): mkdir reports it
                return
            if path == self.root:
                raise UsageError(f"-o {self.root} is a file; the output must be a folder (it is created if absent)")
            raise UsageError(
                f"-o {self.root} lies under {path}, which is a file; the output must be a folder "
                "(it is created if absent)"
            )

    # --- the previous dataset and what may be replaced --------------------------------------

    def previous_info(self) -> dict[str, Any] | None:
        """The live dataset_info.yaml, or None when there is none (or it cannot be read)."""
        try:
            document = yaml.safe_load((self.root / DATASET_INFO).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            return None
        return document if isinstance(document, dict) else None

    def replaceable(self) -> set[str]:
        """Top-level names a run may remove or replace: the previous dataset's, and links into the state folder."""
        names: set[str] = set()
        previous = self.previous_info()
        if previous is not None:
            names.update(owned_entries(previous))
            names.update((DATASET_INFO, REPORT))
        try:
            listed = list(self.root.iterdir())
        except OSError:
            listed = []
        names.update(path.name for path in listed if _is_ours(path))
        return names

    def check_ownership(self, names: Iterable[str], overwrite: bool) -> None:
        """Refuse, before any work, to replace a path the converter does not own.

        `names` are the top-level names the run will write. With `overwrite`, the user has
        allowed replacing whatever is there.
        """
        if overwrite:
            return
        replaceable = self.replaceable()
        foreign = sorted(
            str(self.root / name)
            for name in set(names)
            if name not in replaceable and os.path.lexists(self.root / name)
        )
        if foreign:
            raise UsageError(
                f"{len(foreign)} path(s) in the output folder were not written by the converter and would be "
                f"replaced: {', '.join(foreign)}; move them away, choose another -o, or pass --overwrite to "
                "replace them"
            )

    def check_writable(self) -> None:
        """Fail before any work when the run could not remove or replace what it must."""
        previous_generation = self.live_generation()
        folders = [self.root, self.state] + ([previous_generation] if previous_generation else [])
        for folder in folders:
            if folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK):
                raise UsageError(_cannot_write(folder, PermissionError(errno.EACCES, "Permission denied")))

    # --- generations --------------------------------------------------------------------------

    def live_generation(self) -> Path | None:
        target = _link_target(self.state / CURRENT_LINK)
        if target is None or "/" in target:
            return None
        return self.state / target

    def new_generation(self) -> Path:
        """A fresh folder for the new dataset, beside the live one (same file system: links and renames work)."""
        try:
            self.state.mkdir(parents=True, exist_ok=True)
            generation = self.state / f"{_GENERATION_PREFIX}{uuid.uuid4().hex}"
            generation.mkdir()
        except OSError as error:
            raise UsageError(_cannot_write(self.root, error)) from None
        return generation

    def remove_leftovers(self, keep: Sequence[Path] = ()) -> None:
        """Remove what interrupted or earlier runs left: generations nothing points at, dangling links.

        Call with the lock held. `keep` names folders of this run (its generation).
        """
        if not self.state.is_dir():
            return
        referenced = {path.name for path in keep}
        live = self.live_generation()
        if live is not None:
            referenced.add(live.name)
        for path in self.root.iterdir():
            if _is_ours(path):
                target = _link_target(path) or ""
                parts = target.split("/")
                if len(parts) > 1 and parts[1] != CURRENT_LINK:
                    referenced.add(parts[1])  # a failed run's report.json points at its own generation
                if not path.exists():
                    path.unlink()  # dangling: a link made for a dataset that was never committed
        for path in self.state.iterdir():
            if path.name in (LOCK_FILE, CURRENT_LINK) or path.name in referenced:
                continue
            remove_path(path)

    def discard(self, generation: Path) -> None:
        """Remove a generation that failed before it was committed (never the live one)."""
        if generation != self.live_generation():
            with contextlib.suppress(OSError):  # what cannot be removed now, the next run removes
                remove_path(generation)

    # --- the commit ---------------------------------------------------------------------------

    def commit(self, generation: Path, names: Sequence[str], overwrite: bool) -> None:
        """Make `generation` the live dataset; `names` are its top-level entries (dataset_info.yaml included)."""
        self.check_ownership(names, overwrite)
        flush_file_system(generation)
        previous = self.live_generation()
        previous_names = set(owned_entries(self.previous_info())) | {DATASET_INFO, REPORT}
        for name in names:
            self._link(name, f"{STATE_FOLDER}/{CURRENT_LINK}/{name}")
        fsync_folder(self.root)
        self._replace_link(self.state / CURRENT_LINK, generation.name)
        fsync_folder(self.state)
        # Committed. What follows only tidies up: a kill or a failure here leaves leftovers (which
        # verify names and the next run removes), never a broken dataset, so it never fails the run.
        try:
            for name in sorted(previous_names - set(names)):
                path = self.root / name
                if _is_ours(path) and not path.exists():
                    path.unlink()
            if previous is not None and previous != generation:
                remove_path(previous)
            self.remove_leftovers(keep=[generation])
            fsync_folder(self.root)
        except OSError:
            return

    def commit_report_only(self, generation: Path) -> None:
        """A failed run: the previous dataset stays live; `report.json` shows this run's report."""
        flush_file_system(generation)
        self._link(REPORT, f"{STATE_FOLDER}/{generation.name}/{REPORT}")
        fsync_folder(self.root)
        with contextlib.suppress(OSError):  # tidying up only: leftovers are removed by the next run
            self.remove_leftovers(keep=[generation])

    def _link(self, name: str, target: str) -> None:
        """Point the top-level `name` at `target`, unless it already does (a live link follows `current`)."""
        path = self.root / name
        if _link_target(path) == target:
            return
        if path.is_dir() and not path.is_symlink():
            # An entry written as a real folder (by an older converter, or a foreign one the user
            # allowed with --overwrite): a link cannot be renamed over a folder, so it goes first.
            shutil.rmtree(path)
        self._replace_link(path, target)

    def _replace_link(self, path: Path, target: str) -> None:
        temporary = self.state / f"{_TEMPORARY_PREFIX}{uuid.uuid4().hex}"
        temporary.symlink_to(target)
        temporary.replace(path)


def _cannot_write(folder: Path, error: OSError) -> str:
    return (
        f"cannot write to the output folder {folder}: {error.strerror}; in a container, run as a user who may "
        'write there (docker run --user "$(id -u):$(id -g)" ...)'
    )


def describe_os_error(error: OSError) -> str:
    """One line for a file-system failure in the middle of a run (a full disk, a read-only mount)."""
    where = f" ({error.filename})" if error.filename else ""
    advice = {
        errno.ENOSPC: "free space there or choose another -o (TMPDIR for a remote -o)",
        errno.EDQUOT: "the disk quota is used up; free space there or choose another -o",
        errno.EROFS: "the file system is read-only; choose another -o",
        errno.EACCES: "permission denied; run as a user who may write there",
        errno.EPERM: "operation not permitted; run as a user who may write there",
    }.get(error.errno or 0, "")
    return f"{error.strerror or error}{where}" + (f"; {advice}" if advice else "")


class CommitError(ConverterError):
    """The new dataset could not be committed; the previous one is still live."""

"""The two interfaces the pipeline is written against: a source and a sink.

A source knows its export format and nothing of outputs; a sink knows its output format
and nothing of exports. Both are registered by CLI name in `converter.sources` and
`converter.sinks`; the pipeline receives instances and never imports either package.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from converter.core.lossiness import Carried
from converter.core.materialize import EncodedSample, RecordOptions
from converter.core.sample import SkipHandler, SourceContents
from converter.core.shard import ShardInfo
from converter.core.split import SplitName
from converter.core.tasks import Task

Payload = TypeVar("Payload")
Payload_contra = TypeVar("Payload_contra", contravariant=True)

RecordEncoder = Callable[[EncodedSample], Payload]
"""Turns a materialized sample into what a split writer writes (a framed TFRecord, or the
sample itself for file formats). It runs in the worker processes, so it must pickle: a
module-level function or an instance of a module-level class."""


class Source(Protocol):
    """Reads one export into samples."""

    def read(self, on_skip: SkipHandler | None = None) -> SourceContents:
        """Every sample of the export, and every entry that could not become one.

        Skipped entries go to `on_skip` as they are met (through a `SkipCollector`), so
        their number costs no memory; without it they come back in `contents.skipped`.
        `on_skip` may raise (`--max-skipped` exceeded): the read then stops at once.
        """
        ...


@dataclass(frozen=True)
class ChecksumManifest:
    """A `sha256sum`-format file listing every file a split of a file-per-sample format wrote.

    dataset_info.yaml records the manifest itself (size and sha256) rather than every
    file: a dataset of 100,000 images would otherwise make it a 15 MB file nobody reads.
    `file` is relative to the output folder, and so are the paths inside the manifest.
    """

    file: str
    files: int
    bytes: int
    sha256: str


@dataclass(frozen=True)
class SplitOutput:
    """What a sink wrote for one split; every path is relative to the output folder.

    `annotations` and `images` are what dataset_info.yaml lists for the split (for TFRecords
    both are the shard folder); `entries` are the top-level files and folders the split
    owns, which the pipeline moves into place and a later run replaces. Sharded formats
    give `shards`; formats that write a file per sample give `checksums`.
    """

    annotations: str
    images: str
    samples: int
    entries: tuple[str, ...]
    shards: tuple[ShardInfo, ...] | None = None
    checksums: ChecksumManifest | None = None
    label_map: str | None = None  # a label map inside the split's folder, beside its records (Datumaro reads it there)
    statistics: dict[str, int] | None = None  # maxima over the split's records that configs depend on (image size...)


class SplitWriter(Protocol[Payload_contra]):
    """Writes the records of one split, in the order it receives them."""

    def write(self, payload: Payload_contra) -> None: ...

    def close(self) -> SplitOutput:
        """Finish every file; called once, after the last `write`."""
        ...


class Sink(Protocol[Payload]):
    """An output format: an encoder that runs in the workers, and a writer per split in the parent.

    The split between the two is a cost decision: what the encoder returns travels from a
    worker process to the parent, so a sink whose records are the image bytes plus a little
    (TFRecord) encodes them completely in the worker, and the parent only appends them.
    """

    supported_tasks: frozenset[Task]  # what this format's records can carry (`--task`; --instance-masks)

    def record_encoder(self, options: RecordOptions) -> RecordEncoder[Payload]: ...

    def open_split(self, output_dir: Path, split: SplitName, options: RecordOptions) -> SplitWriter[Payload]: ...

    def check_class_names(self, class_names: Sequence[str]) -> None:
        """Raise `UsageError` before any work if the format cannot write one of these names."""
        ...

    def entry_names(self, splits: Sequence[SplitName], layout: str) -> tuple[str, ...]:
        """The top-level names a run with these splits and `--layout` writes (folders and dataset-level files).

        Known before any work, so that a run refuses at once to replace a path it does not own.
        """
        ...

    def finish(self, output_dir: Path, class_names: Sequence[str]) -> tuple[str, ...]:
        """Write dataset-level files (a label map) once every split is closed; returns their names."""
        ...

    def describe_layout(self, options: RecordOptions) -> dict[str, Any]:
        """The record layout, for dataset_info.yaml."""
        ...

    def carries(self, options: RecordOptions) -> Carried:
        """What this format's records hold for a run with `options` (`converter.core.lossiness`)."""
        ...


class RecordObserver(Protocol):
    """Watches every record a conversion writes, and leaves its findings in the dataset (statistics).

    The parent passes it, in record order, what `ObserverFactory.describe` took from each
    written sample in the workers. Once the records and dataset_info.yaml are in the staging
    folder, `write` adds the observer's folder, which the commit moves into place with the rest.
    """

    def observe(self, split: SplitName, description: Any) -> None: ...

    def summary(self) -> dict[str, Any]:
        """A few numbers for dataset_info.yaml."""
        ...

    def write(self, dataset: Path, skipped: Iterable[Mapping[str, Any]], skipped_total: int) -> None:
        """Write the observer's entry into `dataset`, which holds the records and dataset_info.yaml."""
        ...


class ObserverFactory(Protocol):
    """Builds a run's observer once its class names are known; says up front what it will write and take."""

    entry: str  # the top-level name the observer writes ("stats"), owned by the dataset like the records

    @property
    def describe(self) -> Callable[[EncodedSample], Any]:
        """What the workers take from each written sample: a module-level function (pickled by name)."""
        ...

    def __call__(self, class_names: Sequence[str]) -> RecordObserver: ...

"""The first half of every run: read the export, fix the class list, choose what records carry, plan splits.

A conversion (`converter.core.pipeline`) then writes the plan, and `dataset-converter check`
(`converter.core.check`) inspects the same plan's samples without writing anything, so
both see exactly the same samples, classes, splits and skips. Everything here works on
annotations only: no image is opened before the plan is made.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from converter.core.classes import ClassList, build_class_list
from converter.core.image_ids import resolve_collisions
from converter.core.lossiness import Loss, find_losses
from converter.core.materialize import EncodedSample, RecordOptions
from converter.core.parallel import available_cpus, ordered_map
from converter.core.protocols import Sink, Source
from converter.core.rasterize import CombinationClasses, OverlapPolicy
from converter.core.report import Report, ReportSummary
from converter.core.sample import Sample, SkippedSample, SourceContents
from converter.core.scaleout import WorkerSlice
from converter.core.split import SplitFractions, SplitName, assign_split, seeded_order
from converter.core.tasks import Task, choose_contents, for_classification
from converter.core.worker import WorkerSettings
from converter.errors import SampleLocation, UsageError, quoted

MIN_SAMPLES_PER_WORKER = 16  # below this a worker costs more to start than it saves
MAX_CHUNK_SAMPLES = 32  # samples per task sent to a worker: fewer round trips, still a smooth progress bar

Result = TypeVar("Result")


@dataclass(frozen=True)
class SkipLimit:
    """`--max-skipped`: a count (`10`) or a fraction of the input samples (`0.05`, `5%`)."""

    count: int | None = None
    fraction: float | None = None

    def __post_init__(self) -> None:
        if (self.count is None) == (self.fraction is None):
            raise ValueError("give exactly one of count and fraction")
        if self.count is not None and self.count < 0:
            raise ValueError(f"--max-skipped count must be >= 0, got {self.count}")
        if self.fraction is not None and not 0 <= self.fraction <= 1:
            raise ValueError(f"--max-skipped fraction must lie in [0, 1], got {self.fraction}")

    @classmethod
    def parse(cls, text: str) -> SkipLimit:
        """`"10"` -> 10 samples; `"0.05"` or `"5%"` -> 5% of the input samples."""
        stripped = text.strip()
        try:
            if stripped.endswith("%"):
                return cls(fraction=float(stripped[:-1]) / 100)
            if stripped.isdigit():
                return cls(count=int(stripped))
            return cls(fraction=float(stripped))
        except ValueError as error:
            raise ValueError(
                f"expected a count like 10 or a fraction like 0.05 or 5%, got {text!r} ({error})"
            ) from None

    def allowed(self, input_samples: int) -> int:
        """How many skipped samples a run of `input_samples` may have."""
        if self.count is not None:
            return self.count
        return math.floor((self.fraction or 0.0) * input_samples + 1e-9)


@dataclass(frozen=True)
class ConvertConfig:
    """Everything a run needs besides its source and sink."""

    output_dir: Path
    fractions: SplitFractions
    seed: int
    pinned_classes: tuple[str, ...] | None = None
    allow_new_classes: bool = False
    absolute_paths: bool = False
    max_skipped: SkipLimit | None = None
    overlap: OverlapPolicy = "order"
    class_priority: tuple[str, ...] = ()
    instance_masks: bool = False
    layout: str = "object-detection-api"
    workers: int | None = 1  # worker processes; None: chosen from the CPUs and the work (`_pool_size`)
    worker_slice: WorkerSlice | None = None  # scale-out: convert only this slice, into parts/<part_name>
    overwrite: bool = False  # replace paths in the output folder that the converter did not write
    task: Task | None = None  # what the records carry (`converter.core.tasks`); None: what the data has
    strict: bool = False  # refuse a run whose records would lose something of the input (`converter.core.lossiness`)


class RunEvents(Protocol):
    """What the pipeline tells the user interface while it runs."""

    def planned(self, writes: list[str], hint: str | None) -> None:
        """Once the export is read: what the records will carry, and how to change it."""
        ...

    def started(self, total_samples: int, already_skipped: int) -> None: ...

    def warning(self, message: str) -> None:
        """Something the user should know about the whole run (not one sample: those go to the report)."""
        ...

    def sample_done(self) -> None: ...

    def sample_skipped(self, location: SampleLocation, code: str, reason: str) -> None: ...

    def lossy(self, losses: Sequence[Loss]) -> None:
        """Once the plan is made: what the records will not carry from the input (only called when something)."""
        ...

    def finished(self, summary: ReportSummary) -> None: ...


@dataclass
class RunPlan:
    """What a run will do, decided from the annotations alone.

    `splits` holds each split's samples in record order (a scaled-out worker's slice only);
    `input_samples` counts every input sample, the source's skipped ones included.
    """

    export: SourceContents
    classes: ClassList
    admitted: list[Sample]
    options: RecordOptions
    combinations: CombinationClasses | None
    splits: dict[SplitName, list[Sample]]
    settings: WorkerSettings
    input_samples: int
    allowed_skips: int | None
    reports_source: bool  # this run reports what the source skipped (not a scaled-out worker other than 0)

    @property
    def planned_samples(self) -> int:
        return sum(len(members) for members in self.splits.values())

    def class_names(self) -> list[str]:
        """The class list of the records: the run's classes, then any combination classes."""
        return [*self.classes.names, *(self.combinations.names if self.combinations else [])]


@dataclass(frozen=True)
class StoppedRead:
    """Reading stopped early: a `--max-skipped` count was exceeded by the source's own skips."""

    skipped: int

    @property
    def failure(self) -> str:
        return (
            f"reading stopped once {self.skipped} input samples were skipped, more than --max-skipped allows; "
            "no dataset was written (the summary counts only what was skipped before reading stopped)"
        )


def plan_run(
    source: Source,
    sink: Sink[Any],
    config: ConvertConfig,
    events: RunEvents,
    report: Report,
    describe: Callable[[EncodedSample], Any] | None = None,
) -> RunPlan | StoppedRead:
    """Read the export into `report` and `events`, and plan the run; only setup problems raise.

    `describe` is a record observer's, run on every written sample in the workers.
    """
    reports_source = config.worker_slice is None or config.worker_slice.index == 0
    read = _read_source(source, report, events, config.max_skipped, reports_source)
    export = read.contents
    if export is None:
        return StoppedRead(read.skipped)
    classes = build_class_list(export.native_class_order, config.pinned_classes, config.allow_new_classes)
    for annotation_note in export.annotation_notes if reports_source else ():
        report.add_object_note(annotation_note.location, None, annotation_note.code, annotation_note.message)
    admitted = []
    for sample in export.samples:
        unknown = [name for name in sample.class_names() if name not in classes]
        if unknown:
            if not reports_source:  # not this worker's to report: worker 0 reports it
                continue
            reason = (
                f"classes {', '.join(map(quoted, unknown))} are not in the --classes list; add them to it or pass "
                "--allow-new-classes"
            )
            skip(report, events, sample.location, "unknown_class", reason)
        else:
            admitted.append(sample)

    sink.check_class_names(classes.names)
    unknown_priority = [name for name in config.class_priority if name not in classes]
    if unknown_priority:
        raise UsageError(f"--class-priority names classes this run does not have: {', '.join(unknown_priority)}")
    if config.task == "classification":
        admitted = [for_classification(sample) for sample in admitted]
    options = _record_options(config, admitted, sink, events)
    losses = find_losses(admitted, sink.carries(options), config.overlap, export.description)
    _state_losses(losses, config, report, events)
    combinations = CombinationClasses(classes.names) if config.overlap == "combine" else None
    input_samples = len(export.samples) + read.skipped
    splits = _plan_splits(admitted, config)
    if reports_source:
        _warn_of_empty_splits(splits, len(admitted), events)
    if config.worker_slice is not None:
        splits = {split: members[slice(*config.worker_slice.bounds(len(members)))] for split, members in splits.items()}
    image_id_overrides, collisions = resolve_collisions(admitted)
    for collision in collisions if reports_source else ():
        report.add_warning(
            collision.sample.location,
            f"its derived image id equals that of {quoted(collision.taken_by)}; image/source_id is "
            f"{collision.image_id} instead",
        )
    return RunPlan(
        export=export,
        classes=classes,
        admitted=admitted,
        options=options,
        combinations=combinations,
        splits=splits,
        settings=WorkerSettings(
            classes, options, combinations, sink.record_encoder(options), image_id_overrides, describe
        ),
        input_samples=input_samples,
        allowed_skips=config.max_skipped.allowed(input_samples) if config.max_skipped else None,
        reports_source=reports_source,
    )


def _state_losses(losses: list[Loss], config: ConvertConfig, report: Report, events: RunEvents) -> None:
    """Tell what the records will not carry, before any work; with `--strict`, refuse the run instead."""
    if losses and config.strict:
        raise UsageError(
            "--strict: this conversion would lose "
            + "; ".join(loss.message for loss in losses)
            + "; choose an output that carries them (-f json keeps shapes and keypoints) or drop --strict"
        )
    report.add_losses(loss.as_dict() for loss in losses)
    if losses and (config.worker_slice is None or config.worker_slice.index == 0):
        events.lossy(losses)


def map_planned(
    plan: RunPlan,
    splits: dict[SplitName, list[Sample]],
    function: Callable[[Sample], Result],
    initializer: Callable[..., None],
    requested_workers: int | None,
) -> tuple[list[tuple[SplitName, Sample]], Generator[Result, None, None]]:
    """`function` over the samples of `splits` on the worker pool, in record order, with the queue it follows.

    `initializer(plan.settings)` runs once in each worker. Close the generator to stop early.
    """
    queue = [(split, sample) for split, members in splits.items() for sample in members]
    workers = pool_size(requested_workers, plan.options, plan.combinations is not None, len(queue))
    results = ordered_map(
        function,
        (sample for _, sample in queue),
        workers,
        chunk_size=_chunk_size(len(queue), workers),
        initializer=initializer,
        initargs=(plan.settings,),
    )
    return queue, results


def _plan_splits(samples: Sequence[Sample], config: ConvertConfig) -> dict[SplitName, list[Sample]]:
    """Each split's samples (by the key's hash, or from source by their file's split), in the seeded record order."""
    plan: dict[SplitName, list[Sample]] = {split: [] for split in config.fractions.active_splits()}
    for sample in samples:
        plan[assign_split(sample.key, config.seed, config.fractions, sample.source_split)].append(sample)
    return {
        split: [members[index] for index in seeded_order([sample.key for sample in members], config.seed)]
        for split, members in plan.items()
    }


def pool_size(requested: int | None, options: RecordOptions, combining: bool, samples: int) -> int:
    """How many worker processes to use; 1 means in this process, without a pool.

    Without a request: every CPU when the run rasterizes or encodes masks (CPU work the
    workers do in parallel), but one CPU fewer when records are mostly the image bytes
    passed through. Then the parent, receiving and writing every record, is busy full time
    and a pool on too few CPUs is slower than one process (measured on 2 CPUs: 2,000
    detection records in 1.0 s in one process, 1.4 s with two workers; polygon masks 4.9 s
    against 3.2 s). Combination classes are numbered as first met in record order, so
    `--overlap combine` keeps one process; and a small run is not worth starting workers.
    """
    if combining:
        return 1
    if requested is None:
        cpus = available_cpus()
        requested = cpus if options.class_masks or options.instance_masks else cpus - 1
    return max(1, min(requested, samples // MIN_SAMPLES_PER_WORKER))


def _chunk_size(samples: int, workers: int) -> int:
    """Samples per worker task: large enough to amortize a round trip, small enough that
    every worker gets several tasks (an even finish) and a task's bytes stay small."""
    return max(1, min(MAX_CHUNK_SAMPLES, samples // (workers * 8)))


class _TooManySkipped(Exception):  # noqa: N818 - a signal between the skip handler and the read, never shown
    """Raised from the skip handler to stop reading the export once `--max-skipped` is exceeded."""


def skip(report: Report, events: RunEvents, location: SampleLocation, code: str, reason: str) -> None:
    """One input sample not written: into the report, and told to the user interface."""
    report.add_skipped(location, code, reason)
    events.sample_skipped(location, code, reason)


@dataclass
class _SourceRead:
    contents: SourceContents | None  # None: a --max-skipped count was exceeded while reading
    skipped: int  # entries the source skipped (counted even where another worker reports them)


def _read_source(
    source: Source, report: Report, events: RunEvents, limit: SkipLimit | None, record_skips: bool
) -> _SourceRead:
    """The export's contents, its skipped entries streamed into the report as they are met.

    A `--max-skipped` count stops the read as soon as it is exceeded, rather than parse the
    rest of a file already known to fail the run. A fraction needs the total, so it is
    checked once the whole export is read.
    """
    count_limit = limit.count if limit is not None and record_skips else None
    skipped = 0

    def on_skip(entry: SkippedSample) -> None:
        nonlocal skipped
        skipped += 1
        if not record_skips:  # a scaled-out worker other than 0: worker 0 reports what the source skipped
            return
        skip(report, events, entry.location, entry.code, entry.reason)
        if count_limit is not None and skipped > count_limit:
            raise _TooManySkipped

    try:
        return _SourceRead(source.read(on_skip), skipped)
    except _TooManySkipped:
        return _SourceRead(None, skipped)


def _record_options(
    config: ConvertConfig, admitted: Sequence[Sample], sink: Sink[Any], events: RunEvents
) -> RecordOptions:
    """What every record carries (`--task`, else what the data has), told to the user before any work."""
    contents = choose_contents(config.task, admitted, config.instance_masks, sink.supported_tasks)
    if admitted:  # nothing will be written otherwise, and the end of the run says why
        events.planned(list(contents.writes), contents.hint)
    return RecordOptions(
        class_masks=contents.class_masks,
        instance_masks=contents.instance_masks,
        keypoints=contents.keypoints,
        overlap=config.overlap,
        class_priority=config.class_priority,
        layout=config.layout,
        objects=contents.objects,
        absolute_root=config.output_dir.absolute() if config.absolute_paths else None,
        keypoints_per_object=max((len(obj.keypoints) for sample in admitted for obj in sample.objects), default=0)
        if contents.object_keypoints
        else 0,
    )


def _warn_of_empty_splits(plan: dict[SplitName, list[Sample]], admitted: int, events: RunEvents) -> None:
    """A split left empty by the hash (a handful of samples): readers of that split would find nothing."""
    for split, members in plan.items():
        if admitted and not members:
            events.warning(
                f"{split} gets none of the {admitted} samples: each sample's split comes from a stable hash "
                "of its key, so a small export can leave a split empty; convert more samples or change -s/--split"
            )

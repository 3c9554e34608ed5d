"""One conversion run: source -> class list -> splits -> materialize -> sinks -> commit.

Memory holds the samples' annotations (small) but only a bounded window of images:
worker processes (`converter.core.parallel`) read, rasterize and encode samples, and one
writer per split appends their records in each split's seeded order, so the output is
byte-identical whatever the number of workers.

Output is atomic and never destructive: the new dataset is written into a generation
folder of its own and switched live in one rename (`converter.core.commit`), with the
output folder locked from the first check to the switch. A failed run (nothing converted,
too many skips) leaves the previous dataset live and shows only its own `report.json`.
The report's entries stream to disk as they are met (`converter.core.report`), so bad
input costs no memory however much of it there is.
"""

from __future__ import annotations

import math
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from converter import __version__
from converter.core.classes import FIRST_CLASS_ID, build_class_list
from converter.core.commit import (
    DATASET_INFO,
    REPORT,
    STATE_FOLDER,
    OutputFolder,
    describe_os_error,
    flush_file_system,
    fsync_folder,
    remove_path,
    write_durably,
    yaml_text,
)
from converter.core.image_ids import resolve_collisions
from converter.core.materialize import RecordOptions
from converter.core.parallel import available_cpus, ordered_map, start_fork_server
from converter.core.protocols import Sink, Source, SplitOutput
from converter.core.rasterize import CombinationClasses, OverlapPolicy
from converter.core.report import Report, ReportSummary
from converter.core.sample import Sample, SkippedSample, SourceContents
from converter.core.scaleout import PART_MANIFEST, PARTS_FOLDER, WorkerSlice
from converter.core.split import SplitFractions, SplitName, assign_split, seeded_order
from converter.core.tasks import Task, choose_contents, for_classification
from converter.core.worker import ConvertedSample, FailedSample, WorkerSettings, convert_sample, install
from converter.errors import ConverterError, SampleLocation, UsageError, quoted

MIN_SAMPLES_PER_WORKER = 16  # below this a worker costs more to start than it saves
MAX_CHUNK_SAMPLES = 32  # samples per task sent to a worker: fewer round trips, still a smooth progress bar


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

    def finished(self, summary: ReportSummary) -> None: ...


@dataclass(frozen=True)
class RunResult:
    summary: ReportSummary
    succeeded: bool


@dataclass
class _ClassCounts:
    objects: dict[int, int]
    images: dict[int, int]

    def add(self, sample: ConvertedSample) -> None:
        for class_id in sample.object_class_ids:
            self.objects[class_id] = self.objects.get(class_id, 0) + 1
        for class_id in sample.class_ids_present:
            self.images[class_id] = self.images.get(class_id, 0) + 1

    def by_name(self, names: Sequence[str]) -> dict[str, dict[str, int]]:
        return {
            name: {"objects": self.objects.get(class_id, 0), "images": self.images.get(class_id, 0)}
            for class_id, name in enumerate(names, start=FIRST_CLASS_ID)
        }


def _plan_splits(samples: Sequence[Sample], config: ConvertConfig) -> dict[SplitName, list[Sample]]:
    """Each split's samples (by the key's hash, or from source by their file's split), in the seeded record order."""
    plan: dict[SplitName, list[Sample]] = {split: [] for split in config.fractions.active_splits()}
    for sample in samples:
        plan[assign_split(sample.key, config.seed, config.fractions, sample.source_split)].append(sample)
    return {
        split: [members[index] for index in seeded_order([sample.key for sample in members], config.seed)]
        for split, members in plan.items()
    }


def _pool_size(requested: int | None, options: RecordOptions, combining: bool, samples: int) -> int:
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


def _dataset_info(
    class_names: Sequence[str],
    outputs: dict[SplitName, SplitOutput],
    counts: dict[SplitName, _ClassCounts],
    config: ConvertConfig,
    layout: dict[str, Any],
    masks: dict[str, Any] | None,
    input_description: dict[str, Any],
    entries: Sequence[str],
) -> dict[str, Any]:
    def path_of(relative: str) -> str:
        return str(config.output_dir.absolute() / relative) if config.absolute_paths else relative

    info: dict[str, Any] = {"classes": list(class_names)}
    for split, output in outputs.items():
        info[split] = {
            "annotations": path_of(output.annotations),
            "images": path_of(output.images),
            "samples": output.samples,
        }
        if output.shards is not None:
            info[split]["shards"] = [
                {"file": path_of(shard.file), "records": shard.records, "bytes": shard.bytes, "sha256": shard.sha256}
                for shard in output.shards
            ]
        if output.label_map is not None:
            info[split]["label_map"] = path_of(output.label_map)
        if output.statistics is not None:
            info[split]["statistics"] = dict(output.statistics)
        if output.checksums is not None:
            manifest = output.checksums
            info[split]["checksums"] = {
                "file": path_of(manifest.file),
                "files": manifest.files,
                "bytes": manifest.bytes,
                "sha256": manifest.sha256,
            }
        info[split]["class_counts"] = counts[split].by_name(class_names)
    info["record_layout"] = layout
    if masks is not None:
        info["masks"] = masks
    info["seed"] = config.seed
    info["split"] = config.fractions.as_dict()
    info["converter"] = {"name": "dataset-converter", "version": __version__}
    info["input"] = input_description
    info["report"] = path_of(REPORT)
    info["entries"] = sorted(entries)  # what this dataset owns in its folder; a rerun replaces exactly these
    return info


class _TooManySkipped(Exception):  # noqa: N818 - a signal between the skip handler and the read, never shown
    """Raised from the skip handler to stop reading the export once `--max-skipped` is exceeded."""


@dataclass
class _Outcome:
    """What a conversion left in its folder: the report's summary, and dataset_info when it succeeded."""

    summary: ReportSummary
    info: dict[str, Any] | None
    entries: list[str]


def run(source: Source, sink: Sink[Any], config: ConvertConfig, events: RunEvents) -> RunResult:
    """Convert one export. Sample problems go to the report; only setup problems raise.

    The output folder's lock is held from the first check to the commit; every check that
    can refuse the run (another run, foreign paths in the way, permissions, free space)
    happens before any work, and the previous dataset stays live until the new one is
    whole on disk (`converter.core.commit`).
    """
    # A pool is certain when even a pass-through run of any size would get one: start its
    # fork server now, in the background, while the export is read.
    if _pool_size(config.workers, RecordOptions(), config.overlap == "combine", sys.maxsize) > 1:
        start_fork_server()
    if config.worker_slice is not None:
        return _run_part(source, sink, config, events, config.worker_slice)
    folder = OutputFolder(config.output_dir)
    with folder.locked():
        folder.check_writable()
        folder.remove_leftovers()
        names = [*sink.entry_names(config.fractions.active_splits(), config.layout), DATASET_INFO, REPORT]
        folder.check_ownership(names, config.overwrite)
        generation = folder.new_generation()
        report = Report()
        try:
            outcome = _convert_with_report(generation, source, sink, config, events, report)
            if outcome.info is None:
                folder.commit_report_only(generation)
            else:
                folder.commit(generation, [*outcome.entries, REPORT, DATASET_INFO], config.overwrite)
        except OSError as error:
            folder.discard(generation)
            failure = f"cannot write the dataset: {describe_os_error(error)}"
            _commit_failure_report(folder, report, failure)
            raise ConverterError(failure) from None
        except BaseException:
            folder.discard(generation)
            raise
        finally:
            report.close()
    return RunResult(outcome.summary, succeeded=outcome.info is not None)


def _commit_failure_report(folder: OutputFolder, report: Report, failure: str) -> None:
    """After a write failure (a full disk), show a report of what the run met, where one can still be written."""
    generation = None
    try:
        generation = folder.new_generation()
        summary = report.summary(input_samples=report.skipped, converted_by_split={}, failure=failure)
        report.write(generation / REPORT, summary)
        folder.commit_report_only(generation)
    except (OSError, UsageError):
        if generation is not None:
            folder.discard(generation)


def _run_part(
    source: Source, sink: Sink[Any], config: ConvertConfig, events: RunEvents, worker_slice: WorkerSlice
) -> RunResult:
    """A scaled-out worker: convert its slice into `parts/<part name>`, and replace only that folder.

    Workers share `parts/`, so each holds a lock of its own part, not of the output folder.
    """
    part = OutputFolder(config.output_dir / PARTS_FOLDER / worker_slice.part_name)
    with part.locked():  # creates the part folder and its parents, or says it cannot
        part.remove_leftovers()
        staging = part.new_generation()
        report = Report()
        try:
            outcome = _convert_with_report(staging, source, sink, config, events, report)
            part_info = None
            if outcome.info is not None:
                part_info = {
                    **outcome.info,
                    "worker": {
                        "index": worker_slice.index,
                        "count": worker_slice.count,
                        "allowed_skips": outcome.info.pop("allowed_skips"),  # finalize applies it to the whole run
                    },
                }
            _commit_part(staging, part.root, part_info)
        except OSError as error:
            raise ConverterError(f"cannot write the part: {describe_os_error(error)}") from None
        finally:
            report.close()
            remove_path(staging)
    return RunResult(outcome.summary, succeeded=outcome.info is not None)


def _commit_part(staging: Path, part_dir: Path, part_info: dict[str, Any] | None) -> None:
    """Replace this worker's part with the staged files, `part.yaml` last.

    A re-run worker (Kubernetes retries a failed index) thus overwrites its own part only.
    `part.yaml` is removed first and written last, and only by a worker that succeeded:
    finalize merges parts that have one, checks their shards against it, and names the
    parts that do not.
    """
    (part_dir / PART_MANIFEST).unlink(missing_ok=True)
    for path in part_dir.iterdir():
        if path.name != STATE_FOLDER:
            remove_path(path)
    for path in sorted(staging.iterdir()):
        path.replace(part_dir / path.name)
    if part_info is not None:
        flush_file_system(part_dir)
        write_durably(part_dir / PART_MANIFEST, yaml_text(part_info))
    fsync_folder(part_dir)


def _skip(report: Report, events: RunEvents, location: SampleLocation, code: str, reason: str) -> None:
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
        _skip(report, events, entry.location, entry.code, entry.reason)
        if count_limit is not None and skipped > count_limit:
            raise _TooManySkipped

    try:
        return _SourceRead(source.read(on_skip), skipped)
    except _TooManySkipped:
        return _SourceRead(None, skipped)


def _convert_with_report(
    staging: Path, source: Source, sink: Sink[Any], config: ConvertConfig, events: RunEvents, report: Report
) -> _Outcome:
    record_source_skips = config.worker_slice is None or config.worker_slice.index == 0
    read = _read_source(source, report, events, config.max_skipped, record_source_skips)
    export = read.contents
    if export is None:
        return _failed(
            staging,
            report,
            events,
            read.skipped,
            f"reading stopped once {read.skipped} input samples were skipped, more than --max-skipped allows; "
            "no dataset was written (the summary counts only what was skipped before reading stopped)",
        )
    classes = build_class_list(export.native_class_order, config.pinned_classes, config.allow_new_classes)

    for annotation_note in export.annotation_notes if record_source_skips else ():
        report.add_object_note(annotation_note.location, None, annotation_note.code, annotation_note.message)
    admitted = []
    for sample in export.samples:
        unknown = [name for name in sample.class_names() if name not in classes]
        if unknown:
            if not record_source_skips:  # not this worker's to report: worker 0 reports it
                continue
            reason = (
                f"classes {', '.join(map(quoted, unknown))} are not in the --classes list; add them to it or pass "
                "--allow-new-classes"
            )
            _skip(report, events, sample.location, "unknown_class", reason)
        else:
            admitted.append(sample)

    sink.check_class_names(classes.names)
    unknown_priority = [name for name in config.class_priority if name not in classes]
    if unknown_priority:
        raise UsageError(f"--class-priority names classes this run does not have: {', '.join(unknown_priority)}")
    if config.task == "classification":
        admitted = [for_classification(sample) for sample in admitted]
    options = _record_options(config, admitted, sink, events)
    combinations = CombinationClasses(classes.names) if config.overlap == "combine" else None
    input_samples = len(export.samples) + read.skipped
    allowed_skips = config.max_skipped.allowed(input_samples) if config.max_skipped else None
    plan = _plan_splits(admitted, config)
    if record_source_skips:
        _warn_of_empty_splits(plan, len(admitted), events)
    if config.worker_slice is not None:
        plan = {split: members[slice(*config.worker_slice.bounds(len(members)))] for split, members in plan.items()}
    _check_free_space(staging, plan)
    events.started(sum(len(members) for members in plan.values()), report.skipped)

    if allowed_skips is not None and report.skipped > allowed_skips:
        plan = {split: [] for split in plan}  # the source's own skips already exceed the limit: convert nothing
    image_id_overrides, collisions = resolve_collisions(admitted)
    for collision in collisions if record_source_skips else ():
        report.add_warning(
            collision.sample.location,
            f"its derived image id equals that of {quoted(collision.taken_by)}; image/source_id is "
            f"{collision.image_id} instead",
        )
    settings = WorkerSettings(classes, options, combinations, sink.record_encoder(options), image_id_overrides)
    outputs, counts = _write_records(staging, sink, plan, settings, config.workers, report, events, allowed_skips)

    converted: dict[str, int] = {split: output.samples for split, output in outputs.items()}
    if allowed_skips is not None and report.skipped > allowed_skips:
        return _failed(
            staging,
            report,
            events,
            input_samples,
            f"{report.skipped} of {input_samples} input samples were skipped, more than --max-skipped allows "
            f"({allowed_skips}); conversion stopped",
            converted,
        )
    if sum(converted.values()) == 0 and config.worker_slice is None:  # finalize checks the whole run
        return _failed(
            staging, report, events, input_samples, f"none of the {input_samples} input samples could be converted"
        )
    summary = report.summary(input_samples=input_samples, converted_by_split=converted, failure=None)
    report.write(staging / REPORT, summary)
    class_names = [*classes.names, *(combinations.names if combinations else [])]
    entries = [entry for output in outputs.values() for entry in output.entries]
    entries += sink.finish(staging, class_names)
    info = _dataset_info(
        class_names,
        outputs,
        counts,
        config,
        sink.describe_layout(options),
        _masks_description(config, combinations) if options.class_masks else None,
        {
            **export.description,
            "samples": input_samples,
            "converted": summary["converted"],
            "skipped": summary["skipped"],
        },
        entries,
    )
    if config.worker_slice is None:
        write_durably(staging / DATASET_INFO, yaml_text(info))
    else:
        info["allowed_skips"] = allowed_skips
    events.finished(summary)
    return _Outcome(summary, info, entries)


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


def _write_records(
    staging: Path,
    sink: Sink[Any],
    plan: dict[SplitName, list[Sample]],
    settings: WorkerSettings,
    requested_workers: int | None,
    report: Report,
    events: RunEvents,
    allowed_skips: int | None,
) -> tuple[dict[SplitName, SplitOutput], dict[SplitName, _ClassCounts]]:
    """Convert the planned samples on the workers and write each split's records in the seeded order.

    Stops early once `allowed_skips` is exceeded; every sample not written is in the report.
    """
    writers = {split: sink.open_split(staging, split, settings.options) for split in plan}
    counts: dict[SplitName, _ClassCounts] = {split: _ClassCounts({}, {}) for split in plan}
    queue = [(split, sample) for split, members in plan.items() for sample in members]
    workers = _pool_size(requested_workers, settings.options, settings.combinations is not None, len(queue))
    results = ordered_map(
        convert_sample,
        (sample for _, sample in queue),
        workers,
        chunk_size=_chunk_size(len(queue), workers),
        initializer=install,
        initargs=(settings,),
    )
    try:
        for (split, sample), result in zip(queue, results, strict=True):
            if isinstance(result, FailedSample):
                _skip(report, events, sample.location, result.code, result.message)
                if allowed_skips is not None and report.skipped > allowed_skips:
                    break
                continue
            writers[split].write(result.payload)
            counts[split].add(result)
            for note in result.notes:
                report.add_object_note(sample.location, note.object_index, note.code, note.message)
            for warning in result.warnings:
                report.add_warning(sample.location, warning)
            events.sample_done()
    finally:
        results.close()  # stops the workers now when the loop broke off early
    return {split: writer.close() for split, writer in writers.items()}, counts


def _masks_description(config: ConvertConfig, combinations: CombinationClasses | None) -> dict[str, Any]:
    return {
        "format": "png, single channel: 0 background, class ids from 1, 255 ignore",
        "overlap": config.overlap,
        **({"class_priority": list(config.class_priority)} if config.overlap == "priority" else {}),
        **({"combinations": combinations.components()} if combinations else {}),
        "instance_masks": config.instance_masks,
    }


def _failed(
    staging: Path,
    report: Report,
    events: RunEvents,
    input_samples: int,
    failure: str,
    converted: dict[str, int] | None = None,
) -> _Outcome:
    """A run that writes no dataset: only its report, which says why."""
    summary = report.summary(input_samples=input_samples, converted_by_split=converted or {}, failure=failure)
    report.write(staging / REPORT, summary)
    events.finished(summary)
    return _Outcome(summary, None, [])


FREE_SPACE_MARGIN = 1.1  # masks, records' framing and dataset_info.yaml on top of the images' bytes


def _check_free_space(staging: Path, plan: dict[SplitName, list[Sample]]) -> None:
    """Refuse a run whose images alone would not fit in the output file system, before writing any.

    The estimate is the size of the local image files (records and copies hold them byte for
    byte); images in a bucket are not counted. The previous dataset stays on disk until the
    new one is complete, so the new one must fit beside it.
    """
    needed = 0
    for members in plan.values():
        for sample in members:
            if isinstance(sample.image_path, Path):
                try:
                    needed += sample.image_path.stat().st_size
                except OSError:
                    continue  # a missing image is reported by its sample
    needed = int(needed * FREE_SPACE_MARGIN)
    free = shutil.disk_usage(staging).free
    if needed > free:
        raise UsageError(
            f"the output file system has {free / 2**20:,.0f} MiB free, and this dataset needs about "
            f"{needed / 2**20:,.0f} MiB (its images); free space or choose another -o"
        )

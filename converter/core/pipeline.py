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

import itertools
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from converter import __version__
from converter.core.classes import FIRST_CLASS_ID
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
from converter.core.materialize import RecordOptions
from converter.core.parallel import start_fork_server
from converter.core.plan import ConvertConfig, RunEvents, RunPlan, StoppedRead, map_planned, plan_run, pool_size, skip
from converter.core.protocols import ObserverFactory, RecordObserver, Sink, Source, SplitOutput
from converter.core.rasterize import CombinationClasses
from converter.core.report import Report, ReportSummary
from converter.core.sample import Sample
from converter.core.scaleout import PART_MANIFEST, PARTS_FOLDER, WorkerSlice
from converter.core.split import SplitName
from converter.core.worker import ConvertedSample, FailedSample, convert_sample, install
from converter.errors import ConverterError, UsageError


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


@dataclass
class _Outcome:
    """What a conversion left in its folder: the report's summary, and dataset_info when it succeeded."""

    summary: ReportSummary
    info: dict[str, Any] | None
    entries: list[str]


def run(
    source: Source,
    sink: Sink[Any],
    config: ConvertConfig,
    events: RunEvents,
    observers: ObserverFactory | None = None,
) -> RunResult:
    """Convert one export. Sample problems go to the report; only setup problems raise.

    The output folder's lock is held from the first check to the commit; every check that
    can refuse the run (another run, foreign paths in the way, permissions, free space)
    happens before any work, and the previous dataset stays live until the new one is
    whole on disk (`converter.core.commit`).
    """
    # A pool is certain when even a pass-through run of any size would get one: start its
    # fork server now, in the background, while the export is read.
    if pool_size(config.workers, RecordOptions(), config.overlap == "combine", sys.maxsize) > 1:
        start_fork_server()
    if config.worker_slice is not None:  # statistics need every record: `dataset-converter stats` after finalize
        return _run_part(source, sink, config, events, config.worker_slice)
    folder = OutputFolder(config.output_dir)
    with folder.locked():
        folder.check_writable()
        folder.remove_leftovers()
        names = [*sink.entry_names(config.fractions.active_splits(), config.layout), DATASET_INFO, REPORT]
        names += [observers.entry] if observers is not None else []
        folder.check_ownership(names, config.overwrite)
        generation = folder.new_generation()
        report = Report()
        try:
            outcome = _convert_with_report(generation, source, sink, config, events, report, observers)
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


def _convert_with_report(
    staging: Path,
    source: Source,
    sink: Sink[Any],
    config: ConvertConfig,
    events: RunEvents,
    report: Report,
    observers: ObserverFactory | None = None,
) -> _Outcome:
    plan = plan_run(source, sink, config, events, report, observers.describe if observers is not None else None)
    if isinstance(plan, StoppedRead):
        return _failed(staging, report, events, plan.skipped, plan.failure)
    observer = observers(plan.class_names()) if observers is not None else None
    _check_free_space(staging, plan.splits)
    events.started(plan.planned_samples, report.skipped)
    splits = plan.splits
    if plan.allowed_skips is not None and report.skipped > plan.allowed_skips:
        splits = {split: [] for split in splits}  # the source's own skips already exceed the limit: convert nothing
    outputs, counts = _write_records(staging, sink, plan, splits, config.workers, report, events, observer)

    converted: dict[str, int] = {split: output.samples for split, output in outputs.items()}
    input_samples = plan.input_samples
    if plan.allowed_skips is not None and report.skipped > plan.allowed_skips:
        return _failed(
            staging,
            report,
            events,
            input_samples,
            f"{report.skipped} of {input_samples} input samples were skipped, more than --max-skipped allows "
            f"({plan.allowed_skips}); conversion stopped",
            converted,
        )
    if sum(converted.values()) == 0 and config.worker_slice is None:  # finalize checks the whole run
        return _failed(
            staging, report, events, input_samples, f"none of the {input_samples} input samples could be converted"
        )
    summary = report.summary(input_samples=input_samples, converted_by_split=converted, failure=None)
    report.write(staging / REPORT, summary)
    class_names = plan.class_names()
    entries = [entry for output in outputs.values() for entry in output.entries]
    entries += sink.finish(staging, class_names)
    if observer is not None and observers is not None:
        entries.append(observers.entry)
    info = _dataset_info(
        class_names,
        outputs,
        counts,
        config,
        sink.describe_layout(plan.options),
        _masks_description(config, plan.combinations) if plan.options.class_masks else None,
        {
            **plan.export.description,
            "samples": input_samples,
            "converted": summary["converted"],
            "skipped": summary["skipped"],
        },
        entries,
    )
    if observer is not None and observers is not None:
        info[observers.entry] = observer.summary()
    if config.worker_slice is None:
        write_durably(staging / DATASET_INFO, yaml_text(info))
        if observer is not None:  # reads the records back, and dataset_info.yaml to find them
            observer.write(staging, itertools.islice(report.entries("skipped"), SKIPPED_SHOWN), report.skipped)
    else:
        info["allowed_skips"] = plan.allowed_skips
    events.finished(summary)
    return _Outcome(summary, info, entries)


def _write_records(
    staging: Path,
    sink: Sink[Any],
    plan: RunPlan,
    splits: dict[SplitName, list[Sample]],
    requested_workers: int | None,
    report: Report,
    events: RunEvents,
    observer: RecordObserver | None,
) -> tuple[dict[SplitName, SplitOutput], dict[SplitName, _ClassCounts]]:
    """Convert the planned samples on the workers and write each split's records in the seeded order.

    Stops early once the plan's allowed skips are exceeded; every sample not written is in the report.
    """
    writers = {split: sink.open_split(staging, split, plan.options) for split in splits}
    counts: dict[SplitName, _ClassCounts] = {split: _ClassCounts({}, {}) for split in splits}
    queue, results = map_planned(plan, splits, convert_sample, install, requested_workers)
    try:
        for (split, sample), result in zip(queue, results, strict=True):
            if isinstance(result, FailedSample):
                skip(report, events, sample.location, result.code, result.message)
                if plan.allowed_skips is not None and report.skipped > plan.allowed_skips:
                    break
                continue
            writers[split].write(result.payload)
            counts[split].add(result)
            if observer is not None:
                observer.observe(split, result.description)
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


SKIPPED_SHOWN = 500  # skipped samples an observer may show (the statistics page); report.json lists them all
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

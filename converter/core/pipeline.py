"""One conversion run: source -> class list -> splits -> materialize -> sinks -> commit.

Memory holds the samples' annotations (small) but only a bounded window of images:
worker processes (`converter.core.parallel`) read, rasterize and encode samples, and one
writer per split appends their records in each split's seeded order, so the output is
byte-identical whatever the number of workers.

Output is atomic. Everything is written into a staging folder inside the output folder
(the output folder itself is often a mount point, which cannot be renamed), then moved
into place: the previous `dataset_info.yaml` is removed first and the new one is moved
in last, so at no moment does a `dataset_info.yaml` point at partial or mixed shards.
A failed run (nothing converted, too many skips) writes only `report.json`.
"""

from __future__ import annotations

import math
import shutil
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml

from converter import __version__
from converter.core.classes import FIRST_CLASS_ID, build_class_list
from converter.core.materialize import RecordOptions
from converter.core.parallel import available_cpus, ordered_map, start_fork_server
from converter.core.protocols import Sink, Source, SplitOutput
from converter.core.rasterize import CombinationClasses, OverlapPolicy
from converter.core.report import Report, ReportDocument, write_json
from converter.core.sample import Sample
from converter.core.scaleout import PART_MANIFEST, PARTS_FOLDER, WorkerSlice
from converter.core.split import SplitFractions, SplitName, assign_split, seeded_order
from converter.core.worker import ConvertedSample, FailedSample, WorkerSettings, convert_sample, install
from converter.errors import SampleLocation, UsageError

DATASET_INFO = "dataset_info.yaml"
REPORT = "report.json"
STAGING_PREFIX = ".dataset-converter-staging-"
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


class RunEvents(Protocol):
    """What the pipeline tells the user interface while it runs."""

    def started(self, total_samples: int, already_skipped: int) -> None: ...

    def sample_done(self) -> None: ...

    def sample_skipped(self, location: SampleLocation, code: str, reason: str) -> None: ...

    def finished(self, document: ReportDocument) -> None: ...


@dataclass(frozen=True)
class RunResult:
    report: ReportDocument
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
    """Each split's samples, in the seeded record order."""
    plan: dict[SplitName, list[Sample]] = {split: [] for split in config.fractions.active_splits()}
    for sample in samples:
        plan[assign_split(sample.key, config.seed, config.fractions)].append(sample)
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


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _previous_outputs(output_dir: Path) -> list[Path]:
    """The entries the previous dataset_info.yaml in `output_dir` owned, so a rerun replaces them.

    Only paths inside the output folder count: a hand-edited file never makes us delete
    anything outside it.
    """
    try:
        previous = yaml.safe_load((output_dir / DATASET_INFO).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return []
    entries = previous.get("entries") if isinstance(previous, dict) else None
    if not isinstance(entries, list):
        return []
    root = output_dir.resolve()
    owned = [(output_dir / entry).resolve() for entry in entries if isinstance(entry, str)]
    return [path for path in owned if path.is_relative_to(root) and path != root]


def _commit(staging: Path, output_dir: Path, names: Sequence[str]) -> None:
    """Move staged entries into the output folder; `dataset_info.yaml`, if staged, moves last."""
    stale = [output_dir / DATASET_INFO, *_previous_outputs(output_dir)]
    for path in stale + [output_dir / name for name in names]:
        _remove(path)
    for name in sorted(names, key=lambda name: name == DATASET_INFO):
        (staging / name).replace(output_dir / name)
    shutil.rmtree(staging)


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


def run(source: Source, sink: Sink[Any], config: ConvertConfig, events: RunEvents) -> RunResult:
    """Convert one export. Sample problems go to the report; only setup problems raise."""
    # A pool is certain when even a pass-through run of any size would get one: start its
    # fork server now, in the background, while the export is read.
    if _pool_size(config.workers, RecordOptions(), config.overlap == "combine", sys.maxsize) > 1:
        start_fork_server()
    if config.worker_slice is None:
        staging = _create_staging(config.output_dir, STAGING_PREFIX)
    else:  # workers share parts/: each cleans up and replaces only what carries its own name
        staging = _create_staging(config.output_dir / PARTS_FOLDER, f"{STAGING_PREFIX}{config.worker_slice.part_name}-")
    try:
        return _convert_into(staging, source, sink, config, events)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def _create_staging(output_dir: Path, prefix: str) -> Path:
    """A fresh staging folder in the output folder; checked before any work, so a read-only
    or foreign-owned output fails in a second, not after the whole conversion."""
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        for leftover in output_dir.glob(prefix + "*"):
            _remove(leftover)  # an interrupted earlier run's staging folder
        staging = output_dir / f"{prefix}{uuid.uuid4().hex}"
        staging.mkdir()
    except OSError as error:
        raise UsageError(
            f"cannot write to the output folder {output_dir}: {error.strerror}; in a container, run as a user "
            'who may write there (docker run --user "$(id -u):$(id -g)" ...)'
        ) from None
    return staging


def _convert_into(
    staging: Path, source: Source, sink: Sink[Any], config: ConvertConfig, events: RunEvents
) -> RunResult:
    contents = source.read()
    report = Report()
    classes = build_class_list(contents.native_class_order, config.pinned_classes, config.allow_new_classes)

    def skip(location: SampleLocation, code: str, reason: str) -> None:
        report.add_skipped(location, code, reason)
        events.sample_skipped(location, code, reason)

    for skipped in contents.skipped:
        skip(skipped.location, skipped.code, skipped.reason)
    for annotation_note in contents.annotation_notes:
        report.add_object_note(annotation_note.location, None, annotation_note.code, annotation_note.message)
    admitted = []
    for sample in contents.samples:
        unknown = [name for name in sample.class_names() if name not in classes]
        if unknown:
            skip(
                sample.location,
                "unknown_class",
                f"classes {unknown} are not in the --classes list; add them to it or pass --allow-new-classes",
            )
        else:
            admitted.append(sample)

    sink.check_class_names(classes.names)
    unknown_priority = [name for name in config.class_priority if name not in classes]
    if unknown_priority:
        raise UsageError(f"--class-priority names classes this run does not have: {', '.join(unknown_priority)}")
    options = RecordOptions(
        class_masks=any(sample.has_mask for sample in admitted),
        instance_masks=config.instance_masks,
        keypoints=any(sample.keypoints for sample in admitted),
        overlap=config.overlap,
        class_priority=config.class_priority,
        layout=config.layout,
        objects=any(sample.objects for sample in admitted),
        absolute_root=config.output_dir.absolute() if config.absolute_paths else None,
    )
    combinations = CombinationClasses(classes.names) if config.overlap == "combine" else None
    input_samples = len(contents.samples) + len(contents.skipped)
    allowed_skips = config.max_skipped.allowed(input_samples) if config.max_skipped else None
    plan = _plan_splits(admitted, config)
    if config.worker_slice is not None:
        plan = {split: members[slice(*config.worker_slice.bounds(len(members)))] for split, members in plan.items()}
        if config.worker_slice.index != 0:  # what the source itself skipped is reported once, by worker 0
            report = Report()
    events.started(sum(len(members) for members in plan.values()), len(report.skipped))

    encoder = sink.record_encoder(options)
    writers = {split: sink.open_split(staging, split, options) for split in plan}
    counts: dict[SplitName, _ClassCounts] = {split: _ClassCounts({}, {}) for split in plan}
    queue = [(split, sample) for split, members in plan.items() for sample in members]
    if allowed_skips is not None and len(report.skipped) > allowed_skips:
        queue = []  # the source's own skips already exceed the limit: convert nothing
    workers = _pool_size(config.workers, options, combinations is not None, len(queue))
    results = ordered_map(
        convert_sample,
        (sample for _, sample in queue),
        workers,
        chunk_size=_chunk_size(len(queue), workers),
        initializer=install,
        initargs=(WorkerSettings(classes, options, combinations, encoder),),
    )
    try:
        for (split, sample), result in zip(queue, results, strict=True):
            if isinstance(result, FailedSample):
                skip(sample.location, result.code, result.message)
                if allowed_skips is not None and len(report.skipped) > allowed_skips:
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
    outputs: dict[SplitName, SplitOutput] = {split: writer.close() for split, writer in writers.items()}

    failure: str | None = None
    converted: dict[str, int] = {split: output.samples for split, output in outputs.items()}
    if allowed_skips is not None and len(report.skipped) > allowed_skips:
        failure = (
            f"{len(report.skipped)} of {input_samples} input samples were skipped, more than "
            f"--max-skipped allows ({allowed_skips}); conversion stopped"
        )
    elif sum(converted.values()) == 0 and config.worker_slice is None:  # finalize checks the whole run
        failure = f"none of the {input_samples} input samples could be converted"
    document = report.document(input_samples=input_samples, converted_by_split=converted, failure=failure)
    write_json(staging / REPORT, document)
    if failure:
        if config.worker_slice is not None:
            _commit_part(staging, config.output_dir / PARTS_FOLDER / config.worker_slice.part_name, None)
        else:
            _commit_report_only(staging, config.output_dir)
    else:
        class_names = [*classes.names, *(combinations.names if combinations else [])]
        entries = [entry for output in outputs.values() for entry in output.entries]
        entries += sink.finish(staging, class_names)
        masks = None
        if options.class_masks:
            masks = {
                "format": "png, single channel: 0 background, class ids from 1, 255 ignore",
                "overlap": config.overlap,
                **({"class_priority": list(config.class_priority)} if config.overlap == "priority" else {}),
                **({"combinations": combinations.components()} if combinations else {}),
                "instance_masks": config.instance_masks,
            }
        info = _dataset_info(
            class_names,
            outputs,
            counts,
            config,
            sink.describe_layout(options),
            masks,
            {
                **contents.description,
                "samples": input_samples,
                "converted": document["summary"]["converted"],
                "skipped": document["summary"]["skipped"],
            },
            entries,
        )
        if config.worker_slice is None:
            (staging / DATASET_INFO).write_text(
                yaml.safe_dump(info, sort_keys=False, allow_unicode=True), encoding="utf-8"
            )
            _commit(staging, config.output_dir, [*entries, REPORT, DATASET_INFO])
        else:
            info["worker"] = {
                "index": config.worker_slice.index,
                "count": config.worker_slice.count,
                "allowed_skips": allowed_skips,  # finalize applies --max-skipped to the whole run
            }
            _commit_part(staging, config.output_dir / PARTS_FOLDER / config.worker_slice.part_name, info)
    events.finished(document)
    return RunResult(report=document, succeeded=failure is None)


def _commit_part(staging: Path, part_dir: Path, part_info: dict[str, Any] | None) -> None:
    """Replace this worker's part folder, and nothing else, with the staged one.

    A re-run worker (Kubernetes retries a failed index) thus overwrites its own part only.
    `part.yaml` is written last, and only by a worker that succeeded: finalize merges
    folders that have one and names those that do not.
    """
    if part_info is not None:
        (staging / PART_MANIFEST).write_text(
            yaml.safe_dump(part_info, sort_keys=False, allow_unicode=True), encoding="utf-8"
        )
    _remove(part_dir)
    staging.replace(part_dir)


def _commit_report_only(staging: Path, output_dir: Path) -> None:
    """A failed run leaves the previous dataset untouched and writes its report beside it."""
    (staging / REPORT).replace(output_dir / REPORT)
    shutil.rmtree(staging)

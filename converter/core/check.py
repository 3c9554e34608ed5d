"""`dataset-converter check`: the conversion's own plan and per-sample work, with nothing written.

A check reads the export and plans the run exactly as `convert` would (`converter.core.plan`),
then has the workers materialize every planned sample (read its image header, rasterize
its shapes, check its mask) without encoding a record. So what it predicts a conversion
would skip is what a conversion skips. On top of that it looks for what a conversion
would write without complaint but a user would not want: the same image under two keys,
boxes reaching outside their image, invalid polygons, sizes that disagree with the
export's, classes that miss a split, images without annotations.

Image pixels are never decoded: the image header gives the size, and truncation shows as
a missing end marker (`converter.core.images.probe_image`). Mask files are decoded, since
only their pixels tell whether every value maps to a class.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from converter.core.lossiness import Loss
from converter.core.plan import ConvertConfig, RunPlan, StoppedRead, map_planned, plan_run, skip
from converter.core.protocols import Sink, Source
from converter.core.report import Report, ReportSummary
from converter.core.sample import Sample
from converter.core.split import SplitName
from converter.core.worker import FailedSample, InspectedSample, inspect_sample, install
from converter.errors import SampleLocation, quoted

EXAMPLES = 3  # examples shown per kind of problem; the --report file has every one


@dataclass
class Finding:
    """One kind of problem, how often it occurs, what to do about it, and its first examples."""

    code: str
    advice: str
    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, example: str) -> None:
        self.count += 1
        if len(self.examples) < EXAMPLES:
            self.examples.append(example)

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "count": self.count, "advice": self.advice, "examples": self.examples}


_ADVICE = {
    "duplicate_image": "the same image bytes under different keys: both would be written, and may land in "
    "different splits (a validation image the model trained on); remove one",
    "duplicate_key": "the same image key twice: the second would be written again under the same key",
    "size_mismatch": "the image file's size differs from the size the export declares; the converter trusts "
    "the file and normalizes boxes by the declared size, so re-export the annotations for these images",
    "box_outside_image": "boxes reaching outside their image: clipped to it when converted",
    "degenerate_box": "boxes with no area inside their image: dropped when converted",
    "keypoint_outside": "keypoints outside their image: dropped (or written as not labelled) when converted",
    "invalid_polygon": "polygons that cross themselves or collapse: painted as drawn when converted",
    "class_missing_from_split": "classes no sample of a split has: that split cannot train or evaluate them; "
    "label more samples of them or change -s/--seed",
    "unannotated_image": "images with no annotation at all: written as negatives (nothing to find); "
    "check they were not left unlabelled by mistake",
}
NOTICES = frozenset({"unannotated_image"})  # worth knowing, but often meant (negatives): not a problem
_NOTE_FINDINGS = {  # the materializer's note codes, and the finding each is
    "clipped": "box_outside_image",
    "degenerate_box": "degenerate_box",
    "keypoint_outside": "keypoint_outside",
}


@dataclass
class ClassCounts:
    """Per split: images and objects of each class, from the annotations of the planned samples."""

    images: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    objects: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))

    def add(self, split: SplitName, sample: Sample) -> None:
        self.images[split].update(sample.class_names())
        self.objects[split].update(obj.class_name for obj in sample.objects)


@dataclass
class CheckResult:
    """What a check found; `clean` is what exit 0 means."""

    input_samples: int
    splits: dict[str, int]
    class_names: list[str]
    counts: ClassCounts
    writes: list[str]
    losses: list[Loss]
    skipped: dict[str, Finding]  # by skip code: what a conversion would not write
    annotation_notes: dict[str, Finding]  # by code: annotations the source drops or changes
    findings: list[Finding]  # problems: exit 1
    notices: list[Finding]  # worth a look, often meant: exit 0
    warnings: list[str]
    summary: ReportSummary
    seconds: float

    @property
    def clean(self) -> bool:
        return not (self.skipped or self.annotation_notes or self.findings)

    def as_dict(self) -> dict[str, Any]:
        return {
            "clean": self.clean,
            "input_samples": self.input_samples,
            "splits": self.splits,
            "writes": self.writes,
            "classes": {
                name: {
                    split: {"images": self.counts.images[split][name], "objects": self.counts.objects[split][name]}
                    for split in self.splits
                }
                for name in self.class_names
            },
            "would_skip": [finding.as_dict() for finding in self.skipped.values()],
            "annotation_notes": [finding.as_dict() for finding in self.annotation_notes.values()],
            "problems": [finding.as_dict() for finding in self.findings],
            "notices": [finding.as_dict() for finding in self.notices],
            "lossy": [loss.as_dict() for loss in self.losses],
            "warnings": self.warnings,
        }


class CheckProgress(Protocol):
    """Where a check shows how far it is (the run's progress bar, or its JSON progress lines)."""

    def started(self, total_samples: int, already_skipped: int) -> None: ...

    def sample_done(self) -> None: ...


class _CheckEvents:
    """The plan's events, kept for the check's summary; only progress is shown as it happens."""

    def __init__(self, progress: CheckProgress | None) -> None:
        self._progress = progress
        self.writes: list[str] = []
        self.losses: list[Loss] = []
        self.warnings: list[str] = []
        self.skipped: dict[str, Finding] = {}

    def planned(self, writes: list[str], hint: str | None) -> None:
        self.writes = writes

    def started(self, total_samples: int, already_skipped: int) -> None:
        if self._progress is not None:
            self._progress.started(total_samples, already_skipped)

    def warning(self, message: str) -> None:
        self.warnings.append(message)

    def lossy(self, losses: Sequence[Loss]) -> None:
        self.losses = list(losses)

    def sample_done(self) -> None:
        if self._progress is not None:
            self._progress.sample_done()

    def sample_skipped(self, location: SampleLocation, code: str, reason: str) -> None:
        self.skipped.setdefault(code, Finding(code, "")).add(f"{location}: {reason}")

    def finished(self, summary: ReportSummary) -> None:
        """The check's result carries the summary."""


def check_export(
    source: Source, sink: Sink[Any], config: ConvertConfig, report: Report, progress: CheckProgress | None = None
) -> CheckResult | str:
    """Check an export as a conversion with `sink` and `config` would see it; a str: reading stopped, why."""
    started = time.monotonic()
    events = _CheckEvents(progress)
    plan = plan_run(source, sink, config, events, report)
    if isinstance(plan, StoppedRead):
        return plan.failure
    findings = {code: Finding(code, advice) for code, advice in _ADVICE.items()}
    counts = ClassCounts()
    converted: dict[str, int] = dict.fromkeys(plan.splits, 0)
    events.started(plan.planned_samples, report.skipped)
    _inspect(plan, config, report, events, findings, counts, converted)
    _classes_missing_from_splits(plan, counts, findings["class_missing_from_split"])
    summary = report.summary(input_samples=plan.input_samples, converted_by_split=converted, failure=None)
    return CheckResult(
        input_samples=plan.input_samples,
        splits=converted,
        class_names=plan.class_names(),
        counts=counts,
        writes=events.writes,
        losses=events.losses,
        skipped=events.skipped,
        annotation_notes=_annotation_notes(report),
        findings=[finding for finding in findings.values() if finding.count and finding.code not in NOTICES],
        notices=[finding for finding in findings.values() if finding.count and finding.code in NOTICES],
        warnings=events.warnings,
        summary=summary,
        seconds=time.monotonic() - started,
    )


def _inspect(
    plan: RunPlan,
    config: ConvertConfig,
    report: Report,
    events: _CheckEvents,
    findings: dict[str, Finding],
    counts: ClassCounts,
    converted: dict[str, int],
) -> None:
    """Every planned sample through the workers; their findings, and the same image under several keys.

    Only the samples a conversion would write are counted into `counts` and `converted` (and
    can be unannotated images): a sample whose image cannot be read is skipped by a conversion,
    so counting it would show classes and split sizes the written dataset does not have.
    """
    first_key_of_image: dict[bytes, str] = {}
    seen_keys: set[str] = set()
    queue, results = map_planned(plan, plan.splits, inspect_sample, install, config.workers)
    try:
        for (split, sample), result in zip(queue, results, strict=True):
            events.sample_done()
            if sample.key in seen_keys:
                findings["duplicate_key"].add(f"{sample.location}: {quoted(sample.key)}")
            seen_keys.add(sample.key)
            if isinstance(result, FailedSample):
                skip(report, events, sample.location, result.code, result.message)
                continue
            counts.add(split, sample)
            converted[split] += 1
            if not sample.class_names():
                findings["unannotated_image"].add(str(sample.location))
            _record(sample, result, findings, report)
            first = first_key_of_image.setdefault(result.sha256, sample.key)
            if first != sample.key:
                findings["duplicate_image"].add(f"{quoted(sample.key)} has the same bytes as {quoted(first)}")
    finally:
        results.close()


def _record(sample: Sample, result: InspectedSample, findings: dict[str, Finding], report: Report) -> None:
    for note in result.notes:
        findings[_NOTE_FINDINGS[note.code]].add(f"{sample.location}: {note.message}")
        report.add_object_note(sample.location, note.object_index, note.code, note.message)
    for warning in result.warnings:
        report.add_warning(sample.location, warning)
    if result.declared_size_mismatch is not None:
        findings["size_mismatch"].add(f"{sample.location}: {result.declared_size_mismatch}")
    for problem in result.invalid_polygons:
        findings["invalid_polygon"].add(f"{sample.location}: {problem}")


def _classes_missing_from_splits(plan: RunPlan, counts: ClassCounts, finding: Finding) -> None:
    """A class that has samples, but none in a split that has samples."""
    totals = Counter[str]()
    for per_split in counts.images.values():
        totals.update(per_split)
    for name in plan.classes.names:
        if not totals[name]:
            continue
        for split, members in plan.splits.items():
            if members and not counts.images[split][name]:
                finding.add(f"{quoted(name)}: {totals[name]} images, none in {split}")


def _annotation_notes(report: Report) -> dict[str, Finding]:
    """The annotations the source dropped or changed while reading, grouped by code.

    The materializer's notes name their object and are findings of their own; the source's
    (read before any sample is materialized) have no object index.
    """
    notes: dict[str, Finding] = {}
    for entry in report.entries("objects"):
        if entry["object"] is None:
            where = SampleLocation(entry["file"], entry["line"], entry["key"])
            notes.setdefault(entry["code"], Finding(entry["code"], "")).add(f"{where}: {entry['message']}")
    return notes

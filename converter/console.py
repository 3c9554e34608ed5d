"""What a run tells whoever watches it: a person at a terminal, or a log collector.

On a terminal: a status line while the export is read, a bar with a labelled ETA while
samples are converted, then a summary of the skips (counts per reason, a few examples,
a diagnosis when one cause explains most of them) and a last line naming the output,
the time taken and the rate. Elsewhere (Kubernetes, SageMaker): one JSON object per line,
the same facts as fields. Both implement the pipeline's `RunEvents`.

Everything shown is scrubbed of registered secrets: skip reasons and paths may quote URLs.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from converter.core.check import CheckResult
from converter.core.lossiness import Loss
from converter.core.report import ReportSummary
from converter.core.secret import scrub, scrub_data
from converter.errors import SampleLocation, quoted

SKIPS_LOGGED_PER_CODE = 5  # a million bad lines must not become a million log lines
EXAMPLES_PER_CODE = 3
PROGRESS_EVERY_S = 10.0
DIAGNOSED_SHARE = 0.8  # one cause explaining this share of the skips gets a diagnosis...
DIAGNOSED_INPUT_SHARE = 0.5  # ...when it also struck this share of the input

# What to check when one skip code explains most skips: {what}, {images}, {example} are filled in.
_ADVICE = {
    "missing_image": "{what} missing under {images}: is -i/--images right? The first one: {example}",
    "missing_mask": "{what} have no mask file where the export says: are the masks under the images folder "
    "(-i), or --masks for a mask folder? The first one: {example}",
    "unknown_class": "{what} have classes missing from --classes: add them there or pass --allow-new-classes. "
    "The first one: {example}",
    "unreadable_image": "{what} could not be decoded: are they images? The first one: {example}",
}


def _rate(done: int, elapsed: float) -> float:
    return done / elapsed if elapsed > 0 else 0.0


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {seconds:02d} s"


@dataclass
class SkipTally:
    """Skips counted per reason code, with the first few examples of each, for the end-of-run summary."""

    counts: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, location: SampleLocation, code: str, reason: str) -> None:
        self.counts[code] += 1
        examples = self.examples.setdefault(code, [])
        if len(examples) < EXAMPLES_PER_CODE:
            where = location.key or (f"{location.file}:{location.line}" if location.line else location.file)
            shown = quoted(reason, 200)[1:-1]
            examples.append(shown if str(where) in reason else f"{quoted(where, 80)}: {shown}")

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def diagnosis(self, input_samples: int, images: str) -> str | None:
        """One sentence when a single cause explains most skips: the likely mistake and the next step."""
        if not self.counts:
            return None
        code, count = self.counts.most_common(1)[0]
        if count < DIAGNOSED_SHARE * self.total or count < DIAGNOSED_INPUT_SHARE * input_samples:
            return None  # mixed causes, or a few bad samples in a sound export: no single mistake to name
        what = f"all {count:,} samples" if count == input_samples else f"{count:,} of {input_samples:,} samples"
        example = self.examples[code][0]
        advice = _ADVICE.get(code, "{what} were skipped as " + code + ". The first one: {example}")
        return advice.format(what=what, images=images, example=example)

    def as_fields(self) -> dict[str, dict[str, Any]]:
        return {code: {"count": count, "examples": self.examples[code]} for code, count in self.counts.most_common()}


@dataclass
class RunContext:
    """Where a run reads and writes, for the lines that tell the user where to look."""

    output: str
    images: str
    started: float = field(default_factory=time.monotonic)
    action: str = "converting"  # what the progress bar says it is doing ("checking")

    def elapsed(self) -> float:
        return time.monotonic() - self.started


class JsonLogEvents:
    """One JSON object per line on stderr: for logs collected by Kubernetes or SageMaker."""

    def __init__(self, context: RunContext) -> None:
        self._context = context
        self._total = 0
        self._done = 0
        self._converting_since = 0.0
        self._last_progress = 0.0
        self._skips = SkipTally()

    @staticmethod
    def log(event: str, **fields: Any) -> None:
        """One event; every string in it scrubbed (skip reasons and destinations may quote URLs or servers)."""
        line = scrub_data({"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "event": event, **fields})
        sys.stderr.write(json.dumps(line, ensure_ascii=False) + "\n")
        sys.stderr.flush()

    def reading(self, what: str) -> None:
        self.log("reading", annotations=what)

    def planned(self, writes: list[str], hint: str | None) -> None:
        self.log("plan", writes=writes, hint=hint)

    def started(self, total_samples: int, already_skipped: int) -> None:
        self._total = total_samples
        self._converting_since = time.monotonic()
        self.log("started", samples=total_samples, skipped_while_reading=already_skipped)

    def sample_done(self) -> None:
        self._done += 1
        now = time.monotonic()
        if now - self._last_progress >= PROGRESS_EVERY_S or self._done == self._total:
            self._last_progress = now
            rate = _rate(self._done, now - self._converting_since)
            eta = (self._total - self._done) / rate if rate > 0 else None
            self.log(
                "progress",
                done=self._done,
                total=self._total,
                rate=round(rate, 2),
                eta_s=round(eta, 1) if eta is not None else None,
            )

    def sample_skipped(self, location: SampleLocation, code: str, reason: str) -> None:
        """The first few skips of each reason, in full; the rest only counted (report.json lists them all)."""
        self._skips.add(location, code, reason)
        count = self._skips.counts[code]
        if count <= SKIPS_LOGGED_PER_CODE:
            self.log("skipped", file=location.file, line=location.line, key=location.key, code=code, reason=reason)
        if count == SKIPS_LOGGED_PER_CODE:
            self.log("skipped_quiet", code=code, note="further skips of this code are counted, not logged")

    def finished(self, summary: ReportSummary) -> None:
        if self._skips.counts:
            diagnosis = self._skips.diagnosis(summary["input_samples"], self._context.images)
            self.log("skips", skipped=self._skips.total, by_code=self._skips.as_fields(), diagnosis=diagnosis)
        elapsed = self._context.elapsed()
        self.log(
            "finished",
            **summary,
            output=self._context.output,
            elapsed_s=round(elapsed, 2),
            rate=round(_rate(summary["converted"], elapsed), 2),
        )

    def warning(self, message: str) -> None:
        self.log("warning", message=message)

    def lossy(self, losses: Sequence[Loss]) -> None:
        self.log("lossy", losses=[loss.as_dict() for loss in losses])

    def interrupted(self, kept: str) -> None:
        self.log("interrupted", output=self._context.output, note=kept)

    def note(self, event: str, destination: str) -> None:
        self.log(event, destination=destination)

    def stop(self) -> None:
        """Nothing to take down: each line is complete."""


class TerminalEvents:
    """A spinner while the export is read, then a progress bar; then the skip summary and one closing line."""

    def __init__(self, context: RunContext) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._context = context
        self._console = Console(stderr=True, highlight=False)
        self._reading = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=self._console,
            transient=True,
        )
        self._progress = Progress(
            TextColumn(context.action),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[skipped]} skipped"),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self._console,
            transient=True,
        )
        self._task = self._progress.add_task("convert", total=None, skipped=0)
        self._skips = SkipTally()

    def _say(self, text: str) -> None:
        self._console.print(scrub(text), markup=False, highlight=False, soft_wrap=False)

    def reading(self, what: str) -> None:
        self._reading.add_task(scrub(f"reading {what}"), total=None)
        self._reading.start()

    def planned(self, writes: list[str], hint: str | None) -> None:
        self._reading.stop()
        self._say(f"writing {', '.join(writes)}" + (f" ({hint})" if hint else ""))

    def started(self, total_samples: int, already_skipped: int) -> None:
        self._reading.stop()
        self._progress.update(self._task, total=total_samples, skipped=already_skipped)
        self._progress.start()

    def sample_done(self) -> None:
        self._progress.advance(self._task)

    def sample_skipped(self, location: SampleLocation, code: str, reason: str) -> None:
        self._skips.add(location, code, reason)
        self._progress.update(self._task, skipped=self._skips.total)

    def finished(self, summary: ReportSummary) -> None:
        self._reading.stop()  # a run that stopped while reading never started the bar
        self._progress.stop()
        report = f"{self._context.output.rstrip('/')}/report.json"
        if self._skips.counts:
            self._say(f"skipped {self._skips.total:,} of {summary['input_samples']:,} samples (all in {report}):")
            for code, entry in self._skips.as_fields().items():
                self._say(f"  {code}: {entry['count']:,}")
                for example in entry["examples"]:
                    self._say(f"    e.g. {example}")
            diagnosis = self._skips.diagnosis(summary["input_samples"], self._context.images)
            if diagnosis:
                self._say(f"diagnosis: {diagnosis}")
        elapsed = self._context.elapsed()
        splits = ", ".join(f"{split} {count:,}" for split, count in summary["converted_by_split"].items())
        boxes = (
            f"; {summary['clipped_boxes']:,} boxes clipped, {summary['dropped_boxes']:,} dropped"
            if summary["clipped_boxes"] or summary["dropped_boxes"]
            else ""
        )
        if summary["failure"] is None:
            self._say(
                f"converted {summary['converted']:,} of {summary['input_samples']:,} samples ({splits}){boxes} "
                f"into {self._context.output} in {_duration(elapsed)} "
                f"({_rate(summary['converted'], elapsed):,.1f} samples/s); report: {report}"
            )

    def warning(self, message: str) -> None:
        self._say(f"WARNING: {message}")

    def stop(self) -> None:
        """Take the spinner and the bar off the terminal (`check` prints its findings after)."""
        self._reading.stop()
        self._progress.stop()

    def lossy(self, losses: Sequence[Loss]) -> None:
        self._reading.stop()
        self._say("the records will not carry everything in the input (--strict refuses such a run):")
        for loss in losses:
            self._say(f"  - {loss.message}")

    def interrupted(self, kept: str) -> None:
        self._reading.stop()
        self._progress.stop()
        self._say(f"interrupted: {kept}")

    def note(self, event: str, destination: str) -> None:
        self._say(f"{event} {destination}")


def describe_check(result: CheckResult, what_was_read: str, report_file: Path | None) -> str:
    """`check`'s findings as a page of text: what a conversion would do, then everything to fix, then losses."""
    split_sizes = ", ".join(f"{split} {count:,}" for split, count in result.splits.items())
    lines = [
        f"checked {what_was_read}: {result.input_samples:,} input samples in {result.seconds:.1f} s",
        f"a conversion would write {', '.join(result.writes) or 'nothing'}: {split_sizes}",
    ]
    if result.class_names:
        width = max(len(name) for name in result.class_names) + 2
        lines.append("classes, images/objects per split:")
        lines.append("  " + "".join([f"{'class':<{width}}", *(f"{split:>16}" for split in result.splits)]))
        for name in result.class_names:
            cells = (
                f"{result.counts.images[split][name]:,}/{result.counts.objects[split][name]:,}"
                for split in result.splits
            )
            lines.append("  " + "".join([f"{name:<{width}}", *(f"{cell:>16}" for cell in cells)]))
    for title, findings in (
        ("would skip", list(result.skipped.values())),
        ("annotations the export's reader drops or changes", list(result.annotation_notes.values())),
        ("problems", result.findings),
        ("worth a look", result.notices),
    ):
        if findings:
            lines.append(f"{title}:")
            for finding in findings:
                advice = f" ({finding.advice})" if finding.advice else ""
                lines.append(f"  {finding.code}: {finding.count:,}{advice}")
                lines.extend(f"    {example}" for example in finding.examples)
    if result.losses:
        lines.append("the records would not carry (--strict refuses such a conversion):")
        lines.extend(f"  {loss.message}" for loss in result.losses)
    lines.extend(f"WARNING: {warning}" for warning in result.warnings)
    if result.clean:
        lines.append("no problems found")
    else:
        kinds = len(result.skipped) + len(result.annotation_notes) + len(result.findings)
        where = f"every one is in {report_file}" if report_file else "--report FILE lists every one"
        lines.append(f"found {kinds} kinds of problem; {where}")
    return "\n".join(scrub(line) for line in lines)

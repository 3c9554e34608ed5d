"""The `dataset-converter` command line: parse options, build a run, report the outcome.

This is the only module that prints or exits. Exit codes: 0 success; 1 the run
converted nothing, exceeded `--max-skipped`, or `verify` found a problem; 2 usage errors.
Logs go to stderr: a progress bar on a terminal, otherwise one JSON object per line
(Kubernetes and SageMaker collect logs, not terminals).
"""

from __future__ import annotations

import enum
import importlib.util
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
import yaml

from converter import __version__
from converter.core.classes import load_pinned_classes
from converter.core.commit import DATASET_INFO, describe_os_error
from converter.core.finalize import finalize as finalize_parts
from converter.core.pipeline import ConvertConfig, SkipLimit, run
from converter.core.report import ReportSummary
from converter.core.scaleout import NUM_WORKERS_VARIABLE, WORKER_INDEX_VARIABLE, resolve_worker_slice
from converter.core.secret import Secret, refuse_url_credentials, scrub, scrub_data
from converter.core.shard import megabytes_to_bytes
from converter.core.split import SPLIT_NAMES, parse_split_fractions
from converter.core.storage import RemotePath, as_location
from converter.core.verify import verify_dataset
from converter.errors import ConverterError, SampleLocation, UsageError, quoted
from converter.remote_run import RemoteRun
from converter.sinks import SINKS
from converter.sinks.tfrecord import check_record_contents
from converter.sinks.tfrecord_keys import OBJECT_DETECTION_API
from converter.sinks.training_stacks import merge_training_stack
from converter.sources import SOURCES, LocatedExport, SourceOptions

app = typer.Typer(
    help="Turn annotation exports into training-ready datasets (size-sharded TFRecords, stable splits, a report).",
    pretty_exceptions_show_locals=False,  # locals may hold credentials; never print them
    add_completion=False,
    no_args_is_help=True,
)

OutputFormat = enum.Enum("OutputFormat", {name: name for name in SINKS}, type=str)  # type: ignore[misc]
SourceFormat = enum.Enum("SourceFormat", {name: name for name in SOURCES}, type=str)  # type: ignore[misc]

IMAGE_CACHE_FOLDER = ".image-cache"
INPUT_PANEL, SPLIT_PANEL, OUTPUT_PANEL = "Input", "Splits and classes", "Output"
MASKS_PANEL, LABEL_STUDIO_PANEL, SCALE_PANEL = "Masks", "Label Studio server", "Scale AI"
SCALE_OUT_PANEL = "Parallelism and scale-out"
LABEL_STUDIO_TOKEN_VARIABLE = "LABEL_STUDIO_API_KEY"
SCALE_KEY_VARIABLE = "SCALE_API_KEY"
DEBUG_VARIABLE = "DATASET_CONVERTER_DEBUG"
SKIPS_LOGGED_PER_CODE = 5  # a million bad lines must not become a million log lines


class RecordLayout(enum.StrEnum):
    object_detection_api = "object-detection-api"
    modelpack = "modelpack"


class Overlap(enum.StrEnum):
    order = "order"
    priority = "priority"
    combine = "combine"


class AnnotationRule(enum.StrEnum):
    ground_truth_then_newest = "ground-truth-then-newest"
    newest = "newest"
    oldest = "oldest"


def _secret_from(path: Path | None, variable: str, what: str) -> Secret:
    """A credential from a file (its path given by an option), else from an environment variable.

    Wrapped in `Secret` at once, so it never reaches a log line, a report or a traceback, and
    registered for `scrub` by that, so that no derived form of it (base64, a piece a server
    quoted) does either.
    """
    secret = _optional_secret(path, variable)
    if secret is None:
        raise UsageError(f"no {what}: set {variable} or pass the option naming a file that holds it")
    return secret


def _optional_secret(path: Path | None, variable: str) -> Secret | None:
    if path is not None:
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as error:
            raise UsageError(f"cannot read {path}: {error.strerror}") from None
        if not value:
            raise UsageError(f"{path} is empty")
        return Secret(value)
    value = os.environ.get(variable, "").strip()
    return Secret(value) if value else None


def _note(events: JsonLogEvents | TerminalEvents, event: str, destination: RemotePath) -> None:
    """A step after the conversion (uploading a remote output): a JSON event in logs, a line on a terminal."""
    if isinstance(events, JsonLogEvents):
        events.log(event, destination=str(destination))
    else:
        typer.echo(scrub(f"{event} {destination}"), err=True)


def _fail(message: str, code: int) -> NoReturn:
    """The one error line, scrubbed: messages may quote what a server echoed back."""
    typer.echo(f"ERROR: {scrub(message)}", err=True)
    raise typer.Exit(code=code)


class JsonLogEvents:
    """One JSON object per line on stderr: for logs collected by Kubernetes or SageMaker."""

    def __init__(self) -> None:
        self._total = 0
        self._done = 0
        self._last_progress = 0.0
        self._skips_by_code: Counter[str] = Counter()

    @staticmethod
    def log(event: str, **fields: Any) -> None:
        """One event; every string in it scrubbed (skip reasons and destinations may quote URLs or servers)."""
        line = scrub_data({"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "event": event, **fields})
        sys.stderr.write(json.dumps(line, ensure_ascii=False) + "\n")
        sys.stderr.flush()

    def started(self, total_samples: int, already_skipped: int) -> None:
        self._total = total_samples
        self.log("started", samples=total_samples, skipped_while_reading=already_skipped)

    def sample_done(self) -> None:
        self._done += 1
        now = time.monotonic()
        if now - self._last_progress >= 10 or self._done == self._total:
            self._last_progress = now
            self.log("progress", done=self._done, total=self._total)

    def sample_skipped(self, location: SampleLocation, code: str, reason: str) -> None:
        """The first few skips of each reason, in full; the rest only counted (report.json lists them all)."""
        self._skips_by_code[code] += 1
        count = self._skips_by_code[code]
        if count <= SKIPS_LOGGED_PER_CODE:
            self.log("skipped", file=location.file, line=location.line, key=location.key, code=code, reason=reason)
        if count == SKIPS_LOGGED_PER_CODE:
            self.log("skipped_quiet", code=code, note="further skips of this code are counted, not logged")

    def finished(self, summary: ReportSummary) -> None:
        for code, count in sorted(self._skips_by_code.items()):
            if count > SKIPS_LOGGED_PER_CODE:
                self.log("skipped_more", code=code, count=count, logged=SKIPS_LOGGED_PER_CODE)
        self.log("finished", **summary)


class TerminalEvents:
    """A progress bar on a terminal; skips are counted on the bar and listed in report.json."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(
            TextColumn("converting"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[skipped]} skipped"),
            TimeRemainingColumn(),
            transient=True,
        )
        self._task = self._progress.add_task("convert", total=None, skipped=0)
        self._skipped = 0

    def started(self, total_samples: int, already_skipped: int) -> None:
        self._progress.update(self._task, total=total_samples)
        self._progress.start()

    def sample_done(self) -> None:
        self._progress.advance(self._task)

    def sample_skipped(self, location: SampleLocation, code: str, reason: str) -> None:
        self._skipped += 1
        self._progress.update(self._task, skipped=self._skipped)

    def finished(self, summary: ReportSummary) -> None:
        self._progress.stop()
        typer.echo(
            scrub(
                f"{summary['converted']} of {summary['input_samples']} samples converted "
                f"({', '.join(f'{split} {count}' for split, count in summary['converted_by_split'].items())}); "
                f"{summary['skipped']} skipped, {summary['clipped_boxes']} boxes clipped, "
                f"{summary['dropped_boxes']} dropped; details in report.json"
            ),
            err=True,
        )


@app.command()
def convert(
    annotations: Annotated[
        str,
        typer.Option(
            "-a",
            "--annotations",
            envvar="DATASET_CONVERTER_ANNOTATIONS",
            rich_help_panel=INPUT_PANEL,
            help="Annotation file (manifest, COCO or GeoJSON JSON, Label Studio or Scale AI export, mask label map), "
            "or a folder holding exactly one; its format is recognized unless --source says it. May be an "
            "s3:// or gs:// URL.",
        ),
    ] = "/data_in",
    images: Annotated[
        str | None,
        typer.Option(
            "-i",
            "--images",
            envvar="DATASET_CONVERTER_IMAGES",
            rich_help_panel=INPUT_PANEL,
            help="Folder the image references resolve under (or an s3:// or gs:// prefix); default: the -a folder, "
            "or the annotation file's folder.",
        ),
    ] = None,
    source: Annotated[
        SourceFormat | None,
        typer.Option(
            "--source",
            rich_help_panel=INPUT_PANEL,
            help="Input format; default: recognized from the input.",
        ),
    ] = None,
    label_attribute: Annotated[
        str | None,
        typer.Option(
            "--label-attribute",
            rich_help_panel=INPUT_PANEL,
            help="Ground Truth label attribute to convert when lines carry several (e.g. an adjustment job's).",
        ),
    ] = None,
    output: Annotated[
        str,
        typer.Option(
            "-o",
            "--output",
            envvar="DATASET_CONVERTER_OUTPUT",
            rich_help_panel=OUTPUT_PANEL,
            help="Output folder; created if absent. An s3:// or gs:// prefix is written locally (under TMPDIR) "
            "first, then uploaded, dataset_info.yaml last.",
        ),
    ] = "/data_out",
    output_format: Annotated[
        OutputFormat,
        typer.Option(
            "-f",
            "--format",
            rich_help_panel=OUTPUT_PANEL,
            help="Output format: tfrecord (shards, see --layout), masterful (Masterful CLI CSV), json (a JSON file "
            "per image), masks (images and same-named PNG class masks); docs/outputs.md describes each.",
        ),
    ] = OutputFormat.tfrecord,  # type: ignore[attr-defined]
    partition: Annotated[
        float,
        typer.Option(
            "-p",
            "--partition",
            rich_help_panel=OUTPUT_PANEL,
            min=0.001,
            help="Largest shard size in MB (MiB, 1,048,576 bytes); a shard exceeds it only if one record alone does.",
        ),
    ] = 100.0,
    absolute_paths: Annotated[
        bool,
        typer.Option(
            "--absolute-paths",
            rich_help_panel=OUTPUT_PANEL,
            help="Write absolute paths in dataset_info.yaml, Masterful CSVs and JSON annotations instead of "
            "relative ones (relative to the file that holds them, so the dataset can move).",
        ),
    ] = False,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            rich_help_panel=OUTPUT_PANEL,
            help="Replace paths in the output folder that the converter did not write (a folder named like a "
            "split, another tool's report.json). Without it such a path stops the run before any work.",
        ),
    ] = False,
    split: Annotated[
        str,
        typer.Option(
            "-s",
            "--split",
            rich_help_panel=SPLIT_PANEL,
            help="Validation share (0.2 -> 80/20 train/validation), or train,validation[,test] shares: 0.8,0.1,0.1.",
        ),
    ] = "0.2",
    seed: Annotated[
        int,
        typer.Option(
            "--seed",
            rich_help_panel=SPLIT_PANEL,
            help="Seed of the split and of the record order.",
        ),
    ] = 0,
    classes: Annotated[
        Path | None,
        typer.Option(
            "--classes",
            rich_help_panel=SPLIT_PANEL,
            exists=True,
            dir_okay=False,
            help="Pin the class list and its order: one name per line, or a previous dataset_info.yaml.",
        ),
    ] = None,
    allow_new_classes: Annotated[
        bool,
        typer.Option(
            "--allow-new-classes",
            rich_help_panel=SPLIT_PANEL,
            help="With --classes: append classes it lacks instead of skipping their samples.",
        ),
    ] = False,
    max_skipped: Annotated[
        str | None,
        typer.Option(
            "--max-skipped",
            rich_help_panel=OUTPUT_PANEL,
            help="Fail (exit 1, no dataset) if more samples are skipped: a count (10) or a fraction (0.05 or 5%).",
        ),
    ] = None,
    overlap: Annotated[
        Overlap,
        typer.Option(
            "--overlap",
            rich_help_panel=MASKS_PANEL,
            help="Where shapes overlap in a class mask: later ones paint over earlier (order), the higher "
            "--class-priority wins (priority), or the pixel gets a combination class like Canvas+Obstruction "
            "(combine; numbered as first met, so it runs in one process).",
        ),
    ] = Overlap.order,
    class_priority: Annotated[
        str | None,
        typer.Option(
            "--class-priority",
            rich_help_panel=MASKS_PANEL,
            help="With --overlap priority: comma-separated classes, highest priority first; unlisted classes rank "
            "below them.",
        ),
    ] = None,
    instance_masks: Annotated[
        bool,
        typer.Option(
            "--instance-masks",
            rich_help_panel=MASKS_PANEL,
            help="Also write one PNG mask per object (image/object/mask, Model Garden style); a plain box paints "
            "its rectangle.",
        ),
    ] = False,
    masks: Annotated[
        Path | None,
        typer.Option(
            "--masks",
            rich_help_panel=INPUT_PANEL,
            file_okay=False,
            help="Mask folders: the folder of masks named like the images; default: masks/ beside the label map.",
        ),
    ] = None,
    labelstudio_url: Annotated[
        str | None,
        typer.Option(
            "--labelstudio-url",
            rich_help_panel=LABEL_STUDIO_PANEL,
            help="Pull annotations from a running Label Studio server instead of an export file (needs --project). "
            "Its root URL only: a URL with user:password@ is refused (exit 2), the token comes from "
            "LABEL_STUDIO_API_KEY or --labelstudio-token-path.",
        ),
    ] = None,
    project: Annotated[
        int | None,
        typer.Option("--project", rich_help_panel=LABEL_STUDIO_PANEL, help="Label Studio project id."),
    ] = None,
    labelstudio_token_path: Annotated[
        Path | None,
        typer.Option(
            "--labelstudio-token-path",
            rich_help_panel=LABEL_STUDIO_PANEL,
            exists=True,
            dir_okay=False,
            help="File holding the Label Studio token (legacy or personal access token); default: the "
            "LABEL_STUDIO_API_KEY environment variable. Never logged or written.",
        ),
    ] = None,
    annotation_rule: Annotated[
        AnnotationRule,
        typer.Option(
            "--annotation-rule",
            rich_help_panel=LABEL_STUDIO_PANEL,
            help="Which annotation of a Label Studio task with several: the ground-truth one, else the newest "
            "(ground-truth-then-newest), the newest, or the oldest.",
        ),
    ] = AnnotationRule.ground_truth_then_newest,
    scale_project: Annotated[
        str | None,
        typer.Option(
            "--scale-project",
            rich_help_panel=SCALE_PANEL,
            help="Pull completed tasks of this Scale AI project through the API instead of an export file.",
        ),
    ] = None,
    batch: Annotated[
        list[str] | None,
        typer.Option(
            "--batch",
            rich_help_panel=SCALE_PANEL,
            help="Scale AI: only tasks of these batches (repeat); other tasks are left out, not reported.",
        ),
    ] = None,
    created_after: Annotated[
        str | None,
        typer.Option(
            "--created-after",
            rich_help_panel=SCALE_PANEL,
            help="Scale AI: only tasks created on or after this UTC day (YYYY-MM-DD); others are left out unreported.",
        ),
    ] = None,
    created_before: Annotated[
        str | None,
        typer.Option(
            "--created-before",
            rich_help_panel=SCALE_PANEL,
            help="Scale AI: only tasks created before this UTC day (YYYY-MM-DD, exclusive); others are left out "
            "unreported.",
        ),
    ] = None,
    scale_api_key_path: Annotated[
        Path | None,
        typer.Option(
            "--scale-api-key-path",
            rich_help_panel=SCALE_PANEL,
            exists=True,
            dir_okay=False,
            help=f"File holding the Scale AI API key; default: the {SCALE_KEY_VARIABLE} environment variable. "
            "Never logged or written.",
        ),
    ] = None,
    scale_api_url: Annotated[
        str | None,
        typer.Option(
            "--scale-api-url",
            rich_help_panel=SCALE_PANEL,
            help="Scale AI API base URL, for a proxy or a stand-in server; default: https://api.scale.com/v1.",
        ),
    ] = None,
    download_images: Annotated[
        bool,
        typer.Option(
            "--download-images",
            rich_help_panel=SCALE_PANEL,
            help="Fetch images behind http(s) URLs (concurrently, with retries) instead of resolving them under -i.",
        ),
    ] = False,
    image_cache: Annotated[
        Path | None,
        typer.Option(
            "--image-cache",
            rich_help_panel=SCALE_PANEL,
            file_okay=False,
            help="With --download-images: keep downloaded images here and reuse them; default: <output>/.image-cache.",
        ),
    ] = None,
    layout: Annotated[
        RecordLayout,
        typer.Option(
            "--layout",
            rich_help_panel=OUTPUT_PANEL,
            help="TFRecord feature names: the Object Detection API's (object-detection-api) or ModelPack's "
            "(modelpack).",
        ),
    ] = RecordLayout.object_detection_api,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            envvar="DATASET_CONVERTER_WORKERS",
            rich_help_panel=SCALE_OUT_PANEL,
            min=1,
            help="Worker processes on this machine; default: the CPUs this process may use (cgroup quota "
            "included), one fewer for runs without masks, whose writer needs a CPU of its own. The output is "
            "byte-identical whatever the number.",
        ),
    ] = None,
    num_workers: Annotated[
        int | None,
        typer.Option(
            "--num-workers",
            envvar=NUM_WORKERS_VARIABLE,
            rich_help_panel=SCALE_OUT_PANEL,
            min=1,
            help="Machines the run is spread over (-f tfrecord): each converts one slice into parts/, then "
            "`dataset-converter finalize` merges them. Default: from Kubernetes (JOB_COMPLETION_INDEX) or "
            "SageMaker Processing (/opt/ml/config/resourceconfig.json), else 1.",
        ),
    ] = None,
    worker_index: Annotated[
        int | None,
        typer.Option(
            "--worker-index",
            envvar=WORKER_INDEX_VARIABLE,
            rich_help_panel=SCALE_OUT_PANEL,
            min=0,
            help="This machine's slice, 0..num-workers-1; default: JOB_COMPLETION_INDEX or SageMaker's current_host.",
        ),
    ] = None,
) -> None:
    """Convert an annotation export into a dataset: shards per split, dataset_info.yaml and report.json."""
    try:
        fractions = parse_split_fractions(split)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="'-s' / '--split'") from None
    try:
        max_shard_bytes = megabytes_to_bytes(partition)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="'-p' / '--partition'") from None
    try:
        skip_limit = SkipLimit.parse(max_skipped) if max_skipped is not None else None
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="'--max-skipped'") from None
    if layout.value != OBJECT_DETECTION_API and output_format.value != "tfrecord":
        raise typer.BadParameter(
            "--layout chooses TFRecord feature names; it needs -f tfrecord", param_hint="'--layout'"
        )
    if allow_new_classes and classes is None:
        raise typer.BadParameter("--allow-new-classes needs --classes", param_hint="'--allow-new-classes'")
    priority = tuple(name.strip() for name in class_priority.split(",") if name.strip()) if class_priority else ()
    if (overlap == Overlap.priority) != bool(priority):
        raise typer.BadParameter(
            "--overlap priority and --class-priority go together", param_hint="'--overlap' / '--class-priority'"
        )
    events = TerminalEvents() if sys.stderr.isatty() else JsonLogEvents()
    remote = RemoteRun()
    try:
        worker_slice = resolve_worker_slice(num_workers, worker_index)
        if worker_slice is not None and output_format.value != "tfrecord":
            raise UsageError(f"--num-workers {worker_slice.count}: scale-out writes TFRecord shards; use -f tfrecord")
        if worker_slice is not None and overlap == Overlap.combine:
            raise UsageError(
                "--overlap combine numbers combination classes as first met in the whole run; it cannot be split "
                "over machines (--num-workers); use --overlap order or priority"
            )
        if worker_slice is not None and absolute_paths:
            raise UsageError("--absolute-paths cannot be combined with --num-workers: parts are merged by finalize")
        if labelstudio_url is not None:
            refuse_url_credentials(labelstudio_url, "--labelstudio-url")  # before anything can echo the URL
            if project is None:
                raise UsageError("--labelstudio-url needs --project (the Label Studio project id)")
            located = LocatedExport("labelstudio", None, as_location(annotations))
        elif scale_project is not None:
            located = LocatedExport("scale", None, as_location(annotations))
        else:
            located = remote.locate_export(annotations, source.value if source else None)
        images_root = as_location(images) if images is not None else located.default_images
        output_dir = remote.output_dir(output, absolute_paths)
        if not images_root.is_dir() and not (download_images and images is None):
            # downloads need no images folder; references that are not URLs then fail one by one, saying where
            raise UsageError(f"images folder {images_root} does not exist")
        options = SourceOptions(
            annotations=located.annotations,
            images=images_root,
            images_given=images is not None,
            label_attribute=label_attribute,
            masks=masks,
            labelstudio_url=labelstudio_url,
            labelstudio_project=project,
            labelstudio_token=_secret_from(labelstudio_token_path, LABEL_STUDIO_TOKEN_VARIABLE, "Label Studio token")
            if labelstudio_url
            else None,
            annotation_rule=annotation_rule.value,
            scale_project=scale_project,
            scale_batches=tuple(batch or ()),
            created_after=created_after,
            created_before=created_before,
            scale_api_key=_secret_from(scale_api_key_path, SCALE_KEY_VARIABLE, "Scale AI API key")
            if scale_project is not None
            else _optional_secret(scale_api_key_path, SCALE_KEY_VARIABLE),
            scale_api_url=scale_api_url,
            download_images=download_images,
            image_cache=image_cache if image_cache is not None else output_dir / IMAGE_CACHE_FOLDER,
        )
        config = ConvertConfig(
            output_dir=output_dir,
            fractions=fractions,
            seed=seed,
            pinned_classes=load_pinned_classes(classes) if classes else None,
            allow_new_classes=allow_new_classes,
            absolute_paths=absolute_paths,
            max_skipped=skip_limit,
            overlap=overlap.value,
            layout=layout.value,
            class_priority=priority,
            instance_masks=instance_masks,
            workers=workers,
            worker_slice=worker_slice,
            overwrite=overwrite,
        )
        result = run(
            remote.source(SOURCES[located.source_name].build(options)),
            SINKS[output_format.value](max_shard_bytes),
            config,
            events,
        )
        if remote.output is not None:
            _note(events, "publishing", remote.output)
            remote.publish()
            _note(events, "published", remote.output)
    except UsageError as error:
        _fail(str(error), code=2)
    except ConverterError as error:
        _fail(str(error), code=1)
    except OSError as error:  # a full disk or a read-only mount outside the commit (a download cache, TMPDIR)
        _fail(describe_os_error(error), code=1)
    finally:
        remote.close()
    if not result.succeeded:
        _fail(f"{result.summary['failure']}; see {as_location(output) / 'report.json'}", code=1)


@app.command()
def verify(
    dataset: Annotated[
        Path,
        typer.Argument(help="Output folder of a conversion, or its dataset_info.yaml.", exists=True),
    ],
    records: Annotated[
        bool,
        typer.Option(
            "--records/--no-records",
            help="Also parse every TFRecord with TensorFlow and check keys, boxes, class ids (and image hashes).",
        ),
    ] = True,
) -> None:
    """Check that every file dataset_info.yaml lists is present, intact and holds what it should."""
    info_path = dataset / DATASET_INFO if dataset.is_dir() else dataset
    verification = verify_dataset(info_path)
    problems = verification.problems
    for note in verification.notes:
        typer.echo(scrub(f"NOTE: {note}"), err=True)
    info = yaml.safe_load(info_path.read_text(encoding="utf-8")) if not problems else {}
    record_layout = info.get("record_layout", {})
    sharded = record_layout.get("format", "tfrecord") == "tfrecord"
    if sharded:
        listed, checked = "shards", "shard sizes, sha256, CRCs and counts"
    else:
        listed, checked = "files", "every file's sha256 against its split's SHA256SUMS, and counts"
    if records and not problems and sharded:
        if importlib.util.find_spec("tensorflow") is None:
            typer.echo("NOTE: TensorFlow is not installed, so record contents were not parsed", err=True)
        else:
            shards = [
                info_path.parent / shard["file"]
                for split in SPLIT_NAMES
                for shard in info.get(split, {}).get("shards", [])
            ]
            _, problems = check_record_contents(shards, list(info["classes"]), record_layout.get("layout", ""))
            checked += ", and every record parsed by TensorFlow"
    for problem in problems:
        typer.echo(scrub(f"ERROR: {problem}"), err=True)
    if problems:
        raise typer.Exit(code=1)
    typer.echo(f"OK: {verification.records} records in the {listed} listed by {info_path} ({checked})")


@app.command()
def finalize(
    output: Annotated[
        str,
        typer.Argument(
            help="Output folder (or s3:// / gs:// URI) the workers of a scaled-out run wrote their parts/ into.",
        ),
    ],
) -> None:
    """Merge the parts of a run spread over machines (--num-workers) into one dataset."""
    try:
        result = finalize_parts(output, merge_training_stack)
    except UsageError as error:
        _fail(str(error), code=2)
    except ConverterError as error:
        _fail(str(error), code=1)
    except OSError as error:
        _fail(describe_os_error(error), code=1)
    summary = result.summary
    if not result.succeeded:
        _fail(f"{summary['failure']}; see {output.rstrip('/')}/report.json", code=1)
    if result.already_merged:
        done = f"nothing to finalize: {output} already holds the dataset of {result.parts} merged parts"
        typer.echo(scrub(done), err=True)
        return
    typer.echo(
        f"merged {result.parts} parts: {summary['converted']} of {summary['input_samples']} samples converted "
        f"({', '.join(f'{split} {count}' for split, count in summary['converted_by_split'].items())}); "
        f"{summary['skipped']} skipped; details in report.json",  # numbers and split names only: nothing to scrub
        err=True,
    )


@app.command("version")
def show_version() -> None:
    """Print the converter's version."""
    typer.echo(__version__)


def main() -> None:
    """Entry point. Options without a command mean `convert` (`dataset-converter -a x -s 0.1`)."""
    arguments = sys.argv[1:]
    if arguments and arguments[0].startswith("-") and arguments[0] not in ("--help", "-h"):
        arguments = ["convert", *arguments]
    try:
        app(args=arguments, prog_name="dataset-converter")
    except Exception as error:  # a bug: one line for the user, the traceback only on request
        if os.environ.get(DEBUG_VARIABLE):
            raise
        typer.echo(
            f"ERROR: internal error ({type(error).__name__}: {quoted(scrub(str(error)), 200)}); rerun with "
            f"{DEBUG_VARIABLE}=1 for the traceback, and please report it",
            err=True,
        )
        sys.exit(1)

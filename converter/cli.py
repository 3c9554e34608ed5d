"""The `dataset-converter` command line: parse options, build a run, report the outcome.

This is the only module that prints or exits. Exit codes: 0 success; 1 the run
converted nothing, exceeded `--max-skipped`, or `verify` found a problem; 2 usage errors.
Logs go to stderr: a progress bar on a terminal, otherwise one JSON object per line
(Kubernetes and SageMaker collect logs, not terminals).
"""

from __future__ import annotations

import difflib
import enum
import os
import re
import shutil
import sys
import textwrap
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
import yaml
from typer.core import TyperCommand, TyperGroup

from converter import __version__
from converter.console import JsonLogEvents, RunContext, TerminalEvents
from converter.core.classes import load_pinned_classes
from converter.core.commit import DATASET_INFO, OutputFolder, describe_os_error
from converter.core.finalize import finalize as finalize_parts
from converter.core.pipeline import run
from converter.core.plan import ConvertConfig, SkipLimit
from converter.core.protocols import Sink
from converter.core.scaleout import NUM_WORKERS_VARIABLE, WORKER_INDEX_VARIABLE, resolve_worker_slice
from converter.core.secret import Secret, refuse_url_credentials, scrub
from converter.core.shard import megabytes_to_bytes
from converter.core.split import SPLIT_NAMES, parse_split_fractions
from converter.core.storage import as_location
from converter.core.tasks import TASKS, Task
from converter.core.verify import verify_dataset
from converter.errors import ConverterError, UsageError, quoted
from converter.remote_run import RemoteRun
from converter.sinks import SINKS
from converter.sinks.tfrecord import check_record_contents
from converter.sinks.tfrecord_keys import OBJECT_DETECTION_API
from converter.sinks.training_stacks import merge_training_stack
from converter.sources import SOURCES, LocatedExport, SourceOptions, locate_split_files

OutputFormat = enum.Enum("OutputFormat", {name: name for name in SINKS}, type=str)  # type: ignore[misc]
SourceFormat = enum.Enum("SourceFormat", {name: name for name in SOURCES}, type=str)  # type: ignore[misc]
TaskChoice = enum.Enum("TaskChoice", {name: name for name in TASKS}, type=str)  # type: ignore[misc]

IMAGE_CACHE_FOLDER = ".image-cache"
INPUT_PANEL, SPLIT_PANEL, OUTPUT_PANEL = "Input", "Splits and classes", "Output"
MASKS_PANEL, LABEL_STUDIO_PANEL, SCALE_PANEL = "Masks", "Label Studio server", "Scale AI"
SCALE_OUT_PANEL = "Parallelism and scale-out"
LABEL_STUDIO_TOKEN_VARIABLE = "LABEL_STUDIO_API_KEY"
SCALE_KEY_VARIABLE = "SCALE_API_KEY"
DEBUG_VARIABLE = "DATASET_CONVERTER_DEBUG"
PROGRAM = "dataset-converter"
MESSAGE_CHARACTERS = 600  # one hostile value quoted in a message must not fill the screen
ROOT_OPTIONS = ("--help", "-h", "--version", "-V", "--install-completion", "--show-completion")
FLAG_WORDS = {"true", "false", "yes", "no", "on", "off", "1", "0"}  # what users write after an on/off flag
INTERRUPTED = 130  # what shells report for a process ended by Ctrl-C (128 + SIGINT)


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


def _fail(message: str, code: int) -> NoReturn:
    """The one error line, scrubbed: messages may quote what a server echoed back."""
    typer.echo(_error_line(message), err=True)
    raise typer.Exit(code=code)


def _error_line(message: str) -> str:
    """`ERROR: message`: scrubbed, its middle cut when hostile input made it long, wrapped on a terminal."""
    # a listing ("found:\n  a\n  b" -> "found: a; b"), or a line break in a hostile path
    text = re.sub(r"(:?)\s*\n\s*", lambda match: ": " if match.group(1) else "; ", scrub(message).strip())
    text = "".join(character if character.isprintable() else repr(character)[1:-1] for character in text)
    if len(text) > MESSAGE_CHARACTERS:
        half = MESSAGE_CHARACTERS // 2
        text = f"{text[:half]} … {text[-half:]}"
    line = f"ERROR: {text}"
    if not sys.stderr.isatty():
        return line  # a log collector keeps the line whole
    width = max(40, shutil.get_terminal_size().columns)
    return textwrap.fill(line, width, subsequent_indent="  ", break_on_hyphens=False, break_long_words=False)


def _usage_message(error: typer.TyperException) -> str:
    """The message of a usage error typer raised, with what to type instead where it can be guessed."""
    message = str(error).rstrip(".")
    context = getattr(error, "ctx", None)
    wrong_choice = re.search(r"'([^']*)' is not one of (.*)$", message)
    extra = re.search(r"unexpected extra arguments? ?(?:\(s\))? \(([^()]*)\)$", message)
    if isinstance(error, typer.BadParameter) and (error.param is not None or error.param_hint):
        opts = getattr(error.param, "opts", None)
        names = " / ".join(sorted(opts, key=len)) if opts else str(error.param_hint).replace("'", "")
        if wrong_choice:
            choices = re.findall(r"'([^']*)'", wrong_choice.group(2))
            message = f"{names}: {wrong_choice.group(1)!r} is not one of {', '.join(choices)}"
            message += _did_you_mean(wrong_choice.group(1), choices)
        else:
            message = f"{names}: {message}"
    elif hasattr(error, "option_name") and context is not None:  # an unknown option: the closest known one
        known = [name for param in context.command.params for name in getattr(param, "opts", [])]
        message += _did_you_mean(error.option_name, known)
    elif extra and set(extra.group(1).lower().split()) <= FLAG_WORDS:
        message += "; on/off options take no value: write the option alone to turn it on, leave it out for off"
    elif extra and 1 <= len(extra.group(1).split()) <= 2:
        guess = " ".join(f"{flag} {path}" for flag, path in zip(("-a", "-o"), extra.group(1).split(), strict=False))
        message += f"; the export and the output are options: did you mean `{guess}`?"
    command = [PROGRAM, *(context.command_path.split()[1:] if context is not None else [])]
    help_command = f"`{' '.join(command)} -h`"
    return f"{message} See {help_command}" if message.endswith("?") else f"{message}; see {help_command}"


def _did_you_mean(given: str, known: list[str]) -> str:
    close = difflib.get_close_matches(given, known, n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def _flags_without_placeholder(params: list[Any]) -> list[Any]:
    """On/off options take no value, so their help rows show none (typer would show `<bool>`)."""
    for param in params:
        if getattr(param, "is_flag", False):
            param.metavar = ""
    return params


class _Command(TyperCommand):
    """A command whose help shows no value placeholder on its on/off options."""

    def get_params(self, ctx: Any) -> list[Any]:  # ctx: typer's vendored click Context
        return _flags_without_placeholder(super().get_params(ctx))


class _Commands(TyperGroup):
    """The command group: usage errors (typer's and ours alike) become one `ERROR:` line and exit 2."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _flags_without_placeholder(super().get_params(ctx))

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        try:
            code = super().main(*args, **kwargs)
        except typer.TyperException as error:
            if type(error).__name__ == "NoArgsIsHelpError":  # `dataset-converter` alone: the help, as asked
                typer.echo(str(error), err=True)
                sys.exit(2)
            typer.echo(_error_line(_usage_message(error)), err=True)
            sys.exit(getattr(error, "exit_code", 2))
        except typer.Abort:
            sys.exit(INTERRUPTED)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    cls=_Commands,
    pretty_exceptions_show_locals=False,  # locals may hold credentials; never print them
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"{PROGRAM} {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            "-V",
            is_eager=True,
            callback=_show_version,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """Turn annotation exports into training-ready datasets (size-sharded TFRecords, stable splits, a report).

    `dataset-converter -a EXPORT -o OUT` converts: options without a command mean `convert`.
    `dataset-converter COMMAND -h` explains a command.
    """


def _required_path(value: str | None, option: str, what: str, default: str) -> str:
    """-a and -o: given, or set by the image (its ENV); outside the image a missing one is a usage error."""
    if value:
        return value
    raise UsageError(
        f"no {what} given: pass {option} (the default {default} applies only inside the dataset-converter image)"
    )


def _what_is_read(located: LocatedExport, labelstudio_url: str | None, scale_project: str | None) -> str:
    """The status line's object: the annotation file, the split files' folder, or the server."""
    if located.split_files:
        return f"{len(located.split_files)} COCO files in {located.split_files[0][0].parent}"
    if labelstudio_url is not None:
        return f"Label Studio project at {labelstudio_url}"
    if scale_project is not None:
        return f"Scale AI project {scale_project}"
    return str(located.annotations)


def _kept_message(output: str, output_dir: Path) -> str:
    """What an interrupted run left: the commit is atomic, so the previous dataset (if any) is whole."""
    if (output_dir / DATASET_INFO).is_file():
        return f"{output} still holds the previous dataset, untouched; nothing of this run was kept"
    return f"nothing was written to {output}"


def _check_scale_out(machines: int, output_format: str, overlap: Overlap, absolute_paths: bool) -> None:
    """Refuse, before any reading, what a run spread over machines cannot do."""
    if output_format != "tfrecord":
        raise UsageError(f"--num-workers {machines}: scale-out writes TFRecord shards; use -f tfrecord")
    if overlap == Overlap.combine:
        raise UsageError(
            "--overlap combine numbers combination classes as first met in the whole run; it cannot be split "
            "over machines (--num-workers); use --overlap order or priority"
        )
    if absolute_paths:
        raise UsageError("--absolute-paths cannot be combined with --num-workers: parts are merged by finalize")


def _check_task(task: Task | None, instance_masks: bool, output_format: str, sink: Sink[Any]) -> None:
    """Refuse, before any reading, what the chosen format cannot carry."""
    if task is not None and instance_masks and task != "instance-segmentation":
        raise UsageError(
            f"--instance-masks and --task {task} disagree: --task instance-segmentation writes instance masks"
        )
    requested = task or ("instance-segmentation" if instance_masks else None)
    if requested is not None and requested not in sink.supported_tasks:
        what = "--instance-masks" if task is None else f"--task {task}"
        raise UsageError(
            f"{what}: -f {output_format} holds {' or '.join(sorted(sink.supported_tasks))} only; "
            "-f tfrecord and -f json hold every task"
        )


@app.command(cls=_Command)
def convert(
    annotations: Annotated[
        str | None,
        typer.Option(
            "-a",
            "--annotations",
            metavar="PATH|URL",
            envvar="DATASET_CONVERTER_ANNOTATIONS",
            rich_help_panel=INPUT_PANEL,
            help="Annotation file (manifest, COCO or GeoJSON JSON, Label Studio or Scale AI export, mask label map), "
            "or a folder holding exactly one; its format is recognized unless --source says it. May be an "
            "s3:// or gs:// URL. Inside the dataset-converter image: /data_in.",
        ),
    ] = None,
    images: Annotated[
        str | None,
        typer.Option(
            "-i",
            "--images",
            metavar="FOLDER|URL",
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
            metavar="FORMAT",
            rich_help_panel=INPUT_PANEL,
            help=f"Input format, one of {', '.join(SOURCES)}; default: recognized from the input.",
        ),
    ] = None,
    label_attribute: Annotated[
        str | None,
        typer.Option(
            "--label-attribute",
            metavar="NAME",
            rich_help_panel=INPUT_PANEL,
            help="Ground Truth label attribute to convert when lines carry several (e.g. an adjustment job's).",
        ),
    ] = None,
    output: Annotated[
        str | None,
        typer.Option(
            "-o",
            "--output",
            metavar="FOLDER|URL",
            envvar="DATASET_CONVERTER_OUTPUT",
            rich_help_panel=OUTPUT_PANEL,
            help="Output folder; created if absent. An s3:// or gs:// prefix is written locally (under TMPDIR) "
            "first, then uploaded, dataset_info.yaml last. Inside the dataset-converter image: /data_out.",
        ),
    ] = None,
    output_format: Annotated[
        OutputFormat,
        typer.Option(
            "-f",
            "--format",
            metavar="FORMAT",
            rich_help_panel=OUTPUT_PANEL,
            help="Output format: tfrecord (shards, see --layout), masterful (Masterful CLI CSV), json (a JSON file "
            "per image), masks (images and same-named PNG class masks); docs/outputs.md describes each.",
        ),
    ] = OutputFormat.tfrecord,  # type: ignore[attr-defined]
    task: Annotated[
        TaskChoice | None,
        typer.Option(
            "--task",
            metavar="TASK",
            rich_help_panel=OUTPUT_PANEL,
            help="What the records carry: detection (boxes only), segmentation (a class mask per image), "
            "instance-segmentation (boxes and a mask per object), classification (image labels only) or keypoints; "
            "default: whatever the export has (every run's first line says what that is).",
        ),
    ] = None,
    partition: Annotated[
        float,
        typer.Option(
            "-p",
            "--partition",
            metavar="MB",
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
            metavar="SHARES",
            rich_help_panel=SPLIT_PANEL,
            help="Validation share (0.2 -> 80/20 train/validation), train,validation[,test] shares (0.8,0.1,0.1), "
            "or from-source: -a names a folder of COCO files whose names say their split (instances_val2017.json "
            "-> validation).",
        ),
    ] = "0.2",
    seed: Annotated[
        int,
        typer.Option(
            "--seed",
            metavar="N",
            rich_help_panel=SPLIT_PANEL,
            help="Seed of the split and of the record order.",
        ),
    ] = 0,
    classes: Annotated[
        Path | None,
        typer.Option(
            "--classes",
            metavar="FILE",
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
            metavar="N|FRACTION",
            rich_help_panel=OUTPUT_PANEL,
            help="Fail (exit 1, no dataset) if more samples are skipped: a count (10) or a fraction (0.05 or 5%).",
        ),
    ] = None,
    overlap: Annotated[
        Overlap,
        typer.Option(
            "--overlap",
            metavar="RULE",
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
            metavar="NAMES",
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
            metavar="FOLDER",
            rich_help_panel=INPUT_PANEL,
            file_okay=False,
            help="Mask folders: the folder of masks named like the images; default: masks/ beside the label map.",
        ),
    ] = None,
    labelstudio_url: Annotated[
        str | None,
        typer.Option(
            "--labelstudio-url",
            metavar="URL",
            rich_help_panel=LABEL_STUDIO_PANEL,
            help="Pull annotations from a running Label Studio server instead of an export file (needs --project). "
            "Its root URL only: a URL with user:password@ is refused (exit 2), the token comes from "
            "LABEL_STUDIO_API_KEY or --labelstudio-token-path.",
        ),
    ] = None,
    project: Annotated[
        int | None,
        typer.Option("--project", metavar="ID", rich_help_panel=LABEL_STUDIO_PANEL, help="Label Studio project id."),
    ] = None,
    labelstudio_token_path: Annotated[
        Path | None,
        typer.Option(
            "--labelstudio-token-path",
            metavar="FILE",
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
            metavar="RULE",
            rich_help_panel=LABEL_STUDIO_PANEL,
            help="Which annotation of a Label Studio task with several: the ground-truth one, else the newest "
            "(ground-truth-then-newest), the newest, or the oldest.",
        ),
    ] = AnnotationRule.ground_truth_then_newest,
    scale_project: Annotated[
        str | None,
        typer.Option(
            "--scale-project",
            metavar="NAME",
            rich_help_panel=SCALE_PANEL,
            help="Pull completed tasks of this Scale AI project through the API instead of an export file.",
        ),
    ] = None,
    batch: Annotated[
        list[str] | None,
        typer.Option(
            "--batch",
            metavar="NAME",
            rich_help_panel=SCALE_PANEL,
            help="Scale AI: only tasks of these batches (repeat); other tasks are left out, not reported.",
        ),
    ] = None,
    created_after: Annotated[
        str | None,
        typer.Option(
            "--created-after",
            metavar="YYYY-MM-DD",
            rich_help_panel=SCALE_PANEL,
            help="Scale AI: only tasks created on or after this UTC day (YYYY-MM-DD); others are left out unreported.",
        ),
    ] = None,
    created_before: Annotated[
        str | None,
        typer.Option(
            "--created-before",
            metavar="YYYY-MM-DD",
            rich_help_panel=SCALE_PANEL,
            help="Scale AI: only tasks created before this UTC day (YYYY-MM-DD, exclusive); others are left out "
            "unreported.",
        ),
    ] = None,
    scale_api_key_path: Annotated[
        Path | None,
        typer.Option(
            "--scale-api-key-path",
            metavar="FILE",
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
            metavar="URL",
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
            metavar="FOLDER",
            rich_help_panel=SCALE_PANEL,
            file_okay=False,
            help="With --download-images: keep downloaded images here and reuse them; default: <output>/.image-cache.",
        ),
    ] = None,
    layout: Annotated[
        RecordLayout,
        typer.Option(
            "--layout",
            metavar="LAYOUT",
            rich_help_panel=OUTPUT_PANEL,
            help="TFRecord feature names: the Object Detection API's (object-detection-api) or ModelPack's "
            "(modelpack).",
        ),
    ] = RecordLayout.object_detection_api,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            metavar="N",
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
            metavar="N",
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
            metavar="N",
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
    remote = RemoteRun()
    events: TerminalEvents | JsonLogEvents | None = None
    try:
        pulled = labelstudio_url is not None or scale_project is not None  # tasks come from a server, not -a
        if pulled and annotations is None and images is None and not download_images:
            raise UsageError(
                "tasks pulled from a server need -i/--images (the folder their images resolve under) or "
                "--download-images"
            )
        # a pull's "export" only locates its images: -a if given, else -i
        export = (
            annotations or images or "."
            if pulled
            else _required_path(annotations, "-a/--annotations", "export", "/data_in")
        )
        output = _required_path(output, "-o/--output", "output folder", "/data_out")
        sink = SINKS[output_format.value](max_shard_bytes)
        chosen_task: Task | None = task.value if task is not None else None
        _check_task(chosen_task, instance_masks, output_format.value, sink)
        worker_slice = resolve_worker_slice(num_workers, worker_index)
        if worker_slice is not None:
            _check_scale_out(worker_slice.count, output_format.value, overlap, absolute_paths)
        if fractions.from_source and pulled:
            raise UsageError("--split from-source takes splits from the names of COCO files; pass shares (-s 0.2)")
        if labelstudio_url is not None:
            refuse_url_credentials(labelstudio_url, "--labelstudio-url")  # before anything can echo the URL
            if project is None:
                raise UsageError("--labelstudio-url needs --project (the Label Studio project id)")
            located = LocatedExport("labelstudio", None, as_location(export))
        elif scale_project is not None:
            located = LocatedExport("scale", None, as_location(export))
        elif fractions.from_source:  # the splits are known from the files' names, before any is read
            located = locate_split_files(as_location(export), source.value if source else None)
            fractions = fractions.with_source_splits(located.source_splits())
        else:
            located = remote.locate_export(export, source.value if source else None)
        if masks is not None and located.source_name != "mask_folder":
            raise UsageError(
                f"--masks names the masks of a mask-folder export; this export is {located.source_name}, whose "
                "masks (if any) its annotations name: drop --masks"
            )
        images_root = as_location(images) if images is not None else located.default_images
        output_dir = remote.output_dir(output, absolute_paths)
        if not images_root.is_dir() and not (download_images and images is None):
            # downloads need no images folder; references that are not URLs then fail one by one, saying where
            raise UsageError(f"images folder {images_root} does not exist")
        options = SourceOptions(
            annotations=located.annotations,
            split_files=located.split_files,
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
            task=chosen_task,
        )
        OutputFolder(output_dir).check_is_folder()  # before the status line: a file there is a typo, not a run
        context = RunContext(output=output, images=str(images_root))
        events = TerminalEvents(context) if sys.stderr.isatty() else JsonLogEvents(context)
        events.reading(_what_is_read(located, labelstudio_url, scale_project))
        result = run(remote.source(SOURCES[located.source_name].build(options)), sink, config, events)
        if remote.output is not None:
            events.note("publishing", str(remote.output))
            remote.publish()
            events.note("published", str(remote.output))
    except KeyboardInterrupt:
        if events is not None:
            events.interrupted(_kept_message(output or "", output_dir))
        raise typer.Exit(code=INTERRUPTED) from None
    except UsageError as error:
        _fail(str(error), code=2)
    except ConverterError as error:
        _fail(str(error), code=1)
    except OSError as error:  # a full disk or a read-only mount outside the commit (a download cache, TMPDIR)
        _fail(describe_os_error(error), code=1)
    finally:
        remote.close()
    if not result.succeeded:
        _fail(f"{result.summary['failure']}; see {as_location(output or '') / 'report.json'}", code=1)


@app.command(cls=_Command)
def verify(
    dataset: Annotated[
        Path,
        typer.Argument(help="Output folder of a conversion, or its dataset_info.yaml.", exists=True, metavar="DATASET"),
    ],
    records: Annotated[
        bool,
        typer.Option(
            "--records/--no-records",
            help="Also parse every TFRecord and check keys, boxes, class ids and image hashes: with TensorFlow "
            "where it is installed (the -full image), else with the converter's own strict Example parser.",
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
        shards = [
            info_path.parent / shard["file"] for split in SPLIT_NAMES for shard in info.get(split, {}).get("shards", [])
        ]
        try:
            check = check_record_contents(shards, list(info["classes"]), record_layout.get("layout", ""))
        except UsageError as error:
            _fail(str(error), code=2)
        problems = check.problems
        parsed_by = "TensorFlow" if check.parser == "tensorflow" else "the built-in Example parser"
        checked += f", and every record parsed by {parsed_by}"
    for problem in problems:
        typer.echo(_error_line(problem), err=True)
    if problems:
        raise typer.Exit(code=1)
    typer.echo(f"OK: {verification.records} records in the {listed} listed by {info_path} ({checked})")


@app.command(cls=_Command)
def finalize(
    output: Annotated[
        str,
        typer.Argument(
            metavar="OUTPUT",
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


@app.command("version", cls=_Command)
def show_version() -> None:
    """Print the converter's version."""
    typer.echo(__version__)


def main() -> None:
    """Entry point. Options without a command mean `convert` (`dataset-converter -a x -s 0.1`)."""
    arguments = sys.argv[1:]
    if arguments and arguments[0].startswith("-") and arguments[0] not in ROOT_OPTIONS:
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

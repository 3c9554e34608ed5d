"""The `dataset-converter` command line: parse options, build a run, report the outcome.

This is the only module that prints or exits. Exit codes: 0 success; 1 the run
converted nothing, exceeded `--max-skipped`, or `verify` found a problem; 2 usage errors.
Logs go to stderr: a progress bar on a terminal, otherwise one JSON object per line
(Kubernetes and SageMaker collect logs, not terminals).
"""

from __future__ import annotations

import difflib
import os
import re
import shutil
import sys
import tempfile
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
import yaml
from typer.core import TyperCommand, TyperGroup

from converter import __version__
from converter.cli_options import (
    LABEL_STUDIO_TOKEN_VARIABLE,
    SCALE_KEY_VARIABLE,
    AbsolutePathsOption,
    AllowNewClassesOption,
    AnnotationRule,
    AnnotationRuleOption,
    AnnotationsOption,
    BatchOption,
    CheckReportOption,
    ClassesOption,
    ClassPriorityOption,
    CreatedAfterOption,
    CreatedBeforeOption,
    DownloadImagesOption,
    ImageCacheOption,
    ImagesOption,
    InstanceMasksOption,
    LabelAttributeOption,
    LabelstudioTokenPathOption,
    LabelstudioUrlOption,
    LayoutOption,
    MasksOption,
    MaxSkippedOption,
    NumWorkersOption,
    OutputFormat,
    OutputFormatOption,
    OutputOption,
    Overlap,
    OverlapOption,
    OverwriteOption,
    PartitionOption,
    ProjectOption,
    RecordLayout,
    RunRequest,
    ScaleApiKeyPathOption,
    ScaleApiUrlOption,
    ScaleProjectOption,
    SeedOption,
    SourceOption,
    SplitOption,
    StatsOption,
    StrictOption,
    TaskOption,
    WorkerIndexOption,
    WorkersOption,
)
from converter.console import JsonLogEvents, RunContext, TerminalEvents, describe_check
from converter.core.check import check_export
from converter.core.classes import load_pinned_classes
from converter.core.commit import DATASET_INFO, OutputFolder, describe_os_error
from converter.core.finalize import finalize as finalize_parts
from converter.core.pipeline import run
from converter.core.plan import ConvertConfig, SkipLimit
from converter.core.protocols import Sink, Source
from converter.core.report import Report
from converter.core.scaleout import resolve_worker_slice
from converter.core.secret import Secret, refuse_url_credentials, scrub
from converter.core.shard import megabytes_to_bytes
from converter.core.split import SPLIT_NAMES, parse_split_fractions
from converter.core.storage import RemotePath, as_location
from converter.core.tasks import Task
from converter.core.verify import verify_dataset
from converter.errors import ConverterError, UsageError, quoted
from converter.remote_run import RemoteRun
from converter.sinks import SINKS
from converter.sinks.tfrecord import check_record_contents
from converter.sinks.tfrecord_keys import OBJECT_DETECTION_API
from converter.sinks.training_stacks import merge_training_stack
from converter.sources import SOURCES, LocatedExport, SourceOptions, locate_split_files
from converter.stats.folder import STATS_FILE, STATS_FOLDER, StatisticsObservers, rebuild_stats
from converter.stats.page import PAGE

IMAGE_CACHE_FOLDER = ".image-cache"
DEBUG_VARIABLE = "DATASET_CONVERTER_DEBUG"
PROGRAM = "dataset-converter"
MESSAGE_CHARACTERS = 600  # one hostile value quoted in a message must not fill the screen
ROOT_OPTIONS = ("--help", "-h", "--version", "-V", "--install-completion", "--show-completion")
FLAG_WORDS = {"true", "false", "yes", "no", "on", "off", "1", "0"}  # what users write after an on/off flag
INTERRUPTED = 130  # what shells report for a process ended by Ctrl-C (128 + SIGINT)
T = TypeVar("T")
Given = TypeVar("Given")


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
    annotations: AnnotationsOption = None,
    images: ImagesOption = None,
    source: SourceOption = None,
    label_attribute: LabelAttributeOption = None,
    output: OutputOption = None,
    output_format: OutputFormatOption = OutputFormat.tfrecord,  # type: ignore[attr-defined]
    task: TaskOption = None,
    partition: PartitionOption = 100.0,
    absolute_paths: AbsolutePathsOption = False,
    overwrite: OverwriteOption = False,
    strict: StrictOption = False,
    stats: StatsOption = True,
    split: SplitOption = "0.2",
    seed: SeedOption = 0,
    classes: ClassesOption = None,
    allow_new_classes: AllowNewClassesOption = False,
    max_skipped: MaxSkippedOption = None,
    overlap: OverlapOption = Overlap.order,
    class_priority: ClassPriorityOption = None,
    instance_masks: InstanceMasksOption = False,
    masks: MasksOption = None,
    labelstudio_url: LabelstudioUrlOption = None,
    project: ProjectOption = None,
    labelstudio_token_path: LabelstudioTokenPathOption = None,
    annotation_rule: AnnotationRuleOption = AnnotationRule.ground_truth_then_newest,
    scale_project: ScaleProjectOption = None,
    batch: BatchOption = None,
    created_after: CreatedAfterOption = None,
    created_before: CreatedBeforeOption = None,
    scale_api_key_path: ScaleApiKeyPathOption = None,
    scale_api_url: ScaleApiUrlOption = None,
    download_images: DownloadImagesOption = False,
    image_cache: ImageCacheOption = None,
    layout: LayoutOption = RecordLayout.object_detection_api,
    workers: WorkersOption = None,
    num_workers: NumWorkersOption = None,
    worker_index: WorkerIndexOption = None,
) -> None:
    """Convert an annotation export into a dataset: shards per split, dataset_info.yaml and report.json."""
    request = RunRequest(**locals())
    remote = RemoteRun()
    events: TerminalEvents | JsonLogEvents | None = None
    output_dir = Path()
    try:
        output = _required_path(output, "-o/--output", "output folder", "/data_out")
        output_dir = remote.output_dir(output, absolute_paths)
        prepared = _prepare(request, remote, output_dir)
        OutputFolder(output_dir).check_is_folder()  # before the status line: a file there is a typo, not a run
        context = RunContext(output=output, images=str(prepared.images_root))
        events = TerminalEvents(context) if sys.stderr.isatty() else JsonLogEvents(context)
        events.reading(prepared.what_is_read)
        observers = StatisticsObservers() if stats and prepared.config.worker_slice is None else None
        result = run(prepared.source, prepared.sink, prepared.config, events, observers)
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
def check(
    annotations: AnnotationsOption = None,
    images: ImagesOption = None,
    source: SourceOption = None,
    label_attribute: LabelAttributeOption = None,
    output_format: OutputFormatOption = OutputFormat.tfrecord,  # type: ignore[attr-defined]
    task: TaskOption = None,
    strict: StrictOption = False,
    report: CheckReportOption = None,
    split: SplitOption = "0.2",
    seed: SeedOption = 0,
    classes: ClassesOption = None,
    allow_new_classes: AllowNewClassesOption = False,
    overlap: OverlapOption = Overlap.order,
    class_priority: ClassPriorityOption = None,
    instance_masks: InstanceMasksOption = False,
    masks: MasksOption = None,
    labelstudio_url: LabelstudioUrlOption = None,
    project: ProjectOption = None,
    labelstudio_token_path: LabelstudioTokenPathOption = None,
    annotation_rule: AnnotationRuleOption = AnnotationRule.ground_truth_then_newest,
    scale_project: ScaleProjectOption = None,
    batch: BatchOption = None,
    created_after: CreatedAfterOption = None,
    created_before: CreatedBeforeOption = None,
    scale_api_key_path: ScaleApiKeyPathOption = None,
    scale_api_url: ScaleApiUrlOption = None,
    download_images: DownloadImagesOption = False,
    layout: LayoutOption = RecordLayout.object_detection_api,
    workers: WorkersOption = None,
) -> None:
    """Check an export before converting it: what a conversion would write, skip and lose, and what is wrong.

    Writes nothing but the --report file. Exit 0: nothing found; 1: problems found; 2: usage errors
    (and --strict with a lossy conversion).
    """
    given = dict(locals())
    report_file: Path | None = given.pop("report")
    request = RunRequest(**given)
    remote = RemoteRun()
    findings: Report | None = None
    try:
        with tempfile.TemporaryDirectory(prefix="dataset-converter-check-") as scratch:  # downloads, if any
            prepared = _prepare(request, remote, Path(scratch))
            context = RunContext(
                output="(nothing: a check writes no dataset)", images=str(prepared.images_root), action="checking"
            )
            progress = TerminalEvents(context) if sys.stderr.isatty() else JsonLogEvents(context)
            progress.reading(prepared.what_is_read)
            findings = Report()
            try:
                result = check_export(prepared.source, prepared.sink, prepared.config, findings, progress)
            finally:
                progress.stop()
            if isinstance(result, str):
                raise ConverterError(result)
            if report_file is not None:
                findings.write(report_file, result.summary, {"check": result.as_dict()})
    except KeyboardInterrupt:
        raise typer.Exit(code=INTERRUPTED) from None
    except UsageError as error:
        _fail(str(error), code=2)
    except ConverterError as error:
        _fail(str(error), code=1)
    except OSError as error:
        _fail(describe_os_error(error), code=1)
    finally:
        if findings is not None:
            findings.close()
        remote.close()
    typer.echo(describe_check(result, prepared.what_is_read, report_file))
    if not result.clean:
        raise typer.Exit(code=1)


@dataclass(frozen=True)
class _Prepared:
    """A run's parts, built from the options: what `convert` runs and `check` inspects."""

    source: Source
    sink: Sink[Any]
    config: ConvertConfig
    images_root: Path | RemotePath
    what_is_read: str


def _parsed(parse: Callable[[Given], T], given: Given, option: str) -> T:
    """An option's value parsed, or typer's usage error naming the option."""
    try:
        return parse(given)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint=option) from None


def _prepare(request: RunRequest, remote: RemoteRun, output_dir: Path) -> _Prepared:
    """Check the options together, locate the export and build the source, sink and run configuration."""
    fractions = _parsed(parse_split_fractions, request.split, "'-s' / '--split'")
    max_shard_bytes = _parsed(megabytes_to_bytes, request.partition, "'-p' / '--partition'")
    skip_limit = _parsed(SkipLimit.parse, request.max_skipped, "'--max-skipped'") if request.max_skipped else None
    output_format = request.output_format.value
    if request.layout.value != OBJECT_DETECTION_API and output_format != "tfrecord":
        raise typer.BadParameter(
            "--layout chooses TFRecord feature names; it needs -f tfrecord", param_hint="'--layout'"
        )
    if request.allow_new_classes and request.classes is None:
        raise typer.BadParameter("--allow-new-classes needs --classes", param_hint="'--allow-new-classes'")
    priority = tuple(name.strip() for name in (request.class_priority or "").split(",") if name.strip())
    if (request.overlap == Overlap.priority) != bool(priority):
        raise typer.BadParameter(
            "--overlap priority and --class-priority go together", param_hint="'--overlap' / '--class-priority'"
        )
    labelstudio_url, scale_project = request.labelstudio_url, request.scale_project
    pulled = labelstudio_url is not None or scale_project is not None  # tasks come from a server, not -a
    if pulled and request.annotations is None and request.images is None and not request.download_images:
        raise UsageError(
            "tasks pulled from a server need -i/--images (the folder their images resolve under) or --download-images"
        )
    # a pull's "export" only locates its images: -a if given, else -i
    export = (
        request.annotations or request.images or "."
        if pulled
        else _required_path(request.annotations, "-a/--annotations", "export", "/data_in")
    )
    sink = SINKS[output_format](max_shard_bytes)
    chosen_task: Task | None = request.task.value if request.task is not None else None
    _check_task(chosen_task, request.instance_masks, output_format, sink)
    worker_slice = resolve_worker_slice(request.num_workers, request.worker_index)
    if worker_slice is not None:
        _check_scale_out(worker_slice.count, output_format, request.overlap, request.absolute_paths)
    source_name = request.source.value if request.source else None
    if fractions.from_source and pulled:
        raise UsageError("--split from-source takes splits from the names of COCO files; pass shares (-s 0.2)")
    if labelstudio_url is not None:
        refuse_url_credentials(labelstudio_url, "--labelstudio-url")  # before anything can echo the URL
        if request.project is None:
            raise UsageError("--labelstudio-url needs --project (the Label Studio project id)")
        located = LocatedExport("labelstudio", None, as_location(export))
    elif scale_project is not None:
        located = LocatedExport("scale", None, as_location(export))
    elif fractions.from_source:  # the splits are known from the files' names, before any is read
        located = locate_split_files(as_location(export), source_name)
        fractions = fractions.with_source_splits(located.source_splits())
    else:
        located = remote.locate_export(export, source_name)
    if request.masks is not None and located.source_name != "mask_folder":
        raise UsageError(
            f"--masks names the masks of a mask-folder export; this export is {located.source_name}, whose "
            "masks (if any) its annotations name: drop --masks"
        )
    images_root = as_location(request.images) if request.images is not None else located.default_images
    if not images_root.is_dir() and not (request.download_images and request.images is None):
        # downloads need no images folder; references that are not URLs then fail one by one, saying where
        raise UsageError(f"images folder {images_root} does not exist")
    options = SourceOptions(
        annotations=located.annotations,
        split_files=located.split_files,
        images=images_root,
        images_given=request.images is not None,
        label_attribute=request.label_attribute,
        masks=request.masks,
        labelstudio_url=labelstudio_url,
        labelstudio_project=request.project,
        labelstudio_token=_secret_from(
            request.labelstudio_token_path, LABEL_STUDIO_TOKEN_VARIABLE, "Label Studio token"
        )
        if labelstudio_url
        else None,
        annotation_rule=request.annotation_rule.value,
        scale_project=scale_project,
        scale_batches=tuple(request.batch or ()),
        created_after=request.created_after,
        created_before=request.created_before,
        scale_api_key=_secret_from(request.scale_api_key_path, SCALE_KEY_VARIABLE, "Scale AI API key")
        if scale_project is not None
        else _optional_secret(request.scale_api_key_path, SCALE_KEY_VARIABLE),
        scale_api_url=request.scale_api_url,
        download_images=request.download_images,
        image_cache=request.image_cache if request.image_cache is not None else output_dir / IMAGE_CACHE_FOLDER,
    )
    config = ConvertConfig(
        output_dir=output_dir,
        fractions=fractions,
        seed=request.seed,
        pinned_classes=load_pinned_classes(request.classes) if request.classes else None,
        allow_new_classes=request.allow_new_classes,
        absolute_paths=request.absolute_paths,
        max_skipped=skip_limit,
        overlap=request.overlap.value,
        layout=request.layout.value,
        class_priority=priority,
        instance_masks=request.instance_masks,
        workers=request.workers,
        worker_slice=worker_slice,
        overwrite=request.overwrite,
        task=chosen_task,
        strict=request.strict,
    )
    return _Prepared(
        source=remote.source(SOURCES[located.source_name].build(options)),
        sink=sink,
        config=config,
        images_root=images_root,
        what_is_read=_what_is_read(located, labelstudio_url, scale_project),
    )


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


@app.command("stats", cls=_Command)
def rebuild_statistics(
    dataset: Annotated[
        Path,
        typer.Argument(metavar="DATASET", help="A dataset folder a conversion wrote (its -o).", file_okay=False),
    ],
) -> None:
    """(Re)build a dataset's stats/: stats.json, plots and index.html with previews of its records.

    For datasets converted with --no-stats, by an older converter, or merged by finalize.
    """
    try:
        rebuild_stats(dataset)
    except UsageError as error:
        _fail(str(error), code=2)
    except ConverterError as error:
        _fail(str(error), code=1)
    except OSError as error:
        _fail(describe_os_error(error), code=1)
    typer.echo(f"wrote {dataset / STATS_FOLDER / PAGE} and {dataset / STATS_FOLDER / STATS_FILE}")


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

"""The options `convert` and `check` share, declared once: a check takes the input options of a conversion.

Each option is a type alias (`Annotated[type, typer.Option(...)]`) that a command's
signature names, so the two commands cannot drift apart in names, defaults or help.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from converter.core.scaleout import NUM_WORKERS_VARIABLE, WORKER_INDEX_VARIABLE
from converter.core.tasks import TASKS
from converter.sinks import SINKS
from converter.sources import SOURCES

INPUT_PANEL, SPLIT_PANEL, OUTPUT_PANEL = "Input", "Splits and classes", "Output"
MASKS_PANEL, LABEL_STUDIO_PANEL, SCALE_PANEL = "Masks", "Label Studio server", "Scale AI"
SCALE_OUT_PANEL = "Parallelism and scale-out"
CHECK_PANEL = "Check"
LABEL_STUDIO_TOKEN_VARIABLE = "LABEL_STUDIO_API_KEY"
SCALE_KEY_VARIABLE = "SCALE_API_KEY"

OutputFormat = enum.Enum("OutputFormat", {name: name for name in SINKS}, type=str)  # type: ignore[misc]
SourceFormat = enum.Enum("SourceFormat", {name: name for name in SOURCES}, type=str)  # type: ignore[misc]
TaskChoice = enum.Enum("TaskChoice", {name: name for name in TASKS}, type=str)  # type: ignore[misc]


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


AnnotationsOption = Annotated[
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
]

ImagesOption = Annotated[
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
]

SourceOption = Annotated[
    SourceFormat | None,
    typer.Option(
        "--source",
        metavar="FORMAT",
        rich_help_panel=INPUT_PANEL,
        help=f"Input format, one of {', '.join(SOURCES)}; default: recognized from the input.",
    ),
]

LabelAttributeOption = Annotated[
    str | None,
    typer.Option(
        "--label-attribute",
        metavar="NAME",
        rich_help_panel=INPUT_PANEL,
        help="Ground Truth label attribute to convert when lines carry several (e.g. an adjustment job's).",
    ),
]

OutputOption = Annotated[
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
]

OutputFormatOption = Annotated[
    OutputFormat,
    typer.Option(
        "-f",
        "--format",
        metavar="FORMAT",
        rich_help_panel=OUTPUT_PANEL,
        help="Output format: tfrecord (shards, see --layout), masterful (Masterful CLI CSV), json (a JSON file "
        "per image), masks (images and same-named PNG class masks); docs/outputs.md describes each.",
    ),
]

TaskOption = Annotated[
    TaskChoice | None,
    typer.Option(
        "--task",
        metavar="TASK",
        rich_help_panel=OUTPUT_PANEL,
        help="What the records carry: detection (boxes only), segmentation (a class mask per image), "
        "instance-segmentation (boxes and a mask per object), classification (image labels only) or keypoints; "
        "default: whatever the export has (every run's first line says what that is).",
    ),
]

PartitionOption = Annotated[
    float,
    typer.Option(
        "-p",
        "--partition",
        metavar="MB",
        rich_help_panel=OUTPUT_PANEL,
        min=0.001,
        help="Largest shard size in MB (MiB, 1,048,576 bytes); a shard exceeds it only if one record alone does.",
    ),
]

AbsolutePathsOption = Annotated[
    bool,
    typer.Option(
        "--absolute-paths",
        rich_help_panel=OUTPUT_PANEL,
        help="Write absolute paths in dataset_info.yaml, Masterful CSVs and JSON annotations instead of "
        "relative ones (relative to the file that holds them, so the dataset can move).",
    ),
]

OverwriteOption = Annotated[
    bool,
    typer.Option(
        "--overwrite",
        rich_help_panel=OUTPUT_PANEL,
        help="Replace paths in the output folder that the converter did not write (a folder named like a "
        "split, another tool's report.json). Without it such a path stops the run before any work.",
    ),
]

SplitOption = Annotated[
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
]

SeedOption = Annotated[
    int,
    typer.Option(
        "--seed",
        metavar="N",
        rich_help_panel=SPLIT_PANEL,
        help="Seed of the split and of the record order.",
    ),
]

ClassesOption = Annotated[
    Path | None,
    typer.Option(
        "--classes",
        metavar="FILE",
        rich_help_panel=SPLIT_PANEL,
        exists=True,
        dir_okay=False,
        help="Pin the class list and its order: one name per line, or a previous dataset_info.yaml.",
    ),
]

AllowNewClassesOption = Annotated[
    bool,
    typer.Option(
        "--allow-new-classes",
        rich_help_panel=SPLIT_PANEL,
        help="With --classes: append classes it lacks instead of skipping their samples.",
    ),
]

MaxSkippedOption = Annotated[
    str | None,
    typer.Option(
        "--max-skipped",
        metavar="N|FRACTION",
        rich_help_panel=OUTPUT_PANEL,
        help="Fail (exit 1, no dataset) if more samples are skipped: a count (10) or a fraction (0.05 or 5%).",
    ),
]

OverlapOption = Annotated[
    Overlap,
    typer.Option(
        "--overlap",
        metavar="RULE",
        rich_help_panel=MASKS_PANEL,
        help="Where shapes overlap in a class mask: later ones paint over earlier (order), the higher "
        "--class-priority wins (priority), or the pixel gets a combination class like Canvas+Obstruction "
        "(combine; numbered as first met, so it runs in one process).",
    ),
]

ClassPriorityOption = Annotated[
    str | None,
    typer.Option(
        "--class-priority",
        metavar="NAMES",
        rich_help_panel=MASKS_PANEL,
        help="With --overlap priority: comma-separated classes, highest priority first; unlisted classes rank "
        "below them.",
    ),
]

InstanceMasksOption = Annotated[
    bool,
    typer.Option(
        "--instance-masks",
        rich_help_panel=MASKS_PANEL,
        help="Also write one PNG mask per object (image/object/mask, Model Garden style); a plain box paints "
        "its rectangle.",
    ),
]

MasksOption = Annotated[
    Path | None,
    typer.Option(
        "--masks",
        metavar="FOLDER",
        rich_help_panel=INPUT_PANEL,
        file_okay=False,
        help="Mask folders: the folder of masks named like the images; default: masks/ beside the label map.",
    ),
]

LabelstudioUrlOption = Annotated[
    str | None,
    typer.Option(
        "--labelstudio-url",
        metavar="URL",
        rich_help_panel=LABEL_STUDIO_PANEL,
        help="Pull annotations from a running Label Studio server instead of an export file (needs --project). "
        "Its root URL only: a URL with user:password@ is refused (exit 2), the token comes from "
        "LABEL_STUDIO_API_KEY or --labelstudio-token-path.",
    ),
]

ProjectOption = Annotated[
    int | None,
    typer.Option("--project", metavar="ID", rich_help_panel=LABEL_STUDIO_PANEL, help="Label Studio project id."),
]

LabelstudioTokenPathOption = Annotated[
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
]

AnnotationRuleOption = Annotated[
    AnnotationRule,
    typer.Option(
        "--annotation-rule",
        metavar="RULE",
        rich_help_panel=LABEL_STUDIO_PANEL,
        help="Which annotation of a Label Studio task with several: the ground-truth one, else the newest "
        "(ground-truth-then-newest), the newest, or the oldest.",
    ),
]

ScaleProjectOption = Annotated[
    str | None,
    typer.Option(
        "--scale-project",
        metavar="NAME",
        rich_help_panel=SCALE_PANEL,
        help="Pull completed tasks of this Scale AI project through the API instead of an export file.",
    ),
]

BatchOption = Annotated[
    list[str] | None,
    typer.Option(
        "--batch",
        metavar="NAME",
        rich_help_panel=SCALE_PANEL,
        help="Scale AI: only tasks of these batches (repeat); other tasks are left out, not reported.",
    ),
]

CreatedAfterOption = Annotated[
    str | None,
    typer.Option(
        "--created-after",
        metavar="YYYY-MM-DD",
        rich_help_panel=SCALE_PANEL,
        help="Scale AI: only tasks created on or after this UTC day (YYYY-MM-DD); others are left out unreported.",
    ),
]

CreatedBeforeOption = Annotated[
    str | None,
    typer.Option(
        "--created-before",
        metavar="YYYY-MM-DD",
        rich_help_panel=SCALE_PANEL,
        help="Scale AI: only tasks created before this UTC day (YYYY-MM-DD, exclusive); others are left out "
        "unreported.",
    ),
]

ScaleApiKeyPathOption = Annotated[
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
]

ScaleApiUrlOption = Annotated[
    str | None,
    typer.Option(
        "--scale-api-url",
        metavar="URL",
        rich_help_panel=SCALE_PANEL,
        help="Scale AI API base URL, for a proxy or a stand-in server; default: https://api.scale.com/v1.",
    ),
]

DownloadImagesOption = Annotated[
    bool,
    typer.Option(
        "--download-images",
        rich_help_panel=SCALE_PANEL,
        help="Fetch images behind http(s) URLs (concurrently, with retries) instead of resolving them under -i.",
    ),
]

ImageCacheOption = Annotated[
    Path | None,
    typer.Option(
        "--image-cache",
        metavar="FOLDER",
        rich_help_panel=SCALE_PANEL,
        file_okay=False,
        help="With --download-images: keep downloaded images here and reuse them; default: <output>/.image-cache.",
    ),
]

LayoutOption = Annotated[
    RecordLayout,
    typer.Option(
        "--layout",
        metavar="LAYOUT",
        rich_help_panel=OUTPUT_PANEL,
        help="TFRecord feature names: the Object Detection API's (object-detection-api) or ModelPack's (modelpack).",
    ),
]

WorkersOption = Annotated[
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
]

NumWorkersOption = Annotated[
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
]

WorkerIndexOption = Annotated[
    int | None,
    typer.Option(
        "--worker-index",
        metavar="N",
        envvar=WORKER_INDEX_VARIABLE,
        rich_help_panel=SCALE_OUT_PANEL,
        min=0,
        help="This machine's slice, 0..num-workers-1; default: JOB_COMPLETION_INDEX or SageMaker's current_host.",
    ),
]

StrictOption = Annotated[
    bool,
    typer.Option(
        "--strict",
        rich_help_panel=OUTPUT_PANEL,
        help="Refuse (exit 2, before any work) a conversion whose records would lose something of the input: "
        "rotated boxes' rotation, shapes, keypoints, attributes, overlapping regions; the run names what and how "
        "much.",
    ),
]

StatsOption = Annotated[
    bool,
    typer.Option(
        "--stats/--no-stats",
        rich_help_panel=OUTPUT_PANEL,
        help="Write stats/ into the dataset: stats.json, plots and index.html with previews of the records.",
    ),
]

CheckReportOption = Annotated[
    Path | None,
    typer.Option(
        "--report",
        metavar="FILE",
        rich_help_panel=CHECK_PANEL,
        dir_okay=False,
        help="Also write everything the check found as JSON (report.json's format, with a `check` section).",
    ),
]


@dataclass(frozen=True)
class RunRequest:
    """Every option of `convert`, as given; `check` leaves the output options at their defaults."""

    annotations: str | None = None
    images: str | None = None
    source: SourceFormat | None = None
    label_attribute: str | None = None
    output: str | None = None
    output_format: OutputFormat = OutputFormat.tfrecord  # type: ignore[attr-defined]
    task: TaskChoice | None = None
    partition: float = 100.0
    absolute_paths: bool = False
    overwrite: bool = False
    strict: bool = False
    stats: bool = True
    split: str = "0.2"
    seed: int = 0
    classes: Path | None = None
    allow_new_classes: bool = False
    max_skipped: str | None = None
    overlap: Overlap = Overlap.order
    class_priority: str | None = None
    instance_masks: bool = False
    masks: Path | None = None
    labelstudio_url: str | None = None
    project: int | None = None
    labelstudio_token_path: Path | None = None
    annotation_rule: AnnotationRule = AnnotationRule.ground_truth_then_newest
    scale_project: str | None = None
    batch: list[str] | None = None
    created_after: str | None = None
    created_before: str | None = None
    scale_api_key_path: Path | None = None
    scale_api_url: str | None = None
    download_images: bool = False
    image_cache: Path | None = None
    layout: RecordLayout = RecordLayout.object_detection_api
    workers: int | None = None
    num_workers: int | None = None
    worker_index: int | None = None

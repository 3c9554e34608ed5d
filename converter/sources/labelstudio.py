"""Label Studio: a JSON export file (`--source labelstudio`), or a project pulled from a server.

Both read the same document, Label Studio's JSON export ("JSON", not "JSON_MIN"): a
list of tasks, each with `data` (the image reference) and `annotations`, each
annotation a `result` list of regions. The server's copy comes from
`GET /api/projects/{id}/export?exportType=JSON` (`converter.sources.labelstudio_api`),
which, like the export button, lists only tasks that have an annotation.

Coordinates: every region is in percent (0-100) of `original_width` x
`original_height`, the image size Label Studio saw. Pixels are `percent / 100 * size`
in the displayed frame of `converter.core.sample`. A rectangle's `rotation` is in
degrees clockwise around its top-left corner (screen coordinates, y down), applied
after converting to pixels: an unrotated rectangle is a box, a rotated one a
four-vertex polygon plus its axis-aligned box.

Rules (docs/sources/labelstudio.md says the same to users):

- One annotation per task. Cancelled annotations (`was_cancelled`) are ignored; among
  the rest `annotation_rule` chooses: `ground-truth-then-newest` (default: the newest
  ground-truth one, else the newest), `newest`, or `oldest`, by `created_at` then
  annotation id (a missing `created_at` counts as oldest).
- A task without annotations is skipped (`not_annotated`), so is one whose annotations
  were all cancelled (`cancelled`). An annotation with an empty result is a valid
  negative image.
- A region with several labels becomes one object per label, same geometry.
- `relation` results (links between regions, no `value`) are ignored and counted in
  the run's input description. Any other type outside `SUPPORTED_RESULT_TYPES`, a
  result drawn on a rotated image (`image_rotation` != 0), or results that disagree on
  the image size skip the task: a task is converted whole or not at all.
- The sample key (and `image/source_id`) is `data.image` as written. Report entries
  carry no line (a JSON list has no line per task) and the key `task <id>`.
- Whatever a task holds costs that task alone: a number that is not finite or
  overflows once in pixels, text that is not Unicode (a lone surrogate), a size over
  `MAX_IMAGE_PIXELS`, a brush whose header announces more words than its canvas holds,
  a reference no URL parser takes apart, each skips its task with a report entry; only
  a file that is not a JSON list of tasks stops the run, as one usage error.
- Class order: a labelling config's `<Label>`/`<Choice>` order when one is known (a
  server project's `label_config`), then any other name used, sorted; an export file
  carries no config, so its classes are sorted by name (pin another order with --classes).
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qs, urlsplit
from xml.etree import ElementTree

from converter.core.images import MAX_IMAGE_PIXELS, ImageResolver, check_reference, reference_parts
from converter.core.input_files import MAX_INT_DIGITS, finite_number, load_json, named, shown
from converter.core.sample import (
    InvalidValueError,
    Keypoint,
    ObjectAnnotation,
    Polygon,
    Sample,
    SkipCollector,
    SkipHandler,
    SkippedSample,
    SourceContents,
)
from converter.core.secret import Secret
from converter.errors import SampleError, SampleLocation, UsageError, quoted
from converter.sources._peek import json_file_head
from converter.sources.labelstudio_api import LabelStudioClient, LabelStudioError
from converter.sources.labelstudio_brush import brush_to_rle_mask

RECTANGLE = "rectanglelabels"
POLYGON = "polygonlabels"
BRUSH = "brushlabels"
KEYPOINT = "keypointlabels"
CHOICES = "choices"
RELATION = "relation"
SUPPORTED_RESULT_TYPES = (RECTANGLE, POLYGON, BRUSH, KEYPOINT, CHOICES)
ANNOTATION_RULES = ("ground-truth-then-newest", "newest", "oldest")
IMAGE_FIELD = "image"  # the `data` key of `<Image value="$image">`, Label Studio's default
EXPORT_SUFFIXES = (".json",)
_UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-(.+)$")  # Label Studio prefixes uploaded file names: 6e2a3b1c-cat.jpg
_LOCAL_FILES_PATH = "/data/local-files"
_OLDEST = datetime.min.replace(tzinfo=UTC)
_LISTED_KEYS = 8  # `data` keys a message names
# Recognition reads ints as `parse_json` does: one too long for Python's int parser is a float, not an error.
_PEEK_DECODER = json.JSONDecoder(
    parse_int=lambda digits: int(digits) if len(digits) <= MAX_INT_DIGITS else float(digits)
)


# ---------------------------------------------------------------------------
# Recognizing an export


def _is_task(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and isinstance(value.get("data"), dict)
        and ("annotations" in value or "predictions" in value)
    )


def looks_like_labelstudio_export(path: Path) -> bool:
    """Whether a file is a Label Studio JSON export: a JSON list whose first task has `data` and annotations.

    Reads the first 64 KiB only. When the first task is longer than that (a brush RLE),
    its keys are looked for as text in what was read.
    """
    head = json_file_head(path, EXPORT_SUFFIXES)
    if head is None or not head.text.startswith("["):
        return False
    first = head.text[1:].lstrip()
    try:
        task, _ = _PEEK_DECODER.raw_decode(first)
    except (json.JSONDecodeError, RecursionError):  # not JSON (or cut short), or nested too deeply
        cut_short = head.cut_short and first.startswith("{")
        return cut_short and '"data"' in first and ('"annotations"' in first or '"predictions"' in first)
    return _is_task(task)


# ---------------------------------------------------------------------------
# The labelling config


@dataclass(frozen=True)
class LabelConfig:
    """What the converter uses of a labelling config: its class order and the image's `data` key."""

    class_order: tuple[str, ...] = ()
    image_field: str = IMAGE_FIELD


def parse_label_config(xml_text: str) -> LabelConfig:
    """Class names in `<Label>`/`<Choice>` order (the `alias` if set: that is what results store),
    and the `data` key of the `<Image>` tag when there is exactly one."""
    try:
        root = ElementTree.fromstring(xml_text)
    except ElementTree.ParseError as error:
        raise LabelStudioError(f"the project's labelling config is not valid XML: {error}") from None
    names: list[str] = []
    image_values: list[str] = []
    for element in root.iter():
        tag = element.tag.lower()
        if tag in ("label", "choice"):
            name = element.get("alias") or element.get("value")
            if name:
                names.append(name)
        elif tag == "image":
            image_values.append(element.get("value", ""))
    image_field = IMAGE_FIELD
    if len(image_values) == 1 and image_values[0].startswith("$"):
        image_field = image_values[0][1:]
    return LabelConfig(tuple(dict.fromkeys(names)), image_field)


# ---------------------------------------------------------------------------
# Checked access to the JSON


def _number(container: Mapping[str, Any], key: str, where: str) -> float:
    """A finite float (an int too large for a float is refused like infinity)."""
    value = container.get(key)
    number = finite_number(value)
    if number is None:
        raise SampleError("malformed_annotation", f"{where} `{key}` must be a finite number, got {shown(value)}")
    return number


def _dimension(result: Mapping[str, Any], key: str, where: str) -> int:
    value = result.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise SampleError("malformed_annotation", f"{where} `{key}` must be a positive integer, got {shown(value)}")
    return value


def _size(result: Mapping[str, Any], where: str) -> tuple[int, int]:
    """`(original_width, original_height)`: the image size the region's percentages refer to.

    Bounded by `MAX_IMAGE_PIXELS` like an image header: a brush canvas is allocated at this
    size, so `original_width: 1e12` must not get that far.
    """
    width, height = _dimension(result, "original_width", where), _dimension(result, "original_height", where)
    if width * height > MAX_IMAGE_PIXELS:
        raise SampleError(
            "image_too_large",
            f"{where} declares the image as {width}x{height}, more than the {MAX_IMAGE_PIXELS:,} pixels "
            "an image may have (a corrupt size)",
        )
    return width, height


def _labels(value: Mapping[str, Any], kind: str, where: str) -> list[str]:
    labels = value.get(kind)
    if not isinstance(labels, list) or not labels or not all(isinstance(name, str) and name for name in labels):
        raise SampleError(
            "malformed_annotation", f"{where} `value.{kind}` must be a non-empty list of names, got {shown(labels)}"
        )
    return labels


def _task_key(task: Any, index: int) -> str:
    """`task <id>`, or `task at index <n>` (0-based) for a task without a usable id, as in a hand-made export.

    Label Studio's ids are 64-bit; a longer int is no id, and would fill every report entry.
    """
    task_id = task.get("id") if isinstance(task, dict) else None
    if isinstance(task_id, int) and not isinstance(task_id, bool) and abs(task_id) <= sys.maxsize:
        return f"task {task_id}"
    return f"task at index {index}"


# ---------------------------------------------------------------------------
# Choosing the annotation of a task


def _created_at(annotation: Mapping[str, Any]) -> datetime:
    text = annotation.get("created_at")
    if text is None:
        return _OLDEST
    try:
        moment = datetime.fromisoformat(text) if isinstance(text, str) else None
    except ValueError:
        moment = None
    if moment is None:
        raise SampleError("malformed_annotation", f"annotation `created_at` is not an ISO 8601 time: {shown(text)}")
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _age(annotation: Mapping[str, Any]) -> tuple[datetime, int]:
    annotation_id = annotation.get("id")
    return _created_at(annotation), annotation_id if isinstance(annotation_id, int) else -1


def choose_annotation(annotations: Sequence[Mapping[str, Any]], rule: str) -> Mapping[str, Any]:
    """The annotation `rule` picks among a task's non-cancelled annotations (at least one)."""
    if len(annotations) == 1:
        return annotations[0]
    if rule == "oldest":
        return min(annotations, key=_age)
    pool = annotations
    if rule == "ground-truth-then-newest":
        pool = [annotation for annotation in annotations if annotation.get("ground_truth") is True] or annotations
    return max(pool, key=_age)


# ---------------------------------------------------------------------------
# Results to shapes


def rectangle_pixels(
    value: Mapping[str, Any], width: int, height: int, where: str
) -> tuple[tuple[float, float, float, float], Polygon | None]:
    """A rectangle's pixel box, and its four corners when it is rotated.

    Example: x=10, y=20, width=30, height=40 (percent) on a 200x100 image is the box
    (20, 20, 80, 60); rotated by 90 degrees its corners are (20, 20), (20, 80),
    (-20, 80), (-20, 20), clockwise on screen around the top-left corner.
    """
    left = _number(value, "x", where) / 100 * width
    top = _number(value, "y", where) / 100 * height
    box_width = _number(value, "width", where) / 100 * width
    box_height = _number(value, "height", where) / 100 * height
    if box_width < 0 or box_height < 0:
        raise SampleError("malformed_annotation", f"{where} has a negative width or height")
    rotation = _number(value, "rotation", where) if "rotation" in value else 0.0
    if rotation % 360 == 0:
        return (left, top, left + box_width, top + box_height), None
    cos, sin = math.cos(math.radians(rotation)), math.sin(math.radians(rotation))
    corners = (
        (left, top),
        (left + box_width * cos, top + box_width * sin),
        (left + box_width * cos - box_height * sin, top + box_width * sin + box_height * cos),
        (left - box_height * sin, top + box_height * cos),
    )
    xs, ys = [x for x, _ in corners], [y for _, y in corners]
    polygon = Polygon(tuple(coordinate for corner in corners for coordinate in corner))
    return (min(xs), min(ys), max(xs), max(ys)), polygon


def _polygon_pixels(value: Mapping[str, Any], width: int, height: int, where: str) -> Polygon:
    points = value.get("points")
    if not isinstance(points, list) or len(points) < 3:
        raise SampleError(
            "malformed_annotation", f"{where} `points` must list at least 3 [x, y] points, got {shown(points)}"
        )
    flat: list[float] = []
    for point in points:
        if not isinstance(point, list) or len(point) != 2:
            raise SampleError("malformed_annotation", f"{where} has a point that is not [x, y]: {shown(point)}")
        x, y = _number({"x": point[0]}, "x", where), _number({"y": point[1]}, "y", where)
        flat.extend((x / 100 * width, y / 100 * height))
    return Polygon(tuple(flat))


@dataclass
class _TaskContent:
    """What the chosen annotation's results amount to."""

    objects: list[ObjectAnnotation] = field(default_factory=list)
    keypoints: list[Keypoint] = field(default_factory=list)
    image_labels: list[str] = field(default_factory=list)
    size: tuple[int, int] | None = None
    relations: int = 0

    def agree_on_size(self, size: tuple[int, int], where: str) -> None:
        if self.size is None:
            self.size = size
        elif size != self.size:
            raise SampleError(
                "inconsistent_size",
                f"{where} is drawn on a {size[0]}x{size[1]} image, earlier results on {self.size[0]}x{self.size[1]}",
            )


def read_results(results: Any) -> _TaskContent:
    """Objects, keypoints and image labels of one annotation's `result` list."""
    if not isinstance(results, list):
        raise SampleError("malformed_annotation", f"annotation `result` must be a list, got {type(results).__name__}")
    content = _TaskContent()
    for index, result in enumerate(results):
        where = f"result {index}"
        if not isinstance(result, dict):
            raise SampleError("malformed_annotation", f"{where} must be an object, got {shown(result)}")
        kind = result.get("type")
        if kind == RELATION:
            content.relations += 1
            continue
        if kind not in SUPPORTED_RESULT_TYPES:
            raise SampleError(
                "unsupported_result_type",
                f"{where} has type {shown(kind)}, which is not converted "
                f"(supported: {', '.join(SUPPORTED_RESULT_TYPES)}); "
                "the task is skipped rather than converted without it",
            )
        where = f"{where} ({kind})"
        rotation = result.get("image_rotation", 0)
        if rotation not in (0, None):
            raise SampleError(
                "image_rotation",
                f"{where} was drawn on the image rotated by {shown(rotation)} degrees in the editor "
                "(`image_rotation`); such coordinates cannot be mapped back to the image reliably",
            )
        value = result.get("value")
        if not isinstance(value, dict):
            raise SampleError("malformed_annotation", f"{where} has no `value` object")
        labels = _labels(value, kind, where)
        if kind == CHOICES:
            content.image_labels.extend(labels)
            continue
        width, height = _size(result, where)
        content.agree_on_size((width, height), where)
        if kind == KEYPOINT:
            x = _number(value, "x", where) / 100 * width
            y = _number(value, "y", where) / 100 * height
            content.keypoints.extend(Keypoint(name, x, y) for name in labels)
        elif kind == RECTANGLE:
            box, rotated = rectangle_pixels(value, width, height, where)
            polygons = (rotated,) if rotated is not None else ()
            content.objects.extend(ObjectAnnotation(name, box, polygons) for name in labels)
        elif kind == POLYGON:
            polygon = _polygon_pixels(value, width, height, where)
            content.objects.extend(ObjectAnnotation(name, polygons=(polygon,)) for name in labels)
        else:  # BRUSH
            if value.get("format") != "rle" or not isinstance(value.get("rle"), list):
                raise SampleError("malformed_annotation", f'{where} needs `format: "rle"` and an `rle` list')
            mask = brush_to_rle_mask(value["rle"], width, height)
            content.objects.extend(ObjectAnnotation(name, rle=mask) for name in labels)
    return content


# ---------------------------------------------------------------------------
# Image references


def local_path_of(reference: str) -> str:
    """The path an image reference names under the images folder.

    `/data/local-files/?d=photos/a.jpg` (Label Studio's local storage) names `photos/a.jpg`;
    every other form (`/data/upload/3/x.jpg`, `s3://`, `gs://`, `http(s)://`) is used as
    written: the resolver matches its trailing path components.
    """
    parsed = urlsplit(reference)
    if parsed.path.rstrip("/").endswith(_LOCAL_FILES_PATH):
        document = parse_qs(parsed.query).get("d")
        if document:
            return document[0]
    return reference


def without_upload_prefix(reference: str) -> str | None:
    """An uploaded file's reference without Label Studio's 8-hex-digit prefix, or None if it has none.

    `/data/upload/3/6e2a3b1c-cat.jpg` -> `data/upload/3/cat.jpg` (a path for the image resolver).
    """
    if not _is_upload(reference):
        return None
    _, parts = reference_parts(reference)
    match = _UPLOAD_PREFIX.match(parts[-1])
    return str(PurePosixPath(*parts[:-1], match.group(1))) if match else None


def _is_upload(reference: str) -> bool:
    """Whether a reference names a file in an `upload` folder (`/data/upload/<project>/<file>`)."""
    return "upload" in reference_parts(reference)[1][:-1]


# ---------------------------------------------------------------------------
# The source


@dataclass(frozen=True)
class LoadedExport:
    """An export's tasks, where they came from, and the project's config if known."""

    tasks: list[Any]
    origin: str
    config: LabelConfig | None = None
    description: dict[str, str] = field(default_factory=dict)


class LabelStudioSource:
    """`--source labelstudio`: tasks from an export file or a server, images under the images folder."""

    def __init__(self, load: Callable[[], LoadedExport], images_root: Path, annotation_rule: str) -> None:
        if annotation_rule not in ANNOTATION_RULES:
            raise UsageError(f"annotation rule must be one of {', '.join(ANNOTATION_RULES)}, got {annotation_rule!r}")
        self._load = load
        self.images_root = images_root
        self.annotation_rule = annotation_rule
        self._resolver = ImageResolver(images_root)

    def read(self, on_skip: SkipHandler | None = None) -> SourceContents:
        export = self._load()
        config = export.config or LabelConfig()
        samples: list[Sample] = []
        skipped = SkipCollector(on_skip)
        relations = 0
        for index, task in enumerate(export.tasks):
            location = SampleLocation(export.origin, None, _task_key(task, index))
            try:
                sample, task_relations = self._sample(task, location, config)
            except SampleError as error:
                skipped.append(SkippedSample(location, error.code, error.message))
                continue
            samples.append(sample)
            relations += task_relations
        used = {name for sample in samples for name in sample.class_names()}
        native_order = config.class_order + tuple(sorted(used - set(config.class_order)))
        description = {
            "source": "labelstudio",
            "annotations": export.origin,
            "images": str(self.images_root),
            "annotation_rule": self.annotation_rule,
            **export.description,
        }
        if relations:
            description["relations_ignored"] = str(relations)
        return SourceContents(tuple(samples), skipped.kept(), native_order, description)

    def _sample(self, task: Any, location: SampleLocation, config: LabelConfig) -> tuple[Sample, int]:
        """The task's sample and its number of relations; `SampleError` for anything that keeps it from being one.

        The sample model refuses values no output can hold (`InvalidValueError`: a
        coordinate that overflows to infinity once in pixels, a class name with a lone
        surrogate); those skip the task like any other malformed annotation.
        """
        try:
            return self._checked_sample(task, location, config)
        except InvalidValueError as error:
            raise SampleError("invalid_value", str(error)) from None

    def _checked_sample(self, task: Any, location: SampleLocation, config: LabelConfig) -> tuple[Sample, int]:
        if not isinstance(task, dict):
            raise SampleError("malformed_task", f"a task must be a JSON object, got {type(task).__name__}")
        data = task.get("data")
        if not isinstance(data, dict):
            raise SampleError("malformed_task", "task has no `data` object")
        reference = data.get(config.image_field)
        if not isinstance(reference, str) or not reference:
            raise SampleError(
                "missing_image_reference",
                f"task `data` has no image reference `{config.image_field}` (its keys: {_listed_keys(data)})",
            )
        annotations = task.get("annotations") or []
        if not isinstance(annotations, list) or not all(isinstance(item, dict) for item in annotations):
            raise SampleError("malformed_task", "task `annotations` must be a list of objects")
        usable = [annotation for annotation in annotations if not annotation.get("was_cancelled")]
        if not usable:
            if annotations:
                raise SampleError("cancelled", f"all {len(annotations)} annotations of the task were cancelled")
            predictions = task.get("predictions")
            note = (
                f" (it has {len(predictions)} predictions: model output, not converted)"
                if isinstance(predictions, list) and predictions
                else ""
            )
            raise SampleError("not_annotated", f"task is not annotated{note}")
        chosen = choose_annotation(usable, self.annotation_rule)
        content = read_results(chosen.get("result"))
        image_path = self._resolve(reference)
        attributes = [("labelstudio_task", location.key or "")]
        if isinstance(chosen.get("id"), int):
            attributes.append(("labelstudio_annotation", str(chosen["id"])))
        sample = Sample(
            key=reference,
            location=location,
            image_path=image_path,
            image_name=image_path.relative_to(self.images_root).as_posix(),
            declared_size=content.size,
            objects=tuple(content.objects),
            keypoints=tuple(content.keypoints),
            image_labels=tuple(dict.fromkeys(content.image_labels)),
            attributes=tuple(attributes),
        )
        return sample, content.relations

    def _resolve(self, reference: str) -> Path:
        """The image file; an upload whose prefixed name is missing is tried without the prefix."""
        check_reference(reference)
        target = local_path_of(reference)
        check_reference(target)
        try:
            return self._resolver.resolve(target)
        except SampleError as error:
            if error.code != "missing_image":
                raise
            message = error.message
        stripped = without_upload_prefix(target)
        if stripped is not None:
            try:
                return self._resolver.resolve(stripped)
            except SampleError as error:
                if error.code != "missing_image":
                    raise
            message += f", nor as {quoted(PurePosixPath(stripped).name)} (without Label Studio's upload prefix)"
        if _is_upload(target):
            message += (
                "; Label Studio keeps uploaded files in its data folder under media/upload/: "
                "pass -i <label-studio data folder>/media"
            )
        raise SampleError("missing_image", message)


def _listed_keys(data: Mapping[str, Any]) -> str:
    """A task's `data` keys as a message lists them: the first few, each escaped and shortened if not plain."""
    keys = sorted(data)
    listed = ", ".join(named(key) for key in keys[:_LISTED_KEYS])
    return listed + (f" and {len(keys) - _LISTED_KEYS} more" if len(keys) > _LISTED_KEYS else "")


# ---------------------------------------------------------------------------
# Loading


def _check_task_list(document: Any, origin: str) -> list[Any]:
    if isinstance(document, list):
        if document and isinstance(document[0], dict) and "data" not in document[0] and "image" in document[0]:
            raise UsageError(
                f"{origin} looks like a JSON_MIN export (tasks without `data`); export the project as JSON instead"
            )
        return document
    raise UsageError(f"{origin} is a JSON {type(document).__name__}, not a list of tasks (Label Studio's JSON export)")


def export_file_loader(path: Path) -> Callable[[], LoadedExport]:
    """Loads an export file when the run reads its source."""

    def load() -> LoadedExport:
        document = load_json(path, "Label Studio export")
        return LoadedExport(_check_task_list(document, str(path)), str(path))

    return load


def server_loader(client: LabelStudioClient, project_id: int) -> Callable[[], LoadedExport]:
    """Pulls a project's config and JSON export from a server when the run reads its source."""

    def load() -> LoadedExport:
        project = client.get_json(f"/api/projects/{project_id}")
        label_config = project.get("label_config") if isinstance(project, dict) else None
        if not isinstance(label_config, str):
            raise LabelStudioError(
                f"Label Studio at {client.base_url} sent project {project_id} without a `label_config`"
            )
        origin = f"{client.base_url}/api/projects/{project_id}"
        tasks = client.get_json(f"/api/projects/{project_id}/export?exportType=JSON")
        if not isinstance(tasks, list):
            raise LabelStudioError(f"{origin}/export answered a JSON {type(tasks).__name__}, not a list of tasks")
        description = {"labelstudio_project": str(project_id), "labelstudio_token_kind": client.token_kind}
        return LoadedExport(tasks, origin, parse_label_config(label_config), description)

    return load


def build_labelstudio_source(
    annotations: Path | None,
    images: Path,
    annotation_rule: str,
    url: str | None = None,
    project_id: int | None = None,
    token: Secret | None = None,
) -> LabelStudioSource:
    """The source for an export file, or, with `url`, for a project on a running server."""
    if url is None:
        if annotations is None:
            raise UsageError("--source labelstudio reads an export file (-a) or a server (--labelstudio-url)")
        return LabelStudioSource(export_file_loader(annotations), images, annotation_rule)
    if project_id is None or token is None:
        raise UsageError(
            "--labelstudio-url needs --project and a token (LABEL_STUDIO_API_KEY or --labelstudio-token-path)"
        )
    return LabelStudioSource(server_loader(LabelStudioClient(url, token), project_id), images, annotation_rule)

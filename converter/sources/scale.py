"""Scale AI: task exports (a JSON list, or JSON Lines) and projects pulled through Scale's API.

Both give the same task objects (`task_id`, `type`, `status`, `created_at`, `params`,
`response`). Images sit behind `params.attachment`, an http(s) URL that often expires
(dashboard exports add `attachmentS3Downloads[].s3URL`, signed copies): they are
resolved under the images folder by their URL path like other sources' references, or,
with `download_images`, fetched into a cache (`converter.sources.image_download`).

Coordinates are float pixels of the image as Scale showed it, origin at its top-left
corner, y down: the displayed frame of `converter.core.sample`. A box is `left, top,
width, height`; a rotated box (`can_rotate`) is the unrotated box plus `rotation`,
radians clockwise on screen, and its `vertices`: it becomes those four vertices as a
polygon plus their axis-aligned extent (without `vertices`, the corners are the box
rotated about its centre).

Rules (docs/sources/scale.md says the same to users):

- Date filters compare `created_at` (UTC) with whole UTC days: `created_after` keeps
  tasks created on or after that day (inclusive), `created_before` those created before
  that day began (exclusive), so `--created-after 2024-05-01 --created-before 2024-06-01`
  is May. Batch filters compare an export's tasks' `batch` (the API selects batches
  itself). Tasks outside the filters are left out, not reported (their number is in the
  input description).
- Only `completed` tasks of type `imageannotation` or `segmentannotation` are
  converted; every other task is skipped and reported with its reason. A task is
  converted whole or not at all: one unusable annotation skips it.
- `imageannotation`: boxes are detection boxes, polygons are shapes (painted into the
  class mask) with their extent as box; points, lines, ellipses and cuboids become
  image-level labels (presence, for classification).
- `segmentannotation`: the class mask is `response.annotations.combined.indexedImage`
  (one channel, 0 unlabeled, other values `labelMapping` indices, unique even where
  colours repeat), never the coloured image. Labels with `numPixels` > 0 are image-level
  labels; without `numPixels`, the index image's values say which are present.
- Class order: the sorted union of the classes the converted-or-skipped completed tasks
  declare (`params.geometries.*.objects_to_annotate`, `params.labels`; for a choice
  with `subchoices` its leaves, which is what responses carry) and of the labels the
  responses use, as Masterful's converter does. Background (index 0) adds no class.
- The sample key (`image/source_id`, the split key) is the `task_id`: stable across
  exports and re-signed links, unlike the attachment URL.
- Whatever a task holds costs that task alone, and whatever a JSON Lines line holds
  costs that line alone: a line that is not JSON, not decodable or too long is
  reported with its number and the lines around it are read; a number that is not
  finite, text that is not Unicode (a lone surrogate) or a reference no URL parser
  takes apart skips its task, and a declared class that is not Unicode stays out of the
  class list. Only a JSON list export that is not valid JSON as a whole stops the run,
  as one usage error.
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import numpy as np
from PIL import Image

from converter.core.images import MAX_IMAGE_PIXELS, ImageResolver, check_reference
from converter.core.input_files import (
    MAX_INT_DIGITS,
    finite_number,
    iter_lines,
    load_json,
    named,
    parse_json,
    peek_lines,
    shown,
)
from converter.core.sample import (
    InvalidValueError,
    ObjectAnnotation,
    Polygon,
    Sample,
    SegmentationMask,
    SkipCollector,
    SkipHandler,
    SkippedSample,
    SourceContents,
)
from converter.core.secret import Secret
from converter.core.storage import seekable
from converter.errors import SampleError, SampleLocation, UsageError, quoted
from converter.sources._peek import json_file_head
from converter.sources.image_download import (
    DEFAULT_CONCURRENCY,
    EXPIRED_URL,
    ImageDownloader,
    is_http_url,
    without_query,
)
from converter.sources.scale_api import ScaleApi, ScaleApiError

IMAGE_ANNOTATION = "imageannotation"
SEGMENT_ANNOTATION = "segmentannotation"
SUPPORTED_TASK_TYPES = (IMAGE_ANNOTATION, SEGMENT_ANNOTATION)
COMPLETED = "completed"
BOX, POLYGON = "box", "polygon"
PRESENCE_TYPES = ("point", "line", "ellipse", "cuboid")  # image-level labels: their geometry is not converted
EXPORT_SUFFIXES = (".json", ".jsonl", ".ndjson")
_JSON_LINES_SUFFIXES = (".jsonl", ".ndjson")
_TASKS_TO_RECOGNIZE = 20
_TASK_ID_TEXT = re.compile(r'"task_id"\s*:\s*"')
_TASK_TYPE_TEXT = re.compile(r'"type"\s*:\s*"(?:imageannotation|segmentannotation)"')
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
_FORMAT_PEEK_LINES, _FORMAT_PEEK_CHARS = 16, 4096  # enough to find an export's first character
# What Pillow's parsers raise on a corrupt or hostile file (UnidentifiedImageError is an OSError).
_UNREADABLE_MASK = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, KeyError)
# Recognition reads ints as `parse_json` does: one too long for Python's int parser is a float, not an error.
_PEEK_DECODER = json.JSONDecoder(
    parse_int=lambda digits: int(digits) if len(digits) <= MAX_INT_DIGITS else float(digits)
)


# ---------------------------------------------------------------------------
# Recognizing an export


def _is_scale_task(value: Any) -> bool:
    return (
        isinstance(value, dict) and isinstance(value.get("task_id"), str) and value.get("type") in SUPPORTED_TASK_TYPES
    )


def _peeked_objects(text: str, json_lines: bool) -> Iterator[Any]:
    """The JSON values at the start of `text`: a list's first elements, or the first lines of JSON Lines."""
    if text.startswith("[") and not json_lines:
        position = 1
        for _ in range(_TASKS_TO_RECOGNIZE):
            while position < len(text) and text[position] in " \t\r\n,":
                position += 1
            try:
                value, position = _PEEK_DECODER.raw_decode(text, position)
            except (json.JSONDecodeError, RecursionError):  # not JSON (or cut short), or nested too deeply
                return
            yield value
    else:
        for line in text.splitlines()[:_TASKS_TO_RECOGNIZE]:
            try:
                yield parse_json(line)
            except SampleError:
                continue


def looks_like_scale_export(path: Path) -> bool:
    """Whether a file is a Scale AI export: a JSON list or JSON Lines of tasks with `task_id` and an image `type`.

    Reads the first 64 KiB only. When the first task is longer than that (a response with
    thousands of vertices), its `task_id` and `type` keys are looked for as text. A
    `.jsonl` or `.ndjson` file is read as JSON Lines whatever its first line holds, as
    `export_file_loader` reads it.
    """
    head = json_file_head(path, EXPORT_SUFFIXES)
    json_lines = path.suffix.lower() in _JSON_LINES_SUFFIXES
    if head is None or not (json_lines or head.text.startswith(("[", "{"))):
        return False
    text = head.text
    if any(_is_scale_task(value) for value in _peeked_objects(text, json_lines)):
        return True
    first = text[1:].lstrip() if text.startswith("[") and not json_lines else text
    cut_short = head.cut_short and first.startswith("{")
    return cut_short and _TASK_ID_TEXT.search(first) is not None and _TASK_TYPE_TEXT.search(first) is not None


# ---------------------------------------------------------------------------
# Filters


def parse_day(text: str, option: str) -> date:
    """A `YYYY-MM-DD` date option."""
    try:
        if _DAY.fullmatch(text):
            return date.fromisoformat(text)
    except ValueError:
        pass
    raise UsageError(f"{option} must be a date written YYYY-MM-DD, got {text!r}")


def _created_at(task: Mapping[str, Any]) -> datetime:
    text = task.get("created_at")
    try:
        moment = datetime.fromisoformat(text) if isinstance(text, str) else None
    except ValueError:
        moment = None
    if moment is None:
        raise SampleError(
            "malformed_task", f"task `created_at` must be an ISO 8601 time to apply the date filters, got {shown(text)}"
        )
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class TaskFilter:
    """Which tasks a run considers at all: created in [after, before) (whole UTC days), of these batches."""

    created_after: date | None = None
    created_before: date | None = None
    batches: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.created_after and self.created_before and self.created_after >= self.created_before:
            raise UsageError(
                f"--created-after {self.created_after} is not before --created-before {self.created_before}: "
                "no day is in the range (--created-after is inclusive, --created-before exclusive)"
            )

    @classmethod
    def from_options(cls, created_after: str | None, created_before: str | None, batches: Sequence[str]) -> TaskFilter:
        return cls(
            parse_day(created_after, "--created-after") if created_after else None,
            parse_day(created_before, "--created-before") if created_before else None,
            tuple(batches),
        )

    def admits(self, task: Mapping[str, Any]) -> bool:
        """Whether the task is inside the filters; raises `SampleError` if a date filter cannot be applied."""
        if self.batches and task.get("batch") not in self.batches:
            return False
        if self.created_after is None and self.created_before is None:
            return True
        created = _created_at(task)
        if self.created_after and created < datetime.combine(self.created_after, time(), UTC):
            return False
        return not (self.created_before and created >= datetime.combine(self.created_before, time(), UTC))


# ---------------------------------------------------------------------------
# Checked access to the JSON


def _response_object(container: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
    value = container.get(key)
    if not isinstance(value, dict):
        raise SampleError("missing_response", f"{where} has no `{key}` object")
    return value


def _number(container: Mapping[str, Any], key: str, where: str) -> float:
    """A finite float (an int too large for a float is refused like infinity)."""
    value = container.get(key)
    number = finite_number(value)
    if number is None:
        raise SampleError("bad_geometry", f"{where} `{key}` must be a finite number, got {shown(value)}")
    return number


def _vertices(annotation: Mapping[str, Any], where: str, minimum: int) -> tuple[float, ...]:
    """`vertices: [{x, y}, ...]` as a flat `(x0, y0, x1, y1, ...)` tuple."""
    vertices = annotation.get("vertices")
    if not isinstance(vertices, list) or len(vertices) < minimum:
        raise SampleError("bad_geometry", f"{where} `vertices` must list at least {minimum} {{x, y}} points")
    flat: list[float] = []
    for vertex in vertices:
        if not isinstance(vertex, dict):
            raise SampleError("bad_geometry", f"{where} has a vertex that is not an {{x, y}} object: {shown(vertex)}")
        flat.extend((_number(vertex, "x", where), _number(vertex, "y", where)))
    return tuple(flat)


def _label(annotation: Mapping[str, Any], where: str) -> str:
    label = annotation.get("label")
    if not isinstance(label, str) or not label:
        raise SampleError("malformed_annotation", f"{where} has no `label`")
    return label


def label_leaves(entries: Any) -> list[str]:
    """The class names of an `objects_to_annotate` or `labels` list: strings, or choices' leaves.

    `["car", {"choice": "vehicle", "subchoices": ["bus", {"choice": "truck"}]}]` -> `["car", "bus", "truck"]`
    (responses carry leaf labels, so a choice with subchoices is not itself a class).
    A name that is not Unicode text (a lone surrogate) is left out: no output can write it
    in the class list, and a response that uses it skips its task as `invalid_value`.
    """
    names: list[str] = []
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, str):
            names.append(entry)
        elif isinstance(entry, dict):
            subchoices = entry.get("subchoices")
            if isinstance(subchoices, list) and subchoices:
                names.extend(label_leaves(subchoices))
            elif isinstance(entry.get("choice"), str):
                names.append(entry["choice"])
    return [name for name in names if name and _is_text(name)]


def _is_text(name: str) -> bool:
    """Whether `name` can be written as UTF-8 (JSON may escape lone surrogates into a string)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def declared_classes(task: Mapping[str, Any]) -> list[str]:
    """The classes a task's parameters offer (its geometries' `objects_to_annotate`, or its `labels`)."""
    params = task.get("params")
    if not isinstance(params, dict):
        return []
    if task.get("type") == SEGMENT_ANNOTATION:
        return label_leaves(params.get("labels"))
    geometries = params.get("geometries")
    if not isinstance(geometries, dict):
        return []
    return [
        name
        for geometry in geometries.values()
        if isinstance(geometry, dict)
        for name in label_leaves(geometry.get("objects_to_annotate"))
    ]


# ---------------------------------------------------------------------------
# Responses to annotations


def box_annotation(annotation: Mapping[str, Any], label: str, where: str) -> ObjectAnnotation:
    """A box, or a rotated box as its four vertices plus their extent.

    Example: left=10, top=20, width=40, height=20 is the box (10, 20, 50, 40); with
    rotation pi/2 about its centre (30, 30) its corners are (40, 10), (40, 50), (20, 50),
    (20, 10), and its box (20, 10, 40, 50).
    """
    left, top = _number(annotation, "left", where), _number(annotation, "top", where)
    width, height = _number(annotation, "width", where), _number(annotation, "height", where)
    if width < 0 or height < 0:
        raise SampleError("bad_geometry", f"{where} has a negative width or height")
    rotation = _number(annotation, "rotation", where) if annotation.get("rotation") is not None else 0.0
    if rotation % (2 * math.pi) == 0:
        return ObjectAnnotation(label, (left, top, left + width, top + height))
    if annotation.get("vertices") is not None:
        ring = _vertices(annotation, where, 4)
        if len(ring) != 8:
            raise SampleError("bad_geometry", f"{where} is a rotated box with {len(ring) // 2} vertices, not 4")
    else:
        center_x, center_y = left + width / 2, top + height / 2
        cos, sin = math.cos(rotation), math.sin(rotation)
        ring = tuple(
            coordinate
            for dx, dy in (
                (-width / 2, -height / 2),
                (width / 2, -height / 2),
                (width / 2, height / 2),
                (-width / 2, height / 2),
            )
            for coordinate in (center_x + dx * cos - dy * sin, center_y + dx * sin + dy * cos)
        )
    polygon = Polygon(ring)
    return ObjectAnnotation(label, polygon.bounds(), (polygon,))


@dataclass(frozen=True)
class TaskAnnotations:
    """What a task's response amounts to, before its files are found."""

    objects: tuple[ObjectAnnotation, ...] = ()
    image_labels: tuple[str, ...] = ()
    index_to_class: tuple[tuple[int, str | None], ...] = ()  # a segmentannotation's; always has 0: background
    present_labels: tuple[str, ...] | None = None  # None: read from the index image


def image_annotations(response: Mapping[str, Any]) -> TaskAnnotations:
    """Objects and image-level labels of an imageannotation response; any unusable annotation skips the task."""
    annotations = response.get("annotations")
    if not isinstance(annotations, list):
        raise SampleError("missing_response", "the task's `response` has no `annotations` list")
    objects: list[ObjectAnnotation] = []
    presence: list[str] = []
    for index, annotation in enumerate(annotations):
        where = f"annotation {index}"
        if not isinstance(annotation, dict):
            raise SampleError("malformed_annotation", f"{where} must be an object, got {shown(annotation)}")
        kind = annotation.get("type")
        where = f"{where} ({named(kind) if isinstance(kind, str) else shown(kind)})"
        label = _label(annotation, where)
        if kind == BOX:
            objects.append(box_annotation(annotation, label, where))
        elif kind == POLYGON:
            objects.append(ObjectAnnotation(label, polygons=(Polygon(_vertices(annotation, where, 3)),)))
        elif kind in PRESENCE_TYPES:
            presence.append(label)
        else:
            raise SampleError(
                "unsupported_annotation_type",
                f"{where} has a type this converter does not read (it reads {BOX}, {POLYGON}, "
                f"{', '.join(PRESENCE_TYPES)}); the task is skipped rather than converted without it",
            )
    return TaskAnnotations(tuple(objects), tuple(dict.fromkeys(presence)))


def _mapping_entries(label: str, value: Any) -> list[dict[str, Any]]:
    """A `labelMapping` value: one `{index, color[, numPixels]}`, or a list of them (one per instance)."""
    entries = value if isinstance(value, list) else [value]
    if not entries or not all(isinstance(entry, dict) for entry in entries):
        raise SampleError(
            "malformed_annotation", f"`labelMapping` entry {quoted(label)} must be an object or a list of them"
        )
    return entries


def index_mask_url(response: Mapping[str, Any]) -> str:
    """A segmentannotation response's `annotations.combined.indexedImage` URL."""
    combined = _response_object(
        _response_object(response, "annotations", "the task's `response`"), "combined", "`response.annotations`"
    )
    mask_url = combined.get("indexedImage")
    if not isinstance(mask_url, str) or not mask_url:
        raise SampleError("missing_response", "`response.annotations.combined` has no `indexedImage` URL")
    return mask_url


def segment_annotations(response: Mapping[str, Any]) -> TaskAnnotations:
    """The index mask's class map; presence from `numPixels` when every entry has it."""
    index_mask_url(response)  # checked now: a task without one is skipped before any download
    mapping = _response_object(response, "labelMapping", "the task's `response`")
    index_to_class: list[tuple[int, str | None]] = [(0, None)]  # 0 is unlabeled: background
    indices = {0}
    present: list[str] = []
    counted = True
    for label, value in mapping.items():
        for entry in _mapping_entries(label, value):
            index = entry.get("index")
            if isinstance(index, bool) or not isinstance(index, int) or index <= 0:
                raise SampleError(
                    "malformed_annotation",
                    f"`labelMapping` {quoted(label)} has index {shown(index)}; indices are integers >= 1",
                )
            if index in indices:
                raise SampleError("malformed_annotation", f"`labelMapping` gives index {index} to more than one label")
            indices.add(index)
            index_to_class.append((index, label))
            pixels = entry.get("numPixels")
            if isinstance(pixels, int | float) and not isinstance(pixels, bool):
                if pixels > 0:
                    present.append(label)
            else:
                counted = False
    return TaskAnnotations(
        index_to_class=tuple(index_to_class),
        present_labels=tuple(dict.fromkeys(present)) if counted else None,
    )


def _present_in_mask(mask: SegmentationMask) -> tuple[str, ...]:
    """The labels whose indices occur in an index image, in mapping order.

    The mask comes from the export's links, so it is as untrusted as the export: a header
    that declares more than `MAX_IMAGE_PIXELS` is refused before any pixel is decoded, and
    whatever Pillow raises on a corrupt file skips the task.
    """
    try:
        with Image.open(seekable(mask.path)) as image:
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise SampleError(
                    "image_too_large",
                    f"mask {mask.path} declares {width}x{height}, more than the {MAX_IMAGE_PIXELS:,} pixels "
                    "an image may have (a decompression bomb or a corrupt size)",
                )
            values = set(np.unique(np.asarray(image)).tolist())
    except Image.DecompressionBombError:
        raise SampleError(
            "image_too_large",
            f"mask {mask.path} is larger than the {MAX_IMAGE_PIXELS:,} pixels an image may have (a decompression bomb)",
        ) from None
    except _UNREADABLE_MASK as error:
        raise SampleError("corrupt_mask", f"mask {mask.path} cannot be read: {error}") from None
    return tuple(dict.fromkeys(name for index, name in mask.index_to_class if name is not None and index in values))


# ---------------------------------------------------------------------------
# Tasks


@dataclass(frozen=True)
class ParsedTask:
    """A task that passed every check but the search for its files."""

    location: SampleLocation
    task_id: str
    task: Mapping[str, Any]  # as read: its links, which may have expired by the time they are used
    annotations: TaskAnnotations
    attributes: tuple[tuple[str, str], ...]


def _task_id(task: Any) -> str | None:
    task_id = task.get("task_id") if isinstance(task, dict) else None
    return task_id if isinstance(task_id, str) and task_id else None


def check_task(task: Any) -> dict[str, Any]:
    """The task, if it is a completed task of a supported type; raises `SampleError` saying why not."""
    if not isinstance(task, dict):
        raise SampleError("malformed_task", f"a task must be a JSON object, got {type(task).__name__}")
    if _task_id(task) is None:
        raise SampleError("malformed_task", "the task has no `task_id`")
    status = task.get("status")
    if status != COMPLETED:
        raise SampleError("not_completed", f"the task's status is {shown(status)}; only completed tasks are converted")
    kind = task.get("type")
    if kind not in SUPPORTED_TASK_TYPES:
        raise SampleError(
            "unsupported_task_type",
            f"the task's type {shown(kind)} is not converted (supported: {', '.join(SUPPORTED_TASK_TYPES)})",
        )
    return task


def parse_task(task: Mapping[str, Any], location: SampleLocation) -> ParsedTask:
    """Annotations of a checked task.

    A value the sample model refuses (`InvalidValueError`: a rotated box whose corners
    overflow to infinity, a label with a lone surrogate) skips the task as `invalid_value`.
    """
    response = task.get("response")
    if not isinstance(response, dict):
        raise SampleError("missing_response", "the completed task has no `response` object")
    try:
        annotations = (
            segment_annotations(response) if task["type"] == SEGMENT_ANNOTATION else image_annotations(response)
        )
    except InvalidValueError as error:
        raise SampleError("invalid_value", str(error)) from None
    attributes = [("scale_task", task["task_id"])]
    attributes += [(f"scale_{key}", task[key]) for key in ("project", "batch") if isinstance(task.get(key), str)]
    return ParsedTask(location, task["task_id"], task, annotations, tuple(attributes))


def image_references(task: Mapping[str, Any]) -> tuple[str, ...]:
    """Where a task's image may be had, best first: `params.attachment`, then dashboard exports'
    `attachmentS3Downloads` (converted images first, the copies Scale showed its taskers)."""
    params = task.get("params")
    attachment = params.get("attachment") if isinstance(params, dict) else None
    downloads = task.get("attachmentS3Downloads")
    copies = [entry for entry in downloads if isinstance(entry, dict)] if isinstance(downloads, list) else []
    copies.sort(key=lambda entry: entry.get("isConvertedImage") is not True)
    references = [attachment, *(entry.get("s3URL") for entry in copies)]
    return tuple(dict.fromkeys(reference for reference in references if isinstance(reference, str) and reference))


# ---------------------------------------------------------------------------
# Files: resolved under the images folder, or downloaded


@dataclass(frozen=True)
class _Located:
    path: Path
    name: str  # `image/filename`: the path under the images folder, or the URL's path


class TaskFiles:
    """Finds a task's image and index mask: under the images folder, or downloaded into the cache.

    With a downloader, http(s) references are downloaded and the rest resolved under the
    images folder. A link that answers 403 has expired: with `refetch` (an API key), the
    task is fetched again for fresh links and its files are tried once more.
    """

    def __init__(
        self,
        images_root: Path,
        downloader: ImageDownloader | None = None,
        refetch: Callable[[str], Mapping[str, Any]] | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
    ) -> None:
        self.images_root = images_root
        self._resolver = ImageResolver(images_root)
        self._downloader = downloader
        self._refetch = refetch
        self._concurrency = concurrency

    def samples(self, tasks: Sequence[ParsedTask]) -> list[Sample | SkippedSample]:
        """Each task's sample, or why it has none, in task order; downloads run concurrently."""
        if self._downloader is None:
            return [self._sample_or_skip(parsed) for parsed in tasks]
        with ThreadPoolExecutor(max_workers=self._concurrency, thread_name_prefix="scale-download") as pool:
            return list(pool.map(self._sample_or_skip, tasks))

    def _sample_or_skip(self, parsed: ParsedTask) -> Sample | SkippedSample:
        try:
            return self._sample_renewing_links(parsed)
        except SampleError as error:
            return SkippedSample(parsed.location, error.code, error.message)

    def _sample_renewing_links(self, parsed: ParsedTask) -> Sample:
        """The task's sample; when a link has expired and an API key is at hand, fetched again with fresh links."""
        try:
            return self._sample(parsed, parsed.task)
        except SampleError as error:
            if error.code != EXPIRED_URL or self._refetch is None:
                raise
        try:
            fresh = self._refetch(parsed.task_id)
        except ScaleApiError as error:
            raise SampleError(
                EXPIRED_URL, f"a link of the task expired, and fetching it again failed: {error}"
            ) from None
        try:
            return self._sample(parsed, fresh)
        except SampleError as error:
            if error.code == EXPIRED_URL:
                raise SampleError(EXPIRED_URL, f"{error.message}, also after fetching the task again") from None
            raise

    def _sample(self, parsed: ParsedTask, task: Mapping[str, Any]) -> Sample:
        """The sample of `parsed`, its files found through the links of `task` (the parsed one, or a fresher copy)."""
        references = image_references(task)
        if not references:
            raise SampleError("missing_image_reference", "the task has no `params.attachment`")
        image = self._first_found(references)
        annotations = parsed.annotations
        segmentation = None
        image_labels = annotations.image_labels
        if annotations.index_to_class:
            try:
                mask_path = self._find(index_mask_url(task.get("response") or {})).path
            except SampleError as error:  # the mask's own code: a missing mask is not a missing image
                code = {"missing_image": "missing_mask", "ambiguous_image": "ambiguous_mask"}.get(
                    error.code, error.code
                )
                raise SampleError(code, f"index mask: {error.message}") from None
            try:
                segmentation = SegmentationMask(mask_path, annotations.index_to_class)
            except InvalidValueError as error:  # a label with a lone surrogate
                raise SampleError("invalid_value", str(error)) from None
            present = annotations.present_labels
            image_labels = present if present is not None else _present_in_mask(segmentation)
        try:
            return Sample(
                key=parsed.task_id,
                location=parsed.location,
                image_path=image.path,
                image_name=image.name,
                objects=annotations.objects,
                image_labels=image_labels,
                segmentation=segmentation,
                attributes=parsed.attributes,
            )
        except InvalidValueError as error:  # a task id, label or attribute that is not Unicode text
            raise SampleError("invalid_value", str(error)) from None

    def describe(self) -> dict[str, str]:
        """Where images come from, for the run's input description."""
        if self._downloader is None:
            return {"images": str(self.images_root), "download_images": "no"}
        return {
            "images": str(self.images_root),
            "download_images": "yes",
            "image_cache": str(self._downloader.cache_folder),
            "refetch_expired_links": "yes" if self._refetch is not None else "no (no API key)",
        }

    def _first_found(self, references: Sequence[str]) -> _Located:
        """The first reference that can be had; an expired link outranks other failures, since it can be renewed."""
        errors: list[SampleError] = []
        for reference in references:
            try:
                return self._find(reference)
            except SampleError as error:
                errors.append(error)
        expired = [error for error in errors if error.code == EXPIRED_URL]
        first = (expired or errors)[0]
        others = (
            f" (and {len(references) - 1} other copies listed by `attachmentS3Downloads`)"
            if len(references) > 1
            else ""
        )
        raise SampleError(first.code, first.message + others)

    def _find(self, reference: str) -> _Located:
        check_reference(reference)
        if self._downloader is not None and is_http_url(reference):
            path = self._downloader.fetch(reference)
            return _Located(path, unquote(urlsplit(reference).path).lstrip("/") or path.name)
        path = self._resolver.resolve(without_query(reference) if is_http_url(reference) else reference)
        return _Located(path, path.relative_to(self.images_root).as_posix())


# ---------------------------------------------------------------------------
# Loading tasks


Located = tuple[SampleLocation, Any]
"""A task as parsed (any JSON value), and where it came from."""


@dataclass(frozen=True)
class LoadedTasks:
    """Tasks with where each came from, in input order, and a description of the input.

    `entries` also holds, in their place, the lines that held no task (a `SkippedSample`
    each). It may be a generator that reads the file as the source consumes it: then a
    file of a million unreadable lines holds one of them at a time, each going straight
    to the run's skip handler.
    """

    entries: Iterable[Located | SkippedSample]
    origin: str
    description: dict[str, str] = field(default_factory=dict)


def _key(task: Any, index: int) -> str:
    """`task <task_id>` (escaped and shortened if it is not plain text), or `task at index <n>`."""
    task_id = _task_id(task)
    return f"task {named(task_id)}" if task_id else f"task at index {index}"


_WHAT = "Scale AI export"


def _is_json_list(path: Path) -> bool:
    """Whether the export is one JSON list rather than JSON Lines.

    A `.jsonl` or `.ndjson` name says JSON Lines, whatever its first line holds (a line of
    garbage that happens to open with `[` costs that line, not the file). Otherwise the
    first character after any byte-order mark and white space decides.
    """
    if path.suffix.lower() in _JSON_LINES_SUFFIXES:
        return False
    return "".join(peek_lines(path, _FORMAT_PEEK_LINES, _FORMAT_PEEK_CHARS)).lstrip().startswith("[")


def export_file_loader(path: Path) -> Callable[[], LoadedTasks]:
    """Reads a JSON list of tasks, or JSON Lines (one task a line, located by line number).

    JSON Lines are streamed a line at a time: a line that cannot be decoded, is too long or
    is not JSON becomes a skipped entry with its line number, and the other lines are read.
    A JSON list is one document: if it is not valid JSON, that is one usage error.
    """

    def load() -> LoadedTasks:
        origin = str(path)
        if _is_json_list(path):
            document = load_json(path, _WHAT)
            if not isinstance(document, list):  # valid JSON that starts with `[` is a list; checked for the types
                raise UsageError(f"{_WHAT} {path} is a JSON {type(document).__name__}, not a list of tasks")
            tasks = [(SampleLocation(origin, None, _key(task, index)), task) for index, task in enumerate(document)]
            return LoadedTasks(tasks, origin)
        return LoadedTasks(_json_lines(path, origin), origin)

    return load


def _json_lines(path: Path, origin: str) -> Iterator[Located | SkippedSample]:
    """Each non-blank line's task, or why the line holds none, read as they are asked for."""
    for line in iter_lines(path, _WHAT):
        location = SampleLocation(origin, line.number)
        if line.text is None:
            yield SkippedSample(location, line.code or "undecodable_line", line.problem or "")
            continue
        if not line.text.strip():
            continue
        try:
            task = parse_json(line.text)
        except SampleError as error:
            yield SkippedSample(location, error.code, error.message)
            continue
        yield SampleLocation(origin, line.number, _key(task, line.number - 1)), task


def api_loader(api: ScaleApi, project: str, task_filter: TaskFilter) -> Callable[[], LoadedTasks]:
    """Pulls a project's completed tasks (of the filter's batches and dates) through the API."""

    def load() -> LoadedTasks:
        origin = f"{api.api_url} project {project}"
        tasks = api.completed_tasks(
            project,
            task_filter.batches,
            task_filter.created_after.isoformat() if task_filter.created_after else None,
            task_filter.created_before.isoformat() if task_filter.created_before else None,
        )
        located = [(SampleLocation(origin, None, _key(task, index)), task) for index, task in enumerate(tasks)]
        description = {"scale_project": project}
        if task_filter.batches:
            description["batches"] = ", ".join(task_filter.batches)
        return LoadedTasks(located, origin, description)

    return load


# ---------------------------------------------------------------------------
# The source


class ScaleSource:
    """`--source scale`: tasks from an export file or the API, images under a folder or downloaded."""

    def __init__(self, load: Callable[[], LoadedTasks], files: TaskFiles, task_filter: TaskFilter) -> None:
        self._load = load
        self._files = files
        self._filter = task_filter

    def read(self, on_skip: SkipHandler | None = None) -> SourceContents:
        loaded = self._load()
        skipped = SkipCollector(on_skip)
        parsed: list[ParsedTask] = []
        declared: set[str] = set()
        seen: set[str] = set()
        left_out = 0
        for entry in loaded.entries:
            if isinstance(entry, SkippedSample):
                skipped.append(entry)
                continue
            location, task = entry
            try:
                if isinstance(task, dict) and not self._filter.admits(task):
                    left_out += 1
                    continue
                checked = check_task(task)
                declared.update(declared_classes(checked))
                if checked["task_id"] in seen:
                    raise SampleError("duplicate_task", "an earlier task has the same `task_id`")
                seen.add(checked["task_id"])
                parsed.append(parse_task(checked, location))
            except SampleError as error:
                skipped.append(SkippedSample(location, error.code, error.message))
        samples: list[Sample] = []
        for outcome in self._files.samples(parsed):
            if isinstance(outcome, Sample):
                samples.append(outcome)
            else:
                skipped.append(outcome)
        used = {name for sample in samples for name in sample.class_names()}
        description = {"source": "scale", "annotations": loaded.origin, **loaded.description}
        description.update(self._describe_filter(left_out))
        description.update(self._files.describe())
        return SourceContents(tuple(samples), skipped.kept(), tuple(sorted(declared | used)), description)

    def _describe_filter(self, left_out: int) -> dict[str, str]:
        described = {}
        if self._filter.created_after:
            described["created_after"] = f"{self._filter.created_after} (inclusive, UTC)"
        if self._filter.created_before:
            described["created_before"] = f"{self._filter.created_before} (exclusive, UTC)"
        if self._filter.batches:
            described["batches"] = ", ".join(self._filter.batches)
        if described:
            described["tasks_left_out_by_filters"] = str(left_out)
        return described


def build_scale_source(
    annotations: Path | None,
    images: Path,
    *,
    project: str | None = None,
    batches: Sequence[str] = (),
    created_after: str | None = None,
    created_before: str | None = None,
    api_key: Secret | None = None,
    api_url: str | None = None,
    download_images: bool = False,
    image_cache: Path | None = None,
) -> ScaleSource:
    """The source for an export file, or, with `project`, for a project pulled through the API.

    An API key is needed for a project; with an export file it is optional, and used only
    to fetch a task again when one of its downloaded links has expired.
    """
    task_filter = TaskFilter.from_options(created_after, created_before, batches)
    api = ScaleApi(api_key, api_url) if api_key is not None else None
    if project is not None:
        if api is None:
            raise UsageError("--scale-project needs an API key: set SCALE_API_KEY or pass --scale-api-key-path")
        load = api_loader(api, project, task_filter)
        # the API selected the batches; tasks are not filtered on their `batch` field again, so a task
        # that lacks it cannot be dropped unreported
        task_filter = replace(task_filter, batches=())
    elif annotations is not None:
        load = export_file_loader(annotations)
    else:
        raise UsageError("--source scale reads an export file (-a) or a project (--scale-project)")
    downloader = None
    if download_images:
        if image_cache is None:
            raise UsageError("--download-images needs a folder to download into (--image-cache)")
        downloader = ImageDownloader(image_cache)
    refetch = api.task if api is not None and downloader is not None else None
    return ScaleSource(load, TaskFiles(images, downloader, refetch), task_filter)

"""COCO instances JSON (`instances_train.json`): `images`, `annotations` and `categories` in one object.

Conventions are COCO's own, the ones pycocotools reads:

- `bbox` is `[x, y, width, height]` in pixels from the image's top-left corner, in the
  frame of `images[].width/height` (the sample's declared size). It becomes the object's
  box `(x, y, x + width, y + height)`, kept even when a segmentation is present: COCO's
  box is what its detectors train on, while the shape goes to the masks.
- `segmentation` is a list of polygons, each flat `[x1, y1, x2, y2, ...]`, several parts
  of one object painted as their union; or an RLE `{"size": [height, width], "counts": ...}`
  with `counts` a list of ints (uncompressed) or COCO's compressed string, column-major,
  starting with background; or `[]` for a box only. The core rasterizer decodes both
  with pycocotools, at the image's displayed size.
- Category ids are often sparse (1, 7, 42); objects carry category *names*. The class
  order is by category id, over every category the file lists, used or not, so the
  train and validation files of one export give the same class list. A name listed
  under several ids takes the place of its smallest.
- One sample per `images` entry, keyed by its `file_name`, which resolves under the
  images folder (`converter.core.images`); an image with no annotation is a negative.
  Its integer `id` is kept as the record's `image/source_id`.
- `area` and `iscrowd` are kept as given (COCO-style evaluation buckets objects by area).
- `keypoints` (`[x1, y1, v1, ...]`, COCO's person keypoints) belong to their object, named
  by the category's `keypoints` list (by position where it lists none); `v` is COCO's
  visibility: 0 not labelled, 1 hidden, 2 visible.

What cannot be used is reported, never dropped silently. A malformed, repeated or
unresolvable image entry is a skipped sample. An annotation whose `image_id` names no
image belongs to no sample: it is a skipped entry keyed `annotation <id>`. Inside a kept
image, an annotation that is malformed or names an unknown category is dropped with a
note, and so is one with a non-finite or overflowing number; a polygon part of fewer than
three points is dropped with a note, and an annotation left with no part keeps its box. A
file that is not COCO at all (or not JSON, or a category name that is not Unicode text)
is a usage error.

The whole file is parsed at once (the standard library has no streaming parser); the
parsed document is released once the samples are built, so only the compact samples
stay in memory while images are converted.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from converter.core.images import declared_size, image_resolver
from converter.core.input_files import load_json, shown, utf8_peek
from converter.core.sample import (
    KEYPOINT_VISIBILITIES,
    AnnotationNote,
    InvalidValueError,
    ObjectAnnotation,
    ObjectKeypoint,
    Polygon,
    RleMask,
    Sample,
    SkipCollector,
    SkipHandler,
    SkippedSample,
    SourceContents,
    check_text,
)
from converter.core.storage import RemotePath
from converter.errors import SampleError, SampleLocation, UsageError, quoted
from converter.sources._peek import FileEnds, json_file_ends

COCO_SUFFIXES = (".json",)
_MIN_POLYGON_COORDINATES = 6  # three points
_LISTED_IDS = 20  # category ids quoted in an "unknown category" message
_QUOTED_ID_CHARACTERS = 24  # each shortened to this, so the list stays short

# What shows each of the three COCO lists in a peek at the file's ends. The `annotations` key
# itself may sit in the middle of a large file (after a large `images` list, before a small
# `categories` one, as COCO's own files are laid out); then the annotations near the end show it.
_SECTION_EVIDENCE = (
    (re.compile(rb'"images"\s*:\s*\['),),
    (re.compile(rb'"annotations"\s*:\s*\['), re.compile(rb'"category_id"\s*:')),
    (re.compile(rb'"categories"\s*:\s*\['),),
)

EntryId = int | str
"""A COCO id: an int, as COCO writes them, or a non-empty string, as some tools do."""


def looks_like_coco(path: Path) -> bool:
    """Whether a file is a COCO instances JSON: an object whose ends show its three lists.

    Label Studio's JSON exports also have `annotations`, but they are lists of tasks, not
    an object, so they are not taken for COCO.
    """
    ends = json_file_ends(path, COCO_SUFFIXES)
    if ends is None:
        return False
    ends = FileEnds(*utf8_peek(ends.head, ends.tail))
    return ends.starts_an_object() and all(
        any(ends.contains(pattern) for pattern in patterns) for patterns in _SECTION_EVIDENCE
    )


def _entry_id(value: Any) -> EntryId | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int) or (isinstance(value, str) and value):
        return value
    return None


def _id_order(value: EntryId) -> tuple[int, int, str]:
    """Ints by value, then strings: ids of both kinds in one deterministic order."""
    return (0, value, "") if isinstance(value, int) else (1, 0, value)


def _malformed(message: str) -> SampleError:
    return SampleError("malformed_annotation", message)


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _malformed(f"{what} must be a finite number, got {shown(value)}")
    return float(value)


def _positive_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


@dataclass
class _ImageEntry:
    """One `images` entry and the annotations that name it; `problem` makes it a skipped sample.

    `key` is the sample key: the `file_name`, or `image <id>` for an entry without one.
    """

    index: int
    image_id: EntryId
    key: str
    declared_size: tuple[int, int] | None
    problem: SampleError | None = None
    annotations: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


@dataclass(frozen=True)
class _PolygonParts:
    polygons: tuple[Polygon, ...]
    degenerate: tuple[int, ...]  # indices of parts with fewer than three points


class CocoSource:
    """`--source coco`: a COCO instances JSON and the folder its `file_name`s resolve under."""

    def __init__(self, annotations: Path, images_root: Path | RemotePath) -> None:
        self.annotations = annotations
        self.images_root = images_root
        self._resolver = image_resolver(images_root)
        self._keypoints: dict[EntryId, tuple[str, ...]] = {}  # category id -> keypoint names, set by `read`

    def read(self, on_skip: SkipHandler | None = None) -> SourceContents:
        document = self._load()
        categories = self._categories(self._section(document, "categories"))
        self._keypoints = self._keypoint_names(self._section(document, "categories"))
        images = self._section(document, "images")
        annotations = self._section(document, "annotations")
        del document  # the three lists are all that is needed; they go when this method returns

        skipped = SkipCollector(on_skip)
        entries = self._image_entries(images, skipped)
        # reversed: of several entries with one id, the first is the one its annotations are counted on
        self._attach(annotations, {entry.image_id: entry for entry in reversed(entries)}, skipped)
        samples: list[Sample] = []
        notes: list[AnnotationNote] = []
        for entry in entries:
            location = self._location(entry.key)
            try:
                samples.append(self._sample(entry, location, categories, notes))
            except SampleError as error:
                dropped = f"; its {len(entry.annotations)} annotations are not converted" if entry.annotations else ""
                skipped.append(SkippedSample(location, error.code, error.message + dropped))
        native_order = tuple(dict.fromkeys(categories[key] for key in sorted(categories, key=_id_order)))
        description = {"source": "coco", "annotations": str(self.annotations), "images": str(self.images_root)}
        return SourceContents(tuple(samples), skipped.kept(), native_order, description, tuple(notes))

    def _location(self, key: str) -> SampleLocation:
        return SampleLocation(str(self.annotations), None, key)

    def _load(self) -> dict[str, Any]:
        document = load_json(self.annotations, "COCO file")
        if not isinstance(document, dict):
            raise UsageError(
                f"{self.annotations} is a JSON {type(document).__name__}, not a COCO object with "
                "`images`, `annotations` and `categories`"
            )
        return document

    def _section(self, document: dict[str, Any], name: str) -> list[Any]:
        value = document.get(name)
        if not isinstance(value, list):
            hint = " (an image-info file, as COCO ships for its test set, has no annotations to convert)"
            raise UsageError(
                f"{self.annotations} has no `{name}` list (found {type(value).__name__}); a COCO instances file "
                f"has `images`, `annotations` and `categories`" + (hint if name == "annotations" else "")
            )
        return value

    def _keypoint_names(self, raw: list[Any]) -> dict[EntryId, tuple[str, ...]]:
        """Category id -> the names of its keypoints (COCO's `keypoints` list), where the category has them."""
        names: dict[EntryId, tuple[str, ...]] = {}
        for entry in raw:
            category_id = _entry_id(entry.get("id")) if isinstance(entry, dict) else None
            listed = entry.get("keypoints") if isinstance(entry, dict) else None
            if category_id is not None and isinstance(listed, list) and all(isinstance(n, str) for n in listed):
                names[category_id] = tuple(listed)
        return names

    def _categories(self, raw: list[Any]) -> dict[EntryId, str]:
        """Category id -> class name. A bad entry stops the run: without it no class list is right."""
        names: dict[EntryId, str] = {}
        for index, entry in enumerate(raw):
            category_id = _entry_id(entry.get("id")) if isinstance(entry, dict) else None
            name = entry.get("name") if isinstance(entry, dict) else None
            if category_id is None or not isinstance(name, str) or not name:
                raise UsageError(
                    f"{self.annotations}: categories[{index}] needs an `id` and a non-empty `name`, got {shown(entry)}"
                )
            try:
                check_text("its name", name)
            except InvalidValueError as error:
                raise UsageError(f"{self.annotations}: categories[{index}]: {error}") from None
            if names.get(category_id, name) != name:
                raise UsageError(
                    f"{self.annotations}: category id {quoted(category_id)} is listed twice, as "
                    f"{quoted(names[category_id])} and as {quoted(name)}"
                )
            names[category_id] = name
        return names

    def _image_entries(self, raw: list[Any], skipped: SkipCollector) -> list[_ImageEntry]:
        """The `images` entries that have an id; repeated ids and file names are marked as problems."""
        entries: list[_ImageEntry] = []
        for index, image in enumerate(raw):
            image_id = _entry_id(image.get("id")) if isinstance(image, dict) else None
            if image_id is None:
                skipped.append(
                    SkippedSample(
                        self._location(f"images[{index}]"),
                        "malformed_annotation",
                        f"images[{index}] has no usable `id` (an int or a string): {shown(image)}",
                    )
                )
                continue
            entries.append(self._image_entry(index, image_id, image))
        id_counts = Counter(entry.image_id for entry in entries)
        first_with_file: dict[str, _ImageEntry] = {}
        for entry in entries:
            if entry.problem is not None:
                continue
            if id_counts[entry.image_id] > 1:
                entry.problem = SampleError(
                    "duplicate_image",
                    f"image id {quoted(entry.image_id)} is listed {id_counts[entry.image_id]} times in `images`, "
                    "so its annotations cannot be told apart",
                )
            elif entry.key in first_with_file:
                first = first_with_file[entry.key]
                entry.problem = SampleError(
                    "duplicate_image",
                    f"images[{entry.index}] (id {quoted(entry.image_id)}) names the same file as "
                    f"images[{first.index}] (id {quoted(first.image_id)}); only the first is converted",
                )
            else:
                first_with_file[entry.key] = entry
        return entries

    @staticmethod
    def _image_entry(index: int, image_id: EntryId, image: dict[str, Any]) -> _ImageEntry:
        file_name = image.get("file_name")
        if not isinstance(file_name, str) or not file_name:
            problem = _malformed(f"image {quoted(image_id)} has no `file_name`: {shown(file_name)}")
            return _ImageEntry(index, image_id, f"image {image_id}", None, problem)
        width, height = image.get("width"), image.get("height")
        if width is None and height is None:
            return _ImageEntry(index, image_id, file_name, None)
        try:
            return _ImageEntry(index, image_id, file_name, declared_size(width, height, f"image {quoted(image_id)}"))
        except SampleError as problem:
            return _ImageEntry(index, image_id, file_name, None, problem)

    def _attach(self, raw: list[Any], by_id: dict[EntryId, _ImageEntry], skipped: SkipCollector) -> None:
        """Give each annotation to the image it names (the first entry of a repeated id); report the rest."""
        for index, annotation in enumerate(raw):
            if not isinstance(annotation, dict):
                name = f"annotations[{index}]"
                skipped.append(
                    SkippedSample(
                        self._location(name), "malformed_annotation", f"{name} is not an object: {shown(annotation)}"
                    )
                )
                continue
            annotation_id = _entry_id(annotation.get("id"))
            name = f"annotation {annotation_id}" if annotation_id is not None else f"annotations[{index}]"
            image_id = _entry_id(annotation.get("image_id"))
            entry = by_id.get(image_id) if image_id is not None else None
            if entry is None:
                skipped.append(
                    SkippedSample(
                        self._location(name),
                        "unknown_image",
                        f"{name} refers to image_id {shown(annotation.get('image_id'))}, which `images` does not list",
                    )
                )
                continue
            entry.annotations.append((name, annotation))

    def _sample(
        self,
        entry: _ImageEntry,
        location: SampleLocation,
        categories: dict[EntryId, str],
        notes: list[AnnotationNote],
    ) -> Sample:
        """The image's sample; annotation problems become notes, image problems raise `SampleError`."""
        if entry.problem is not None:
            raise entry.problem
        image = self._resolver.locate(entry.key)
        objects = []
        for name, annotation in entry.annotations:
            try:
                obj, note = _object(name, annotation, categories, self._keypoints)
            except SampleError as error:
                notes.append(AnnotationNote(location, error.code, f"{name} dropped: {error.message}"))
                continue
            except InvalidValueError as error:
                notes.append(AnnotationNote(location, "invalid_value", f"{name} dropped: {error}"))
                continue
            objects.append(obj)
            if note is not None:
                notes.append(AnnotationNote(location, "degenerate_polygon", note))
        try:
            return Sample(
                key=entry.key,
                location=location,
                image_path=image.path,
                image_name=image.name,
                declared_size=entry.declared_size,
                objects=tuple(objects),
                image_id=entry.image_id if isinstance(entry.image_id, int) and 0 <= entry.image_id < 2**63 else None,
            )
        except InvalidValueError as error:
            raise SampleError("invalid_value", str(error)) from None


def _object(
    name: str,
    annotation: dict[str, Any],
    categories: dict[EntryId, str],
    keypoint_names: dict[EntryId, tuple[str, ...]] | None = None,
) -> tuple[ObjectAnnotation, str | None]:
    """One annotation as an object, and a note if polygon parts were dropped; raises `SampleError` if unusable."""
    category_id = _entry_id(annotation.get("category_id"))
    if category_id is None or category_id not in categories:
        listed = sorted(categories, key=_id_order)
        ids = ", ".join(quoted(value, _QUOTED_ID_CHARACTERS) for value in listed[:_LISTED_IDS])
        if len(listed) > _LISTED_IDS:
            ids += ", ..."
        raise SampleError(
            "unknown_class_id",
            f"category_id {shown(annotation.get('category_id'))} is not in `categories` (ids: {ids})",
        )
    box = _bbox(annotation.get("bbox"))
    crowd = annotation.get("iscrowd", 0)
    if crowd not in (0, 1):
        raise _malformed(f"`iscrowd` must be 0 or 1, got {shown(crowd)}")
    segmentation = annotation.get("segmentation")
    polygons: tuple[Polygon, ...] = ()
    rle = None
    note = None
    if isinstance(segmentation, dict):
        rle = _rle(segmentation)
    elif segmentation is not None and segmentation != []:
        parts = _polygon_parts(segmentation)
        polygons = parts.polygons
        if parts.degenerate and polygons:
            note = f"{name}: polygon parts {list(parts.degenerate)} have fewer than 3 points; dropped, the others kept"
        elif parts.degenerate and box is not None:
            note = f"{name}: no polygon part has 3 points or more; the object keeps its bbox and paints no mask"
        elif parts.degenerate:
            raise SampleError("degenerate_polygon", "no polygon part has 3 points or more, and there is no `bbox`")
    if box is None and not polygons and rle is None:
        raise _malformed("it has neither a `bbox` nor a `segmentation`")
    keypoints = _keypoints(annotation.get("keypoints"), (keypoint_names or {}).get(category_id, ()))
    area = annotation.get("area")
    if area is not None:
        area = _number(area, "`area`")
        if area < 0:
            raise _malformed(f"`area` must be >= 0, got {shown(annotation.get('area'))}")
    attributes = annotation.get("attributes")
    return (
        ObjectAnnotation(
            class_name=categories[category_id],
            bbox_xyxy=box,
            polygons=polygons,
            rle=rle,
            is_crowd=bool(crowd),
            area=area,
            keypoints=keypoints,
            attributes=tuple(
                (key, value if isinstance(value, str) else str(value))
                for key, value in attributes.items()
                if isinstance(value, str | int | float | bool)
            )
            if isinstance(attributes, dict)
            else (),
        ),
        note,
    )


def _keypoints(value: Any, names: tuple[str, ...]) -> tuple[ObjectKeypoint, ...]:
    """COCO's `[x1, y1, v1, x2, ...]`, named by the category's `keypoints` list (else by position)."""
    if value is None or value == []:
        return ()
    if not isinstance(value, list) or len(value) % 3:
        raise _malformed(f"`keypoints` must be a flat list of x, y, visibility triples, got {shown(value)}")
    points = []
    for index in range(len(value) // 3):
        x, y = (_number(number, "`keypoints`") for number in value[3 * index : 3 * index + 2])
        visibility = value[3 * index + 2]
        if visibility not in KEYPOINT_VISIBILITIES or isinstance(visibility, bool):
            raise _malformed(f"keypoint visibility must be 0, 1 or 2, got {shown(visibility)}")
        name = names[index] if index < len(names) else str(index + 1)
        points.append(ObjectKeypoint(name, x, y, int(visibility)))
    return tuple(points)


def _bbox(value: Any) -> tuple[float, float, float, float] | None:
    """`[x, y, width, height]` -> `(x_min, y_min, x_max, y_max)`; None when absent."""
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != 4:
        raise _malformed(f"`bbox` must be [x, y, width, height], got {shown(value)}")
    x, y, width, height = (_number(number, "`bbox`") for number in value)
    return x, y, x + width, y + height


def _polygon_parts(value: Any) -> _PolygonParts:
    if not isinstance(value, list):
        raise _malformed(f"`segmentation` must be a list of polygons or an RLE object, got {shown(value)}")
    polygons, degenerate = [], []
    for index, part in enumerate(value):
        if not isinstance(part, list):
            raise _malformed(f"`segmentation` part {index} must be a flat list of coordinates, got {shown(part)}")
        coordinates = tuple(_number(number, f"`segmentation` part {index}") for number in part)
        if len(coordinates) % 2:
            raise _malformed(f"`segmentation` part {index} has an odd number of coordinates ({len(coordinates)})")
        if len(coordinates) < _MIN_POLYGON_COORDINATES:
            degenerate.append(index)
        else:
            polygons.append(Polygon(coordinates))
    return _PolygonParts(tuple(polygons), tuple(degenerate))


def _rle(value: dict[str, Any]) -> RleMask:
    """An RLE as given; whether its counts fit its size is checked when it is decoded."""
    size, counts = value.get("size"), value.get("counts")
    if not isinstance(size, list) or len(size) != 2 or any(_positive_int(side) is None for side in size):
        raise _malformed(f"RLE `size` must be [height, width] in positive ints, got {shown(size)}")
    if isinstance(counts, str) and counts:
        return RleMask(size[0], size[1], counts)
    if isinstance(counts, list) and all(
        isinstance(run, int) and not isinstance(run, bool) and run >= 0 for run in counts
    ):
        return RleMask(size[0], size[1], tuple(counts))
    raise _malformed(f"RLE `counts` must be a list of run lengths or a compressed string, got {shown(counts)}")

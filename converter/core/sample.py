"""The normalized sample model that every source produces and every sink consumes.

Coordinate convention: pixels in the image *as displayed*, that is after its EXIF
orientation is applied (the frame every annotation tool shows its users). The origin is
the top-left corner of the top-left pixel, x grows to the right and y downwards, and
coordinates are continuous floats: a box `(0, 0, 2, 2)` covers exactly the 2x2 top-left
pixels. Sinks normalize against the displayed width and height.

Class names, not ids, travel in samples: ids are assigned once, from the run's class
list, so a source never needs to know how the output numbers classes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import shapely

from converter.core.split import SplitName
from converter.core.storage import RemotePath
from converter.errors import SampleLocation, quoted

BACKGROUND = None
"""The class of mask pixels that belong to no class (written as 0)."""


_CANONICAL: dict[Any, Any] = {}


def shared(value: Hashable) -> Any:
    """One shared instance of an immutable value that recurs on many samples.

    A run holds every sample's annotations in memory; the same class names, attribute
    pairs and file names recur on thousands of them, and sharing them is most of what
    keeps that memory small (a 20,000-image export holds 20,000 copies otherwise).
    """
    return _CANONICAL.setdefault(value, value)


class InvalidValueError(ValueError):
    """A value no sample can hold (a non-finite coordinate, text that is not Unicode).

    Raised by the model's constructors, so that a source can turn exactly these into a
    skipped sample or a dropped annotation, and no other `ValueError` by mistake.
    """


def _check_finite(name: str, values: tuple[float, ...]) -> None:
    for value in values:
        if not math.isfinite(value):
            raise InvalidValueError(f"{name} must be finite numbers, got {value}")


def check_text(what: str, text: str) -> None:
    """Raise `InvalidValueError` if `text` cannot be written as UTF-8.

    JSON may escape lone surrogates (`"\\ud800"`) and file names may hold undecodable
    bytes (Python shows both as lone surrogates): no output format can write them.
    """
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise InvalidValueError(
            f"{what} {quoted(text)} is not valid Unicode text (a lone surrogate at character {error.start + 1})"
        ) from None


def _check_attributes(attributes: tuple[tuple[str, str], ...]) -> None:
    for name, value in attributes:
        check_text("attribute name", name)
        check_text(f"attribute {quoted(name)}", value)


@dataclass(frozen=True, slots=True)
class Polygon:
    """One polygon in displayed pixels: an exterior ring and optional holes.

    Rings are flat coordinate tuples `(x0, y0, x1, y1, ...)`, open (the last vertex is
    not repeated), in any winding order. Several `Polygon`s on one object are its parts
    (a COCO polygon list, a GeoJSON MultiPolygon), painted as their union.
    """

    exterior: tuple[float, ...]
    holes: tuple[tuple[float, ...], ...] = ()

    def __post_init__(self) -> None:
        for ring in (self.exterior, *self.holes):
            if len(ring) % 2:
                raise InvalidValueError(f"a ring needs x,y pairs, got {len(ring)} numbers")
            _check_finite("polygon", ring)

    def bounds(self) -> tuple[float, float, float, float]:
        """`(x_min, y_min, x_max, y_max)` of the exterior ring."""
        xs, ys = self.exterior[0::2], self.exterior[1::2]
        return min(xs), min(ys), max(xs), max(ys)

    def geometry(self) -> shapely.Polygon:
        """The polygon as shapely's, as drawn (possibly invalid: see `shapely.make_valid`)."""
        holes = [_points(hole) for hole in self.holes] or None
        geometry: shapely.Polygon = shapely.polygons(_points(self.exterior), holes=holes)
        return geometry


def _points(ring: tuple[float, ...]) -> np.ndarray[Any, np.dtype[np.float64]]:
    """A flat ring as an (n, 2) array: shapely builds from arrays without a Python call per vertex."""
    return np.asarray(ring, dtype=np.float64).reshape(-1, 2)


@dataclass(frozen=True, slots=True)
class RleMask:
    """A binary mask in COCO's run-length encoding, at the image's displayed size.

    `counts` alternate background and foreground run lengths in column-major order,
    starting with background: uncompressed as ints, or COCO's compressed string form.
    """

    height: int
    width: int
    counts: tuple[int, ...] | str

    def __post_init__(self) -> None:
        if self.height <= 0 or self.width <= 0:
            raise InvalidValueError(f"RLE size must be positive, got {self.height}x{self.width}")


KEYPOINT_VISIBILITIES = (0, 1, 2)
"""COCO's: 0 not labelled (the position means nothing), 1 labelled but hidden, 2 labelled and visible."""


@dataclass(frozen=True, slots=True)
class ObjectKeypoint:
    """A named point of one object (COCO's person keypoints), in displayed pixels, with COCO's visibility."""

    name: str
    x: float
    y: float
    visibility: int

    def __post_init__(self) -> None:
        check_text("keypoint name", self.name)
        _check_finite("keypoint", (self.x, self.y))
        if self.visibility not in KEYPOINT_VISIBILITIES:
            raise InvalidValueError(f"keypoint visibility must be 0, 1 or 2, got {self.visibility}")
        object.__setattr__(self, "name", shared(self.name))


@dataclass(frozen=True, slots=True)
class ObjectAnnotation:
    """One annotated object: a box, a shape, or both.

    `bbox_xyxy` is `(x_min, y_min, x_max, y_max)` in displayed pixels, as the source
    gave it: it may reach outside the image or be degenerate; the materializer clips it
    and reports what it changed, so nothing is altered silently here. Without a box, the
    box is derived from the shape (the polygons' extent, or the RLE mask's pixels).

    A shape (`polygons` or `rle`) is painted into the class mask; a plain box is not,
    because a box is not a segmentation. A rotated rectangle arrives as a four-vertex
    polygon plus its axis-aligned box.
    """

    class_name: str
    bbox_xyxy: tuple[float, float, float, float] | None = None
    polygons: tuple[Polygon, ...] = ()
    rle: RleMask | None = None
    is_crowd: bool = False
    attributes: tuple[tuple[str, str], ...] = ()
    area: float | None = None  # the export's own area (COCO's `area`), which COCO-style evaluation buckets by
    keypoints: tuple[ObjectKeypoint, ...] = ()  # the object's own points, in its class's keypoint order

    def __post_init__(self) -> None:
        if self.area is not None and not (math.isfinite(self.area) and self.area >= 0):
            raise InvalidValueError(f"area must be a finite number >= 0, got {self.area}")
        if not self.class_name:
            raise InvalidValueError("class_name must not be empty")
        check_text("class name", self.class_name)
        _check_attributes(self.attributes)
        object.__setattr__(self, "class_name", shared(self.class_name))
        object.__setattr__(self, "attributes", shared(self.attributes))
        if self.bbox_xyxy is not None:
            _check_finite("bbox_xyxy", self.bbox_xyxy)
        if self.bbox_xyxy is None and not self.polygons and self.rle is None:
            raise InvalidValueError(f"object {quoted(self.class_name)} has neither a box nor a shape")

    @property
    def has_shape(self) -> bool:
        return bool(self.polygons) or self.rle is not None


@dataclass(frozen=True, slots=True)
class Keypoint:
    """A labelled point in displayed pixels."""

    class_name: str
    x: float
    y: float

    def __post_init__(self) -> None:
        check_text("class name", self.class_name)
        _check_finite("keypoint", (self.x, self.y))


@dataclass(frozen=True, slots=True)
class SegmentationMask:
    """A class-index mask stored in a file, with the mapping from its pixels to classes.

    `index_to_class` maps single-channel or palette index values; `color_to_class` maps
    RGB colours for masks saved as colour images. A class of `None` is background. A
    pixel whose value is in neither mapping makes the sample fail: an unknown colour is
    never turned silently into background.

    With `alpha_class`, the mask is read by its alpha channel alone: alpha is opacity, so
    pixels at least half opaque (alpha >= 128) are that class and the rest background.
    `path` is a local file, or an object in a bucket when the export's masks live there.
    """

    path: Path | RemotePath
    index_to_class: tuple[tuple[int, str | None], ...] = ()
    color_to_class: tuple[tuple[tuple[int, int, int], str | None], ...] = ()
    alpha_class: str | None = None

    def __post_init__(self) -> None:
        for name in self.class_names():
            check_text("class name", name)

    def class_names(self) -> tuple[str, ...]:
        """The non-background classes the mask can contain, in mapping order."""
        names = [name for _, name in self.index_to_class] + [name for _, name in self.color_to_class]
        names.append(self.alpha_class)
        return tuple(dict.fromkeys(name for name in names if name is not None))


@dataclass(frozen=True, slots=True)
class Sample:
    """One image and everything annotated on it.

    `key` is the stable identity used for the split hash: the same image must get the
    same key on every run (for a manifest, its `source-ref`). `declared_size` is the
    `(width, height)` the annotation tool recorded, if any; annotations are in that frame.
    `image_path` is a local file, or an object in a bucket (read where it lies, never copied).
    `image_id` is the export's own numeric image id (COCO's), which becomes the record's
    `image/source_id`; without one the id is derived from the key (`converter.core.image_ids`).
    `source_split` is the split the sample's export file names (COCO's `instances_val2017.json`),
    set only when the run takes splits from the files (`--split from-source`) instead of the hash.
    """

    key: str
    location: SampleLocation
    image_path: Path | RemotePath
    image_name: str
    declared_size: tuple[int, int] | None = None
    objects: tuple[ObjectAnnotation, ...] = ()
    keypoints: tuple[Keypoint, ...] = ()
    image_labels: tuple[str, ...] = ()
    segmentation: SegmentationMask | None = None
    attributes: tuple[tuple[str, str], ...] = field(default=())
    image_id: int | None = None
    source_split: SplitName | None = None

    def __post_init__(self) -> None:
        if self.image_id is not None and not 0 <= self.image_id < 2**63:
            raise InvalidValueError(f"image id must lie in [0, 2**63), got {self.image_id}")
        if not self.key:
            raise InvalidValueError(f"sample key must not be empty ({self.location})")
        check_text("image reference", self.key)
        check_text("image name", self.image_name)
        for label in self.image_labels:
            check_text("class name", label)
        _check_attributes(self.attributes)
        object.__setattr__(self, "attributes", shared(self.attributes))
        object.__setattr__(self, "image_labels", shared(self.image_labels))
        if self.declared_size is not None and min(self.declared_size) <= 0:
            raise InvalidValueError(f"declared_size must be positive, got {self.declared_size!r}")

    @property
    def has_mask(self) -> bool:
        """Whether the sample contributes a class mask: a mask file or a painted shape."""
        return self.segmentation is not None or any(obj.has_shape for obj in self.objects)

    def class_names(self) -> tuple[str, ...]:
        """Every class the sample refers to, in first-seen order."""
        names: list[str] = [obj.class_name for obj in self.objects]
        names.extend(point.class_name for point in self.keypoints)
        names.extend(self.image_labels)
        if self.segmentation is not None:
            names.extend(self.segmentation.class_names())
        return tuple(dict.fromkeys(names))


@dataclass(frozen=True, slots=True)
class SkippedSample:
    """An input sample the source could not turn into a `Sample`, and why."""

    location: SampleLocation
    code: str
    reason: str


SkipHandler = Callable[[SkippedSample], None]
"""Takes each skipped entry as the source meets it (the pipeline streams it to the report)."""


class SkipCollector:
    """Where a source puts every input entry it cannot turn into a sample.

    With a handler (the pipeline's), each entry goes straight on and nothing is kept, so
    a million garbage lines cost no memory; the handler may raise to stop the read (a
    `--max-skipped` count exceeded). Without one (tests, scripts), entries are kept and
    `kept()` returns them for `SourceContents.skipped`. It has `append` and `extend` so
    that a source uses it as it would a list.
    """

    __slots__ = ("_handler", "_kept")

    def __init__(self, handler: SkipHandler | None = None) -> None:
        self._handler = handler
        self._kept: list[SkippedSample] = []

    def append(self, skipped: SkippedSample) -> None:
        if self._handler is not None:
            self._handler(skipped)
        else:
            self._kept.append(skipped)

    def extend(self, entries: Iterable[SkippedSample]) -> None:
        for entry in entries:
            self.append(entry)

    def kept(self) -> tuple[SkippedSample, ...]:
        """The entries held because no handler was given; empty when one was."""
        return tuple(self._kept)

    def __iter__(self) -> Iterator[SkippedSample]:
        return iter(self._kept)


@dataclass(frozen=True, slots=True)
class AnnotationNote:
    """An annotation of a sample that the source dropped, or used only in part, and why.

    The sample itself is still converted with its other annotations: one unusable
    annotation (an unknown category, a missing geometry) does not discard the good ones
    beside it, the same rule the materializer follows for a box with no area. The report
    lists every note, so nothing is dropped silently. `message` names the annotation as
    the export does (`annotation 17`, `feature 4`).
    """

    location: SampleLocation
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class SourceContents:
    """Everything a source read: its samples, what it had to skip, and its class order.

    `native_class_order` is the order the export itself implies (for example the label
    ids of a labelling job); it becomes the class list unless the user pins one.
    `annotation_notes` are annotations dropped or changed inside samples that were kept.
    `skipped` holds only what the source kept because `read` was given no skip handler.
    """

    samples: tuple[Sample, ...]
    skipped: tuple[SkippedSample, ...]
    native_class_order: tuple[str, ...]
    description: dict[str, str] = field(default_factory=dict)
    annotation_notes: tuple[AnnotationNote, ...] = ()

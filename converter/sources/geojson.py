"""GeoJSON FeatureCollections of image annotations: one feature per object, in image pixels.

Conventions:

- Coordinates are pixels of the image as displayed, x to the right and y *down* (image
  rows, not geographic north-up), from the top-left corner of the top-left pixel: the
  sample model's own frame, so they pass through unchanged.
- `geometry` is a Polygon or a MultiPolygon. A Polygon's first ring is its exterior, the
  others are holes (their pixels are background); rings are closed as GeoJSON writes
  them, and the repeated last position is dropped. A MultiPolygon's parts are painted
  as their union. A position's third number (an elevation) is ignored.
- `properties.image_filename` names the image, resolved under the images folder
  (`converter.core.images`). Each distinct name is one sample, keyed by it, in the order
  first seen; its objects keep feature order. `image_width` and `image_height`, when a
  feature gives them, are the image's declared size; otherwise it is read from the file.
- `properties.class_id` is an int or a name. The class name is `class_name`, else
  `label` (non-empty strings), else `class_id` written as text (`3` -> `"3"`). Class
  order: by the smallest numeric `class_id` (an int, or a string of digits) seen with a
  name, then by name; names never seen with a numeric id come last, by name.

Invalid geometries are repaired, ring by ring: each ring is made valid with shapely's
`make_valid`, which keeps every lobe of a self-intersecting ring (by parity, like the
rasterizer's even-odd rule), then the holes are subtracted from the exterior. Not the
zero-width buffer `buffer(0)`: it keeps only the lobes that wind one way, so a bow-tie
loses half its area without a word. Each repair is noted in the report.

Problems with one feature never discard the rest of its image: a feature with a
missing, empty, unsupported or irreparable geometry (nothing with an area left after
repair), or without a class, is dropped from its sample with a note in the report's
`objects`. A feature with no usable `image_filename` belongs to no sample: it is a
skipped entry keyed `feature <index>` (0-based, in `features` order).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.validation import explain_validity

from converter.core.images import declared_size, image_resolver
from converter.core.input_files import load_json, shown, utf8_peek
from converter.core.sample import (
    AnnotationNote,
    InvalidValueError,
    ObjectAnnotation,
    Polygon,
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

GEOJSON_SUFFIXES = (".geojson", ".json")
_FEATURE_COLLECTION = re.compile(rb'"type"\s*:\s*"FeatureCollection"')
_MIN_RING_POINTS = 3
_DIGITS = re.compile(r"[0-9]{1,18}")  # a numeric class id fits in 64 bits

Ring = tuple[float, ...]  # flat x, y pairs, open


def looks_like_geojson(path: Path) -> bool:
    """Whether a file is a GeoJSON FeatureCollection, from a peek at its two ends."""
    ends = json_file_ends(path, GEOJSON_SUFFIXES)
    if ends is None:
        return False
    ends = FileEnds(*utf8_peek(ends.head, ends.tail))
    return ends.starts_an_object() and ends.contains(_FEATURE_COLLECTION)


def _malformed(message: str) -> SampleError:
    return SampleError("malformed_annotation", message)


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _malformed(f"{what} must hold finite numbers, got {shown(value)}")
    return float(value)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


@dataclass(frozen=True)
class _ClassName:
    name: str
    numeric_id: int | None


def _class_name(properties: dict[str, Any]) -> _ClassName:
    class_id = properties.get("class_id")
    if isinstance(class_id, bool) or not (isinstance(class_id, int) or _text(class_id) or class_id is None):
        raise _malformed(f"`class_id` must be an int or a name, got {shown(class_id)}")
    numeric_id = class_id if isinstance(class_id, int) else None
    if isinstance(class_id, str) and _DIGITS.fullmatch(class_id):
        numeric_id = int(class_id)
    name = _text(properties.get("class_name")) or _text(properties.get("label"))
    if name is None and class_id is not None:
        name = str(class_id)
    if name is None:
        raise _malformed("it has no `class_id`, `class_name` or `label` property")
    try:
        check_text("its class name", name)
    except InvalidValueError as error:
        raise SampleError("invalid_value", str(error)) from None
    return _ClassName(name, numeric_id)


def _ring(value: Any, what: str) -> Ring:
    """A GeoJSON ring (a list of [x, y] positions) as flat open coordinates."""
    if not isinstance(value, list):
        raise _malformed(f"{what} must be a list of positions, got {shown(value)}")
    coordinates: list[float] = []
    for position in value:
        if not isinstance(position, list) or len(position) < 2:
            raise _malformed(f"{what} has a position that is not [x, y]: {shown(position)}")
        coordinates += (_number(position[0], what), _number(position[1], what))
    if len(coordinates) >= 4 and coordinates[:2] == coordinates[-2:]:
        del coordinates[-2:]
    return tuple(coordinates)


def _polygon_rings(value: Any, what: str) -> list[Ring]:
    if not isinstance(value, list):
        raise _malformed(f"{what} must be a list of rings, got {shown(value)}")
    return [_ring(ring, f"{what} ring {index}") for index, ring in enumerate(value)]


def _geometry_parts(geometry: Any) -> list[list[Ring]]:
    """Each polygon of a geometry as its rings (exterior first); raises `SampleError` if unusable."""
    if geometry is None:
        raise SampleError("missing_geometry", "it has no geometry")
    if not isinstance(geometry, dict):
        raise _malformed(f"`geometry` must be an object, got {shown(geometry)}")
    kind, coordinates = geometry.get("type"), geometry.get("coordinates")
    if kind == "Polygon":
        parts = [_polygon_rings(coordinates, "Polygon")]
    elif kind == "MultiPolygon":
        if not isinstance(coordinates, list):
            raise _malformed(f"MultiPolygon coordinates must be a list of polygons, got {shown(coordinates)}")
        parts = [_polygon_rings(polygon, f"MultiPolygon part {index}") for index, polygon in enumerate(coordinates)]
    else:
        raise SampleError(
            "unsupported_geometry", f"its geometry is a {shown(kind)}; only Polygon and MultiPolygon have an area"
        )
    if not any(ring for rings in parts for ring in rings):
        raise SampleError("empty_geometry", f"its {kind} has no coordinates")
    return parts


def _points(ring: Ring) -> list[tuple[float, float]]:
    return list(zip(ring[0::2], ring[1::2], strict=True))


def _polygons_of(geometry: shapely.Geometry) -> Iterator[shapely.Polygon]:
    """The polygons inside a geometry, leaving out the lines and points a repair may produce."""
    if isinstance(geometry, shapely.Polygon):
        if not geometry.is_empty:
            yield geometry
    elif isinstance(geometry, shapely.MultiPolygon | shapely.GeometryCollection):
        for member in geometry.geoms:
            yield from _polygons_of(member)


def _open_ring(ring: shapely.LinearRing) -> Ring:
    points = list(ring.coords)[:-1]
    return tuple(float(number) for point in points for number in point[:2])


def _repair(exterior: Ring, holes: list[Ring]) -> list[Polygon]:
    """One invalid polygon made valid: each ring on its own, then the holes subtracted from the exterior.

    A ring of fewer than three points encloses nothing: as an exterior it leaves nothing,
    as a hole it removes nothing.
    """
    if len(exterior) < 2 * _MIN_RING_POINTS:
        return []
    shape = shapely.make_valid(shapely.Polygon(_points(exterior)))
    hole_shapes = [
        shapely.make_valid(shapely.Polygon(_points(hole))) for hole in holes if len(hole) >= 2 * _MIN_RING_POINTS
    ]
    if hole_shapes:
        shape = shape.difference(shapely.union_all(hole_shapes))
    return [
        Polygon(_open_ring(polygon.exterior), tuple(_open_ring(interior) for interior in polygon.interiors))
        for polygon in _polygons_of(shape)
    ]


def _validity_problem(exterior: Ring, holes: list[Ring]) -> str | None:
    """Why a polygon is invalid, in shapely's words, or None if it is valid."""
    if any(len(ring) < 2 * _MIN_RING_POINTS for ring in (exterior, *holes)):
        return f"a ring has fewer than {_MIN_RING_POINTS} points"
    shape = shapely.Polygon(_points(exterior), [_points(hole) for hole in holes])
    return None if shape.is_valid else str(explain_validity(shape))


def _shapes(parts: list[list[Ring]]) -> tuple[tuple[Polygon, ...], list[str]]:
    """The polygons to paint, and what was repaired; valid polygons keep their exact vertices.

    Each MultiPolygon part is checked on its own: parts that overlap are fine, they are painted as their union.
    """
    polygons: list[Polygon] = []
    repairs: list[str] = []
    for index, rings in enumerate(parts):
        exterior, *holes = rings or [()]
        problem = _validity_problem(exterior, holes)
        if problem is None:
            polygons.append(Polygon(exterior, tuple(holes)))
            continue
        repaired = _repair(exterior, holes)
        where = f"part {index}" if len(parts) > 1 else "polygon"
        repairs.append(f"{where}: {problem}" + ("" if repaired else ", nothing with an area is left"))
        polygons.extend(repaired)
    return tuple(polygons), repairs


def _checked_shapes(parts: list[list[Ring]]) -> tuple[tuple[Polygon, ...], list[str]]:
    """`_shapes`, with what GEOS cannot compute as a `SampleError`.

    GEOS gives up on coordinates near the limits of a double (1e308: "non-noded
    intersection", "scale factor must be non-zero"); such a feature is dropped, not the run.
    """
    try:
        with np.errstate(all="ignore"):  # the same limits make GEOS's numbers NaN: its warnings say nothing more
            return _shapes(parts)
    except shapely.errors.GEOSException as error:
        problem = next(iter(str(error).splitlines()), "")
        raise SampleError(
            "invalid_geometry", f"its geometry cannot be checked or repaired ({quoted(problem, 160)})"
        ) from None
    except InvalidValueError as error:
        raise SampleError("invalid_value", str(error)) from None


@dataclass
class _ClassOrder:
    """Class names by the smallest numeric `class_id` seen with each, then by name; names without one last."""

    smallest_id: dict[str, int | None] = field(default_factory=dict)

    def add(self, class_name: _ClassName) -> None:
        known = self.smallest_id.get(class_name.name)
        if class_name.numeric_id is not None and (known is None or class_name.numeric_id < known):
            self.smallest_id[class_name.name] = class_name.numeric_id
        else:
            self.smallest_id.setdefault(class_name.name, None)

    def names(self) -> tuple[str, ...]:
        def order(name: str) -> tuple[bool, int, str]:
            numeric_id = self.smallest_id[name]
            return numeric_id is None, numeric_id or 0, name

        return tuple(sorted(self.smallest_id, key=order))


@dataclass
class _ImageGroup:
    """The features of one image, as they become its sample."""

    location: SampleLocation
    objects: list[ObjectAnnotation] = field(default_factory=list)
    notes: list[AnnotationNote] = field(default_factory=list)
    sizes: set[tuple[int, int]] = field(default_factory=set)
    bad_sizes: list[SampleError] = field(default_factory=list)

    def add_size(self, width: Any, height: Any) -> None:
        """Record a feature's declared size; features that give none say nothing about it."""
        if width is None and height is None:
            return
        try:
            self.sizes.add(declared_size(width, height, "`image_width` x `image_height`"))
        except SampleError as error:
            self.bad_sizes.append(error)


class GeoJsonSource:
    """`--source geojson`: a FeatureCollection of image annotations and its images folder."""

    def __init__(self, annotations: Path, images_root: Path | RemotePath) -> None:
        self.annotations = annotations
        self.images_root = images_root
        self._resolver = image_resolver(images_root)

    def read(self, on_skip: SkipHandler | None = None) -> SourceContents:
        skipped = SkipCollector(on_skip)
        groups: dict[str, _ImageGroup] = {}
        class_order = _ClassOrder()
        for index, feature in enumerate(self._features()):
            name = f"feature {index}"
            properties = feature.get("properties") if isinstance(feature, dict) else None
            image_filename = _text(properties.get("image_filename")) if isinstance(properties, dict) else None
            if not isinstance(properties, dict) or image_filename is None:
                reason = f"{name} has no `image_filename` property, so it belongs to no image"
                if not isinstance(feature, dict) or feature.get("type") != "Feature":
                    reason = f"{name} is not a GeoJSON Feature object: {shown(feature)}"
                skipped.append(SkippedSample(self._location(name), "malformed_annotation", reason))
                continue
            group = groups.setdefault(image_filename, _ImageGroup(self._location(image_filename)))
            group.add_size(properties.get("image_width"), properties.get("image_height"))
            try:
                class_name = _class_name(properties)
                class_order.add(class_name)  # before the geometry: a class stays listed when its shapes are dropped
                polygons, repairs = _checked_shapes(_geometry_parts(feature.get("geometry")))
                if not polygons:
                    raise SampleError("invalid_geometry", f"its geometry cannot be repaired ({'; '.join(repairs)})")
            except SampleError as error:
                group.notes.append(AnnotationNote(group.location, error.code, f"{name} dropped: {error.message}"))
                continue
            if repairs:
                message = f"{name}: invalid geometry repaired ({'; '.join(repairs)})"
                group.notes.append(AnnotationNote(group.location, "repaired_geometry", message))
            group.objects.append(ObjectAnnotation(class_name.name, polygons=polygons))
        samples: list[Sample] = []
        notes: list[AnnotationNote] = []
        for image_filename, group in groups.items():
            try:
                samples.append(self._sample(image_filename, group))
            except SampleError as error:
                skipped.append(SkippedSample(group.location, error.code, error.message))
                continue
            notes.extend(group.notes)
        description = {"source": "geojson", "annotations": str(self.annotations), "images": str(self.images_root)}
        return SourceContents(tuple(samples), skipped.kept(), class_order.names(), description, tuple(notes))

    def _location(self, key: str) -> SampleLocation:
        return SampleLocation(str(self.annotations), None, key)

    def _features(self) -> list[Any]:
        document = load_json(self.annotations, "GeoJSON file")
        if not isinstance(document, dict) or document.get("type") != "FeatureCollection":
            found = document.get("type") if isinstance(document, dict) else type(document).__name__
            raise UsageError(f"{self.annotations} is not a GeoJSON FeatureCollection (its type is {shown(found)})")
        features = document.get("features")
        if not isinstance(features, list):
            raise UsageError(f"{self.annotations} has no `features` list (found {type(features).__name__})")
        return features

    def _sample(self, image_filename: str, group: _ImageGroup) -> Sample:
        if group.bad_sizes:
            raise group.bad_sizes[0]
        if len(group.sizes) > 1:
            listed = ", ".join(f"{width}x{height}" for width, height in sorted(group.sizes))
            raise _malformed(f"its features disagree on `image_width` x `image_height`: {listed}")
        image = self._resolver.locate(image_filename)
        try:
            return Sample(
                key=image_filename,
                location=group.location,
                image_path=image.path,
                image_name=image.name,
                declared_size=next(iter(group.sizes), None),
                objects=tuple(group.objects),
            )
        except InvalidValueError as error:
            raise SampleError("invalid_value", str(error)) from None

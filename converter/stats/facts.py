"""A written record reduced to the few numbers statistics need.

During a conversion every worker process turns each record it writes into `RecordFacts`
and sends only those to the parent, which accumulates them (`converter.stats.statistics`):
the facts are small, picklable and computed once, where the record's shapes already are.

Shapes are measured as the record holds them: an object's polygons are the union of its
parts, each part's holes subtracted, as the rasterizer paints them (a self-intersecting
ring is first repaired by `shapely.make_valid`, which keeps its even-odd interior); an
object that has only an instance mask is traced back into polygons. Both then go through
the same measurement (`_measure`).

Cost matters: this runs on every record of a conversion, which may slow by no more than a
few percent. So the common case, valid polygons in parts that do not overlap, is measured
for all objects of a record in a handful of vectorized calls; only objects that need a
repair or a union take shapely's slower per-object path.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate, chain
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import shapely

from converter.core.materialize import EncodedSample
from converter.core.sample import Polygon
from converter.stats.records import WrittenKeypoint, WrittenObject, WrittenRecord

_MIN_RING_COORDINATES = 6  # three vertices: the rasterizer paints nothing for fewer
_FLOAT32_EXACT_COUNTS = 2**24  # cv2.calcHist counts in float32, exact up to here
_POLYGON = 3  # shapely's type id of a Polygon
_ANGLE_DECIMALS = 4  # cv2.minAreaRect works in float32: an axis-aligned box must not come out at 179.99999 degrees

Geometries = npt.NDArray[np.object_]
_NOTHING = shapely.MultiPolygon()


@dataclass(frozen=True, slots=True)
class ShapeFacts:
    """The measurements of one object's shape, in pixels of the displayed image.

    `compactness` is 4·π·area / perimeter²: 1 for a disc, lower for elongated or ragged
    shapes. `centroid` is the area centroid as (x, y), normalized by the image's width and
    height (outside [0, 1] only where the shape reaches outside the image). The rotated box
    is the minimum-area rectangle around the shape: `rotated_angle` is the direction of its
    long side from the x axis in degrees, in [0, 180), in image coordinates (y grows
    downwards, so positive angles turn clockwise on screen).
    """

    area: float
    perimeter: float
    compactness: float
    centroid: tuple[float, float]
    rotated_angle: float
    rotated_long: float
    rotated_short: float


@dataclass(frozen=True, slots=True)
class ObjectFacts:
    """One object: its class, its box in pixels, the area COCO buckets it by, and its shape if it has one.

    `area` is the record's own object area where it gives one, else the box's area.
    """

    class_id: int
    box_width: float
    box_height: float
    area: float
    shape: ShapeFacts | None


@dataclass(frozen=True, slots=True)
class RecordFacts:
    """What statistics need of one record.

    `class_ids` holds every class present through any annotation (objects, image labels,
    keypoints, class-mask pixels), sorted, without 255 ('ignore'). `keypoints` counts the
    labelled points (visibility > 0), image-level and objects'. `mask_pixels` is
    (class id, pixels) for every non-zero value of the class mask, 255 included, so that
    shares of `mask_total_pixels` (the mask's size, 0 without a class mask) add up; a mask
    that is all background has no entry but still counts in the total.
    """

    width: int
    height: int
    objects: tuple[ObjectFacts, ...]
    class_ids: tuple[int, ...]
    keypoints: int
    mask_pixels: tuple[tuple[int, int], ...]
    mask_total_pixels: int


def facts_of(record: WrittenRecord) -> RecordFacts:
    """Reduce a written record to its facts (see the module's docstring for how shapes are measured)."""
    width, height = record.width, record.height
    shapes = _object_shapes(record.objects, width, height)
    objects = tuple(
        ObjectFacts(
            obj.class_id,
            (obj.box[2] - obj.box[0]) * width,
            (obj.box[3] - obj.box[1]) * height,
            obj.area
            if obj.area is not None
            else (obj.box[2] - obj.box[0]) * (obj.box[3] - obj.box[1]) * width * height,
            shape,
        )
        for obj, shape in zip(record.objects, shapes, strict=True)
    )
    mask_pixels, mask_total = _mask_pixels(record)
    class_ids = {obj.class_id for obj in record.objects}
    class_ids.update(class_id for class_id, _ in record.image_labels)
    class_ids.update(class_id for class_id, _, _ in record.keypoints)
    class_ids.update(class_id for class_id, _ in mask_pixels if class_id != 255)
    keypoints = sum(point.visibility > 0 for _, _, point in record.keypoints) + sum(
        point.visibility > 0 for obj in record.objects for point in obj.keypoints
    )
    return RecordFacts(width, height, objects, tuple(sorted(class_ids)), keypoints, mask_pixels, mask_total)


def written_record_of(encoded: EncodedSample, with_image: bool = False) -> WrittenRecord:
    """The record a sink writes for `encoded`, as `WrittenRecord` (image bytes only `with_image`)."""
    source_objects = encoded.sample.objects
    objects = tuple(
        WrittenObject(
            class_id=obj.class_id,
            class_name=obj.class_name,
            box=obj.bbox_normalized,
            polygons=source_objects[obj.object_index].polygons,
            mask_png=obj.mask_png,
            area=obj.area_pixels,
            keypoints=tuple(
                WrittenKeypoint(point.name, point.x_normalized, point.y_normalized, point.visibility)
                for point in obj.keypoints
            ),
        )
        for obj in encoded.objects
    )
    keypoints = tuple(
        (point.class_id, point.class_name, WrittenKeypoint(point.class_name, point.x_normalized, point.y_normalized))
        for point in encoded.keypoints or ()
    )
    return WrittenRecord(
        key=encoded.sample.key,
        width=encoded.image.width,
        height=encoded.image.height,
        objects=objects,
        image_labels=tuple(zip(encoded.image_class_ids, encoded.sample.image_labels, strict=True)),
        keypoints=keypoints,
        class_mask_png=encoded.segmentation_png,
        class_mask_pixels=encoded.mask_pixels if encoded.segmentation_png is not None else None,
        image_bytes=encoded.image_bytes if with_image else None,
    )


def _object_shapes(objects: Sequence[WrittenObject], width: int, height: int) -> list[ShapeFacts | None]:
    """Each object's shape facts: from its polygons, else its instance mask, else None."""
    with_polygons = [index for index, obj in enumerate(objects) if obj.polygons]
    masks = [
        (index, obj.mask_png) for index, obj in enumerate(objects) if not obj.polygons and obj.mask_png is not None
    ]
    shapes: list[ShapeFacts | None] = [None] * len(objects)
    if not with_polygons and not masks:
        return shapes
    geometries = [_polygon_geometries([objects[index].polygons for index in with_polygons])] if with_polygons else []
    if masks:
        traced: Geometries = np.empty(len(masks), dtype=np.object_)
        traced[:] = [_mask_geometry(png) for _, png in masks]
        geometries.append(traced)
    measured = _measure(np.concatenate(geometries), width, height)
    for index, shape in zip(with_polygons + [index for index, _ in masks], measured, strict=True):
        shapes[index] = shape
    return shapes


def _polygon_geometries(shapes: Sequence[tuple[Polygon, ...]]) -> Geometries:
    """One polygonal geometry per object; every part of the record built and checked in one call each.

    A single valid part is the object's shape as it is; valid parts whose bounding boxes
    are apart make a MultiPolygon; valid parts that may overlap are united; an object with
    an invalid part is repaired. (Each shapely call costs a few microseconds beyond its work,
    which matters here: see the module's docstring.)
    """
    rings: list[tuple[float, ...]] = []
    rings_per_part: list[int] = []
    parts_per_object: list[int] = []
    for polygons in shapes:
        parts = 0
        for polygon in polygons:
            if len(polygon.exterior) < _MIN_RING_COORDINATES:
                continue
            rings.append(polygon.exterior)
            holes = [hole for hole in polygon.holes if len(hole) >= _MIN_RING_COORDINATES] if polygon.holes else ()
            rings.extend(holes)
            rings_per_part.append(1 + len(holes))
            parts += 1
        parts_per_object.append(parts)
    vertices = [len(ring) // 2 + 1 for ring in rings]  # rings closed: the first vertex again
    coordinates = np.fromiter(
        chain.from_iterable(chain(ring, ring[:2]) for ring in rings), dtype=np.float64, count=2 * sum(vertices)
    ).reshape(-1, 2)
    parts = shapely.from_ragged_array(
        shapely.GeometryType.POLYGON, coordinates, (_offsets(vertices), _offsets(rings_per_part))
    )
    valid = shapely.is_valid(parts).tolist()
    bounds = shapely.bounds(parts).tolist() if len(parts) > len(shapes) else []
    geometries: Geometries = np.empty(len(shapes), dtype=object)
    first = 0
    for index, count in enumerate(parts_per_object):
        last = first + count
        if not all(valid[first:last]):
            geometries[index] = _repaired(shapes[index])
        elif count == 1:
            geometries[index] = parts[first]
        elif _apart(bounds[first:last]):
            geometries[index] = shapely.multipolygons(parts[first:last])
        else:
            geometries[index] = _united(parts[first:last], shapes[index])
        first = last
    return geometries


def _apart(bounds: Sequence[Sequence[float]]) -> bool:
    """Whether no two boxes (x_min, y_min, x_max, y_max) meet, not even at an edge: then their contents cannot."""
    return all(
        a[2] < b[0] or b[2] < a[0] or a[3] < b[1] or b[3] < a[1]
        for position, a in enumerate(bounds)
        for b in bounds[position + 1 :]
    )


def _offsets(counts: Sequence[int]) -> npt.NDArray[np.int64]:
    """Where each of `counts` runs starts, and the end: the offsets `shapely.from_ragged_array` takes."""
    return np.fromiter(accumulate(counts, initial=0), dtype=np.int64, count=len(counts) + 1)


def _united(parts: Geometries, polygons: Sequence[Polygon]) -> Any:
    """The union of valid parts; GEOS can still fail to overlay some (nearly coincident edges): then the repair's."""
    try:
        return shapely.union_all(parts)
    except shapely.errors.GEOSException:
        return _repaired(polygons)


def _repaired(polygons: Sequence[Polygon]) -> Any:
    """The union of the parts, each ring made valid (even-odd) and each part's holes subtracted.

    Where GEOS cannot build it even so, the object has no shape facts: a statistic must never
    stop the conversion of a record that was written.
    """
    try:
        return _repaired_parts(polygons)
    except shapely.errors.GEOSException:
        return _NOTHING


def _repaired_parts(polygons: Sequence[Polygon]) -> Any:
    parts = []
    for polygon in polygons:
        if len(polygon.exterior) < _MIN_RING_COORDINATES:
            continue
        part = _valid_ring_area(polygon.exterior)
        holes = [_valid_ring_area(hole) for hole in polygon.holes if len(hole) >= _MIN_RING_COORDINATES]
        parts.append(shapely.difference(part, shapely.union_all(holes)) if holes else part)
    return _polygonal(shapely.union_all(parts))


def _valid_ring_area(ring: tuple[float, ...]) -> Any:
    return _polygonal(shapely.make_valid(shapely.Polygon(np.asarray(ring, dtype=np.float64).reshape(-1, 2))))


def _polygonal(geometry: Any) -> Any:
    """The polygons of a geometry (a repair may leave lines and points beside them), as one MultiPolygon."""
    parts = shapely.get_parts(shapely.get_parts(geometry))  # a collection may hold a MultiPolygon
    return shapely.multipolygons(parts[shapely.get_type_id(parts) == _POLYGON])


def _mask_geometry(png: bytes) -> Any:
    """An instance mask traced into polygons that cover its pixels.

    `cv2.findContours` walks the centres of the boundary pixels; the contours are grown
    by half a pixel (square corners) so that they reach the pixels' outer edges: a block
    of pixels then gives exactly its rectangle, and a one-pixel-wide line its pixels.
    """
    mask = cv2.imdecode(np.frombuffer(png, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if mask is None:
        return _NOTHING
    filled = (mask.reshape(mask.shape[0], mask.shape[1], -1) != 0).any(axis=2).view(np.uint8)
    contours, hierarchy = cv2.findContours(filled, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return _NOTHING
    pieces = []
    links = hierarchy[0]  # next, previous, first child, parent
    for index, contour in enumerate(contours):
        if links[index][3] != -1:
            continue
        shell = contour.reshape(-1, 2) + 0.5
        if len(shell) < 3:
            pieces.append(shapely.multipoints(shell))
            continue
        holes = []
        child = links[index][2]
        while child != -1:
            holes.append(contours[child].reshape(-1, 2) + 0.5)
            child = links[child][0]
        pieces.append(shapely.make_valid(shapely.Polygon(shell, [hole for hole in holes if len(hole) >= 3])))
    grown = shapely.buffer(shapely.geometrycollections(pieces), 0.5, cap_style="square", join_style="mitre")
    return _polygonal(grown)


def _measure(geometries: Geometries, width: int, height: int) -> list[ShapeFacts | None]:
    """Shape facts of polygonal geometries (None for one without area); vectorized but for the rotated box."""
    areas = shapely.area(geometries)
    kept = np.flatnonzero((areas > 0) & np.isfinite(areas))  # coordinates near 1e154 overflow to inf: no facts
    geometries = geometries[kept]
    perimeters = shapely.length(geometries).tolist()
    centroids = shapely.get_coordinates(shapely.centroid(geometries)).tolist()
    points, owners = shapely.get_coordinates(geometries, return_index=True)
    points32 = points.astype(np.float32)
    bounds = np.searchsorted(owners, np.arange(len(kept) + 1)).tolist()
    shapes: list[ShapeFacts | None] = [None] * len(areas)
    for position, (index, area) in enumerate(zip(kept.tolist(), areas[kept].tolist(), strict=True)):
        perimeter = perimeters[position]
        _, (side_a, side_b), angle = cv2.minAreaRect(points32[bounds[position] : bounds[position + 1]])
        if side_a < side_b:  # the rectangle's first side lies along `angle`, the second at `angle` + 90
            side_a, side_b, angle = side_b, side_a, angle + 90.0
        x, y = centroids[position]
        if not all(math.isfinite(value) for value in (perimeter, x, y, side_a, side_b, angle)):
            continue
        shapes[index] = ShapeFacts(
            area,
            perimeter,
            4.0 * math.pi * area / (perimeter * perimeter),
            (x / width, y / height),
            round(angle, _ANGLE_DECIMALS) % 180.0,
            side_a,
            side_b,
        )
    return shapes


def _mask_pixels(record: WrittenRecord) -> tuple[tuple[tuple[int, int], ...], int]:
    """(class id, pixels) for each non-zero value of the class mask, and the mask's size (0 without one)."""
    if record.class_mask_pixels is not None:
        return record.class_mask_pixels, record.width * record.height
    if record.class_mask_png is None:
        return (), 0
    mask = cv2.imdecode(np.frombuffer(record.class_mask_png, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if mask is None:
        return (), 0
    if mask.dtype == np.uint8 and mask.size <= _FLOAT32_EXACT_COUNTS:
        histogram = cv2.calcHist([mask], [0], None, [256], [0, 256]).ravel()  # 10x faster than np.unique on uint8
        values = np.flatnonzero(histogram)
        counts = histogram[values]
    else:
        values, counts = np.unique(mask, return_counts=True)
    pixels = zip(values.tolist(), counts.tolist(), strict=True)
    return tuple((int(value), int(count)) for value, count in pixels if value != 0), int(mask.size)

"""A written record reduced to the few numbers statistics need.

During a conversion every worker process turns each record it writes into `RecordFacts`
and sends only those to the parent, which accumulates them (`converter.stats.statistics`):
the facts are small, picklable and computed once, where the record's shapes already are.
A sample as it is written (`facts_of_sample`) and a record read back (`facts_of`) go
through the same computation (`_facts`), so that `dataset-converter stats` rebuilds what
the conversion observed.

Shapes are measured as the record holds them: an object's polygons are the union of its
parts, each part's holes subtracted, as the rasterizer paints them (a self-intersecting
ring is first repaired by `shapely.make_valid`, which keeps its even-odd interior); an
object that has only an instance mask is traced back into polygons. Both then go through
the same measurement (`_measure`).

Cost matters: this runs on every record of a conversion, which may slow by no more than a
few percent. So the common case, valid polygons in parts that do not overlap, is measured
for all objects of a record in a handful of vectorized calls; only objects that need a
repair or a union take shapely's slower per-object path. For the same reason the facts
hold their objects packed into two flat tuples of numbers (`RecordFacts.boxes` and
`RecordFacts.shapes`), built without an intermediate object per box or shape: such tuples
pickle several times faster than an object each, and the parent folds them into its
histograms in bulk. `ObjectFacts` and `ShapeFacts` are the readable view of those numbers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import accumulate, chain
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import shapely

from converter.core.materialize import EncodedSample
from converter.core.sample import Polygon
from converter.stats.records import BoxXYXY, WrittenKeypoint, WrittenObject, WrittenRecord

OBJECT_FIELDS = 5  # per object in `RecordFacts.boxes`: class id, box width, box height, area, whether it has a shape
SHAPE_FIELDS = 8  # per shape in `RecordFacts.shapes`: area, perimeter, compactness, centroid x, y, angle, long, short

_MIN_RING_COORDINATES = 6  # three vertices: the rasterizer paints nothing for fewer
_FLOAT32_EXACT_COUNTS = 2**24  # cv2.calcHist counts in float32, exact up to here
_POLYGON = 3  # shapely's type id of a Polygon
_ANGLE_DECIMALS = 4  # cv2.minAreaRect works in float32: an axis-aligned box must not come out at 179.99999 degrees
_IGNORE = 255  # the class mask's 'ignore' value: counted in the mask's pixels, not a class

Geometries = npt.NDArray[np.object_]
MaskPixels = tuple[tuple[int, int], ...]
ShapeRow = tuple[float, float, float, float, float, float, float, float]  # `SHAPE_FIELDS` numbers, in their order
_Shaped = tuple[tuple[Polygon, ...], bytes | None]  # an object's polygons (maybe none) and instance mask (maybe None)
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


class RecordFacts:
    """What statistics need of one record; not to be changed once built.

    `class_ids` holds every class present through any annotation (objects, image labels,
    keypoints, class-mask pixels), sorted, without 255 ('ignore'). `keypoints` counts the
    labelled points (visibility > 0), image-level and objects'. `mask_pixels` is
    (class id, pixels) for every non-zero value of the class mask, 255 included, so that
    shares of `mask_total_pixels` (the mask's size, 0 without a class mask) add up; a mask
    that is all background has no entry but still counts in the total.

    The objects are packed (see the module's docstring): `boxes` holds `OBJECT_FIELDS`
    numbers per object, `shapes` `SHAPE_FIELDS` per object that has a shape, both in the
    objects' order. The constructor packs `ObjectFacts`; `objects` unpacks them.
    """

    __slots__ = ("boxes", "class_ids", "height", "keypoints", "mask_pixels", "mask_total_pixels", "shapes", "width")

    width: int
    height: int
    boxes: tuple[float, ...]
    shapes: tuple[float, ...]
    class_ids: tuple[int, ...]
    keypoints: int
    mask_pixels: MaskPixels
    mask_total_pixels: int

    def __init__(
        self,
        width: int,
        height: int,
        objects: Iterable[ObjectFacts],
        class_ids: tuple[int, ...],
        keypoints: int,
        mask_pixels: MaskPixels,
        mask_total_pixels: int,
    ) -> None:
        boxes: list[float] = []
        shapes: list[float] = []
        for obj in objects:
            shape = obj.shape
            boxes += (obj.class_id, obj.box_width, obj.box_height, obj.area, shape is not None)
            if shape is not None:
                x, y = shape.centroid
                shapes += (shape.area, shape.perimeter, shape.compactness, x, y)
                shapes += (shape.rotated_angle, shape.rotated_long, shape.rotated_short)
        _fill(self, width, height, tuple(boxes), tuple(shapes), class_ids, keypoints, mask_pixels, mask_total_pixels)

    @property
    def objects(self) -> tuple[ObjectFacts, ...]:
        """The objects, unpacked."""
        shapes = (
            ShapeFacts(area, perimeter, compactness, (x, y), angle, long, short)
            for area, perimeter, compactness, x, y, angle, long, short in _rows(self.shapes, SHAPE_FIELDS)
        )
        return tuple(
            ObjectFacts(int(class_id), box_width, box_height, area, next(shapes) if shaped else None)
            for class_id, box_width, box_height, area, shaped in _rows(self.boxes, OBJECT_FIELDS)
        )

    def _fields(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RecordFacts) and self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        return "RecordFacts(" + ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__) + ")"

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as its packed fields: no object per box or shape (see the module's docstring)."""
        return _packed, (
            self.width,
            self.height,
            self.boxes,
            self.shapes,
            self.class_ids,
            self.keypoints,
            self.mask_pixels,
            self.mask_total_pixels,
        )


def _packed(
    width: int,
    height: int,
    boxes: tuple[float, ...],
    shapes: tuple[float, ...],
    class_ids: tuple[int, ...],
    keypoints: int,
    mask_pixels: MaskPixels,
    mask_total_pixels: int,
) -> RecordFacts:
    """`RecordFacts` of numbers already packed."""
    facts = RecordFacts.__new__(RecordFacts)
    _fill(facts, width, height, boxes, shapes, class_ids, keypoints, mask_pixels, mask_total_pixels)
    return facts


def _fill(
    facts: RecordFacts,
    width: int,
    height: int,
    boxes: tuple[float, ...],
    shapes: tuple[float, ...],
    class_ids: tuple[int, ...],
    keypoints: int,
    mask_pixels: MaskPixels,
    mask_total_pixels: int,
) -> None:
    facts.width, facts.height, facts.boxes, facts.shapes = width, height, boxes, shapes
    facts.class_ids, facts.keypoints = class_ids, keypoints
    facts.mask_pixels, facts.mask_total_pixels = mask_pixels, mask_total_pixels


def _rows(values: tuple[float, ...], size: int) -> Iterator[tuple[float, ...]]:
    """`values` cut into consecutive tuples of `size`."""
    items = iter(values)
    return zip(*[items] * size, strict=True)


def facts_of(record: WrittenRecord) -> RecordFacts:
    """Reduce a written record to its facts (see the module's docstring for how shapes are measured)."""
    objects = record.objects
    class_ids = {class_id for class_id, _ in record.image_labels}
    class_ids.update(class_id for class_id, _, _ in record.keypoints)
    keypoints = sum(point.visibility > 0 for _, _, point in record.keypoints) + sum(
        point.visibility > 0 for obj in objects for point in obj.keypoints
    )
    return _facts(
        record.width,
        record.height,
        [(obj.class_id, obj.box, obj.area) for obj in objects],
        [(obj.polygons, obj.mask_png) for obj in objects],
        class_ids,
        keypoints,
        *_mask_pixels(record),
    )


def facts_of_sample(encoded: EncodedSample) -> RecordFacts:
    """The facts of the record a sink writes for `encoded`: `facts_of(written_record_of(encoded))`, built directly.

    This runs on every record of a conversion: it reads the sample as it is, without
    building the `WrittenRecord` first.
    """
    objects = encoded.objects
    source_objects = encoded.sample.objects
    image_points = encoded.keypoints or ()
    class_ids = set(encoded.image_class_ids)
    class_ids.update(point.class_id for point in image_points)
    keypoints = len(image_points) + sum(point.visibility > 0 for obj in objects for point in obj.keypoints)
    with_mask = encoded.segmentation_png is not None
    return _facts(
        encoded.image.width,
        encoded.image.height,
        [(obj.class_id, obj.bbox_normalized, obj.area_pixels) for obj in objects],
        [(source_objects[obj.object_index].polygons, obj.mask_png) for obj in objects],
        class_ids,
        keypoints,
        encoded.mask_pixels if with_mask else (),
        encoded.image.width * encoded.image.height if with_mask else 0,
    )


def _facts(
    width: int,
    height: int,
    boxes: Sequence[tuple[int, BoxXYXY, float | None]],
    shaped: Sequence[_Shaped],
    class_ids: set[int],
    keypoints: int,
    mask_pixels: MaskPixels,
    mask_total_pixels: int,
) -> RecordFacts:
    """The facts of a record, from its objects' (class id, normalized box, own area or None) and shapes.

    `class_ids` are those of the record's image labels and keypoints; the objects' and the
    mask's are added here. Image-level keypoints are labelled (visibility 2) by definition.
    """
    shapes = _object_shapes(shaped, width, height)
    packed_boxes: list[float] = []
    packed_shapes: list[float] = []
    for (class_id, box, area), shape in zip(boxes, shapes, strict=True):
        box_width, box_height = box[2] - box[0], box[3] - box[1]
        own_area = area if area is not None else box_width * box_height * width * height
        packed_boxes += (class_id, box_width * width, box_height * height, own_area, shape is not None)
        if shape is not None:
            packed_shapes += shape
        class_ids.add(class_id)
    class_ids.update(class_id for class_id, _ in mask_pixels if class_id != _IGNORE)
    return _packed(
        width,
        height,
        tuple(packed_boxes),
        tuple(packed_shapes),
        tuple(sorted(class_ids)),
        keypoints,
        mask_pixels,
        mask_total_pixels,
    )


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


def _object_shapes(objects: Sequence[_Shaped], width: int, height: int) -> list[ShapeRow | None]:
    """Each object's shape facts: from its polygons, else its instance mask, else None."""
    with_polygons = [index for index, (polygons, _) in enumerate(objects) if polygons]
    masks = [(index, png) for index, (polygons, png) in enumerate(objects) if not polygons and png is not None]
    shapes: list[ShapeRow | None] = [None] * len(objects)
    if not with_polygons and not masks:
        return shapes
    geometries = [_polygon_geometries([objects[index][0] for index in with_polygons])] if with_polygons else []
    if masks:
        traced: Geometries = np.empty(len(masks), dtype=np.object_)
        traced[:] = [_mask_geometry(png) for _, png in masks]
        geometries.append(traced)
    measured = _measure(geometries[0] if len(geometries) == 1 else np.concatenate(geometries), width, height)
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
        count = 0
        for polygon in polygons:
            if len(polygon.exterior) < _MIN_RING_COORDINATES:
                continue
            rings.append(polygon.exterior)
            holes = [hole for hole in polygon.holes if len(hole) >= _MIN_RING_COORDINATES] if polygon.holes else ()
            rings.extend(holes)
            rings_per_part.append(1 + len(holes))
            count += 1
        parts_per_object.append(count)
    vertices = [len(ring) // 2 + 1 for ring in rings]  # rings closed: the first vertex again
    coordinates = np.fromiter(
        chain.from_iterable(chain(ring, ring[:2]) for ring in rings), dtype=np.float64, count=2 * sum(vertices)
    ).reshape(-1, 2)
    parts: Geometries = shapely.from_ragged_array(
        shapely.GeometryType.POLYGON, coordinates, (_offsets(vertices), _offsets(rings_per_part))
    )
    valid = shapely.is_valid(parts).tolist()
    if len(parts) == len(shapes) and all(valid):  # one valid part per object: the common case, as it is
        return parts
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


def _measure(geometries: Geometries, width: int, height: int) -> list[ShapeRow | None]:
    """Shape facts of polygonal geometries (None for one without area); vectorized but for the rotated box."""
    shapes: list[ShapeRow | None] = [None] * len(geometries)
    areas = shapely.area(geometries).tolist()
    kept = [index for index, area in enumerate(areas) if 0 < area < math.inf]  # near 1e154 areas overflow: no facts
    if len(kept) < len(geometries):
        geometries = geometries[kept]
    perimeters = shapely.length(geometries).tolist()
    centroids = shapely.get_coordinates(shapely.centroid(geometries)).tolist()
    points, owners = shapely.get_coordinates(geometries, return_index=True)
    points32 = points.astype(np.float32)
    bounds = np.searchsorted(owners, np.arange(len(kept) + 1)).tolist()
    for position, (index, perimeter, (x, y)) in enumerate(zip(kept, perimeters, centroids, strict=True)):
        _, (side_a, side_b), angle = cv2.minAreaRect(points32[bounds[position] : bounds[position + 1]])
        if side_a < side_b:  # the rectangle's first side lies along `angle`, the second at `angle` + 90
            side_a, side_b, angle = side_b, side_a, angle + 90.0
        if not all(map(math.isfinite, (perimeter, x, y, side_a, side_b, angle))):
            continue
        area = areas[index]
        compactness = 4.0 * math.pi * area / (perimeter * perimeter)
        angle = round(angle, _ANGLE_DECIMALS) % 180.0
        shapes[index] = (area, perimeter, compactness, x / width, y / height, angle, side_a, side_b)
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

"""What a conversion cannot carry from its input into the chosen output, counted before any work.

A user converting rotated boxes to an axis-aligned format, or overlapping polygons to a
class mask, loses something without an error anywhere: the records are valid, just poorer.
Every run (and `check`) states these losses up front, with counts, and records them in
report.json; `--strict` refuses a run that has any.

What the records carry is the sink's answer (`Sink.carries`) for the run's record options:
losses are counted against what the run chose to write, so `--task detection` on polygons
is not "losing" the masks the user asked to leave out, but the rotation of a rotated
rectangle is lost whatever the task, since no box keeps it.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from pycocotools import mask as coco_mask

from converter.core.rasterize import OverlapPolicy
from converter.core.report import LossEntry
from converter.core.sample import ObjectAnnotation, Sample


@dataclass(frozen=True)
class Carried:
    """What a format's records hold for one run (`Sink.carries`)."""

    boxes: bool = False
    polygons: bool = False  # shapes as the source gave them (vertices), not only their pixels
    class_masks: bool = False
    instance_masks: bool = False
    keypoints: bool = False
    image_labels: bool = False
    attributes: bool = False

    @property
    def shapes(self) -> bool:
        """Whether an object's shape survives in some form (vertices or pixels)."""
        return self.polygons or self.class_masks or self.instance_masks


@dataclass(frozen=True)
class Loss:
    """One kind of input the records will not carry, how much of it, and in words."""

    code: str
    count: int
    message: str

    def as_dict(self) -> LossEntry:
        return {"code": self.code, "count": self.count, "message": self.message}


RIGHT_ANGLE_TOLERANCE = 1e-3  # |cos| between a rectangle's sides: drawn by a tool, they are exact up to rounding
AXIS_TOLERANCE_DEGREES = 0.5  # a rectangle within this of the axes is an ordinary box


def is_rotated_rectangle(obj: ObjectAnnotation) -> bool:
    """A four-vertex polygon with right angles, tilted from the axes: how a rotated box arrives in a `Sample`."""
    if obj.rle is not None or len(obj.polygons) != 1 or obj.polygons[0].holes:
        return False
    ring = obj.polygons[0].exterior
    if len(ring) != 8:
        return False
    corners = [(ring[index], ring[index + 1]) for index in range(0, 8, 2)]
    sides = [(b[0] - a[0], b[1] - a[1]) for a, b in itertools.pairwise([*corners, corners[0]])]
    lengths = [math.hypot(*side) for side in sides]
    if min(lengths) == 0:
        return False
    for first, second, first_length, second_length in zip(
        sides, sides[1:] + sides[:1], lengths, lengths[1:] + lengths[:1], strict=True
    ):
        if abs(first[0] * second[0] + first[1] * second[1]) / (first_length * second_length) > RIGHT_ANGLE_TOLERANCE:
            return False
    angle = math.degrees(math.atan2(sides[0][1], sides[0][0])) % 90
    return min(angle, 90 - angle) > AXIS_TOLERANCE_DEGREES


def _geometry(obj: ObjectAnnotation) -> shapely.Geometry | None:
    """The object's polygons as one valid geometry; None where GEOS cannot build it (then pixels decide)."""
    try:
        parts = [part.geometry() for part in obj.polygons]
        parts = [part if part.is_valid else shapely.make_valid(part) for part in parts]
        return shapely.union_all(parts) if len(parts) > 1 else parts[0]
    except shapely.errors.GEOSException:
        return None


def _rle(obj: ObjectAnnotation, height: int, width: int) -> dict[str, Any]:
    """The object's shape as a COCO RLE at `height` x `width` (an RLE as given, polygons rasterized).

    Polygon holes are left out: this only tells whether two shapes meet, and a hole that
    would separate them is rare enough to count such a pair as overlapping.
    """
    if obj.rle is not None:
        counts = obj.rle.counts
        if isinstance(counts, str):
            return {"size": [obj.rle.height, obj.rle.width], "counts": counts.encode()}
        uncompressed = {"size": [obj.rle.height, obj.rle.width], "counts": list(counts)}
        encoded: dict[str, Any] = coco_mask.frPyObjects(uncompressed, height, width)
        return encoded
    merged: dict[str, Any] = coco_mask.merge(
        coco_mask.frPyObjects([list(part.exterior) for part in obj.polygons], height, width)
    )
    return merged


def _boxes_meet(first: tuple[float, float, float, float], second: tuple[float, float, float, float]) -> bool:
    return first[0] < second[2] and second[0] < first[2] and first[1] < second[3] and second[1] < first[3]


def _extent(obj: ObjectAnnotation) -> tuple[float, float, float, float]:
    if obj.polygons:
        bounds = [polygon.bounds() for polygon in obj.polygons]
        x_mins, y_mins, x_maxs, y_maxs = zip(*bounds, strict=True)
        return min(x_mins), min(y_mins), max(x_maxs), max(y_maxs)
    assert obj.rle is not None
    return 0.0, 0.0, float(obj.rle.width), float(obj.rle.height)  # an RLE's extent needs decoding: test it exactly


def _pixels_overlap(first: ObjectAnnotation, second: ObjectAnnotation) -> bool:
    """Whether two shapes share pixels, compared as COCO RLEs (an RLE involved, or a polygon GEOS cannot handle)."""
    size = first.rle if first.rle is not None else second.rle
    if size is not None:
        height, width = size.height, size.width
    else:
        extent = max(_extent(first)[3], _extent(second)[3]), max(_extent(first)[2], _extent(second)[2])
        height, width = (max(1, math.ceil(value)) for value in extent)
    both = [_rle(first, height, width), _rle(second, height, width)]
    return bool(coco_mask.area(coco_mask.merge(both, intersect=True)) > 0)


def _candidate_pairs(sample: Sample) -> Iterator[tuple[ObjectAnnotation, ObjectAnnotation]]:
    """Pairs of shapes of different classes whose extents meet: the only ones that can share area."""
    shaped = [obj for obj in sample.objects if obj.has_shape]
    if len({obj.class_name for obj in shaped}) < 2:
        return
    extents = [_extent(obj) for obj in shaped]
    for (first, first_extent), (second, second_extent) in itertools.combinations(zip(shaped, extents, strict=True), 2):
        if first.class_name != second.class_name and _boxes_meet(first_extent, second_extent):
            yield first, second


def _meet_or_pixels(
    first: ObjectAnnotation, second: ObjectAnnotation, first_shape: shapely.Geometry, second_shape: shapely.Geometry
) -> bool:
    try:
        return bool(shapely.relate_pattern(first_shape, second_shape, AREA_IN_COMMON))
    except shapely.errors.GEOSException:
        return _pixels_overlap(first, second)


AREA_IN_COMMON = "2********"  # DE-9IM: the interiors meet in an area (touching edges or corners do not count)


def overlapping_pairs(samples: Sequence[Sample]) -> int:
    """Pairs of shapes of different classes that share area: in a class mask one paints over the other.

    Run over the whole export before any work, so it is kept cheap: only pairs whose
    extents meet are tested, each object's geometry is built once, and the polygon pairs
    are tested in one vectorized GEOS call.
    """
    built: dict[int, shapely.Geometry | None] = {}
    pairs: list[tuple[ObjectAnnotation, ObjectAnnotation]] = []
    firsts, seconds = [], []
    by_pixels = 0
    for sample in samples:
        for first, second in _candidate_pairs(sample):
            if first.rle is not None or second.rle is not None:
                by_pixels += _pixels_overlap(first, second)
                continue
            for obj in (first, second):
                if id(obj) not in built:
                    built[id(obj)] = _geometry(obj)
            first_shape, second_shape = built[id(first)], built[id(second)]
            if first_shape is None or second_shape is None:
                by_pixels += _pixels_overlap(first, second)
                continue
            pairs.append((first, second))
            firsts.append(first_shape)
            seconds.append(second_shape)
        built.clear()  # ids are only stable while the sample's objects are
    if not firsts:
        return by_pixels
    try:
        meeting = shapely.relate_pattern(np.array(firsts), np.array(seconds), AREA_IN_COMMON)
    except shapely.errors.GEOSException:  # a topology GEOS cannot handle somewhere: pair by pair, then by pixels
        meeting = np.array(
            [
                _meet_or_pixels(first, second, first_shape, second_shape)
                for (first, second), first_shape, second_shape in zip(pairs, firsts, seconds, strict=True)
            ]
        )
    return by_pixels + int(np.count_nonzero(meeting))


def _instances_sharing_a_class(sample: Sample) -> int:
    """Shaped objects whose class another shaped object of the sample has: a class mask merges them."""
    per_class = Counter(obj.class_name for obj in sample.objects if obj.has_shape)
    return sum(count for count in per_class.values() if count > 1)


def find_losses(
    samples: Sequence[Sample],
    carried: Carried,
    overlap: OverlapPolicy,
    description: Mapping[str, str],
) -> list[Loss]:
    """Every kind of input these records will not carry, with counts (empty: nothing is lost)."""
    counts: Counter[str] = Counter()
    for sample in samples:
        for obj in sample.objects:
            if not carried.shapes and is_rotated_rectangle(obj):
                counts["rotation"] += 1
            elif obj.has_shape and not carried.shapes:
                counts["shapes"] += 1
            if obj.keypoints and not carried.keypoints:
                counts["object_keypoints"] += 1
            if obj.attributes and not carried.attributes:
                counts["object_attributes"] += 1
            if not carried.boxes and not carried.instance_masks:
                counts["boxes"] += 1
        if sample.keypoints and not carried.keypoints:
            counts["keypoints"] += len(sample.keypoints)
        if sample.attributes and not carried.attributes:
            counts["sample_attributes"] += 1
        if sample.image_labels and not carried.image_labels:
            counts["image_labels"] += len(sample.image_labels)
        if sample.segmentation is not None and not carried.class_masks:
            counts["mask_files"] += 1
        if carried.class_masks and not carried.instance_masks and not carried.polygons:
            counts["instance_identity"] += _instances_sharing_a_class(sample)

    if carried.class_masks and overlap != "combine":
        counts["overlap"] = overlapping_pairs(samples)
    relations = int(description.get("relations_ignored", "0") or 0)
    if relations:
        counts["relations"] = relations
    return [Loss(code, counts[code], _MESSAGES[code].format(count=counts[code])) for code in _ORDER if counts[code]]


_MESSAGES = {
    "rotation": "{count} rotated boxes lose their rotation: the records hold axis-aligned boxes (their extent)",
    "shapes": "{count} objects lose their shape (polygon or RLE): the records hold only their boxes",
    "boxes": "{count} objects are not written as boxes: this output holds no boxes",
    "instance_identity": "{count} objects share a class with another object of their image: the class mask "
    "merges them into one region (--instance-masks keeps each)",
    "overlap": "{count} overlapping regions of shapes of different classes are painted over in the class mask "
    "(--overlap combine keeps both)",
    "keypoints": "{count} keypoints are not written: this output holds no keypoints",
    "object_keypoints": "{count} objects lose their keypoints: this output holds no keypoints",
    "image_labels": "{count} image-level labels are not written: this output holds none",
    "mask_files": "{count} mask files are not written: this output holds no class masks",
    "object_attributes": "{count} objects lose their attributes: this output holds none (-f json keeps them)",
    "sample_attributes": "{count} images lose their attributes: this output holds none (-f json keeps them)",
    "relations": "{count} relations between regions are dropped: the sample model has no relations",
}
_ORDER = tuple(_MESSAGES)

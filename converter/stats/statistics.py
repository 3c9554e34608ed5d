"""Dataset statistics accumulated record by record, per split and per class, in bounded memory.

A conversion may write millions of records, so nothing here grows with them: every
distribution is a histogram with edges fixed once (below), every range keeps only its
count, sum, minimum and maximum, and the distinct image sizes are kept up to a cap.
`held_values()` counts the numbers held, so a test can assert exactly that.

`document()` is stats/stats.json (its readers code against these key names); `summary()`
is the short version for dataset_info.yaml. Every class appears in every split, with zeros
where it is absent, so a class missing from validation stands out.

Histograms count a value v in bin i when edges[i] <= v < edges[i + 1], the last bin also
taking v == edges[-1] (numpy.histogram's rule); `below` and `above` count values outside.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from typing import Any

from converter.core.split import SPLIT_NAMES
from converter.stats.facts import ObjectFacts, RecordFacts, ShapeFacts

FORMAT = 1

OBJECTS_PER_IMAGE_EDGES: tuple[float, ...] = (*range(22), 30, 50, 100, 1000)
"""One bin per count up to 20, then 21-29, 30-49, 50-99, 100-1000; `above`: more than 1000."""

AREA_EDGES: tuple[float, ...] = tuple(float(2**power) for power in range(27))
"""Pixels, one bin per power of two from 1 to 2**26 (an 8192 x 8192 image)."""

ASPECT_EDGES: tuple[float, ...] = tuple(2.0 ** (step / 2) for step in range(-8, 9))
"""Box width / height from 1/16 to 16, half a power of two per bin (1 is an edge: square boxes start a bin)."""

COMPACTNESS_EDGES: tuple[float, ...] = tuple(step / 20 for step in range(21))
ANGLE_EDGES: tuple[float, ...] = tuple(float(degrees) for degrees in range(0, 181, 10))

CENTROID_GRID = 8  # cells per side of the normalized image, rows from the top
MAX_IMAGE_SIZES = 1000  # distinct (width, height) kept; later new sizes are only counted
COCO_SMALL, COCO_MEDIUM = 32**2, 96**2  # COCO's area buckets: below 32², below 96², else large
IGNORE_CLASS_ID = 255


class _Histogram:
    __slots__ = ("above", "below", "counts", "edges")

    def __init__(self, edges: tuple[float, ...]) -> None:
        self.edges = edges
        self.counts = [0] * (len(edges) - 1)
        self.below = 0
        self.above = 0

    def add(self, value: float) -> None:
        edges = self.edges
        if value < edges[0]:
            self.below += 1
        elif value > edges[-1]:
            self.above += 1
        else:
            self.counts[min(bisect_right(edges, value), len(self.counts)) - 1] += 1

    def held_values(self) -> int:
        return len(self.counts) + 2

    def document(self) -> dict[str, Any]:
        return {"edges": list(self.edges), "counts": list(self.counts), "below": self.below, "above": self.above}


class _Range:
    """Count, sum, minimum and maximum of a stream of values: its mean and extremes, exactly."""

    __slots__ = ("count", "maximum", "minimum", "total")

    def __init__(self) -> None:
        self.count = 0
        self.total: float = 0
        self.minimum: float | None = None
        self.maximum: float | None = None

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value
        if self.minimum is None or value < self.minimum:
            self.minimum = value
        if self.maximum is None or value > self.maximum:
            self.maximum = value

    def held_values(self) -> int:
        return 4

    def document(self) -> dict[str, Any]:
        return {"mean": self.total / self.count if self.count else None, "min": self.minimum, "max": self.maximum}


class _BoxStats:
    """Box area and aspect histograms and COCO's size buckets (by the object's area, as COCO evaluates)."""

    __slots__ = ("area", "aspect", "sizes")

    def __init__(self) -> None:
        self.area = _Histogram(AREA_EDGES)
        self.aspect = _Histogram(ASPECT_EDGES)
        self.sizes = [0, 0, 0]  # small, medium, large

    def add(self, obj: ObjectFacts, box_area: float, aspect: float) -> None:
        self.area.add(box_area)
        self.aspect.add(aspect)
        self.sizes[0 if obj.area < COCO_SMALL else 1 if obj.area < COCO_MEDIUM else 2] += 1

    def held_values(self) -> int:
        return self.area.held_values() + self.aspect.held_values() + len(self.sizes)

    def document(self) -> dict[str, Any]:
        small, medium, large = self.sizes
        return {
            "box_area": self.area.document(),
            "box_aspect": self.aspect.document(),
            "box_sizes": {"small": small, "medium": medium, "large": large},
        }


class _ShapeStats:
    """The distributions of one class's object shapes (polygons, or masks traced into polygons)."""

    __slots__ = ("angle", "area", "centroid_x", "centroid_y", "compactness", "count", "grid", "long", "short")

    def __init__(self) -> None:
        self.count = 0
        self.area = _Histogram(AREA_EDGES)
        self.compactness = _Histogram(COMPACTNESS_EDGES)
        self.centroid_x: float = 0
        self.centroid_y: float = 0
        self.grid = [0] * (CENTROID_GRID * CENTROID_GRID)
        self.angle = _Histogram(ANGLE_EDGES)
        self.long = _Range()
        self.short = _Range()

    def add(self, shape: ShapeFacts) -> None:
        self.count += 1
        self.area.add(shape.area)
        self.compactness.add(shape.compactness)
        x, y = shape.centroid
        self.centroid_x += x
        self.centroid_y += y
        column = min(max(int(x * CENTROID_GRID), 0), CENTROID_GRID - 1)  # a shape reaching outside: its edge cell
        row = min(max(int(y * CENTROID_GRID), 0), CENTROID_GRID - 1)
        self.grid[row * CENTROID_GRID + column] += 1
        self.angle.add(shape.rotated_angle)
        self.long.add(shape.rotated_long)
        self.short.add(shape.rotated_short)

    def held_values(self) -> int:
        histograms = self.area.held_values() + self.compactness.held_values() + self.angle.held_values()
        return 3 + len(self.grid) + histograms + self.long.held_values() + self.short.held_values()

    def document(self) -> dict[str, Any]:
        mean = [self.centroid_x / self.count, self.centroid_y / self.count] if self.count else None
        rows = [self.grid[row * CENTROID_GRID : (row + 1) * CENTROID_GRID] for row in range(CENTROID_GRID)]
        return {
            "count": self.count,
            "area": self.area.document(),
            "compactness": self.compactness.document(),
            "centroid": {"mean": mean, "grid": rows},
            "rotated_box": {
                "angle": self.angle.document(),
                "long_side": self.long.document(),
                "short_side": self.short.document(),
            },
        }


class _ClassStats:
    __slots__ = ("boxes", "images", "mask_pixels", "objects", "shapes")

    def __init__(self) -> None:
        self.images = 0
        self.objects = 0
        self.mask_pixels = 0
        self.boxes = _BoxStats()
        self.shapes = _ShapeStats()

    def held_values(self) -> int:
        return 3 + self.boxes.held_values() + self.shapes.held_values()

    def document(self, mask_total: int) -> dict[str, Any]:
        return {
            "images": self.images,
            "objects": self.objects,
            "objects_per_image": self.objects / self.images if self.images else 0.0,
            "mask_pixel_share": self.mask_pixels / mask_total if mask_total else 0.0,
            **self.boxes.document(),
            "polygons": self.shapes.document(),
        }


class _SplitStats:
    __slots__ = (
        "boxes",
        "classes",
        "height",
        "images",
        "keypoints",
        "mask_ignore",
        "mask_total",
        "objects",
        "objects_per_image",
        "other_sizes",
        "sizes",
        "width",
    )

    def __init__(self, class_count: int) -> None:
        self.images = 0
        self.objects = 0
        self.keypoints = 0
        self.width = _Range()
        self.height = _Range()
        self.sizes: dict[tuple[int, int], int] = {}
        self.other_sizes = 0
        self.objects_per_image = _Histogram(OBJECTS_PER_IMAGE_EDGES)
        self.boxes = _BoxStats()
        self.mask_total = 0
        self.mask_ignore = 0
        self.classes = [_ClassStats() for _ in range(class_count)]

    def held_values(self) -> int:
        return (
            6  # images, objects, keypoints, other_sizes, mask_total, mask_ignore
            + self.width.held_values()
            + self.height.held_values()
            + 3 * len(self.sizes)
            + self.objects_per_image.held_values()
            + self.boxes.held_values()
            + sum(stats.held_values() for stats in self.classes)
        )


class Statistics:
    """Per-split, per-class statistics of the records a conversion writes (see the module's docstring).

    Class id i is `class_names[i - 1]`. Ids without a name (`--overlap combine`'s combined
    classes in masks) and 255 count only towards the mask total, so named shares stay shares
    of the whole mask; 255's share is the split's `mask_ignore_share`.
    """

    def __init__(self, class_names: Sequence[str]) -> None:
        self._class_names = tuple(class_names)
        self._splits: dict[str, _SplitStats] = {}

    def add(self, split: str, facts: RecordFacts) -> None:
        """Count one written record of `split`."""
        stats = self._splits.get(split)
        if stats is None:
            stats = self._splits[split] = _SplitStats(len(self._class_names))
        classes = stats.classes
        stats.images += 1
        stats.objects += len(facts.objects)
        stats.keypoints += facts.keypoints
        stats.width.add(facts.width)
        stats.height.add(facts.height)
        size = (facts.width, facts.height)
        if size in stats.sizes:
            stats.sizes[size] += 1
        elif len(stats.sizes) < MAX_IMAGE_SIZES:
            stats.sizes[size] = 1
        else:
            stats.other_sizes += 1
        stats.objects_per_image.add(len(facts.objects))
        for obj in facts.objects:
            box_area = obj.box_width * obj.box_height
            aspect = obj.box_width / obj.box_height if obj.box_height > 0 else float("inf")
            stats.boxes.add(obj, box_area, aspect)
            if 0 < obj.class_id <= len(classes):
                class_stats = classes[obj.class_id - 1]
                class_stats.objects += 1
                class_stats.boxes.add(obj, box_area, aspect)
                if obj.shape is not None:
                    class_stats.shapes.add(obj.shape)
        for class_id in facts.class_ids:
            if 0 < class_id <= len(classes):
                classes[class_id - 1].images += 1
        stats.mask_total += facts.mask_total_pixels
        for class_id, pixels in facts.mask_pixels:
            if class_id == IGNORE_CLASS_ID:
                stats.mask_ignore += pixels
            elif 0 < class_id <= len(classes):
                classes[class_id - 1].mask_pixels += pixels

    def held_values(self) -> int:
        """How many numbers this object holds: constant once every split, class and image size has been seen."""
        return sum(stats.held_values() for stats in self._splits.values())

    def document(self) -> dict[str, Any]:
        """The content of stats/stats.json (plain JSON types; means are null where nothing was counted)."""
        return {
            "format": FORMAT,
            "classes": list(self._class_names),
            "splits": {name: self._split_document(self._splits[name]) for name in self._split_order()},
        }

    def summary(self) -> dict[str, Any]:
        """A few numbers per split and per class, for dataset_info.yaml (means rounded for reading)."""
        splits = self._split_order()
        summary: dict[str, Any] = {"splits": {}, "classes": {}}
        for name in splits:
            stats = self._splits[name]
            small, medium, large = stats.boxes.sizes
            summary["splits"][name] = {
                "images": stats.images,
                "objects": stats.objects,
                "objects_per_image": round(stats.objects / stats.images, 2) if stats.images else 0.0,
                "image_width": _rounded(stats.width.document()),
                "image_height": _rounded(stats.height.document()),
                "box_sizes": {"small": small, "medium": medium, "large": large},
            }
        for position, class_name in enumerate(self._class_names):
            summary["classes"][class_name] = {
                name: {
                    "images": self._splits[name].classes[position].images,
                    "objects": self._splits[name].classes[position].objects,
                }
                for name in splits
            }
        return summary

    def _split_order(self) -> list[str]:
        """train, validation, test, then any other split by name: the same order whatever the records' order."""
        return sorted(self._splits, key=lambda name: (SPLIT_NAMES.index(name) if name in SPLIT_NAMES else 3, name))

    def _split_document(self, stats: _SplitStats) -> dict[str, Any]:
        sizes = sorted(stats.sizes.items(), key=lambda item: (-item[1], item[0]))
        return {
            "images": stats.images,
            "objects": stats.objects,
            "keypoints": stats.keypoints,
            "image_width": stats.width.document(),
            "image_height": stats.height.document(),
            "image_sizes": {
                "sizes": [[width, height, count] for (width, height), count in sizes],
                "other": stats.other_sizes,
            },
            "objects_per_image": stats.objects_per_image.document(),
            **stats.boxes.document(),
            "mask_ignore_share": stats.mask_ignore / stats.mask_total if stats.mask_total else 0.0,
            "classes": {
                name: class_stats.document(stats.mask_total)
                for name, class_stats in zip(self._class_names, stats.classes, strict=True)
            },
        }


def _rounded(values: dict[str, Any]) -> dict[str, Any]:
    mean = values["mean"]
    return {**values, "mean": round(mean, 1) if mean is not None else None}

"""Dataset statistics accumulated record by record, per split and per class, in bounded memory.

A conversion may write millions of records, so nothing here grows with them: every
distribution is a histogram with edges fixed once (below), every range keeps only its
count, sum, minimum and maximum, and the distinct image sizes are kept up to a cap.
`held_values()` counts the numbers held, so a test can assert exactly that.

Records are not counted one by one: `Statistics.add` only keeps each record's facts, and
every `PENDING_RECORDS` records (or `PENDING_OBJECTS` objects) of a split are counted
together, a few NumPy calls per histogram for all their objects and classes at once. A
conversion calls `add` for every record in its single parent process, so a per-object
Python loop there would slow every conversion (see `converter.stats.facts`). The counts
are those of one record at a time: the same bins, and sums taken in the same order.

`document()` is stats/stats.json (its readers code against these key names); `summary()`
is the short version for dataset_info.yaml. Every class appears in every split, with zeros
where it is absent, so a class missing from validation stands out.

Histograms count a value v in bin i when edges[i] <= v < edges[i + 1], the last bin also
taking v == edges[-1] (numpy.histogram's rule); `below` and `above` count values outside.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from itertools import chain
from typing import Any

import numpy as np
import numpy.typing as npt

from converter.core.split import SPLIT_NAMES
from converter.stats.facts import OBJECT_FIELDS, SHAPE_FIELDS, RecordFacts

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

PENDING_RECORDS = 1024  # records of a split kept before they are counted
PENDING_OBJECTS = 8192  # objects likewise: the pending records hold at most this many plus one record's
PENDING_VALUES = PENDING_OBJECTS * (OBJECT_FIELDS + SHAPE_FIELDS) + PENDING_RECORDS * 8  # held_values' bound

# The columns of `RecordFacts.boxes` and `RecordFacts.shapes`, in the order `converter.stats.facts` packs them.
_CLASS, _BOX_WIDTH, _BOX_HEIGHT, _OBJECT_AREA, _HAS_SHAPE = range(OBJECT_FIELDS)
_AREA, _PERIMETER, _COMPACTNESS, _CENTROID_X, _CENTROID_Y, _ANGLE, _LONG, _SHORT = range(SHAPE_FIELDS)

Rows = npt.NDArray[np.int64]
Values = npt.NDArray[np.float64]


class _Histograms:
    """One histogram over fixed edges per row: row 0 the split's, row i class i where a table has both.

    `table[row]` holds the values below the first edge, each bin's count, then the values
    above the last edge.
    """

    __slots__ = ("edges", "table")

    def __init__(self, edges: tuple[float, ...], rows: int) -> None:
        self.edges = edges
        self.table = np.zeros((rows, len(edges) + 1), dtype=np.int64)

    def add(self, rows: Rows, values: Values) -> None:
        """Count `values[i]` in the histogram of row `rows[i]`."""
        edges = np.asarray(self.edges, dtype=np.float64)
        slots = np.minimum(np.searchsorted(edges, values, side="right"), len(edges) - 1)  # v == edges[-1]: last bin
        slots[values > edges[-1]] = len(edges)
        width = self.table.shape[1]
        self.table += np.bincount(rows * width + slots, minlength=self.table.size).reshape(self.table.shape)

    def held_values(self) -> int:
        return int(self.table.size)

    def document(self, row: int) -> dict[str, Any]:
        below, *counts, above = self.table[row].tolist()
        return {"edges": list(self.edges), "counts": counts, "below": below, "above": above}


class _Ranges:
    """Count, sum, minimum and maximum of a stream of values per row: its mean and extremes, exactly.

    Sums are taken value by value in the order added (`numpy.add.at`), as a running total would.
    """

    __slots__ = ("count", "maximum", "minimum", "total")

    def __init__(self, rows: int, integers: bool) -> None:
        dtype = np.int64 if integers else np.float64
        low, high = (np.iinfo(np.int64).min, np.iinfo(np.int64).max) if integers else (-np.inf, np.inf)
        self.count = np.zeros(rows, dtype=np.int64)
        self.total = np.zeros(rows, dtype=dtype)
        self.minimum = np.full(rows, high, dtype=dtype)
        self.maximum = np.full(rows, low, dtype=dtype)

    def add(self, rows: Rows, values: npt.NDArray[Any]) -> None:
        self.count += np.bincount(rows, minlength=len(self.count))
        np.add.at(self.total, rows, values)
        np.fmin.at(self.minimum, rows, values)
        np.fmax.at(self.maximum, rows, values)

    def held_values(self) -> int:
        return 4 * len(self.count)

    def document(self, row: int) -> dict[str, Any]:
        count = int(self.count[row])
        if not count:
            return {"mean": None, "min": None, "max": None}
        return {
            "mean": self.total[row].item() / count,
            "min": self.minimum[row].item(),
            "max": self.maximum[row].item(),
        }


class _SplitStats:
    """One split's statistics; rows of the per-class tables are class ids (row 0: the split, where it has one)."""

    __slots__ = (
        "box_area",
        "box_aspect",
        "box_sizes",
        "centroid_x",
        "centroid_y",
        "class_images",
        "class_objects",
        "compactness",
        "grid",
        "height",
        "images",
        "keypoints",
        "long",
        "mask_ignore",
        "mask_pixels",
        "mask_total",
        "objects_per_image",
        "other_sizes",
        "pending",
        "pending_objects",
        "rotated_angle",
        "shape_area",
        "shape_count",
        "short",
        "sizes",
        "width",
    )

    def __init__(self, class_count: int) -> None:
        rows = class_count + 1
        self.pending: list[RecordFacts] = []
        self.pending_objects = 0
        self.images = 0
        self.keypoints = 0
        self.width = _Ranges(1, integers=True)
        self.height = _Ranges(1, integers=True)
        self.sizes: dict[tuple[int, int], int] = {}
        self.other_sizes = 0
        self.objects_per_image = _Histograms(OBJECTS_PER_IMAGE_EDGES, 1)
        self.mask_total = 0
        self.mask_ignore = 0
        self.class_images = np.zeros(rows, dtype=np.int64)
        self.class_objects = np.zeros(rows, dtype=np.int64)  # row 0: all the split's objects, named or not
        self.mask_pixels = np.zeros(rows, dtype=np.int64)
        self.box_area = _Histograms(AREA_EDGES, rows)
        self.box_aspect = _Histograms(ASPECT_EDGES, rows)
        self.box_sizes = np.zeros((rows, 3), dtype=np.int64)  # small, medium, large
        self.shape_count = np.zeros(rows, dtype=np.int64)
        self.shape_area = _Histograms(AREA_EDGES, rows)
        self.compactness = _Histograms(COMPACTNESS_EDGES, rows)
        self.centroid_x = np.zeros(rows, dtype=np.float64)
        self.centroid_y = np.zeros(rows, dtype=np.float64)
        self.grid = np.zeros((rows, CENTROID_GRID * CENTROID_GRID), dtype=np.int64)
        self.rotated_angle = _Histograms(ANGLE_EDGES, rows)
        self.long = _Ranges(rows, integers=False)
        self.short = _Ranges(rows, integers=False)

    def add(self, facts: RecordFacts) -> None:
        self.pending.append(facts)
        self.pending_objects += len(facts.boxes) // OBJECT_FIELDS
        if len(self.pending) >= PENDING_RECORDS or self.pending_objects >= PENDING_OBJECTS:
            self.count_pending()

    def count_pending(self) -> None:
        """Count the pending records, as if each had been counted when it was added."""
        pending, self.pending, self.pending_objects = self.pending, [], 0
        if not pending:
            return
        self.images += len(pending)
        self.keypoints += sum(facts.keypoints for facts in pending)
        single = np.zeros(len(pending), dtype=np.int64)
        self.width.add(single, np.array([facts.width for facts in pending], dtype=np.int64))
        self.height.add(single, np.array([facts.height for facts in pending], dtype=np.int64))
        self._count_sizes(Counter((facts.width, facts.height) for facts in pending))
        objects = [len(facts.boxes) // OBJECT_FIELDS for facts in pending]
        self.objects_per_image.add(single, np.array(objects, dtype=np.float64))
        class_ids = np.fromiter(chain.from_iterable(facts.class_ids for facts in pending), dtype=np.int64)
        self.class_images += np.bincount(class_ids[self._named(class_ids)], minlength=len(self.class_images))
        self._count_masks(pending)
        boxes = np.fromiter(chain.from_iterable(facts.boxes for facts in pending), dtype=np.float64)
        shapes = np.fromiter(chain.from_iterable(facts.shapes for facts in pending), dtype=np.float64)
        self._count_objects(boxes.reshape(-1, OBJECT_FIELDS), shapes.reshape(-1, SHAPE_FIELDS))

    def _named(self, class_ids: Rows) -> npt.NDArray[np.bool_]:
        """Which ids are those of a named class (row of its own); the rest count only towards the split."""
        return (class_ids > 0) & (class_ids < len(self.class_images))

    def _count_sizes(self, sizes: Counter[tuple[int, int]]) -> None:
        """In order of first appearance: a new size is held while fewer than the cap are, else only counted."""
        for size, count in sizes.items():
            if size in self.sizes:
                self.sizes[size] += count
            elif len(self.sizes) < MAX_IMAGE_SIZES:
                self.sizes[size] = count
            else:
                self.other_sizes += count

    def _count_masks(self, pending: Sequence[RecordFacts]) -> None:
        self.mask_total += sum(facts.mask_total_pixels for facts in pending)
        pixels = np.array([pair for facts in pending for pair in facts.mask_pixels], dtype=np.int64).reshape(-1, 2)
        class_ids, counts = pixels[:, 0], pixels[:, 1]
        self.mask_ignore += int(counts[class_ids == IGNORE_CLASS_ID].sum())
        named = self._named(class_ids)
        np.add.at(self.mask_pixels, class_ids[named], counts[named])

    def _count_objects(self, boxes: Values, shapes: Values) -> None:
        class_ids = boxes[:, _CLASS].astype(np.int64)
        named = self._named(class_ids)
        rows = np.concatenate((np.zeros(len(class_ids), dtype=np.int64), class_ids[named]))  # the split, the class

        def twice(values: npt.NDArray[Any]) -> npt.NDArray[Any]:
            return np.concatenate((values, values[named]))

        width, height = boxes[:, _BOX_WIDTH], boxes[:, _BOX_HEIGHT]
        aspect = np.divide(width, height, out=np.full(len(width), np.inf), where=height > 0)
        sizes = np.searchsorted(np.array([COCO_SMALL, COCO_MEDIUM], dtype=np.float64), boxes[:, _OBJECT_AREA], "right")
        self.class_objects += np.bincount(rows, minlength=len(self.class_objects))
        self.box_area.add(rows, twice(width * height))
        self.box_aspect.add(rows, twice(aspect))
        buckets = np.bincount(rows * 3 + twice(sizes), minlength=self.box_sizes.size)
        self.box_sizes += buckets.reshape(self.box_sizes.shape)

        shape_ids = class_ids[boxes[:, _HAS_SHAPE] != 0]
        shape_named = self._named(shape_ids)
        rows, shapes = shape_ids[shape_named], shapes[shape_named]
        self.shape_count += np.bincount(rows, minlength=len(self.shape_count))
        self.shape_area.add(rows, shapes[:, _AREA])
        self.compactness.add(rows, shapes[:, _COMPACTNESS])
        x, y = shapes[:, _CENTROID_X], shapes[:, _CENTROID_Y]
        np.add.at(self.centroid_x, rows, x)
        np.add.at(self.centroid_y, rows, y)
        last = CENTROID_GRID - 1  # a shape reaching outside the image: its edge cell
        column = np.clip(np.trunc(x * CENTROID_GRID), 0, last).astype(np.int64)
        row = np.clip(np.trunc(y * CENTROID_GRID), 0, last).astype(np.int64)
        np.add.at(self.grid, (rows, row * CENTROID_GRID + column), 1)
        self.rotated_angle.add(rows, shapes[:, _ANGLE])
        self.long.add(rows, shapes[:, _LONG])
        self.short.add(rows, shapes[:, _SHORT])

    def held_values(self) -> int:
        tables = (self.objects_per_image, self.box_area, self.box_aspect, self.shape_area, self.compactness)
        arrays = (self.class_images, self.class_objects, self.mask_pixels, self.box_sizes, self.shape_count)
        return (
            6  # images, keypoints, other_sizes, mask_total, mask_ignore, pending_objects
            + PENDING_VALUES
            + self.width.held_values()
            + self.height.held_values()
            + 3 * len(self.sizes)
            + sum(table.held_values() for table in (*tables, self.rotated_angle))
            + sum(int(array.size) for array in (*arrays, self.centroid_x, self.centroid_y, self.grid))
            + self.long.held_values()
            + self.short.held_values()
        )

    def boxes_document(self, row: int) -> dict[str, Any]:
        """Box area and aspect histograms and COCO's size buckets (by the object's area, as COCO evaluates)."""
        small, medium, large = self.box_sizes[row].tolist()
        return {
            "box_area": self.box_area.document(row),
            "box_aspect": self.box_aspect.document(row),
            "box_sizes": {"small": small, "medium": medium, "large": large},
        }

    def class_document(self, class_id: int) -> dict[str, Any]:
        images, objects = int(self.class_images[class_id]), int(self.class_objects[class_id])
        mask_pixels = int(self.mask_pixels[class_id])
        return {
            "images": images,
            "objects": objects,
            "objects_per_image": objects / images if images else 0.0,
            "mask_pixel_share": mask_pixels / self.mask_total if self.mask_total else 0.0,
            **self.boxes_document(class_id),
            "polygons": self.shapes_document(class_id),
        }

    def shapes_document(self, class_id: int) -> dict[str, Any]:
        """The distributions of one class's object shapes (polygons, or masks traced into polygons)."""
        count = int(self.shape_count[class_id])
        mean = [self.centroid_x[class_id].item() / count, self.centroid_y[class_id].item() / count] if count else None
        return {
            "count": count,
            "area": self.shape_area.document(class_id),
            "compactness": self.compactness.document(class_id),
            "centroid": {"mean": mean, "grid": self.grid[class_id].reshape(CENTROID_GRID, CENTROID_GRID).tolist()},
            "rotated_box": {
                "angle": self.rotated_angle.document(class_id),
                "long_side": self.long.document(class_id),
                "short_side": self.short.document(class_id),
            },
        }


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
        """Count one written record of `split` (see the module's docstring for when)."""
        stats = self._splits.get(split)
        if stats is None:
            stats = self._splits[split] = _SplitStats(len(self._class_names))
        stats.add(facts)

    def held_values(self) -> int:
        """How many numbers this object holds: constant once every split, class and image size has been seen."""
        return sum(stats.held_values() for stats in self._counted().values())

    def document(self) -> dict[str, Any]:
        """The content of stats/stats.json (plain JSON types; means are null where nothing was counted)."""
        splits = self._counted()
        return {
            "format": FORMAT,
            "classes": list(self._class_names),
            "splits": {name: self._split_document(splits[name]) for name in self._split_order()},
        }

    def summary(self) -> dict[str, Any]:
        """A few numbers per split and per class, for dataset_info.yaml (means rounded for reading)."""
        splits = self._counted()
        order = self._split_order()
        summary: dict[str, Any] = {"splits": {}, "classes": {}}
        for name in order:
            stats = splits[name]
            small, medium, large = stats.box_sizes[0].tolist()
            objects = int(stats.class_objects[0])
            summary["splits"][name] = {
                "images": stats.images,
                "objects": objects,
                "objects_per_image": round(objects / stats.images, 2) if stats.images else 0.0,
                "image_width": _rounded(stats.width.document(0)),
                "image_height": _rounded(stats.height.document(0)),
                "box_sizes": {"small": small, "medium": medium, "large": large},
            }
        for class_id, class_name in enumerate(self._class_names, start=1):
            summary["classes"][class_name] = {
                name: {
                    "images": int(splits[name].class_images[class_id]),
                    "objects": int(splits[name].class_objects[class_id]),
                }
                for name in order
            }
        return summary

    def _counted(self) -> dict[str, _SplitStats]:
        """The splits, with every record added so far counted."""
        for stats in self._splits.values():
            stats.count_pending()
        return self._splits

    def _split_order(self) -> list[str]:
        """train, validation, test, then any other split by name: the same order whatever the records' order."""
        return sorted(self._splits, key=lambda name: (SPLIT_NAMES.index(name) if name in SPLIT_NAMES else 3, name))

    def _split_document(self, stats: _SplitStats) -> dict[str, Any]:
        sizes = sorted(stats.sizes.items(), key=lambda item: (-item[1], item[0]))
        return {
            "images": stats.images,
            "objects": int(stats.class_objects[0]),
            "keypoints": stats.keypoints,
            "image_width": stats.width.document(0),
            "image_height": stats.height.document(0),
            "image_sizes": {
                "sizes": [[width, height, count] for (width, height), count in sizes],
                "other": stats.other_sizes,
            },
            "objects_per_image": stats.objects_per_image.document(0),
            **stats.boxes_document(0),
            "mask_ignore_share": stats.mask_ignore / stats.mask_total if stats.mask_total else 0.0,
            "classes": {
                name: stats.class_document(class_id) for class_id, name in enumerate(self._class_names, start=1)
            },
        }


def _rounded(values: dict[str, Any]) -> dict[str, Any]:
    mean = values["mean"]
    return {**values, "mean": round(mean, 1) if mean is not None else None}

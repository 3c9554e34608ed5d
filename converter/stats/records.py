"""One record as written, in a form every output format can be read back into.

Statistics and previews look at what training will see, not at the export: a record is
described by what its format stores (normalized boxes, class ids, masks as PNG bytes),
whether it comes straight from the encoder during a conversion or is read back from a
dataset on disk (`dataset-converter stats OUT`).
"""

from __future__ import annotations

from dataclasses import dataclass

from converter.core.sample import Polygon

BoxXYXY = tuple[float, float, float, float]


@dataclass(frozen=True, slots=True)
class WrittenKeypoint:
    """A point in normalized [0, 1] coordinates; `visibility` is COCO's (0 not labelled, 1 hidden, 2 visible)."""

    name: str
    x: float
    y: float
    visibility: int = 2


@dataclass(frozen=True, slots=True)
class WrittenObject:
    """One object of a record: its class, its normalized box, and the shape the record carries, if any.

    `polygons` are in displayed pixels, where the record keeps them (or its source's, during a
    conversion); `mask_png` is an instance mask at the image's size, where the record has one.
    `area` is the record's own object area in pixels (COCO's buckets), else None.
    """

    class_id: int
    class_name: str
    box: BoxXYXY  # x_min, y_min, x_max, y_max, normalized to [0, 1]
    polygons: tuple[Polygon, ...] = ()
    mask_png: bytes | None = None
    area: float | None = None
    keypoints: tuple[WrittenKeypoint, ...] = ()


@dataclass(frozen=True, slots=True)
class WrittenRecord:
    """One sample as its record holds it.

    `image_bytes` is None where only the numbers are needed (statistics during a conversion);
    `class_mask_png` is the single-channel class mask (0 background, ids from 1, 255 ignore).
    Class ids count from 1 in every format here, whatever the format's own offset.
    """

    key: str
    width: int
    height: int
    objects: tuple[WrittenObject, ...] = ()
    image_labels: tuple[tuple[int, str], ...] = ()
    keypoints: tuple[tuple[int, str, WrittenKeypoint], ...] = ()  # image-level points: class id, class name, point
    class_mask_png: bytes | None = None
    class_mask_pixels: tuple[tuple[int, int], ...] | None = None  # (class id, pixels), where known without decoding
    image_bytes: bytes | None = None

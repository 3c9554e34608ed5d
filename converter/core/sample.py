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
from dataclasses import dataclass, field
from pathlib import Path

from converter.errors import SampleLocation

BACKGROUND = None
"""The class of mask pixels that belong to no class (written as 0)."""


def _check_finite(name: str, values: tuple[float, ...]) -> None:
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"{name} must be finite numbers, got {values!r}")


@dataclass(frozen=True)
class ObjectAnnotation:
    """One annotated object.

    `bbox_xyxy` is `(x_min, y_min, x_max, y_max)` in displayed pixels, as the source
    gave it: it may reach outside the image or be degenerate; the materializer clips it
    and reports what it changed, so nothing is altered silently here.
    """

    class_name: str
    bbox_xyxy: tuple[float, float, float, float]
    is_crowd: bool = False
    attributes: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not self.class_name:
            raise ValueError("class_name must not be empty")
        _check_finite("bbox_xyxy", self.bbox_xyxy)


@dataclass(frozen=True)
class SegmentationMask:
    """A class-index mask stored in a file, with the mapping from its pixels to classes.

    `index_to_class` maps single-channel or palette index values; `color_to_class` maps
    RGB colours for masks saved as colour images. A class of `None` is background. A
    pixel whose value is in neither mapping makes the sample fail: an unknown colour is
    never turned silently into background.
    """

    path: Path
    index_to_class: tuple[tuple[int, str | None], ...]
    color_to_class: tuple[tuple[tuple[int, int, int], str | None], ...] = ()

    def class_names(self) -> tuple[str, ...]:
        """The non-background classes the mask can contain, in mapping order."""
        names = [name for _, name in self.index_to_class] + [name for _, name in self.color_to_class]
        return tuple(dict.fromkeys(name for name in names if name is not None))


@dataclass(frozen=True)
class Sample:
    """One image and everything annotated on it.

    `key` is the stable identity used for the split hash: the same image must get the
    same key on every run (for a manifest, its `source-ref`). `declared_size` is the
    `(width, height)` the annotation tool recorded, if any; annotations are in that frame.
    """

    key: str
    location: SampleLocation
    image_path: Path
    image_name: str
    declared_size: tuple[int, int] | None = None
    objects: tuple[ObjectAnnotation, ...] = ()
    image_labels: tuple[str, ...] = ()
    segmentation: SegmentationMask | None = None
    attributes: tuple[tuple[str, str], ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.key:
            raise ValueError(f"sample key must not be empty ({self.location})")
        if self.declared_size is not None and min(self.declared_size) <= 0:
            raise ValueError(f"declared_size must be positive, got {self.declared_size!r}")

    def class_names(self) -> tuple[str, ...]:
        """Every class the sample refers to, in first-seen order."""
        names: list[str] = [obj.class_name for obj in self.objects]
        names.extend(self.image_labels)
        if self.segmentation is not None:
            names.extend(self.segmentation.class_names())
        return tuple(dict.fromkeys(names))


@dataclass(frozen=True)
class SkippedSample:
    """An input sample the source could not turn into a `Sample`, and why."""

    location: SampleLocation
    code: str
    reason: str


@dataclass(frozen=True)
class SourceContents:
    """Everything a source read: its samples, what it had to skip, and its class order.

    `native_class_order` is the order the export itself implies (for example the label
    ids of a labelling job); it becomes the class list unless the user pins one.
    """

    samples: tuple[Sample, ...]
    skipped: tuple[SkippedSample, ...]
    native_class_order: tuple[str, ...]
    description: dict[str, str] = field(default_factory=dict)

"""Inputs shared by the sink tests, and what every format must give back for them.

Each `*_input` builds a small Ground Truth export with tests/builders.py and records, per
image file name, what any output format must hold for it: the image's exact bytes, its
boxes in displayed pixels (clipped to the image, as the converter clips them), its
image-level labels, and its class mask in Ground Truth indices. The tests read every
format back with nothing of the converter's own code and compare with these.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from builders import (
    BUCKET,
    Export,
    GtBox,
    classification_line,
    convert,
    detection_export,
    multilabel_line,
    segmentation_line,
    write_palette_mask,
)

WIDTH, HEIGHT = 64, 48
BoxPixels = tuple[float, float, float, float]

SEGMENTATION_COLORS: dict[int, tuple[str, str]] = {  # Ground Truth index -> (class, colour); 0 is background
    0: ("BACKGROUND", "#ffffff"),
    1: ("road", "#1f77b4"),
    2: ("car", "#ff7f0e"),
    3: ("tree", "#2ca02c"),
}


@dataclass(frozen=True)
class Expected:
    """What one image must come out as, in any format."""

    image_bytes: bytes
    boxes: tuple[tuple[str, BoxPixels], ...] = ()  # (class name, (x_min, y_min, x_max, y_max) pixels), in order
    labels: tuple[str, ...] = ()
    gt_mask: npt.NDArray[np.uint8] | None = None  # Ground Truth indices (SEGMENTATION_COLORS)

    def class_mask(self, classes: Sequence[str]) -> npt.NDArray[np.uint8]:
        """The mask in output class ids: 0 background, then positions in `classes` from 1."""
        assert self.gt_mask is not None
        lookup = np.zeros(256, dtype=np.uint8)
        for index, (name, _) in SEGMENTATION_COLORS.items():
            lookup[index] = 0 if index == 0 else classes.index(name) + 1
        mask: npt.NDArray[np.uint8] = lookup[self.gt_mask]
        return mask


@dataclass
class Input:
    """An export, written, and what each of its images (by file name) must come out as."""

    export: Export
    expected: dict[str, Expected] = field(default_factory=dict)

    def convert(self, output: Path, *options: str | Path) -> Any:
        """Run the CLI on the export; returns the result (the caller checks the exit code)."""
        return convert("-a", self.export.manifest, "-i", self.export.images, "-o", output, *options)


def _name(reference: str) -> str:
    return reference.rsplit("/", 1)[-1]


def _clipped(box: GtBox) -> BoxPixels:
    return (
        max(box.left, 0.0),
        max(box.top, 0.0),
        min(box.left + box.width, WIDTH),
        min(box.top + box.height, HEIGHT),
    )


def detection_input(root: Path, count: int = 8) -> Input:
    """`count` images with boxes of `cat` and `dog`, one box reaching past the image, and a negative image."""
    export = detection_export(root, count)
    export.add_detection("reaching-out.jpg", [GtBox(0, 50.5, 40.75, 30, 20)], {0: "cat"})  # clipped to 64 x 48
    export.add_detection("negative.jpg", [], {})
    export.write()
    result = Input(export)
    for line in export.lines:
        assert not isinstance(line, str)
        class_map = line["bbox-metadata"]["class-map"]
        boxes = tuple(
            (
                class_map[str(box["class_id"])],
                _clipped(GtBox(box["class_id"], box["left"], box["top"], box["width"], box["height"])),
            )
            for box in line["bbox"]["annotations"]
        )
        reference = line["source-ref"]
        result.expected[_name(reference)] = Expected(export.image_bytes[reference], boxes=boxes)
    return result


def _gt_indices(seed: int, values: Sequence[int]) -> npt.NDArray[np.uint8]:
    """8 x 8 pixel blocks of Ground Truth indices, every listed value present."""
    blocks = np.random.default_rng(seed).choice(np.array(values, dtype=np.uint8), size=(HEIGHT // 8, WIDTH // 8))
    blocks.flat[: len(values)] = values
    return np.kron(blocks, np.ones((8, 8), dtype=np.uint8))


def segmentation_input(root: Path) -> Input:
    """Palette-PNG masks (one all background), a PNG image among the JPEGs."""
    export = Export(root)
    result = Input(export)
    palette = [color for _, color in SEGMENTATION_COLORS.values()]
    for index, values in enumerate([[0, 1, 2, 3], [0, 2], [0], [0, 1, 3], [3, 2]]):
        reference = export.add_image(f"scene{index}.png" if index == 1 else f"scene{index}.jpg")
        gt_mask = _gt_indices(index, values)
        write_palette_mask(export.images / "labels" / f"scene{index}.png", gt_mask, palette)
        export.add_line(segmentation_line(reference, f"{BUCKET}/labels/scene{index}.png", SEGMENTATION_COLORS))
        result.expected[_name(reference)] = Expected(export.image_bytes[reference], gt_mask=gt_mask)
    export.write()
    return result


def classification_input(root: Path) -> Input:
    """Single-label classification: Ground Truth index 0 `dog`, 1 `cat`."""
    export = Export(root)
    result = Input(export)
    for index, name in enumerate(["cat", "dog", "dog", "cat", "cat", "dog"]):
        reference = export.add_image(f"pet{index}.jpg")
        export.add_line(classification_line(reference, {"dog": 0, "cat": 1}[name], name))
        result.expected[_name(reference)] = Expected(export.image_bytes[reference], labels=(name,))
    export.write()
    return result


MULTILABEL_LINES: tuple[tuple[Sequence[int], Mapping[int, str]], ...] = (
    ([0, 2], {0: "sunny", 2: "beach"}),
    ([1], {1: "city"}),
    ([2, 1, 0], {0: "sunny", 1: "city", 2: "beach"}),
    ([], {}),
    ([2], {2: "beach"}),
)


def multilabel_input(root: Path) -> Input:
    """Multi-label classification, one image with no label at all."""
    export = Export(root)
    result = Input(export)
    for index, (values, class_map) in enumerate(MULTILABEL_LINES):
        reference = export.add_image(f"view{index}.jpg")
        export.add_line(multilabel_line(reference, values, class_map))
        labels = tuple(class_map[value] for value in values)
        result.expected[_name(reference)] = Expected(export.image_bytes[reference], labels=labels)
    export.write()
    return result

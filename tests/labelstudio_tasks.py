"""Build Label Studio JSON exports for tests: tasks, annotations, result items, brush RLE.

Result items are shaped as Label Studio writes them (../shared/specs/formats.md and the
real exports in ../shared/samples/label_studio): percent coordinates of
`original_width` x `original_height`. The brush encoder is test code written from the
format description, independent of the converter's decoder, so the two check each other.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from builders import image_pixels, write_image

Size = tuple[int, int]  # (width, height)
RUN_BITS = (3, 4, 8, 16)  # the run-length field sizes Label Studio's encoder uses


def rectangle(
    x: float, y: float, width: float, height: float, labels: Sequence[str], size: Size, rotation: float = 0.0
) -> dict[str, Any]:
    value = {"x": x, "y": y, "width": width, "height": height, "rotation": rotation, "rectanglelabels": list(labels)}
    return _result("rectanglelabels", value, size)


def polygon(points: Sequence[tuple[float, float]], labels: Sequence[str], size: Size) -> dict[str, Any]:
    return _result("polygonlabels", {"points": [list(point) for point in points], "polygonlabels": list(labels)}, size)


def brush(rle: Sequence[int], labels: Sequence[str], size: Size) -> dict[str, Any]:
    return _result("brushlabels", {"format": "rle", "rle": list(rle), "brushlabels": list(labels)}, size)


def keypoint(x: float, y: float, labels: Sequence[str], size: Size) -> dict[str, Any]:
    return _result("keypointlabels", {"x": x, "y": y, "width": 0.5, "keypointlabels": list(labels)}, size)


def choices(names: Sequence[str]) -> dict[str, Any]:
    """Image-level classes; Label Studio writes no image size on them."""
    return {"type": "choices", "from_name": "class", "to_name": "image", "value": {"choices": list(names)}}


def relation() -> dict[str, Any]:
    return {"type": "relation", "from_id": "a1", "to_id": "b2", "direction": "right"}


def _result(kind: str, value: dict[str, Any], size: Size) -> dict[str, Any]:
    return {
        "type": kind,
        "from_name": "label",
        "to_name": "image",
        "original_width": size[0],
        "original_height": size[1],
        "image_rotation": 0,
        "value": value,
    }


def annotation(
    results: Sequence[dict[str, Any]],
    *,
    annotation_id: int | None = None,
    created_at: str | None = None,
    ground_truth: bool = False,
    was_cancelled: bool = False,
) -> dict[str, Any]:
    entry: dict[str, Any] = {"result": list(results), "ground_truth": ground_truth, "was_cancelled": was_cancelled}
    if annotation_id is not None:
        entry["id"] = annotation_id
    if created_at is not None:
        entry["created_at"] = created_at
    return entry


def task(image: str, *annotations: dict[str, Any], task_id: int | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"data": {"image": image}, "annotations": list(annotations), "predictions": []}
    if task_id is not None:
        entry["id"] = task_id
    return entry


def write_export(path: Path, tasks: Sequence[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(list(tasks), indent=2), encoding="utf-8")
    return path


def write_stand_in(path: Path, size: Size, seed: int = 1) -> bytes:
    """A stand-in image of `size` at `path` (PNG if named .png, else JPEG); returns its bytes."""
    return write_image(path, image_pixels(*size, seed))


# ---------------------------------------------------------------------------
# Brush RLE, encoded from the format description


class _BitWriter:
    def __init__(self) -> None:
        self.bits: list[int] = []

    def write(self, value: int, width: int) -> None:
        assert 0 <= value < (1 << width), (value, width)
        self.bits.extend((value >> shift) & 1 for shift in range(width - 1, -1, -1))

    def to_bytes(self) -> list[int]:
        padded = self.bits + [0] * (-len(self.bits) % 8)
        return [int("".join(map(str, padded[start : start + 8])), 2) for start in range(0, len(padded), 8)]


def encode_brush_rle(words: Sequence[int], run_bits: Sequence[int] = RUN_BITS, word_bits: int = 8) -> list[int]:
    """Label Studio's brush RLE of `words`: runs of two or more equal words repeat, the rest are literals."""
    writer = _BitWriter()
    writer.write(len(words), 32)
    writer.write(word_bits - 1, 5)
    for size in run_bits:
        writer.write(size - 1, 4)
    longest = 1 << max(run_bits)

    def chunk_header(repeated: bool, length: int) -> None:
        index = next(i for i, size in enumerate(run_bits) if length - 1 < (1 << size))
        writer.write(int(repeated), 1)
        writer.write(index, 2)
        writer.write(length - 1, run_bits[index])

    position = 0
    while position < len(words):
        run_end = position
        while run_end < len(words) and words[run_end] == words[position] and run_end - position < longest:
            run_end += 1
        if run_end - position >= 2:
            chunk_header(True, run_end - position)
            writer.write(words[position], word_bits)
            position = run_end
            continue
        literal_end = position + 1
        while (
            literal_end < len(words)
            and literal_end - position < longest
            and not (literal_end + 1 < len(words) and words[literal_end] == words[literal_end + 1])
        ):
            literal_end += 1
        chunk_header(False, literal_end - position)
        for word in words[position:literal_end]:
            writer.write(word, word_bits)
        position = literal_end
    return writer.to_bytes()


def mask_to_brush(mask: npt.NDArray[np.bool_], run_bits: Sequence[int] = RUN_BITS) -> list[int]:
    """A binary mask as Label Studio stores a brush region: RGBA, every channel 255 on the region, 0 off it."""
    words = np.repeat(mask.astype(np.uint8).ravel() * 255, 4)
    return encode_brush_rle(words.tolist(), run_bits)


# ---------------------------------------------------------------------------
# Reading outputs

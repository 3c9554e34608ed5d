"""Build Scale AI tasks, exports and index masks for tests.

Tasks are shaped as Scale's API and dashboard exports give them (../shared/specs/formats.md):
`task_id`, `type`, `status`, `created_at`, `params` (`attachment`, `geometries` or
`labels`), `response`. Rotated boxes get their `vertices` from a rotation matrix here,
written independently of the converter, so the two check each other.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

CREATED_AT = "2024-05-07T12:34:56.789Z"
Point = tuple[float, float]


# ---------------------------------------------------------------------------
# Annotations of an imageannotation response


def box(label: str, left: float, top: float, width: float, height: float) -> dict[str, Any]:
    return {
        "type": "box",
        "label": label,
        "uuid": f"box-{label}-{left}",
        "left": left,
        "top": top,
        "width": width,
        "height": height,
        "attributes": {},
    }


def rotated_corners(left: float, top: float, width: float, height: float, rotation: float) -> list[Point]:
    """The corners of a box rotated `rotation` radians clockwise on screen (y down) about its centre,
    starting at the unrotated top-left corner."""
    center = np.array([left + width / 2, top + height / 2])
    offsets = np.array([[-width, -height], [width, -height], [width, height], [-width, height]]) / 2
    matrix = np.array([[math.cos(rotation), -math.sin(rotation)], [math.sin(rotation), math.cos(rotation)]])
    return [(float(x), float(y)) for x, y in center + offsets @ matrix.T]


def rotated_box(
    label: str, left: float, top: float, width: float, height: float, rotation: float, *, vertices: bool = True
) -> dict[str, Any]:
    """A box drawn with `can_rotate`: the unrotated box, `rotation`, and (as Scale sends them) its `vertices`."""
    annotation = {**box(label, left, top, width, height), "rotation": rotation}
    if vertices:
        annotation["vertices"] = [{"x": x, "y": y} for x, y in rotated_corners(left, top, width, height, rotation)]
    return annotation


def polygon(label: str, points: Sequence[Point]) -> dict[str, Any]:
    return {
        "type": "polygon",
        "label": label,
        "uuid": f"polygon-{label}",
        "vertices": [{"x": x, "y": y} for x, y in points],
    }


def point(label: str, x: float, y: float) -> dict[str, Any]:
    return {"type": "point", "label": label, "uuid": f"point-{label}", "x": x, "y": y}


def line(label: str, points: Sequence[Point]) -> dict[str, Any]:
    return {"type": "line", "label": label, "uuid": f"line-{label}", "vertices": [{"x": x, "y": y} for x, y in points]}


def ellipse(label: str, center: Point, radii: Point) -> dict[str, Any]:
    """Scale's ellipse: its four extremal vertices."""
    (x, y), (rx, ry) = center, radii
    extremes = [(x, y - ry), (x + rx, y), (x, y + ry), (x - rx, y)]
    return {
        "type": "ellipse",
        "label": label,
        "uuid": f"ellipse-{label}",
        "vertices": [{"x": a, "y": b} for a, b in extremes],
    }


def cuboid(label: str) -> dict[str, Any]:
    return {"type": "cuboid", "label": label, "uuid": f"cuboid-{label}", "points": [{"x": 1, "y": 1}] * 8, "edges": []}


# ---------------------------------------------------------------------------
# Tasks


def _task(task_id: str, kind: str, params: dict[str, Any], response: Any, **fields: Any) -> dict[str, Any]:
    task: dict[str, Any] = {
        "task_id": task_id,
        "type": kind,
        "status": "completed",
        "created_at": CREATED_AT,
        "completed_at": CREATED_AT,
        "project": "kittens",
        "params": params,
        "metadata": {},
    }
    if response is not None:
        task["response"] = response
    task.update(fields)
    return task


def image_task(
    task_id: str,
    attachment: str,
    annotations: Sequence[dict[str, Any]],
    geometries: Mapping[str, Sequence[Any]] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """An imageannotation task; `geometries` maps a geometry to its `objects_to_annotate`
    (default: every label the annotations use, under `box`)."""
    offered = geometries if geometries is not None else {"box": sorted({a["label"] for a in annotations})}
    params = {
        "attachment": attachment,
        "attachment_type": "image",
        "geometries": {name: {"objects_to_annotate": list(objects)} for name, objects in offered.items()},
    }
    return _task(
        task_id, "imageannotation", params, {"annotations": list(annotations), "global_attributes": {}}, **fields
    )


def mapping_entry(index: int, color: str = "#ff0000", pixels: int | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"index": index, "color": color}
    if pixels is not None:
        entry["numPixels"] = pixels
    return entry


def segment_task(
    task_id: str,
    attachment: str,
    mask_url: str,
    label_mapping: Mapping[str, Any],
    labels: Sequence[Any] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """A segmentannotation task; `labels` default to the mapping's labels."""
    params = {
        "attachment": attachment,
        "attachment_type": "image",
        "labels": list(labels) if labels is not None else list(label_mapping),
        "allow_unlabeled": True,
    }
    response = {
        "annotations": {
            "combined": {"image": mask_url.replace("index", "colour"), "indexedImage": mask_url},
            "labeled": {},
        },
        "labelMapping": dict(label_mapping),
    }
    return _task(task_id, "segmentannotation", params, response, **fields)


# ---------------------------------------------------------------------------
# Files


def write_index_mask(path: Path, indices: npt.NDArray[np.uint8]) -> bytes:
    """A one-channel ("L") PNG whose pixel values are `indices`, as Scale's `indexedImage`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(indices, mode="L").save(path)
    return path.read_bytes()


def write_json_list(path: Path, tasks: Sequence[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(list(tasks), indent=2), encoding="utf-8")
    return path


def write_json_lines(path: Path, tasks: Sequence[Any | str]) -> Path:
    """One task a line; a `str` entry is written verbatim (a malformed line)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((t if isinstance(t, str) else json.dumps(t)) + "\n" for t in tasks), encoding="utf-8")
    return path

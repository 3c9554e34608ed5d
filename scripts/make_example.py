"""Generate the small Ground Truth bounding-box export that ships in examples/sagemaker_gt.

The project makes its own sample instead of copying a third party's: 12 images of
coloured shapes on a textured background, each shape boxed in an output manifest the
way a Ground Truth object-detection job writes it (sparse per-line `class-map`,
float coordinates, one negative image, one key with a space). Seeded, so rerunning
reproduces the same bytes for a given OpenCV version.

    python scripts/make_example.py [OUTPUT_FOLDER]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np

CLASSES = {0: "circle", 1: "square", 2: "triangle"}
WIDTH, HEIGHT = 320, 240
NUM_IMAGES = 12
BUCKET = "s3://example-labelling-bucket/shapes"


def _draw_shape(image: np.ndarray, class_id: int, left: int, top: int, size: int, color: tuple[int, int, int]) -> None:
    if class_id == 0:
        cv2.circle(image, (left + size // 2, top + size // 2), size // 2, color, thickness=-1)
    elif class_id == 1:
        cv2.rectangle(image, (left, top), (left + size - 1, top + size - 1), color, thickness=-1)
    else:
        corners = np.array([[left + size // 2, top], [left, top + size - 1], [left + size - 1, top + size - 1]])
        cv2.fillPoly(image, [corners.astype(np.int32)], color)


def make_example(folder: Path) -> None:
    """Write images/ and output.manifest into `folder`."""
    rng = np.random.default_rng(20261122)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for index in range(NUM_IMAGES):
        name = f"shape {index:02d}.jpg" if index == 3 else f"shape_{index:02d}.jpg"
        background = rng.integers(90, 160, size=(HEIGHT, WIDTH, 3), dtype=np.uint8)
        image = cv2.GaussianBlur(background, (0, 0), 3)
        annotations, class_map, objects = [], {}, []
        for _ in range(0 if index == 0 else int(rng.integers(1, 4))):
            class_id = int(rng.integers(0, len(CLASSES)))
            size = int(rng.integers(30, 90))
            left, top = int(rng.integers(0, WIDTH - size)), int(rng.integers(0, HEIGHT - size))
            color = tuple(int(channel) for channel in rng.integers(0, 255, size=3))
            _draw_shape(image, class_id, left, top, size, color)  # type: ignore[arg-type]
            jitter = float(rng.uniform(-0.5, 0.5))
            annotations.append({"class_id": class_id, "left": left + jitter, "top": top, "width": size, "height": size})
            class_map[str(class_id)] = CLASSES[class_id]
            objects.append({"confidence": 0.95})
        ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])
        if not ok:
            raise RuntimeError("JPEG encoding failed")
        (folder / "images" / name).write_bytes(encoded.tobytes())
        lines.append(
            {
                "source-ref": f"{BUCKET}/images/{name}",
                "shapes": {"annotations": annotations, "image_size": [{"width": WIDTH, "height": HEIGHT, "depth": 3}]},
                "shapes-metadata": {
                    "objects": objects,
                    "class-map": dict(sorted(class_map.items())),
                    "type": "groundtruth/object-detection",
                    "human-annotated": "yes",
                    "creation-date": "2026-11-22T00:00:00.000000",
                    "job-name": "labeling-job/shapes",
                },
            }
        )
    with (folder / "output.manifest").open("w", encoding="utf-8") as stream:
        for line in lines:
            stream.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    make_example(
        Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "examples" / "sagemaker_gt"
    )

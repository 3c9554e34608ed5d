"""A tiny, seeded Ground Truth object-detection export, and the CLI call that converts it."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from converter.cli import app

from .media import jpeg_bytes, write_file

EXPORT_IMAGES = 12
CLASS_MAP = {"0": "cat", "1": "dog"}


def write_detection_export(folder: Path, count: int = EXPORT_IMAGES) -> Path:
    """`count` images under folder/images and folder/output.manifest naming them as S3 keys; returns the manifest."""
    lines = []
    for index in range(count):
        width, height = 32 + index, 24
        write_file(folder / "images" / f"img_{index:03d}.jpg", jpeg_bytes(width, height, seed=index))
        annotations = [{"class_id": index % 2, "left": 2, "top": 3, "width": 10, "height": 8}]
        lines.append(
            {
                "source-ref": f"s3://bucket/images/img_{index:03d}.jpg",
                "label": {
                    "annotations": annotations,
                    "image_size": [{"width": width, "height": height, "depth": 3}],
                },
                "label-metadata": {
                    "type": "groundtruth/object-detection",
                    "class-map": CLASS_MAP,
                    "objects": [{"confidence": 0.9}],
                    "human-annotated": "yes",
                    "creation-date": "2024-01-01T00:00:00.000000",
                    "job-name": "labeling-job/unit-test",
                },
            }
        )
    manifest = folder / "output.manifest"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return manifest


def convert(manifest: Path, output: Path, *options: str) -> None:
    """Run `dataset-converter convert` through the CLI; fail the test with its output if it fails."""
    result = CliRunner().invoke(app, ["convert", "-a", str(manifest), "-o", str(output), *options])
    assert result.exit_code == 0, result.output

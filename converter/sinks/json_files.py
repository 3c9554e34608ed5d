"""`-f json`: per split, the images, one JSON annotation file per image, and PNG masks.

    train/images/<name>                      the images, copied byte for byte
    train/annotations/<stem>.json            everything annotated on the image
    train/masks/<stem>.png                   runs with class masks: single-channel PNG class ids
    train/instance_masks/<stem>/<n>.png      with --instance-masks: object n's mask (0/1)
    train/SHA256SUMS                         see `converter.sinks._files`

The format that loses nothing the other formats drop: boxes in displayed pixels (as the
source gave them, clipped) and normalized, polygons and RLE shapes in displayed pixels as
the source gave them (not clipped), class names beside class ids (ids as in
dataset_info.yaml: from 1, 0 is background in masks), image-level labels, keypoints and attributes.
File references are relative to the split folder (`images/a.jpg`), absolute with
`--absolute-paths`. docs/json-output.schema.json is the schema; the tests validate every
file they write against it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from converter.core.lossiness import Carried
from converter.core.materialize import EncodedObject, EncodedSample, RecordOptions
from converter.core.protocols import RecordEncoder, SplitOutput
from converter.core.sample import ObjectAnnotation, Polygon
from converter.core.split import SplitName
from converter.core.tasks import TASKS, Task
from converter.sinks._files import (
    IMAGES_FOLDER,
    MASK_SUFFIX,
    MASKS_FOLDER,
    SPLIT_FOLDERS,
    OutputName,
    SplitFiles,
    UniqueNames,
    check_unicode_names,
    file_reference,
    pass_through,
)

ANNOTATIONS_FOLDER = "annotations"
INSTANCE_MASKS_FOLDER = "instance_masks"
ANNOTATION_SUFFIX = ".json"


def _points(ring: Sequence[float]) -> list[list[float]]:
    """`(x0, y0, x1, y1, ...)` -> `[[x0, y0], [x1, y1], ...]`."""
    return [[ring[index], ring[index + 1]] for index in range(0, len(ring), 2)]


def _attributes(attributes: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
    """Name-value pairs as the export gave them (a name may repeat: a list, not a mapping)."""
    return [{"name": name, "value": value} for name, value in attributes]


def _polygon(polygon: Polygon) -> dict[str, Any]:
    return {"exterior": _points(polygon.exterior), "holes": [_points(hole) for hole in polygon.holes]}


def _rle(source: ObjectAnnotation) -> dict[str, Any] | None:
    if source.rle is None:
        return None
    counts = source.rle.counts
    return {
        "height": source.rle.height,
        "width": source.rle.width,
        "counts": counts if isinstance(counts, str) else list(counts),
    }


class _JsonSplitWriter:
    def __init__(self, output_dir: Path, split: SplitName, options: RecordOptions) -> None:
        self._options = options
        self._files = SplitFiles(output_dir, split)
        self._names = UniqueNames()
        self._images = self._files.subfolder(IMAGES_FOLDER)
        self._annotations = self._files.subfolder(ANNOTATIONS_FOLDER)
        self._masks = self._files.subfolder(MASKS_FOLDER) if options.class_masks else ""
        self._samples = 0

    def _reference(self, relative: str) -> str:
        return file_reference(self._options, relative, self._files.folder)

    def _object(self, sample: EncodedSample, name: OutputName, position: int, obj: EncodedObject) -> dict[str, Any]:
        source = sample.sample.objects[obj.object_index]
        mask = None
        if obj.mask_png is not None:
            mask = f"{self._files.folder}/{INSTANCE_MASKS_FOLDER}/{name.stem}/{position}{MASK_SUFFIX}"
            self._files.write(mask, obj.mask_png)
        return {
            "class_id": obj.class_id,
            "class_name": obj.class_name,
            "bbox_pixels_xyxy": list(obj.bbox_pixels),
            "bbox_normalized_xyxy": list(obj.bbox_normalized),
            "area_pixels": obj.area_pixels,
            "is_crowd": obj.is_crowd,
            "polygons_pixels": [_polygon(polygon) for polygon in source.polygons],
            "rle": _rle(source),
            "mask": self._reference(mask) if mask is not None else None,
            "attributes": _attributes(source.attributes),
            "keypoints": [
                {
                    "name": point.name,
                    "x_pixels": point.x_pixels,
                    "y_pixels": point.y_pixels,
                    "x_normalized": point.x_normalized,
                    "y_normalized": point.y_normalized,
                    "visibility": point.visibility,
                }
                for point in obj.keypoints
            ],
        }

    def write(self, sample: EncodedSample) -> None:
        name = self._names.claim(sample)
        image = f"{self._images}/{name.image_file}"
        self._files.write(image, sample.image_bytes)
        mask = None
        if sample.segmentation_png is not None:
            mask = f"{self._masks}/{name.stem}{MASK_SUFFIX}"
            self._files.write(mask, sample.segmentation_png)
        document = {
            "image": {
                "file": self._reference(image),
                "source_name": sample.sample.image_name,
                "source_id": sample.sample.key,
                "format": sample.image.format,
                "width": sample.image.width,
                "height": sample.image.height,
                "sha256": sample.sha256_hex,
            },
            "mask": self._reference(mask) if mask is not None else None,
            "attributes": _attributes(sample.sample.attributes),
            "image_labels": [
                {"class_id": class_id, "class_name": class_name}
                for class_id, class_name in zip(sample.image_class_ids, sample.sample.image_labels, strict=True)
            ],
            "objects": [self._object(sample, name, position, obj) for position, obj in enumerate(sample.objects)],
            "keypoints": [
                {
                    "class_id": point.class_id,
                    "class_name": point.class_name,
                    "x_pixels": point.x_pixels,
                    "y_pixels": point.y_pixels,
                    "x_normalized": point.x_normalized,
                    "y_normalized": point.y_normalized,
                }
                for point in sample.keypoints or ()
            ],
        }
        text = json.dumps(document, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
        self._files.write(f"{self._annotations}/{name.stem}{ANNOTATION_SUFFIX}", text.encode())
        self._samples += 1

    def close(self) -> SplitOutput:
        return SplitOutput(
            annotations=self._annotations,
            images=self._images,
            samples=self._samples,
            entries=(self._files.folder,),
            checksums=self._files.close(),
        )


class JsonFilesSink:
    """`-f json`: images, one JSON file per image and PNG masks, in one folder per split."""

    supported_tasks: frozenset[Task] = frozenset(TASKS)

    def __init__(self, max_shard_bytes: int) -> None:
        """One file per image is not sharded; the cap is accepted so every sink is built alike."""

    def record_encoder(self, options: RecordOptions) -> RecordEncoder[EncodedSample]:
        return pass_through

    def carries(self, options: RecordOptions) -> Carried:
        """Everything: shapes as the source gave them, the masks the run paints, attributes."""
        return Carried(
            boxes=True,
            polygons=True,
            class_masks=options.class_masks,
            instance_masks=options.instance_masks,
            keypoints=True,
            image_labels=True,
            attributes=True,
        )

    def open_split(self, output_dir: Path, split: SplitName, options: RecordOptions) -> _JsonSplitWriter:
        return _JsonSplitWriter(output_dir, split, options)

    def check_class_names(self, class_names: Sequence[str]) -> None:
        """Any Unicode name can be written: JSON carries names as strings."""
        check_unicode_names(class_names)

    def entry_names(self, splits: Sequence[SplitName], layout: str) -> tuple[str, ...]:
        return tuple(SPLIT_FOLDERS[split] for split in splits)

    def finish(self, output_dir: Path, class_names: Sequence[str]) -> tuple[str, ...]:
        """Every annotation names its classes; dataset_info.yaml's `classes` is the label map (ids from 1)."""
        return ()

    def describe_layout(self, options: RecordOptions) -> dict[str, Any]:
        layout: dict[str, Any] = {
            "format": "json",
            "annotations": f"<split>/{ANNOTATIONS_FOLDER}/<image stem>{ANNOTATION_SUFFIX}, one per image",
            "class_id_offset": 1,
            "boxes": "bbox_pixels_xyxy in displayed pixels and bbox_normalized_xyxy in [0, 1], clipped",
            "paths": "absolute" if options.absolute_root is not None else "relative to the split folder",
        }
        if options.class_masks:
            layout["masks"] = f"<split>/{MASKS_FOLDER}/<image stem>{MASK_SUFFIX}"
        if options.instance_masks:
            layout["instance_masks"] = f"<split>/{INSTANCE_MASKS_FOLDER}/<image stem>/<object position>{MASK_SUFFIX}"
        return layout

"""Turn a `Sample` into an `EncodedSample`: the bytes and numbers a sink writes.

This is the one place that reads image and mask files. It keeps the original image
bytes (never re-encoded), reads the displayed size from the header, normalizes boxes,
clips them to the image, and drops boxes that have no area left, telling the caller
about every change so the report can list it.

Box rule: boxes are in the displayed frame (EXIF orientation applied), normalized by
the size the annotation tool declared for the image, or by the displayed size when
the export declares none. `image/height` and `image/width` are always the displayed
size. A reader that decodes `image/encoded` without applying EXIF orientation (as
`tf.io.decode_jpeg` does) sees the stored pixels instead; the report lists such images.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from converter.core.classes import ClassList
from converter.core.images import ImageInfo, probe_image
from converter.core.masks import MAX_MASK_CLASS_ID, encode_png, read_class_mask
from converter.core.sample import Sample
from converter.errors import SampleError

BoxXYXY = tuple[float, float, float, float]


@dataclass(frozen=True)
class EncodedObject:
    """One object ready to write: a box normalized to [0, 1] and its class id (from 1)."""

    class_id: int
    class_name: str
    bbox_normalized: BoxXYXY
    area_pixels: float
    is_crowd: bool


@dataclass(frozen=True)
class ObjectNote:
    """Something the materializer changed about one object (for the report)."""

    object_index: int
    code: str  # "clipped" or "degenerate_box"
    message: str


@dataclass(frozen=True)
class EncodedSample:
    """A sample with its image bytes and everything normalized; what sinks consume."""

    sample: Sample
    image_bytes: bytes
    image: ImageInfo
    sha256_hex: str
    objects: tuple[EncodedObject, ...]
    image_class_ids: tuple[int, ...]
    segmentation_png: bytes | None
    mask_class_ids: tuple[int, ...]
    notes: tuple[ObjectNote, ...]
    warnings: tuple[str, ...]

    def class_ids_present(self) -> frozenset[int]:
        """Every class id the sample contains, through any kind of annotation."""
        return frozenset(obj.class_id for obj in self.objects) | set(self.image_class_ids) | set(self.mask_class_ids)


def _clip_box(box: BoxXYXY, width: float, height: float) -> BoxXYXY:
    x_min, y_min, x_max, y_max = box
    return (
        min(max(x_min, 0.0), width),
        min(max(y_min, 0.0), height),
        min(max(x_max, 0.0), width),
        min(max(y_max, 0.0), height),
    )


def materialize(sample: Sample, classes: ClassList) -> EncodedSample:
    """Read and normalize one sample; raises `SampleError` if it cannot be written."""
    try:
        image_bytes = sample.image_path.read_bytes()
    except OSError as error:
        raise SampleError("missing_image", f"cannot read image {sample.image_path}: {error.strerror}") from None
    image = probe_image(image_bytes)
    warnings: list[str] = []
    if image.exif_orientation != 1:
        warnings.append(
            f"EXIF orientation {image.exif_orientation}: displayed as {image.width}x{image.height}, stored as "
            f"{image.stored_size[0]}x{image.stored_size[1]}; boxes are in the displayed frame"
        )
    frame_width, frame_height = sample.declared_size or (image.width, image.height)
    if (frame_width, frame_height) != (image.width, image.height):
        warnings.append(
            f"the export declares the image as {frame_width}x{frame_height} but it displays as "
            f"{image.width}x{image.height}; boxes are normalized by the declared size"
        )

    objects: list[EncodedObject] = []
    notes: list[ObjectNote] = []
    for index, obj in enumerate(sample.objects):
        clipped = _clip_box(obj.bbox_xyxy, frame_width, frame_height)
        x_min, y_min, x_max, y_max = clipped
        if x_max <= x_min or y_max <= y_min:
            notes.append(
                ObjectNote(
                    index,
                    "degenerate_box",
                    f"object {index} ({obj.class_name}) box {obj.bbox_xyxy} has no area inside the "
                    f"{frame_width}x{frame_height} image; dropped",
                )
            )
            continue
        if clipped != obj.bbox_xyxy:
            notes.append(
                ObjectNote(
                    index, "clipped", f"object {index} ({obj.class_name}) box {obj.bbox_xyxy} clipped to {clipped}"
                )
            )
        scale_x, scale_y = image.width / frame_width, image.height / frame_height
        objects.append(
            EncodedObject(
                class_id=classes.id_of(obj.class_name),
                class_name=obj.class_name,
                bbox_normalized=(x_min / frame_width, y_min / frame_height, x_max / frame_width, y_max / frame_height),
                area_pixels=(x_max - x_min) * scale_x * (y_max - y_min) * scale_y,
                is_crowd=obj.is_crowd,
            )
        )

    segmentation_png = None
    mask_class_ids: tuple[int, ...] = ()
    if sample.segmentation is not None:
        class_ids = {name: classes.id_of(name) for name in sample.segmentation.class_names()}
        if class_ids and max(class_ids.values()) > MAX_MASK_CLASS_ID:
            raise SampleError(
                "too_many_classes",
                f"mask class ids go up to {max(class_ids.values())}; PNG masks hold at most "
                f"{MAX_MASK_CLASS_ID} classes",
            )
        mask = read_class_mask(sample.segmentation, class_ids)
        if mask.shape != (image.height, image.width):
            raise SampleError(
                "mask_size_mismatch",
                f"mask {sample.segmentation.path} is {mask.shape[1]}x{mask.shape[0]} but the image "
                f"displays as {image.width}x{image.height}",
            )
        segmentation_png = encode_png(mask)
        present = np.flatnonzero(np.bincount(mask.ravel(), minlength=256))  # faster than np.unique on uint8
        mask_class_ids = tuple(int(value) for value in present if value != 0)

    return EncodedSample(
        sample=sample,
        image_bytes=image_bytes,
        image=image,
        sha256_hex=hashlib.sha256(image_bytes).hexdigest(),
        objects=tuple(objects),
        image_class_ids=tuple(classes.id_of(name) for name in sample.image_labels),
        segmentation_png=segmentation_png,
        mask_class_ids=mask_class_ids,
        notes=tuple(notes),
        warnings=tuple(warnings),
    )

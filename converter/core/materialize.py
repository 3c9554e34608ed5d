"""Turn a `Sample` into an `EncodedSample`: the bytes and numbers a sink writes.

This is the one place that reads image and mask files. It keeps the original image
bytes (never re-encoded), reads the displayed size from the header, normalizes boxes,
clips them to the image, and drops boxes that have no area left, telling the caller
about every change so the report can list it.

Shapes (polygons, RLE) are rasterized by `converter.core.rasterize` at the displayed
size; objects without a box get the extent of their shape. When a run writes class
masks, every record gets one (all background where a sample has nothing to paint), so
all records share one feature layout; likewise instance masks and keypoints.

Box rule: boxes are in the displayed frame (EXIF orientation applied), normalized by
the size the annotation tool declared for the image, or by the displayed size when
the export declares none. `image/height` and `image/width` are always the displayed
size. A reader that decodes `image/encoded` without applying EXIF orientation (as
`tf.io.decode_jpeg` does) sees the stored pixels instead; the report lists such images.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from converter.core.classes import ClassList
from converter.core.image_ids import image_id_of
from converter.core.images import ImageInfo, probe_image
from converter.core.input_files import named
from converter.core.masks import MAX_MASK_CLASS_ID, encode_png, read_class_mask
from converter.core.rasterize import (
    CombinationClasses,
    Coverage,
    OverlapPolicy,
    compose_class_mask,
    mask_bbox,
    object_coverage,
)
from converter.core.sample import ObjectAnnotation, Sample
from converter.errors import SampleError

BoxXYXY = tuple[float, float, float, float]


@dataclass(frozen=True)
class RecordOptions:
    """Which optional features every record of a run carries, and how masks are painted.

    `objects` says some sample of the run has objects, so formats that hold one task per
    dataset (Masterful's CSV) can choose detection before the first record. `absolute_root`
    is the output folder's final place with `--absolute-paths`: file references a sink
    writes inside its files (CSV, JSON) are then absolute; without it they are relative,
    so the dataset can move. Sinks see only the staging folder, hence this field.
    """

    class_masks: bool = False
    instance_masks: bool = False
    keypoints: bool = False
    overlap: OverlapPolicy = "order"
    class_priority: tuple[str, ...] = ()
    layout: str = "object-detection-api"  # a sink's choice of feature names (TFRecord: or "modelpack")
    objects: bool = False
    absolute_root: Path | None = None
    keypoints_per_object: int = 0  # the most keypoints any object has: records pad every object to it


@dataclass(frozen=True)
class EncodedObjectKeypoint:
    """One keypoint of an object, normalized to [0, 1]; COCO's visibility (0: not labelled, at 0, 0)."""

    name: str
    x_pixels: float
    y_pixels: float
    x_normalized: float
    y_normalized: float
    visibility: int


@dataclass(frozen=True)
class EncodedObject:
    """One object ready to write: a box normalized to [0, 1] and its class id (from 1).

    `bbox_pixels` is the same clipped box in displayed pixels, kept as the source gave it
    (not recomputed from the normalized one) so pixel formats write the source's numbers
    exactly; `object_index` is the object's position in `Sample.objects`, where its shape is.

    `area_pixels` is what COCO-style evaluation buckets objects by (small, medium, large):
    the export's own area where it gives one (COCO's `area`), else the pixels of the
    object's shape, else its box's area. `rle_counts` is the shape's pixels in COCO's
    compressed RLE (column-major, at the displayed size), for the COCO ground truth.
    """

    class_id: int
    class_name: str
    object_index: int
    bbox_pixels: BoxXYXY
    bbox_normalized: BoxXYXY
    area_pixels: float
    is_crowd: bool
    mask_png: bytes | None = None
    rle_counts: str | None = None
    keypoints: tuple[EncodedObjectKeypoint, ...] = ()


@dataclass(frozen=True)
class EncodedKeypoint:
    """A keypoint in displayed pixels and normalized to [0, 1]."""

    class_id: int
    class_name: str
    x_pixels: float
    y_pixels: float
    x_normalized: float
    y_normalized: float


@dataclass(frozen=True)
class ObjectNote:
    """Something the materializer changed about one object (for the report)."""

    object_index: int
    code: str  # "clipped", "degenerate_box", "keypoint_outside"
    message: str


@dataclass(frozen=True)
class EncodedSample:
    """A sample with its image bytes and everything normalized; what sinks consume.

    `segmentation_png` is None only when the run writes no class masks; `keypoints` is
    None only when the run has none, so sinks can give all records the same keys.
    `image_id` is the numeric id of `converter.core.image_ids` (`image/source_id`).
    """

    sample: Sample
    image_id: int
    image_bytes: bytes
    image: ImageInfo
    sha256_hex: str
    objects: tuple[EncodedObject, ...]
    image_class_ids: tuple[int, ...]
    segmentation_png: bytes | None
    mask_class_ids: tuple[int, ...]
    notes: tuple[ObjectNote, ...]
    warnings: tuple[str, ...]
    keypoints: tuple[EncodedKeypoint, ...] | None = None
    mask_pixels: tuple[tuple[int, int], ...] = ()  # (class id, pixels) per non-zero value of the class mask, 255 too

    def class_ids_present(self) -> frozenset[int]:
        """Every class id the sample contains, through any kind of annotation."""
        keypoint_ids = {point.class_id for point in self.keypoints or ()}
        return (
            frozenset(obj.class_id for obj in self.objects)
            | set(self.image_class_ids)
            | set(self.mask_class_ids)
            | keypoint_ids
        )


def _clip_box(box: BoxXYXY, width: float, height: float) -> BoxXYXY:
    x_min, y_min, x_max, y_max = box
    return (
        min(max(x_min, 0.0), width),
        min(max(y_min, 0.0), height),
        min(max(x_max, 0.0), width),
        min(max(y_max, 0.0), height),
    )


def _source_box(obj: ObjectAnnotation, covered: Coverage | None) -> BoxXYXY | None:
    """The box the source gave, else the polygons' extent, else the RLE mask's pixels."""
    if obj.bbox_xyxy is not None:
        return obj.bbox_xyxy
    if obj.polygons and obj.rle is None:
        bounds = [polygon.bounds() for polygon in obj.polygons]
        return (
            min(b[0] for b in bounds),
            min(b[1] for b in bounds),
            max(b[2] for b in bounds),
            max(b[3] for b in bounds),
        )
    return mask_bbox(covered) if covered is not None else None


def _read_image(sample: Sample) -> tuple[bytes, ImageInfo, list[str]]:
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
    return image_bytes, image, warnings


def materialize(
    sample: Sample,
    classes: ClassList,
    options: RecordOptions = RecordOptions(),
    combinations: CombinationClasses | None = None,
    image_id: int | None = None,
) -> EncodedSample:
    """Read and normalize one sample; raises `SampleError` if it cannot be written.

    `image_id` resolves a derived-id collision (`converter.core.image_ids`); None: the sample's own.
    """
    image_bytes, image, warnings = _read_image(sample)
    frame_width, frame_height = sample.declared_size or (image.width, image.height)
    if (frame_width, frame_height) != (image.width, image.height):
        if sample.has_mask:
            raise SampleError(
                "mask_size_mismatch",
                f"the export declares the image as {frame_width}x{frame_height} but it displays as "
                f"{image.width}x{image.height}; its shapes cannot be rasterized onto it",
            )
        warnings.append(
            f"the export declares the image as {frame_width}x{frame_height} but it displays as "
            f"{image.width}x{image.height}; boxes are normalized by the declared size"
        )

    objects: list[EncodedObject] = []
    layers: list[tuple[int, Coverage]] = []
    notes: list[ObjectNote] = []
    for index, obj in enumerate(sample.objects):
        covered = None
        if obj.has_shape or options.instance_masks:
            covered = object_coverage(obj, image.height, image.width)
        source_box = _source_box(obj, covered)
        if obj.has_shape and covered is not None and options.class_masks:
            layers.append((classes.id_of(obj.class_name), covered))
        if source_box is None:
            notes.append(
                ObjectNote(index, "degenerate_box", f"object {index} ({named(obj.class_name)}) covers no pixel")
            )
            continue
        clipped = _clip_box(source_box, frame_width, frame_height)
        x_min, y_min, x_max, y_max = clipped
        if x_max <= x_min or y_max <= y_min:
            notes.append(
                ObjectNote(
                    index,
                    "degenerate_box",
                    f"object {index} ({named(obj.class_name)}) box {source_box} has no area inside the "
                    f"{frame_width}x{frame_height} image; dropped",
                )
            )
            continue
        if clipped != source_box:
            notes.append(
                ObjectNote(
                    index, "clipped", f"object {index} ({named(obj.class_name)}) box {source_box} clipped to {clipped}"
                )
            )
        scale_x, scale_y = image.width / frame_width, image.height / frame_height
        objects.append(
            EncodedObject(
                class_id=classes.id_of(obj.class_name),
                class_name=obj.class_name,
                object_index=index,
                bbox_pixels=(x_min * scale_x, y_min * scale_y, x_max * scale_x, y_max * scale_y),
                bbox_normalized=(x_min / frame_width, y_min / frame_height, x_max / frame_width, y_max / frame_height),
                area_pixels=_area(obj, covered, (x_max - x_min) * scale_x * (y_max - y_min) * scale_y),
                is_crowd=obj.is_crowd,
                mask_png=encode_png(covered.full().view(np.uint8))
                if options.instance_masks and covered is not None
                else None,
                rle_counts=covered.rle_counts() if obj.has_shape and covered is not None else None,
                keypoints=_object_keypoints(obj, index, frame_width, frame_height, (scale_x, scale_y), notes),
            )
        )

    segmentation_png = None
    mask_class_ids: tuple[int, ...] = ()
    mask_pixels: tuple[tuple[int, int], ...] = ()
    if options.class_masks:
        mask = _class_mask(sample, classes, options, combinations, layers, image)
        segmentation_png = encode_png(mask)
        if mask.size <= 2**24:  # cv2.calcHist counts in float32, exact up to 2**24
            histogram = cv2.calcHist([mask], [0], None, [256], [0, 256]).ravel()  # 10x faster than np.bincount
        else:
            histogram = np.bincount(mask.ravel(), minlength=256)
        mask_class_ids = tuple(int(value) for value in np.flatnonzero(histogram[1:]) + 1)
        mask_pixels = tuple((class_id, int(histogram[class_id])) for class_id in mask_class_ids)

    keypoints: list[EncodedKeypoint] | None = None
    if options.keypoints:
        keypoints = []
        for point_index, point in enumerate(sample.keypoints):
            if not (0 <= point.x <= frame_width and 0 <= point.y <= frame_height):
                notes.append(
                    ObjectNote(
                        point_index,
                        "keypoint_outside",
                        f"keypoint {named(point.class_name)} at ({point.x}, {point.y}) is outside the "
                        f"{frame_width}x{frame_height} image; dropped",
                    )
                )
                continue
            keypoints.append(
                EncodedKeypoint(
                    classes.id_of(point.class_name),
                    point.class_name,
                    point.x * (image.width / frame_width),  # the scale is exactly 1 when the frames agree
                    point.y * (image.height / frame_height),
                    point.x / frame_width,
                    point.y / frame_height,
                )
            )

    return EncodedSample(
        sample=sample,
        image_id=image_id if image_id is not None else image_id_of(sample, {}),
        image_bytes=image_bytes,
        image=image,
        sha256_hex=hashlib.sha256(image_bytes).hexdigest(),
        objects=tuple(objects),
        image_class_ids=tuple(classes.id_of(name) for name in sample.image_labels),
        segmentation_png=segmentation_png,
        mask_class_ids=mask_class_ids,
        notes=tuple(notes),
        warnings=tuple(warnings),
        keypoints=tuple(keypoints) if keypoints is not None else None,
        mask_pixels=mask_pixels,
    )


def _object_keypoints(
    obj: ObjectAnnotation,
    index: int,
    frame_width: float,
    frame_height: float,
    scale: tuple[float, float],
    notes: list[ObjectNote],
) -> tuple[EncodedObjectKeypoint, ...]:
    """The object's keypoints normalized; a labelled one outside the image becomes unlabelled (and is noted)."""
    points = []
    for point in obj.keypoints:
        visibility, x, y = point.visibility, point.x, point.y
        if visibility and not (0 <= x <= frame_width and 0 <= y <= frame_height):
            notes.append(
                ObjectNote(
                    index,
                    "keypoint_outside",
                    f"object {index} ({named(obj.class_name)}) keypoint {named(point.name)} at ({x}, {y}) is "
                    f"outside the {frame_width}x{frame_height} image; written as not labelled",
                )
            )
            visibility = 0
        if visibility == 0:
            x = y = 0.0
        points.append(
            EncodedObjectKeypoint(point.name, x * scale[0], y * scale[1], x / frame_width, y / frame_height, visibility)
        )
    return tuple(points)


def _area(obj: ObjectAnnotation, covered: Coverage | None, box_area: float) -> float:
    """The export's area, else the shape's pixel count, else the box's area (see `EncodedObject`)."""
    if obj.area is not None:
        return obj.area
    if obj.has_shape and covered is not None:
        return float(np.count_nonzero(covered.pixels))
    return box_area


def _class_mask(
    sample: Sample,
    classes: ClassList,
    options: RecordOptions,
    combinations: CombinationClasses | None,
    layers: list[tuple[int, Coverage]],
    image: ImageInfo,
) -> np.ndarray[tuple[int, int], np.dtype[np.uint8]]:
    """The sample's class-index mask: its mask file (if any) with its shapes painted over."""
    base = None
    if sample.segmentation is not None:
        class_ids = {name: classes.id_of(name) for name in sample.segmentation.class_names()}
        if class_ids and max(class_ids.values()) > MAX_MASK_CLASS_ID:
            raise SampleError(
                "too_many_classes",
                f"mask class ids go up to {max(class_ids.values())}; PNG masks hold at most "
                f"{MAX_MASK_CLASS_ID} classes",
            )
        base = read_class_mask(sample.segmentation, class_ids, (image.width, image.height))
        if base.shape != (image.height, image.width):
            raise SampleError(
                "mask_size_mismatch",
                f"mask {sample.segmentation.path} is {base.shape[1]}x{base.shape[0]} but the image "
                f"displays as {image.width}x{image.height}",
            )
    if any(class_id > MAX_MASK_CLASS_ID for class_id, _ in layers):
        raise SampleError("too_many_classes", f"PNG class masks hold at most {MAX_MASK_CLASS_ID} classes")
    priority = tuple(classes.id_of(name) for name in options.class_priority)
    mask = compose_class_mask(layers, image.height, image.width, options.overlap, priority, combinations, base)
    if combinations is not None and len(classes) + len(combinations.names) > MAX_MASK_CLASS_ID:
        raise SampleError("too_many_classes", f"overlap combinations push the class count past {MAX_MASK_CLASS_ID}")
    return mask

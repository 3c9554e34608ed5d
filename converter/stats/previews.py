"""Preview thumbnails: one record drawn as training will see it.

A preview is drawn from the record as written (its normalized boxes, its masks, its
polygons), on the image as the converter displays it (EXIF orientation applied to JPEGs,
as `converter.core.images.probe_image` defines the displayed frame), so a wrong box shows
as a wrong box. Everything is drawn at the displayed size and only then scaled down, so
a box's outline lies exactly on the pixels its normalized coordinates name.

Pixel conventions (what the tests pin): a box `(x_min, y_min, x_max, y_max)` covers the
pixel columns `round(x_min * W)` to `round(x_max * W) - 1` and the rows likewise; its
outline is drawn on those border pixels and grows inwards, so the outermost outline
pixels are the box's own border pixels. Masks tint exactly their nonzero pixels.
"""

from __future__ import annotations

import colorsys
import io
import math
from collections.abc import Sequence

import cv2
import numpy as np
from numpy.typing import NDArray
from PIL import Image

from converter.core.images import UNREADABLE_IMAGE, probe_image, quiet_about_size
from converter.errors import SampleError
from converter.stats.records import WrittenKeypoint, WrittenRecord

BGR = tuple[int, int, int]
Canvas = NDArray[np.uint8]

THUMBNAIL_SIDE = 320
"""The longest side of a preview, in pixels: images larger than this are scaled down after drawing."""

MASK_OPACITY = 0.45
"""How much of a class colour a masked pixel takes: enough to see the class, little enough to see the image."""

IGNORE_VALUE = 255
IGNORE_GREY: BGR = (96, 96, 96)
_HATCH_LIGHT: BGR = (208, 208, 208)
_HATCH_PERIOD = 8  # pixels between the diagonal hatch lines that mark ignored pixels

# Sasha Trubetskoy's 20 distinct colours less grey, white and black (which read as "ignore",
# background or shadow), as BGR; classes past these get generated hues.
_PALETTE_RGB = (
    (0xE6, 0x19, 0x4B),
    (0x3C, 0xB4, 0x4B),
    (0x43, 0x63, 0xD8),
    (0xF5, 0x82, 0x31),
    (0x91, 0x1E, 0xB4),
    (0x42, 0xD4, 0xF4),
    (0xF0, 0x32, 0xE6),
    (0xFF, 0xE1, 0x19),
    (0xBF, 0xEF, 0x45),
    (0x46, 0x99, 0x90),
    (0x9A, 0x63, 0x24),
    (0x80, 0x00, 0x00),
    (0x80, 0x80, 0x00),
    (0x00, 0x00, 0x75),
    (0xFA, 0xBE, 0xD4),
    (0xDC, 0xBE, 0xFF),
    (0xAA, 0xFF, 0xC3),
    (0xFF, 0xD8, 0xB1),
)
_GOLDEN_RATIO_CONJUGATE = 0.618033988749895

# EXIF orientation -> the transposition that displays the stored pixels (as PIL.ImageOps.exif_transpose)
_DISPLAY_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_FONT_SCALE = 0.4
_CAPTION_HEIGHT = 16
_PLACEHOLDER_BACKGROUND: BGR = (64, 64, 64)
_TEXT_COLOR: BGR = (255, 255, 255)


def class_colors(count: int) -> list[BGR]:
    """`count` distinct BGR colours, the colour of class id `i` at index `i - 1`.

    A class's colour depends only on its id, never on how many classes there are, so a
    class keeps its colour across datasets and splits: a fixed palette first, then hues
    spaced by the golden ratio (which never repeat) at alternating saturation and value.
    """
    colors: list[BGR] = []
    for index in range(count):
        if index < len(_PALETTE_RGB):
            red, green, blue = _PALETTE_RGB[index]
        else:
            generated = index - len(_PALETTE_RGB)
            hue = (0.05 + generated * _GOLDEN_RATIO_CONJUGATE) % 1.0
            saturation, value = (0.85, 0.95) if generated % 2 == 0 else (0.6, 0.75)
            red, green, blue = (round(channel * 255) for channel in colorsys.hsv_to_rgb(hue, saturation, value))
        colors.append((blue, green, red))
    return colors


def color_of(class_id: int, colors: Sequence[BGR]) -> BGR:
    """The colour of a class id (ids count from 1); ids past the palette wrap around rather than fail."""
    if not colors:
        return IGNORE_GREY
    return colors[(class_id - 1) % len(colors)]


def draw_record(record: WrittenRecord, colors: Sequence[BGR], *, longest_side: int = THUMBNAIL_SIDE) -> Canvas:
    """The record drawn as a BGR uint8 thumbnail whose longest side is at most `longest_side`.

    Layers, bottom to top: the class mask, the instance masks, polygon outlines, boxes,
    keypoints; image labels go in a caption band below the image. An image that cannot be
    decoded (or a record without image bytes) gives a placeholder with the annotations drawn
    on a blank canvas of the record's proportions, never an exception: one bad image must not
    cost the whole page.
    """
    canvas = _displayed_image(record.image_bytes, longest_side)
    problem = None
    if canvas is None:
        problem = "no image bytes" if record.image_bytes is None else "image cannot be decoded"
        canvas = _placeholder(record.width, record.height, longest_side)
    height, width = canvas.shape[:2]
    thickness = max(2, round(2 * max(width, height) / longest_side))
    if record.class_mask_png is not None:
        _tint_class_mask(canvas, _decode_mask(record.class_mask_png, width, height), colors)
    for obj in record.objects:
        if obj.mask_png is not None:
            mask = _decode_mask(obj.mask_png, width, height)
            if mask is not None:
                _tint(canvas, mask != 0, color_of(obj.class_id, colors))
    scale_x = width / record.width if record.width > 0 else 1.0
    scale_y = height / record.height if record.height > 0 else 1.0
    for obj in record.objects:
        for polygon in obj.polygons:
            for ring in (polygon.exterior, *polygon.holes):
                _outline(canvas, ring, scale_x, scale_y, color_of(obj.class_id, colors), max(1, thickness // 2))
    for obj in record.objects:
        _draw_box(canvas, obj.box, color_of(obj.class_id, colors), thickness)
    for obj in record.objects:
        for point in obj.keypoints:
            _dot(canvas, point, color_of(obj.class_id, colors), thickness)
    for class_id, _name, point in record.keypoints:
        _dot(canvas, point, color_of(class_id, colors), thickness)
    thumbnail = _scaled_down(canvas, longest_side)
    if problem is not None:
        _centered_text(thumbnail, problem)
    if record.image_labels:
        thumbnail = _with_caption(thumbnail, record.image_labels, colors)
    return thumbnail


def box_pixels(box: Sequence[float], width: int, height: int) -> tuple[int, int, int, int]:
    """The first and last pixel column and row a normalized box covers: `(left, top, right, bottom)`, inclusive.

    Half-way coordinates round up (`floor(v + 0.5)`), the same way on both edges, so
    adjacent boxes share no pixel; a box thinner than a pixel still covers one.
    """
    x_min, y_min, x_max, y_max = box
    left = _clamp(math.floor(x_min * width + 0.5), 0, width - 1)
    top = _clamp(math.floor(y_min * height + 0.5), 0, height - 1)
    right = _clamp(math.floor(x_max * width + 0.5) - 1, left, width - 1)
    bottom = _clamp(math.floor(y_max * height + 0.5) - 1, top, height - 1)
    return left, top, right, bottom


def _draw_box(canvas: Canvas, box: Sequence[float], color: BGR, thickness: int) -> None:
    """Outline a normalized box on `canvas`, on its border pixels and `thickness` pixels inwards."""
    height, width = canvas.shape[:2]
    left, top, right, bottom = box_pixels(box, width, height)
    inner = max(1, thickness)
    canvas[top : min(top + inner, bottom + 1), left : right + 1] = color
    canvas[max(bottom - inner + 1, top) : bottom + 1, left : right + 1] = color
    canvas[top : bottom + 1, left : min(left + inner, right + 1)] = color
    canvas[top : bottom + 1, max(right - inner + 1, left) : right + 1] = color


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(value, high))


def _displayed_image(data: bytes | None, longest_side: int) -> Canvas | None:
    """The image's pixels in the displayed frame, as BGR; None when it cannot be decoded.

    `probe_image` decides the orientation (JPEG EXIF only, as the converter reads it) and
    refuses decompression bombs before anything the image's size is allocated. A JPEG much
    larger than the thumbnail is decoded at a reduced scale (libjpeg's DCT scaling, never
    below the thumbnail's size): the annotations are drawn at whatever size the canvas has.
    """
    if data is None:
        return None
    try:
        info = probe_image(data)
        with quiet_about_size(), Image.open(io.BytesIO(data)) as image:
            scale = longest_side / max(image.size)
            if scale < 0.5:
                image.draft("RGB", (math.ceil(image.size[0] * scale), math.ceil(image.size[1] * scale)))
            image.load()
            transpose = _DISPLAY_TRANSPOSE.get(info.exif_orientation)
            shown = image.transpose(transpose) if transpose is not None else image
            rgb = np.asarray(shown.convert("RGB"))
    except (SampleError, Image.DecompressionBombError, *UNREADABLE_IMAGE):
        return None
    return np.ascontiguousarray(rgb[:, :, ::-1])


def _placeholder(width: int, height: int, longest_side: int) -> Canvas:
    """A blank canvas with the record's proportions at thumbnail size (4:3 where the record has no size)."""
    if width <= 0 or height <= 0:
        width, height = 4, 3
    scale = longest_side / max(width, height)
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    canvas = np.empty((*size, 3), np.uint8)
    canvas[:] = _PLACEHOLDER_BACKGROUND
    cv2.line(canvas, (0, 0), (size[1] - 1, size[0] - 1), (96, 96, 96), 1)
    cv2.line(canvas, (0, size[0] - 1), (size[1] - 1, 0), (96, 96, 96), 1)
    return canvas


def _decode_mask(data: bytes, width: int, height: int) -> NDArray[np.uint8] | None:
    """A single-channel mask at the canvas size (nearest neighbour keeps class ids intact); None if unreadable."""
    mask = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if mask is None or mask.dtype != np.uint8:
        return None
    if mask.ndim == 3:
        mask = mask[:, :, 0]
    if mask.shape != (height, width):
        mask = cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST)
    return np.asarray(mask, np.uint8)


def _tint(canvas: Canvas, where: NDArray[np.bool_], color: BGR) -> None:
    """Blend `color` into exactly the pixels of `where`; every other pixel is left as it was."""
    if not where.any():
        return
    pixels = canvas[where].astype(np.float32)
    blended = pixels * (1.0 - MASK_OPACITY) + np.asarray(color, np.float32) * MASK_OPACITY
    canvas[where] = np.rint(blended).astype(np.uint8)


def _tint_class_mask(canvas: Canvas, mask: NDArray[np.uint8] | None, colors: Sequence[BGR]) -> None:
    """Each class's pixels in its colour; ignored pixels a darker grey with light diagonal hatching, like no class.

    One blend over every painted pixel through a colour table (the same arithmetic as `_tint`),
    rather than a pass per class: a preview of a 20-class mask costs one pass, not twenty.
    """
    if mask is None:
        return
    painted = mask != 0
    if not painted.any():
        return
    table = np.array([(0, 0, 0), *(color_of(value, colors) for value in range(1, 256))], np.float32)
    table[IGNORE_VALUE] = IGNORE_GREY
    blended = canvas[painted].astype(np.float32) * (1.0 - MASK_OPACITY) + table[mask[painted]] * MASK_OPACITY
    canvas[painted] = np.rint(blended).astype(np.uint8)
    ignored = mask == IGNORE_VALUE
    if ignored.any():
        rows, columns = np.indices(mask.shape)
        canvas[ignored & ((rows + columns) % _HATCH_PERIOD == 0)] = _HATCH_LIGHT


def _outline(canvas: Canvas, ring: Sequence[float], scale_x: float, scale_y: float, color: BGR, thickness: int) -> None:
    """A closed polygon ring, in displayed pixels, outlined at sub-pixel precision (cv2's fixed-point `shift`)."""
    if len(ring) < 4:
        return
    shift = 4
    points = np.asarray(ring, np.float64).reshape(-1, 2) * (scale_x, scale_y)
    fixed = np.rint(points * (1 << shift)).astype(np.int32).reshape(-1, 1, 2)
    cv2.polylines(canvas, [fixed], isClosed=True, color=color, thickness=thickness, lineType=cv2.LINE_8, shift=shift)


def _dot(canvas: Canvas, point: WrittenKeypoint, color: BGR, thickness: int) -> None:
    """A keypoint: a filled dot ringed in black if visible, a hollow ring if hidden; unlabelled points are not drawn."""
    if point.visibility == 0:
        return
    height, width = canvas.shape[:2]
    center = (round(point.x * width), round(point.y * height))
    radius = thickness * 2
    if point.visibility == 1:
        cv2.circle(canvas, center, radius, color, max(1, thickness // 2))
        return
    cv2.circle(canvas, center, radius, color, -1)
    cv2.circle(canvas, center, radius, (0, 0, 0), 1)


def _scaled_down(canvas: Canvas, longest_side: int) -> Canvas:
    """The canvas shrunk (area averaging) so that its longest side is at most `longest_side`; never enlarged."""
    height, width = canvas.shape[:2]
    scale = longest_side / max(width, height)
    if scale >= 1:
        return canvas
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(cv2.resize(canvas, size, interpolation=cv2.INTER_AREA), np.uint8)


def _ascii(text: str) -> str:
    """Text cv2's Hershey fonts can draw: they have no glyphs beyond ASCII (the page shows the real text)."""
    return "".join(character if " " <= character <= "~" else "?" for character in text)


def _centered_text(canvas: Canvas, text: str) -> None:
    (text_width, text_height), _baseline = cv2.getTextSize(text, _FONT, _FONT_SCALE, 1)
    height, width = canvas.shape[:2]
    origin = (max(0, (width - text_width) // 2), (height + text_height) // 2)
    cv2.putText(canvas, text, origin, _FONT, _FONT_SCALE, _TEXT_COLOR, 1, cv2.LINE_AA)


def _with_caption(thumbnail: Canvas, labels: Sequence[tuple[int, str]], colors: Sequence[BGR]) -> Canvas:
    """The thumbnail with a dark band below it naming the image labels, each after a swatch of its class colour.

    Labels that do not fit end in "...": the band is one line, so the thumbnail's size stays predictable.
    """
    width = thumbnail.shape[1]
    band = np.empty((_CAPTION_HEIGHT, width, 3), np.uint8)
    band[:] = (32, 32, 32)
    x = 3
    for class_id, name in labels:
        text = _ascii(name)
        (text_width, _height), _baseline = cv2.getTextSize(text, _FONT, _FONT_SCALE, 1)
        if x + 10 + text_width > width - 3:
            cv2.putText(band, "...", (x, 12), _FONT, _FONT_SCALE, _TEXT_COLOR, 1, cv2.LINE_AA)
            break
        cv2.rectangle(band, (x, 4), (x + 7, 11), color_of(class_id, colors), -1)
        cv2.putText(band, text, (x + 10, 12), _FONT, _FONT_SCALE, _TEXT_COLOR, 1, cv2.LINE_AA)
        x += 10 + text_width + 8
    return np.vstack([thumbnail, band])

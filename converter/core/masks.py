"""Class-index masks: reading a source's mask file into class ids, and encoding it as PNG.

Output masks are single-channel 8-bit PNGs whose pixel value is the class id (1 for the
first class), 0 for background and 255 for "ignore"; so a run has at most 254 classes
in masks. PNG is lossless: a JPEG mask would blur class indices at every edge.

Input masks are read in their stored index space: a palette PNG by its indices (not
its colours, which only help people look at it), a grey image by its values, an RGB
image by exact colour. A source that gives only colours has every mask read by colour,
a palette PNG by its palette's colours and a grey one as `(v, v, v)`. Every value found
must be in the mapping the source gave. A mask whose header says it is not the size
expected (its image's) fails before its pixels are decoded: a decompression bomb never
gets to allocate.
"""

from __future__ import annotations

from collections.abc import Mapping

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image

from converter.core.images import MAX_IMAGE_PIXELS, UNREADABLE_IMAGE, quiet_about_size
from converter.core.sample import SegmentationMask
from converter.core.storage import seekable
from converter.errors import SampleError

IGNORE_ID = 255
MAX_MASK_CLASS_ID = 254

# Filter none + RLE strategy: about 5x faster than OpenCV's defaults on class masks, and smaller files.
_PNG_PARAMS = [
    cv2.IMWRITE_PNG_FILTER,
    cv2.IMWRITE_PNG_FILTER_NONE,
    cv2.IMWRITE_PNG_STRATEGY,
    cv2.IMWRITE_PNG_STRATEGY_RLE,
]

ClassIdMask = npt.NDArray[np.uint8]


def encode_png(mask: ClassIdMask) -> bytes:
    """Encode a 2-D uint8 array as a single-channel PNG."""
    if mask.ndim != 2 or mask.dtype != np.uint8:
        raise ValueError(f"expected a 2-D uint8 mask, got shape {mask.shape} dtype {mask.dtype}")
    ok, encoded = cv2.imencode(".png", mask, _PNG_PARAMS)
    if not ok:
        raise RuntimeError("OpenCV failed to encode a PNG mask")
    return encoded.tobytes()


def read_class_mask(
    mask: SegmentationMask, class_ids: Mapping[str, int], expected_size: tuple[int, int] | None = None
) -> ClassIdMask:
    """Read a source mask file and map its values to output class ids.

    Raises `SampleError` if the file is unreadable, is not `expected_size` (width, height),
    or holds a value or colour the mapping does not list, naming the first few such values.
    """
    try:
        with quiet_about_size(), Image.open(seekable(mask.path)) as image:
            if expected_size is not None and image.size != expected_size:
                raise SampleError(
                    "mask_size_mismatch",
                    f"mask {mask.path} is {image.size[0]}x{image.size[1]} but the image displays as "
                    f"{expected_size[0]}x{expected_size[1]}",
                )
            mode = image.mode
            if mask.alpha_class is not None:
                return _map_alpha(image, mask, mask.alpha_class, class_ids)
            # With only a colour map (ClearML's `(1, 1, 1): [person]`), grey and palette masks are read by colour too.
            if mode in ("P", "L", "I;16", "I") and (mask.index_to_class or not mask.color_to_class):
                return _map_values(np.asarray(image), mask, class_ids)
            rgb = np.asarray(image.convert("RGB"))
    except Image.DecompressionBombError:
        raise SampleError(
            "image_too_large",
            f"mask {mask.path} is larger than the {MAX_IMAGE_PIXELS:,} pixels an image may have (a decompression bomb)",
        ) from None
    except UNREADABLE_IMAGE as error:
        raise SampleError("corrupt_mask", f"mask {mask.path} cannot be read: {error}") from None
    return _map_colors(rgb, mask, class_ids)


ALPHA_THRESHOLD = 128  # alpha is opacity: at least half opaque counts as foreground


def _map_alpha(image: Image.Image, mask: SegmentationMask, name: str, class_ids: Mapping[str, int]) -> ClassIdMask:
    if "A" not in image.getbands() and not (image.mode == "P" and "transparency" in image.info):
        raise SampleError("malformed_mask", f"mask {mask.path} has no alpha channel (mode {image.mode})")
    alpha = np.asarray(image.convert("RGBA").getchannel("A"))
    result: ClassIdMask = np.where(alpha >= ALPHA_THRESHOLD, np.uint8(class_ids[name]), np.uint8(0))
    return result


def _class_id(name: str | None, class_ids: Mapping[str, int]) -> int:
    return 0 if name is None else class_ids[name]


def _map_values(values: npt.NDArray[np.generic], mask: SegmentationMask, class_ids: Mapping[str, int]) -> ClassIdMask:
    """Map index values to class ids through a lookup table.

    8-bit masks (the common case) go through `cv2.LUT`, with values the map does not list
    sent to 255 (never a class id): one pass finds both the mapping and whether anything is
    unknown, about 8x faster than widening to int64 and calling `np.unique`.
    """
    known = dict(mask.index_to_class)
    if values.dtype == np.uint8:
        lookup = np.full(256, IGNORE_ID, dtype=np.uint8)
        for index, name in known.items():
            if index < lookup.size:
                lookup[index] = _class_id(name, class_ids)
        mapped: ClassIdMask = np.asarray(cv2.LUT(np.asarray(values, dtype=np.uint8), lookup), dtype=np.uint8)
        if (mapped == IGNORE_ID).any():
            _raise_unknown_values(np.flatnonzero(np.bincount(values.ravel(), minlength=256)), known, mask)
        return mapped
    present = np.unique(values)
    _raise_unknown_values(present, known, mask)
    wide_lookup = np.zeros(int(present.max(initial=0)) + 1, dtype=np.uint8)
    for index, name in known.items():
        if index < wide_lookup.size:
            wide_lookup[index] = _class_id(name, class_ids)
    result: ClassIdMask = wide_lookup[values]
    return result


def _raise_unknown_values(
    present: npt.NDArray[np.generic], known: Mapping[int, str | None], mask: SegmentationMask
) -> None:
    unknown = [int(value) for value in present if int(value) not in known]
    if unknown:
        raise SampleError(
            "unknown_mask_value",
            f"mask {mask.path} has pixel values {unknown[:8]} that the class map does not list "
            f"(known: {sorted(known)})",
        )


def _map_colors(rgb: npt.NDArray[np.uint8], mask: SegmentationMask, class_ids: Mapping[str, int]) -> ClassIdMask:
    packed = (rgb[..., 0].astype(np.uint32) << 16) | (rgb[..., 1].astype(np.uint32) << 8) | rgb[..., 2]
    colors, inverse = np.unique(packed, return_inverse=True)
    color_ids = {(r << 16) | (g << 8) | b: _class_id(name, class_ids) for (r, g, b), name in mask.color_to_class}
    unknown = [int(color) for color in colors if int(color) not in color_ids]
    if unknown:
        listed = ", ".join(f"#{color:06x}" for color in unknown[:8])
        raise SampleError(
            "unknown_mask_color",
            f"mask {mask.path} has colours the class map does not list: {listed}",
        )
    per_color = np.array([color_ids[int(color)] for color in colors], dtype=np.uint8)
    result: ClassIdMask = per_color[inverse.reshape(packed.shape)]
    return result

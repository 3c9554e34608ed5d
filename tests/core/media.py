"""Tiny, seeded image and mask files for the core tests (generated, never downloaded)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

EXIF_ORIENTATION = 0x0112


def noise_rgb(width: int, height: int, seed: int = 0) -> Image.Image:
    """A seeded noise image: incompressible enough that files are not trivially small."""
    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


def jpeg_bytes(width: int, height: int, seed: int = 0, orientation: int | None = None) -> bytes:
    """A JPEG of `width` x `height` stored pixels, with an EXIF orientation tag if given."""
    buffer = io.BytesIO()
    image = noise_rgb(width, height, seed)
    if orientation is None:
        image.save(buffer, "JPEG", quality=80)
    else:
        exif = Image.Exif()
        exif[EXIF_ORIENTATION] = orientation
        image.save(buffer, "JPEG", quality=80, exif=exif)
    return buffer.getvalue()


def png_bytes(width: int, height: int, seed: int = 0) -> bytes:
    buffer = io.BytesIO()
    noise_rgb(width, height, seed).save(buffer, "PNG")
    return buffer.getvalue()


def write_file(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path

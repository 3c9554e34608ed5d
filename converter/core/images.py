"""Finding image files under the images folder, and reading what a record needs from them.

Resolution maps a reference from an export (`s3://bucket/some dir/a.jpg`, a local path,
an http URL) to a file under the images folder, trying in order:

1. the reference's whole path under the folder (`<images>/some dir/a.jpg`), then with
   the bucket or host in front (`<images>/bucket/some dir/a.jpg`);
2. its trailing components, longest first (`<images>/a.jpg` for a one-folder key);
3. its file name anywhere under the folder, if exactly one file has it.

Each step is tried with the reference as written and, if it differs, URL-decoded.
Nothing resolves outside the folder: references with `..` components are refused, and
a candidate whose real path (symlinks followed) leaves the folder is ignored.

Image sizes are read from the file header, never by decoding pixels (50 us against 3 ms
an image): the displayed size swaps width and height for EXIF orientations 5-8.
"""

from __future__ import annotations

import io
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

from PIL import Image, UnidentifiedImageError

from converter.errors import SampleError

EXIF_ORIENTATION_TAG = 0x0112
_TRANSPOSING_ORIENTATIONS = frozenset({5, 6, 7, 8})  # rotated by 90 or 270 degrees
_JPEG_END = b"\xff\xd9"
_JPEG_START_OF_SCAN = 0xDA
_PNG_END = b"IEND\xaeB`\x82"


def reference_parts(reference: str) -> tuple[str, tuple[str, ...]]:
    """Split an export's image reference into (bucket or host, path components).

    `s3://bucket/a/b.jpg` -> `("bucket", ("a", "b.jpg"))`; `/data/a.jpg` -> `("", ("data", "a.jpg"))`.
    """
    parsed = urlsplit(reference)
    if parsed.scheme in ("s3", "gs", "http", "https"):
        location, path = parsed.netloc, parsed.path
    else:  # a plain path (a Windows drive letter parses as a scheme; treat it as a path too)
        location, path = "", reference.replace("\\", "/")
    return location, tuple(part for part in PurePosixPath(path).parts if part not in ("/", "."))


class ImageResolver:
    """Resolves export references to files under one images folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._real_root = Path(os.path.realpath(root))
        self._files_by_name: dict[str, list[Path]] | None = None

    def resolve(self, reference: str) -> Path:
        """The file a reference names; raises `SampleError` when absent, ambiguous or unsafe."""
        variants = [reference]
        if unquote(reference) != reference:
            variants.append(unquote(reference))
        for variant in variants:
            location, parts = reference_parts(variant)
            if ".." in parts:
                raise SampleError("unsafe_path", f"image reference {reference!r} contains '..'; refused")
            if not parts:
                raise SampleError("missing_image", f"image reference {reference!r} names no file")
            candidates = [parts, (location, *parts)] if location else [parts]
            candidates += [parts[start:] for start in range(1, len(parts))]
            for candidate in candidates:
                path = self.root.joinpath(*candidate)
                if path.is_file():
                    if not self._is_inside(path):
                        raise SampleError(
                            "unsafe_path", f"image {reference!r} resolves to {path}, a link out of {self.root}; refused"
                        )
                    return path
        name = reference_parts(variants[-1])[1][-1]
        matches = self._index().get(name, [])
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            listed = ", ".join(str(match.relative_to(self.root)) for match in matches[:5])
            raise SampleError(
                "ambiguous_image",
                f"image {reference!r} is ambiguous: {len(matches)} files under {self.root} are named "
                f"{name!r} ({listed}); lay the folder out like the bucket keys so the path decides",
            )
        raise SampleError("missing_image", f"image {reference!r} not found under {self.root}")

    def _is_inside(self, path: Path) -> bool:
        """Whether the real location of `path` (symlinks followed) is inside the images folder."""
        return Path(os.path.realpath(path)).is_relative_to(self._real_root)

    def _index(self) -> dict[str, list[Path]]:
        """File name -> files, built on first use: only references that miss by path need it."""
        if self._files_by_name is None:
            index: dict[str, list[Path]] = defaultdict(list)
            for folder, subfolders, files in os.walk(self.root):
                subfolders.sort()
                for file_name in sorted(files):
                    path = Path(folder) / file_name
                    if path.is_file() and self._is_inside(path):
                        index[file_name].append(path)
            self._files_by_name = dict(index)
        return self._files_by_name


@dataclass(frozen=True)
class ImageInfo:
    """What a record needs to know about an encoded image, read from its header."""

    format: str
    width: int
    height: int
    exif_orientation: int

    @property
    def stored_size(self) -> tuple[int, int]:
        """(width, height) of the pixels as stored, before EXIF orientation."""
        if self.exif_orientation in _TRANSPOSING_ORIENTATIONS:
            return self.height, self.width
        return self.width, self.height


def probe_image(data: bytes) -> ImageInfo:
    """Format and displayed size of an encoded image, without decoding its pixels.

    Truncated JPEG and PNG files are caught by their missing end marker, which costs
    nothing; a full decode would catch more corruption at 50 times the cost. The marker
    is looked for after the image data starts, not at the very end of the file: cameras
    append data after it (motion photos append a whole video).
    """
    if not data:
        raise SampleError("corrupt_image", "image file is empty")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image_format = (image.format or "").lower()
            width, height = image.size
            orientation = image.getexif().get(EXIF_ORIENTATION_TAG, 1) if image_format == "jpeg" else 1
            data_offset = image.tile[0][2] if image.tile else 0
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise SampleError("corrupt_image", f"image cannot be read: {error}") from None
    if image_format == "jpeg":
        scan_start = _jpeg_scan_start(data)
        # rfind: the marker normally sits at the very end, so this reads a few bytes, not the whole scan
        if scan_start is None or data.rfind(_JPEG_END, scan_start) == -1:
            raise SampleError("corrupt_image", "jpeg image is truncated (no end-of-image marker after its scan data)")
    elif image_format == "png" and data.rfind(_PNG_END, data_offset) == -1:
        raise SampleError("corrupt_image", "png image is truncated (no IEND chunk)")
    if not isinstance(orientation, int) or not 1 <= orientation <= 8:
        orientation = 1
    if orientation in _TRANSPOSING_ORIENTATIONS:
        width, height = height, width
    return ImageInfo(format=image_format, width=width, height=height, exif_orientation=orientation)


def _jpeg_scan_start(data: bytes) -> int | None:
    """Offset of the first start-of-scan marker, walking the marker segments from the start.

    Walking by segment lengths skips APP segments, so an embedded EXIF thumbnail (a whole
    small JPEG with its own end marker) is never mistaken for the end of the image.
    """
    position = 2  # after the start-of-image marker
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
        elif marker == _JPEG_START_OF_SCAN:
            return position
        elif 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a length
            position += 2
        else:
            position += 2 + int.from_bytes(data[position + 2 : position + 4], "big")
    return None

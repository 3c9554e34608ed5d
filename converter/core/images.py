"""Finding image files under the images folder, and reading what a record needs from them.

Resolution maps a reference from an export (`s3://bucket/some dir/a.jpg`, a local path,
an http URL) to a file under the images folder, trying in order:

1. the reference's whole path under the folder (`<images>/some dir/a.jpg`), then with
   the bucket or host in front (`<images>/bucket/some dir/a.jpg`);
2. its trailing components, longest first (`<images>/a.jpg` for a one-folder key);
3. its file name anywhere under the folder, if exactly one file has it.

Each step is tried with the reference as written and, if it differs, URL-decoded.
Nothing resolves outside the folder: references with `..` components are refused, and
a candidate whose real path (symlinks followed) leaves the folder is ignored. The images
folder may be a bucket prefix (`RemoteImageResolver`): the same rules, against a listing.

Image sizes are read from the file header, never by decoding pixels (50 us against 3 ms
an image): the displayed size swaps width and height for EXIF orientations 5-8. A header
that declares more than `MAX_IMAGE_PIXELS` (a decompression bomb, or a corrupt size) makes
its sample fail before anything the size of the image is allocated; so does an export
that declares such a size.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

from PIL import Image

from converter.core.input_files import shown
from converter.core.storage import RemotePath, describe, list_files
from converter.errors import SampleError, UsageError, quoted

EXIF_ORIENTATION_TAG = 0x0112
_TRANSPOSING_ORIENTATIONS = frozenset({5, 6, 7, 8})  # rotated by 90 or 270 degrees
_JPEG_END = b"\xff\xd9"
_JPEG_START_OF_SCAN = 0xDA
_PNG_END = b"IEND\xaeB`\x82"

MAX_IMAGE_PIXELS = 2 * 89_478_485
"""The largest image (width x height) a sample may have: Pillow's own decompression-bomb
limit, stated here so that it holds even where Pillow's is switched off. Every mask of
a sample is the size of its image, so this bounds what one sample can allocate."""

# What Pillow raises on a corrupt or hostile header: its parsers are written against these.
UNREADABLE_IMAGE = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, KeyError)


def check_reference(reference: str) -> None:
    """Raise `SampleError` for a reference that `urllib` cannot take apart, as written or unquoted.

    Resolvers and downloaders split references as URLs; a bracketed host that is no IPv6
    address (`https://[x/a.jpg`) or a port out of range makes `urlsplit` raise `ValueError`.
    """
    for variant in (reference, unquote(reference)):
        try:
            urlsplit(variant).port  # noqa: B018 - the port is parsed only when asked for
        except ValueError as error:
            raise SampleError(
                "malformed_image_reference", f"image reference {quoted(reference)} is not a readable URL: {error}"
            ) from None


def reference_parts(reference: str) -> tuple[str, tuple[str, ...]]:
    """Split an export's image reference into (bucket or host, path components).

    `s3://bucket/a/b.jpg` -> `("bucket", ("a", "b.jpg"))`; `/data/a.jpg` -> `("", ("data", "a.jpg"))`.
    """
    check_reference(reference)
    parsed = urlsplit(reference)
    if parsed.scheme in ("s3", "gs", "http", "https"):
        location, path = parsed.netloc, parsed.path
    else:  # a plain path (a Windows drive letter parses as a scheme; treat it as a path too)
        location, path = "", reference.replace("\\", "/")
    return location, tuple(part for part in PurePosixPath(path).parts if part not in ("/", "."))


@dataclass(frozen=True)
class ResolvedImage:
    """The file a reference resolved to, and its path relative to the images folder ('/'-separated).

    The relative path is what records carry as `image/filename`, whichever storage holds the file.
    """

    path: Path | RemotePath
    name: str


def _candidates(reference: str) -> Iterator[tuple[str, ...]]:
    """Relative paths to try for a reference, in the order the module docstring gives (steps 1 and 2).

    Raises `SampleError` on reaching a variant with `..` components or without a file name.
    """
    variants = [reference]
    if unquote(reference) != reference:
        variants.append(unquote(reference))
    for variant in variants:
        location, parts = reference_parts(variant)
        if ".." in parts:
            raise SampleError("unsafe_path", f"image reference {quoted(reference)} contains '..'; refused")
        if not parts:
            raise SampleError("missing_image", f"image reference {quoted(reference)} names no file")
        yield parts
        if location:
            yield (location, *parts)
        for start in range(1, len(parts)):
            yield parts[start:]


def _file_name(reference: str) -> str:
    """The name step 3 looks for: the last component of the (decoded) reference."""
    return reference_parts(unquote(reference))[1][-1]


def _not_found(reference: str, name: str, matches: list[str], root: Path | RemotePath) -> SampleError:
    """The error of a reference no path matched, and whose file name `matches` (relative paths) do not settle."""
    if len(matches) > 1:
        listed = ", ".join(matches[:5])
        return SampleError(
            "ambiguous_image",
            f"image {quoted(reference)} is ambiguous: {len(matches)} files under {root} are named "
            f"{quoted(name)} ({listed}); lay the folder out like the bucket keys so the path decides",
        )
    return SampleError("missing_image", f"image {quoted(reference)} not found under {root}")


class ImageResolver:
    """Resolves export references to files under one local images folder.

    Paths are handled as strings and each folder's real path is looked up once: resolving
    is per image, and `pathlib` plus a full `realpath` per image cost more than reading a
    small image's header (130 us against 60 us per image on a 20,000-image export).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._root_text = os.fspath(root)
        self._real_root = Path(os.path.realpath(root))
        self._real_folders: dict[str, bool] = {}  # folder -> whether its real path is inside the root
        self._files_by_name: dict[str, list[Path]] | None = None

    def resolve(self, reference: str) -> Path:
        """The file a reference names; raises `SampleError` when absent, ambiguous or unsafe."""
        return self._find(reference)[0]

    def locate(self, reference: str) -> ResolvedImage:
        """`resolve`, with the file's path relative to the images folder."""
        return ResolvedImage(*self._find(reference))

    def locate_by_path(self, reference: str) -> ResolvedImage | None:
        """Steps 1 and 2 only: the file the reference's path names, or None; the folder is never walked.

        For probing several candidate folders: a miss costs a few `stat`s, where `locate` would
        walk each folder for step 3. Raises `SampleError` for an unsafe reference, as `locate` does.
        """
        found = self._find_by_path(reference)
        return ResolvedImage(*found) if found is not None else None

    def _find_by_path(self, reference: str) -> tuple[Path, str] | None:
        for candidate in _candidates(reference):
            path = os.path.join(self._root_text, *candidate)  # noqa: PTH118 (per image: pathlib costs several times more)
            if os.path.isfile(path):  # noqa: PTH113
                if not self._is_inside(path):
                    raise SampleError(
                        "unsafe_path",
                        f"image {quoted(reference)} resolves to {path}, a link out of {self.root}; refused",
                    )
                return Path(path), "/".join(candidate)
        return None

    def _find(self, reference: str) -> tuple[Path, str]:
        found = self._find_by_path(reference)
        if found is not None:
            return found
        name = _file_name(reference)
        matches = self._index().get(name, [])
        if len(matches) == 1:
            return matches[0], matches[0].relative_to(self.root).as_posix()
        raise _not_found(reference, name, [str(match.relative_to(self.root)) for match in matches], self.root)

    def _is_inside(self, path: str) -> bool:
        """Whether the real location of `path` (symlinks followed) is inside the images folder."""
        if os.path.islink(path):  # noqa: PTH114 (per image, on the string path)
            return Path(os.path.realpath(path)).is_relative_to(self._real_root)
        folder = os.path.dirname(path)  # noqa: PTH120
        inside = self._real_folders.get(folder)
        if inside is None:
            inside = self._real_folders[folder] = Path(os.path.realpath(folder)).is_relative_to(self._real_root)
        return inside

    def _index(self) -> dict[str, list[Path]]:
        """File name -> files, built on first use: only references that miss by path need it."""
        if self._files_by_name is None:
            index: dict[str, list[Path]] = defaultdict(list)
            for folder, subfolders, files in os.walk(self.root):
                subfolders.sort()
                for file_name in sorted(files):
                    path = Path(folder) / file_name
                    if path.is_file() and self._is_inside(str(path)):
                        index[file_name].append(path)
            self._files_by_name = dict(index)
        return self._files_by_name


class RemoteImageResolver:
    """Resolves export references under a bucket prefix, by the local resolver's rules.

    The prefix is listed once, on first use, and every reference is matched against that
    listing: one request per thousand objects, instead of a request per candidate path
    per image. Buckets have no symlinks, so `..` is the only way out, and it is refused.
    """

    def __init__(self, root: RemotePath) -> None:
        self.root = root
        self._files: frozenset[str] | None = None
        self._files_by_name: dict[str, list[str]] = {}

    def locate(self, reference: str) -> ResolvedImage:
        """The object a reference names; raises `SampleError` when absent, ambiguous or unsafe."""
        files = self._listing()
        for candidate in _candidates(reference):
            relative = "/".join(candidate)
            if relative in files:
                return ResolvedImage(self.root / relative, relative)
        name = _file_name(reference)
        matches = self._files_by_name.get(name, [])
        if len(matches) == 1:
            return ResolvedImage(self.root / matches[0], matches[0])
        raise _not_found(reference, name, matches, self.root)

    def _listing(self) -> frozenset[str]:
        if self._files is None:
            try:
                listed = list_files(self.root)
            except OSError as error:
                raise UsageError(f"cannot list the images under {describe(error)}") from None
            index: dict[str, list[str]] = defaultdict(list)
            for relative in listed:
                index[PurePosixPath(relative).name].append(relative)
            self._files, self._files_by_name = frozenset(listed), dict(index)
        return self._files


def image_resolver(root: Path | RemotePath) -> ImageResolver | RemoteImageResolver:
    """The resolver for an images folder, local or in a bucket."""
    return RemoteImageResolver(root) if isinstance(root, RemotePath) else ImageResolver(root)


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


@contextmanager
def quiet_about_size() -> Iterator[None]:
    """Pillow's decompression-bomb warning silenced: `MAX_IMAGE_PIXELS` decides, and a skipped
    sample says so in the report, where a warning would only break the JSON log lines on stderr."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        yield


def _too_large(width: int, height: int, what: str) -> SampleError:
    return SampleError(
        "image_too_large",
        f"{what} {width}x{height} is more than the {MAX_IMAGE_PIXELS:,} pixels an image may have "
        "(a decompression bomb or a corrupt size)",
    )


def declared_size(width: Any, height: Any, what: str) -> tuple[int, int]:
    """An export's declared image size as `(width, height)`; raises `SampleError` unless it is a plausible one.

    `what` names the field in the message (`"`image_size`"`).
    """
    if not all(isinstance(side, int) and not isinstance(side, bool) and side > 0 for side in (width, height)):
        raise SampleError(
            "malformed_annotation",
            f"{what} width and height must be positive ints, got {shown(width)} x {shown(height)}",
        )
    if width * height > MAX_IMAGE_PIXELS:
        raise _too_large(width, height, f"{what} declares the image as")
    return width, height


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
        with quiet_about_size(), Image.open(io.BytesIO(data)) as image:
            image_format = (image.format or "").lower()
            width, height = image.size
            orientation = image.getexif().get(EXIF_ORIENTATION_TAG, 1) if image_format == "jpeg" else 1
            data_offset = image.tile[0][2] if image.tile else 0
    except Image.DecompressionBombError:
        raise SampleError(
            "image_too_large",
            f"image is larger than the {MAX_IMAGE_PIXELS:,} pixels an image may have (a decompression bomb)",
        ) from None
    except UNREADABLE_IMAGE as error:
        raise SampleError("corrupt_image", f"image cannot be read: {error}") from None
    if width * height > MAX_IMAGE_PIXELS:
        raise _too_large(width, height, "image header declares")
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

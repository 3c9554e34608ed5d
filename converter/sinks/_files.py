"""Plain files for the sinks that write a file per sample: split folders, output names, checksums.

Each split owns one top-level folder (`train`, `val`, `test`), so a rerun replaces exactly
the splits it writes. Every file is written under a hidden temporary name and renamed into
place, so no final name ever holds a partial file, not even inside the staging folder.
Each split lists what it wrote, with sha256, in `<split folder>/SHA256SUMS`: GNU
`sha256sum` format with paths relative to the output folder, so
`cd dataset && sha256sum -c train/SHA256SUMS` checks a copy without the converter.

Output names: an image keeps its file name, without the folders it sat in (the images of
a split share one folder, which is what the readers of these formats glob). Control
characters, backslashes and commas become `_`: they would break `sha256sum` lines and
Masterful's comma-separated records. Masks and annotation files take the image's stem,
so two images of a split must not share a stem; stems are compared ignoring case, as
macOS and Windows file systems compare names. The later image in record order then gets
`_` and the first 8 hex digits of its key's sha256 appended to its stem
(`a.jpg`, `a_3f2c9e1d.png`); record order is seeded, so names are stable across reruns.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from converter.core.materialize import EncodedSample, RecordOptions
from converter.core.protocols import ChecksumManifest
from converter.core.sample import InvalidValueError, check_text
from converter.core.split import SplitName
from converter.errors import UsageError

SPLIT_FOLDERS: dict[SplitName, str] = {"train": "train", "validation": "val", "test": "test"}
CHECKSUMS_FILE = "SHA256SUMS"
IMAGES_FOLDER = "images"
MASKS_FOLDER = "masks"
MASK_SUFFIX = ".png"  # masks are class indices: PNG is lossless, a JPEG would blur them at every edge

_UNSAFE_CHARACTERS = re.compile(r"[\x00-\x1f\x7f\\,]")
_SUFFIX_BY_FORMAT = {"jpeg": ".jpg", "tiff": ".tif"}  # for images whose name has no suffix
_KEY_DIGEST_CHARACTERS = 8


@dataclass(frozen=True)
class OutputName:
    """The name an image gets in its split folder; its masks and annotations use `stem`."""

    stem: str
    suffix: str

    @property
    def image_file(self) -> str:
        return self.stem + self.suffix


@dataclass
class UniqueNames:
    """Gives each image of a split a file name whose stem no other image of the split has."""

    _taken_stems: set[str] = field(default_factory=set)

    def claim(self, sample: EncodedSample) -> OutputName:
        name = PurePosixPath(_UNSAFE_CHARACTERS.sub("_", PurePosixPath(sample.sample.image_name).name))
        stem = name.stem
        suffix = name.suffix or _SUFFIX_BY_FORMAT.get(sample.image.format, "." + sample.image.format)
        if stem.casefold() in self._taken_stems:
            stem = f"{stem}_{hashlib.sha256(sample.sample.key.encode()).hexdigest()[:_KEY_DIGEST_CHARACTERS]}"
            base, number = stem, 2
            while stem.casefold() in self._taken_stems:  # only a key listed twice gets here
                stem, number = f"{base}_{number}", number + 1
        self._taken_stems.add(stem.casefold())
        return OutputName(stem, suffix)


def pass_through(sample: EncodedSample) -> EncodedSample:
    """The record encoder of the file formats: their writers need the whole sample (bytes,
    mask, names), and naming files must happen in record order, in the parent."""
    return sample


def write_file(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a hidden temporary file beside it, renamed into place."""
    temporary = path.with_name(f".{path.name}.partial")
    temporary.write_bytes(data)
    temporary.replace(path)


def file_reference(options: RecordOptions, relative: str, base: str = "") -> str:
    """How a file at `relative` (to the output folder) is named inside a file kept in folder `base`.

    `file_reference(options, "train/images/a.jpg", "train")` -> `"images/a.jpg"`, or
    `"/data_out/train/images/a.jpg"` with `--absolute-paths` and `/data_out` as output folder.
    """
    if options.absolute_root is not None:
        return (options.absolute_root / relative).as_posix()
    return PurePosixPath(relative).relative_to(base).as_posix() if base else relative


class SplitFiles:
    """Writes the files of one split and, on `close`, their checksum manifest."""

    def __init__(self, output_dir: Path, split: SplitName) -> None:
        self.output_dir = output_dir
        self.folder = SPLIT_FOLDERS[split]
        self._sha256_by_path: dict[str, str] = {}
        self._made_folders: set[Path] = set()

    def subfolder(self, name: str) -> str:
        """Create `<split folder>/<name>` now, so an empty split still has the folders its listing names."""
        path = self.output_dir / self.folder / name
        path.mkdir(parents=True, exist_ok=True)
        self._made_folders.add(path)
        return f"{self.folder}/{name}"

    def write(self, relative: str, data: bytes) -> None:
        """Write one file at `relative` (to the output folder) and remember its sha256."""
        if relative in self._sha256_by_path:
            raise ValueError(f"{relative} is written twice")
        path = self.output_dir / relative
        if path.parent not in self._made_folders:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._made_folders.add(path.parent)
        write_file(path, data)
        self._sha256_by_path[relative] = hashlib.sha256(data).hexdigest()

    def close(self) -> ChecksumManifest:
        """Write `<split folder>/SHA256SUMS`, sorted by path; it does not list itself."""
        manifest = f"{self.folder}/{CHECKSUMS_FILE}"
        data = "".join(f"{sha256}  {path}\n" for path, sha256 in sorted(self._sha256_by_path.items())).encode()
        (self.output_dir / self.folder).mkdir(parents=True, exist_ok=True)
        write_file(self.output_dir / manifest, data)
        return ChecksumManifest(manifest, len(self._sha256_by_path), len(data), hashlib.sha256(data).hexdigest())


def check_unicode_names(class_names: Sequence[str]) -> None:
    """Raise `UsageError` for a class name no format can write: one that is not Unicode text.

    Sources skip the samples that carry such a name; a pinned list (`--classes` YAML may
    escape a lone surrogate) is checked here, before any work, instead of failing the
    first record that names it.
    """
    for name in class_names:
        try:
            check_text("class name", name)
        except InvalidValueError as error:
            raise UsageError(f"{error}; no output format can write it") from None

"""Input formats, registered by their `--source` name, and how an export is recognized.

Each format says how to recognize its annotation file by a cheap look at its start (never
a full parse: a COCO file can be gigabytes) and how to build its source. With no
`--source`, the annotation file is the one file under the input that exactly one format
recognizes; anything else is a usage error that lists what was found. With `--split
from-source`, `locate_split_files` takes instead every COCO file under a folder, each with
the split its name says.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from converter.core.protocols import Source
from converter.core.secret import Secret
from converter.core.split import FROM_SOURCE, SplitName, split_named_in
from converter.core.storage import RemotePath
from converter.errors import UsageError
from converter.sources.coco import CocoFile, CocoSource, looks_like_coco
from converter.sources.geojson import GeoJsonSource, looks_like_geojson
from converter.sources.labelstudio import build_labelstudio_source, looks_like_labelstudio_export
from converter.sources.mask_folder import MaskFolderSource, looks_like_label_map
from converter.sources.sagemaker_gt import SageMakerGroundTruthSource, looks_like_manifest
from converter.sources.scale import build_scale_source, looks_like_scale_export

SEARCH_DEPTH = 4  # folder levels searched for an annotation file under -a


@dataclass(frozen=True)
class SourceOptions:
    """What the command line tells a source.

    `annotations` is a file, never a folder; it is None when annotations come from a
    server (`labelstudio_url`, `scale_project`). `images` is a bucket prefix only for the
    sources in `REMOTE_IMAGE_SOURCES`. Each source reads the fields that concern it.
    """

    annotations: Path | None
    images: Path | RemotePath
    images_given: bool = True  # False when `images` is the default, not named with -i
    label_attribute: str | None = None
    masks: Path | None = None
    labelstudio_url: str | None = None
    labelstudio_project: int | None = None
    labelstudio_token: Secret | None = None
    annotation_rule: str = "ground-truth-then-newest"
    scale_project: str | None = None
    scale_batches: tuple[str, ...] = ()
    created_after: str | None = None  # YYYY-MM-DD
    created_before: str | None = None
    scale_api_key: Secret | None = None
    scale_api_url: str | None = None  # None: the scaleapi client's default, https://api.scale.com/v1
    download_images: bool = False
    image_cache: Path | None = None
    split_files: tuple[tuple[Path, SplitName], ...] = ()  # --split from-source: each file and its split


@dataclass(frozen=True)
class SourceFormat:
    """One input format: what its annotation file looks like, and how to read it."""

    summary: str
    recognizes: Callable[[Path], bool]
    build: Callable[[SourceOptions], Source]


def _annotation_file(options: SourceOptions) -> Path:
    if options.annotations is None:
        raise UsageError("this source reads an annotation file: pass -a/--annotations")
    return options.annotations


REMOTE_IMAGE_SOURCES = ("sagemaker_gt", "coco", "geojson")
"""Sources whose images may lie in a bucket; the others walk folders or write caches beside them."""


def _local_images(options: SourceOptions, source_name: str) -> Path:
    if isinstance(options.images, RemotePath):
        raise UsageError(
            f"{source_name} reads images from a local folder, but the images folder is {options.images}; pass a "
            f"local -i/--images (images in a bucket work with {', '.join(REMOTE_IMAGE_SOURCES)})"
        )
    return options.images


SOURCES: dict[str, SourceFormat] = {
    "sagemaker_gt": SourceFormat(
        summary="a SageMaker Ground Truth output manifest (JSON Lines with `source-ref` and a labelled attribute)",
        recognizes=looks_like_manifest,
        build=lambda options: SageMakerGroundTruthSource(
            _annotation_file(options), options.images, options.label_attribute
        ),
    ),
    "labelstudio": SourceFormat(
        summary="a Label Studio JSON export (a JSON list of tasks with `data` and `annotations`)",
        recognizes=looks_like_labelstudio_export,
        build=lambda options: build_labelstudio_source(
            options.annotations,
            _local_images(options, "labelstudio"),
            options.annotation_rule,
            options.labelstudio_url,
            options.labelstudio_project,
            options.labelstudio_token,
        ),
    ),
    "mask_folder": SourceFormat(
        summary="a mask folder's label map (a small .yaml/.yml/.json mapping mask colours or indices to labels, "
        "or {alpha: <class>}), with images/ and masks/ beside it",
        recognizes=looks_like_label_map,
        build=lambda options: MaskFolderSource(
            _annotation_file(options),
            _local_images(options, "mask_folder") if options.images_given else None,
            options.masks,
        ),
    ),
    "coco": SourceFormat(
        summary="a COCO instances JSON (an object with `images`, `annotations` and `categories` lists)",
        recognizes=looks_like_coco,
        build=lambda options: CocoSource(
            [CocoFile(path, split) for path, split in options.split_files] or [CocoFile(_annotation_file(options))],
            options.images,
            options.images_given,
        ),
    ),
    "geojson": SourceFormat(
        summary="a GeoJSON FeatureCollection of image annotations (`image_filename` and `class_id` properties)",
        recognizes=looks_like_geojson,
        build=lambda options: GeoJsonSource(_annotation_file(options), options.images),
    ),
    "scale": SourceFormat(
        summary="a Scale AI export (a JSON list or JSON Lines of tasks with `task_id` and type imageannotation or "
        "segmentannotation)",
        recognizes=looks_like_scale_export,
        build=lambda options: build_scale_source(
            options.annotations,
            _local_images(options, "scale"),
            project=options.scale_project,
            batches=options.scale_batches,
            created_after=options.created_after,
            created_before=options.created_before,
            api_key=options.scale_api_key,
            api_url=options.scale_api_url,
            download_images=options.download_images,
            image_cache=options.image_cache,
        ),
    ),
}


@dataclass(frozen=True)
class LocatedExport:
    """The format and annotation file of `-a`, and the images folder when -i is not given.

    `split_files` is set only by `locate_split_files` (`--split from-source`): every file
    with the split its name says, `annotations` being the first.
    """

    source_name: str
    annotations: Path | None
    default_images: Path | RemotePath
    split_files: tuple[tuple[Path, SplitName], ...] = ()

    def source_splits(self) -> tuple[SplitName, ...]:
        """The splits the files name, each once, in file order."""
        return tuple(dict.fromkeys(split for _, split in self.split_files))


def _candidate_files(folder: Path) -> list[Path]:
    """Files up to SEARCH_DEPTH levels down, hidden ones skipped, in a stable order."""
    found = []
    for depth in range(1, SEARCH_DEPTH + 1):
        for path in sorted(folder.glob("/".join(["*"] * depth))):
            relative = path.relative_to(folder).parts
            if path.is_file() and not any(part.startswith(".") for part in relative):
                found.append(path)
    return found


def _check_exists(path: Path) -> None:
    if not path.exists():
        hint = " (the container's default input; outside it pass -a/--annotations)" if str(path) == "/data_in" else ""
        raise UsageError(f"annotations path {path} does not exist{hint}")


def locate_export(path: Path, source_name: str | None) -> LocatedExport:
    """The format and annotation file of `-a PATH` (a file, or a folder holding one export)."""
    _check_exists(path)
    formats = {source_name: SOURCES[source_name]} if source_name else SOURCES
    # one format's description, or the names of all: six descriptions made a 900-character line
    expected = f"{source_name}: {SOURCES[source_name].summary}" if source_name else f"one of {', '.join(SOURCES)}"
    if path.is_file():
        if source_name:
            return LocatedExport(source_name, path, path.parent)
        matches = [name for name, fmt in formats.items() if fmt.recognizes(path)]
        if len(matches) == 1:
            return LocatedExport(matches[0], path, path.parent)
        if not matches:
            raise UsageError(f"{path} is not an export this tool recognizes (expected {expected}); pass --source")
        raise UsageError(f"{path} could be {' or '.join(matches)}; choose with --source")
    found = [
        (name, candidate)
        for candidate in _candidate_files(path)
        for name, fmt in formats.items()
        if fmt.recognizes(candidate)
    ]
    if len(found) == 1:
        return LocatedExport(found[0][0], found[0][1], path)
    if not found:
        raise UsageError(
            f"no annotation export found in {path} (searched {SEARCH_DEPTH} levels deep for {expected}); "
            "pass it with -a/--annotations, and --source if it is not recognized"
        )
    listed = "\n  ".join(f"{candidate} ({name})" for name, candidate in found)
    several_coco = sum(name == "coco" for name, _ in found) > 1
    from_source = (
        f"; or, if the COCO files are the splits of one dataset, add --split {FROM_SOURCE} with -a naming "
        "their folder: each file's images then go to the split its name says (train, val or test)"
        if several_coco
        else ""
    )
    raise UsageError(
        f"several annotation exports found in {path}; choose one with -a/--annotations{from_source}:\n  {listed}"
    )


_SPLIT_FILES_EXAMPLE = "annotations/ with instances_train2017.json and instances_val2017.json"


def locate_split_files(path: Path | RemotePath, source_name: str | None) -> LocatedExport:
    """`-a PATH` with `--split from-source`: every COCO file under the folder, with the split its name says.

    Files are taken in path order (an image two files list is converted from the first).
    Anything that cannot make a dataset of one split per file is a usage error that says
    why: a single file, a file whose name says no split or several, an export of another
    format, or a folder in a bucket (its files are located here, before any download).
    """
    if isinstance(path, RemotePath):
        raise UsageError(
            f"--split {FROM_SOURCE} reads the COCO files of a local folder; {path} is in a bucket: copy the "
            "annotation files to a local folder and pass it with -a (the images may stay there, with -i)"
        )
    if source_name not in (None, "coco"):
        raise UsageError(
            f"--split {FROM_SOURCE} takes each sample's split from the name of its COCO file; {source_name} "
            "exports are split by hash: pass shares instead (-s 0.2)"
        )
    _check_exists(path)
    by_hash = f"drop --split {FROM_SOURCE} to split its samples by hash (-s 0.2)"
    if path.is_file():
        raise UsageError(
            f"--split {FROM_SOURCE} makes each COCO file's samples the split its name says, so -a must name a "
            f"folder holding one file per split ({_SPLIT_FILES_EXAMPLE}); {path} is one file: {by_hash}"
        )
    found = [
        (name, candidate)
        for candidate in _candidate_files(path)
        for name, fmt in SOURCES.items()
        if fmt.recognizes(candidate)
    ]
    others = [f"{candidate} ({name})" for name, candidate in found if name != "coco"]
    if others:
        raise UsageError(
            f"--split {FROM_SOURCE} reads COCO files only, but {path} also holds other exports: "
            f"{', '.join(others)}; pass -a a folder holding only the COCO files"
        )
    files = sorted(candidate for _, candidate in found)
    if len(files) < 2:  # one file would be one split: no choice for the split to follow
        which = f"only one COCO file ({files[0]})" if files else "no COCO file"
        raise UsageError(
            f"--split {FROM_SOURCE} needs a COCO file per split ({_SPLIT_FILES_EXAMPLE}), but {path} holds "
            f"{which} (searched {SEARCH_DEPTH} levels deep); " + (by_hash if files else "pass the folder that has them")
        )
    named = [(file, split_named_in(file.name)) for file in files]
    unclear = [f"{file} ({' and '.join(splits) or 'none'})" for file, splits in named if len(splits) != 1]
    if unclear:
        raise UsageError(
            f"--split {FROM_SOURCE} takes each COCO file's split from its name (a word train, val, validation or "
            f"test, as in instances_val2017.json), but these names say none or several: {', '.join(unclear)}; "
            f"rename them, or move them out of {path}"
        )
    return LocatedExport("coco", files[0], path, tuple((file, splits[0]) for file, splits in named))

"""COCO instances JSON (`instances_train.json`): `images`, `annotations` and `categories` in one object.

Conventions are COCO's own, the ones pycocotools reads:

- `bbox` is `[x, y, width, height]` in pixels from the image's top-left corner, in the
  frame of `images[].width/height` (the sample's declared size). It becomes the object's
  box `(x, y, x + width, y + height)`, kept even when a segmentation is present: COCO's
  box is what its detectors train on, while the shape goes to the masks.
- `segmentation` is a list of polygons, each flat `[x1, y1, x2, y2, ...]`, several parts
  of one object painted as their union; or an RLE `{"size": [height, width], "counts": ...}`
  with `counts` a list of ints (uncompressed) or COCO's compressed string, column-major,
  starting with background; or `[]` for a box only. The core rasterizer decodes both
  with pycocotools, at the image's displayed size.
- Category ids are often sparse (1, 7, 42); objects carry category *names*. The class
  order is by category id, over every category the file lists, used or not, so the
  train and validation files of one export give the same class list. A name listed
  under several ids takes the place of its smallest.
- One sample per `images` entry, keyed by its `file_name`, which resolves under -i or,
  without it, under the folder `_ImagesFolder` chooses for the file (`annotations/`'s
  parent, `images/`, `train2017/`...); an image with no annotation is a negative. Its
  integer `id` is kept as the record's `image/source_id`.
- With `--split from-source`, several files (one per split) make one dataset: each
  sample carries its file's split, and the files must agree (`_EarlierFiles`).
- `area` and `iscrowd` are kept as given (COCO-style evaluation buckets objects by area).
- `keypoints` (`[x1, y1, v1, ...]`, COCO's person keypoints) belong to their object, named
  by the category's `keypoints` list (by position where it lists none); `v` is COCO's
  visibility: 0 not labelled, 1 hidden, 2 visible.

What cannot be used is reported, never dropped silently. A malformed, repeated or
unresolvable image entry is a skipped sample. An annotation whose `image_id` names no
image belongs to no sample: it is a skipped entry keyed `annotation <id>`. Inside a kept
image, an annotation that is malformed or names an unknown category is dropped with a
note, and so is one with a non-finite or overflowing number; a polygon part of fewer than
three points is dropped with a note, and an annotation left with no part keeps its box. A
file that is not COCO at all (or not JSON, or a category name that is not Unicode text)
is a usage error.

The whole file is parsed at once (the standard library has no streaming parser); the
parsed document is released once the samples are built, so only the compact samples
stay in memory while images are converted.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from converter.core.images import (
    ImageResolver,
    RemoteImageResolver,
    ResolvedImage,
    declared_size,
    image_resolver,
)
from converter.core.input_files import load_json, shown, utf8_peek
from converter.core.sample import (
    KEYPOINT_VISIBILITIES,
    AnnotationNote,
    InvalidValueError,
    ObjectAnnotation,
    ObjectKeypoint,
    Polygon,
    RleMask,
    Sample,
    SkipCollector,
    SkipHandler,
    SkippedSample,
    SourceContents,
    check_text,
)
from converter.core.split import SplitName
from converter.core.storage import RemotePath
from converter.errors import SampleError, SampleLocation, UsageError, quoted
from converter.sources._peek import FileEnds, json_file_ends

COCO_SUFFIXES = (".json",)
_MIN_POLYGON_COORDINATES = 6  # three points
_LISTED_IDS = 20  # category ids quoted in an "unknown category" message
_QUOTED_ID_CHARACTERS = 24  # each shortened to this, so the list stays short

# What shows each of the three COCO lists in a peek at the file's ends. The `annotations` key
# itself may sit in the middle of a large file (after a large `images` list, before a small
# `categories` one, as COCO's own files are laid out); then the annotations near the end show it.
_SECTION_EVIDENCE = (
    (re.compile(rb'"images"\s*:\s*\['),),
    (re.compile(rb'"annotations"\s*:\s*\['), re.compile(rb'"category_id"\s*:')),
    (re.compile(rb'"categories"\s*:\s*\['),),
)

EntryId = int | str
"""A COCO id: an int, as COCO writes them, or a non-empty string, as some tools do."""


def looks_like_coco(path: Path) -> bool:
    """Whether a file is a COCO instances JSON: an object whose ends show its three lists.

    Label Studio's JSON exports also have `annotations`, but they are lists of tasks, not
    an object, so they are not taken for COCO.
    """
    ends = json_file_ends(path, COCO_SUFFIXES)
    if ends is None:
        return False
    ends = FileEnds(*utf8_peek(ends.head, ends.tail))
    return ends.starts_an_object() and all(
        any(ends.contains(pattern) for pattern in patterns) for patterns in _SECTION_EVIDENCE
    )


def _entry_id(value: Any) -> EntryId | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int) or (isinstance(value, str) and value):
        return value
    return None


def _id_order(value: EntryId) -> tuple[int, int, str]:
    """Ints by value, then strings: ids of both kinds in one deterministic order."""
    return (0, value, "") if isinstance(value, int) else (1, 0, value)


def _malformed(message: str) -> SampleError:
    return SampleError("malformed_annotation", message)


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _malformed(f"{what} must be a finite number, got {shown(value)}")
    return float(value)


def _positive_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


@dataclass
class _ImageEntry:
    """One `images` entry and the annotations that name it; `problem` makes it a skipped sample.

    `key` is the sample key: the `file_name`, or `image <id>` for an entry without one.
    """

    index: int
    image_id: EntryId
    key: str
    declared_size: tuple[int, int] | None
    problem: SampleError | None = None
    annotations: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    derive_id: bool = False  # an earlier file used `image_id`: the record's id is derived from the key


@dataclass(frozen=True)
class _PolygonParts:
    polygons: tuple[Polygon, ...]
    degenerate: tuple[int, ...]  # indices of parts with fewer than three points


@dataclass(frozen=True)
class CocoFile:
    """One COCO file to read and, with `--split from-source`, the split its name says."""

    path: Path
    split: SplitName | None = None


@dataclass
class _EarlierFiles:
    """What the files read so far claimed: several files make one dataset only if they agree.

    Category names and ids must agree (`add_categories`): an id names one category in every
    file, and a name keeps its ids (a file may list fewer categories, as COCO's keypoints
    files list only `person`). An image key claimed by an earlier file is skipped in a
    later one, and an earlier file's image id is not reused, so that `image/source_id`
    stays unique in the dataset; both are decided from the JSON alone, never from which
    images were found, so a sample's split depends on its file only.
    """

    categories: dict[EntryId, tuple[str, Path]] = field(default_factory=dict)  # id -> (name, first file)
    category_ids: dict[str, tuple[frozenset[EntryId], Path]] = field(default_factory=dict)  # name -> (ids, file)
    keys: dict[str, Path] = field(default_factory=dict)  # image key -> the file that claimed it
    image_ids: set[EntryId] = field(default_factory=set)

    def add_categories(self, path: Path, categories: dict[EntryId, str]) -> None:
        """Merge one file's categories; raises `UsageError` where it names an id or a name otherwise."""
        for category_id, name in categories.items():
            earlier_name, earlier_file = self.categories.get(category_id, (name, path))
            if earlier_name != name:
                raise UsageError(
                    f"{path}: category id {quoted(category_id)} is {quoted(name)}, but {quoted(earlier_name)} in "
                    f"{earlier_file}; the files of one dataset must list their categories alike"
                )
        ids_by_name = {
            name: frozenset(key for key, value in categories.items() if value == name) for name in categories.values()
        }
        for name, ids in ids_by_name.items():
            earlier_ids, earlier_file = self.category_ids.get(name, (ids, path))
            if earlier_ids.isdisjoint(ids):  # renumbered; a file listing a name under fewer of its ids is a subset
                raise UsageError(
                    f"{path}: category {quoted(name)} has id {_listed_ids(ids)}, but {_listed_ids(earlier_ids)} in "
                    f"{earlier_file}; the files of one dataset must list their categories alike"
                )
        for category_id, name in categories.items():
            self.categories.setdefault(category_id, (name, path))
        for name, ids in ids_by_name.items():
            earlier_ids, earlier_file = self.category_ids.get(name, (ids, path))
            self.category_ids[name] = (earlier_ids | ids, earlier_file)

    def native_order(self) -> tuple[str, ...]:
        """Every category of every file by id, a name at the place of its smallest id."""
        return tuple(dict.fromkeys(self.categories[key][0] for key in sorted(self.categories, key=_id_order)))


def _listed_ids(ids: frozenset[EntryId]) -> str:
    return ", ".join(quoted(value) for value in sorted(ids, key=_id_order))


class CocoSource:
    """`--source coco`: COCO instances files and where their `file_name`s resolve.

    Usually one file. With `--split from-source`, one per split, read one after the other in
    the order given, each sample marked with its file's split (`_EarlierFiles` says how the
    files must agree). Each file finds its own images folder (`_ImagesFolder`), since COCO
    keeps each split's images in a folder of its own.
    """

    def __init__(self, files: Sequence[CocoFile], images_root: Path | RemotePath, images_given: bool) -> None:
        self.files = tuple(files)
        self.images_root = images_root
        self.images_given = images_given

    def read(self, on_skip: SkipHandler | None = None) -> SourceContents:
        skipped = SkipCollector(on_skip)
        earlier = _EarlierFiles()
        samples: list[Sample] = []
        notes: list[AnnotationNote] = []
        folders: list[str] = []
        for file in self.files:
            file_samples, folder = _FileReader(file, self.images_root, self.images_given).read(skipped, earlier, notes)
            samples += file_samples
            folders.append(str(folder))
        description = {
            "source": "coco",
            "annotations": ", ".join(str(file.path) for file in self.files),
            "images": ", ".join(dict.fromkeys(folders)),
        }
        if any(file.split is not None for file in self.files):
            description["split_files"] = ", ".join(f"{file.path.name}: {file.split}" for file in self.files)
        return SourceContents(tuple(samples), skipped.kept(), earlier.native_order(), description, tuple(notes))


class _FileReader:
    """Reads one COCO file into samples."""

    def __init__(self, file: CocoFile, images_root: Path | RemotePath, images_given: bool) -> None:
        self.annotations = file.path
        self.split = file.split
        self._images_root = images_root
        self._images_given = images_given
        self._keypoints: dict[EntryId, tuple[str, ...]] = {}  # category id -> keypoint names, set by `read`

    def read(
        self, skipped: SkipCollector, earlier: _EarlierFiles, notes: list[AnnotationNote]
    ) -> tuple[list[Sample], Path | RemotePath]:
        """The file's samples and the folder its images resolved under; its skipped entries go to
        `skipped`, its annotation notes to `notes`."""
        document = self._load()
        categories = self._categories(self._section(document, "categories"))
        self._keypoints = self._keypoint_names(self._section(document, "categories"))
        images = self._section(document, "images")
        annotations = self._section(document, "annotations")
        del document  # the three lists are all that is needed; they go when this method returns
        earlier.add_categories(self.annotations, categories)

        entries = self._image_entries(images, skipped, earlier)
        # reversed: of several entries with one id, the first is the one its annotations are counted on
        self._attach(annotations, {entry.image_id: entry for entry in reversed(entries)}, skipped)
        images_folder = _ImagesFolder.choose(
            self.annotations,
            self._images_root,
            self._images_given,
            [entry.key for entry in entries if entry.problem is None],
        )
        samples: list[Sample] = []
        for entry in entries:
            location = self._location(entry.key)
            try:
                samples.append(self._sample(entry, location, categories, notes, images_folder))
            except SampleError as error:
                dropped = f"; its {len(entry.annotations)} annotations are not converted" if entry.annotations else ""
                skipped.append(SkippedSample(location, error.code, error.message + dropped))
        return samples, images_folder.root

    def _location(self, key: str) -> SampleLocation:
        return SampleLocation(str(self.annotations), None, key)

    def _load(self) -> dict[str, Any]:
        document = load_json(self.annotations, "COCO file")
        if not isinstance(document, dict):
            raise UsageError(
                f"{self.annotations} is a JSON {type(document).__name__}, not a COCO object with "
                "`images`, `annotations` and `categories`"
            )
        return document

    def _section(self, document: dict[str, Any], name: str) -> list[Any]:
        value = document.get(name)
        if not isinstance(value, list):
            hint = " (an image-info file, as COCO ships for its test set, has no annotations to convert)"
            raise UsageError(
                f"{self.annotations} has no `{name}` list (found {type(value).__name__}); a COCO instances file "
                f"has `images`, `annotations` and `categories`" + (hint if name == "annotations" else "")
            )
        return value

    def _keypoint_names(self, raw: list[Any]) -> dict[EntryId, tuple[str, ...]]:
        """Category id -> the names of its keypoints (COCO's `keypoints` list), where the category has them."""
        names: dict[EntryId, tuple[str, ...]] = {}
        for entry in raw:
            category_id = _entry_id(entry.get("id")) if isinstance(entry, dict) else None
            listed = entry.get("keypoints") if isinstance(entry, dict) else None
            if category_id is not None and isinstance(listed, list) and all(isinstance(n, str) for n in listed):
                names[category_id] = tuple(listed)
        return names

    def _categories(self, raw: list[Any]) -> dict[EntryId, str]:
        """Category id -> class name. A bad entry stops the run: without it no class list is right."""
        names: dict[EntryId, str] = {}
        for index, entry in enumerate(raw):
            category_id = _entry_id(entry.get("id")) if isinstance(entry, dict) else None
            name = entry.get("name") if isinstance(entry, dict) else None
            if category_id is None or not isinstance(name, str) or not name:
                raise UsageError(
                    f"{self.annotations}: categories[{index}] needs an `id` and a non-empty `name`, got {shown(entry)}"
                )
            try:
                check_text("its name", name)
            except InvalidValueError as error:
                raise UsageError(f"{self.annotations}: categories[{index}]: {error}") from None
            if names.get(category_id, name) != name:
                raise UsageError(
                    f"{self.annotations}: category id {quoted(category_id)} is listed twice, as "
                    f"{quoted(names[category_id])} and as {quoted(name)}"
                )
            names[category_id] = name
        return names

    def _image_entries(self, raw: list[Any], skipped: SkipCollector, earlier: _EarlierFiles) -> list[_ImageEntry]:
        """The `images` entries that have an id; repeated ids and file names are marked as problems.

        A file name an earlier file listed is a problem too; an id an earlier file used is kept
        off the record (`derive_id`), which then gets an id derived from its key.
        """
        entries: list[_ImageEntry] = []
        for index, image in enumerate(raw):
            image_id = _entry_id(image.get("id")) if isinstance(image, dict) else None
            if image_id is None:
                skipped.append(
                    SkippedSample(
                        self._location(f"images[{index}]"),
                        "malformed_annotation",
                        f"images[{index}] has no usable `id` (an int or a string): {shown(image)}",
                    )
                )
                continue
            entries.append(self._image_entry(index, image_id, image))
        id_counts = Counter(entry.image_id for entry in entries)
        first_with_file: dict[str, _ImageEntry] = {}
        for entry in entries:
            if entry.problem is not None:
                continue
            if id_counts[entry.image_id] > 1:
                entry.problem = SampleError(
                    "duplicate_image",
                    f"image id {quoted(entry.image_id)} is listed {id_counts[entry.image_id]} times in `images`, "
                    "so its annotations cannot be told apart",
                )
            elif entry.key in first_with_file:
                first = first_with_file[entry.key]
                entry.problem = SampleError(
                    "duplicate_image",
                    f"images[{entry.index}] (id {quoted(entry.image_id)}) names the same file as "
                    f"images[{first.index}] (id {quoted(first.image_id)}); only the first is converted",
                )
            elif entry.key in earlier.keys:
                entry.problem = SampleError(
                    "duplicate_image",
                    f"images[{entry.index}] names a file that {earlier.keys[entry.key]} lists too; only that "
                    "earlier file's entry is converted",
                )
            else:
                first_with_file[entry.key] = entry
                entry.derive_id = entry.image_id in earlier.image_ids
        for entry in first_with_file.values():
            earlier.keys[entry.key] = self.annotations
            earlier.image_ids.add(entry.image_id)
        return entries

    @staticmethod
    def _image_entry(index: int, image_id: EntryId, image: dict[str, Any]) -> _ImageEntry:
        file_name = image.get("file_name")
        if not isinstance(file_name, str) or not file_name:
            problem = _malformed(f"image {quoted(image_id)} has no `file_name`: {shown(file_name)}")
            return _ImageEntry(index, image_id, f"image {image_id}", None, problem)
        width, height = image.get("width"), image.get("height")
        if width is None and height is None:
            return _ImageEntry(index, image_id, file_name, None)
        try:
            return _ImageEntry(index, image_id, file_name, declared_size(width, height, f"image {quoted(image_id)}"))
        except SampleError as problem:
            return _ImageEntry(index, image_id, file_name, None, problem)

    def _attach(self, raw: list[Any], by_id: dict[EntryId, _ImageEntry], skipped: SkipCollector) -> None:
        """Give each annotation to the image it names (the first entry of a repeated id); report the rest."""
        for index, annotation in enumerate(raw):
            if not isinstance(annotation, dict):
                name = f"annotations[{index}]"
                skipped.append(
                    SkippedSample(
                        self._location(name), "malformed_annotation", f"{name} is not an object: {shown(annotation)}"
                    )
                )
                continue
            annotation_id = _entry_id(annotation.get("id"))
            name = f"annotation {annotation_id}" if annotation_id is not None else f"annotations[{index}]"
            image_id = _entry_id(annotation.get("image_id"))
            entry = by_id.get(image_id) if image_id is not None else None
            if entry is None:
                skipped.append(
                    SkippedSample(
                        self._location(name),
                        "unknown_image",
                        f"{name} refers to image_id {shown(annotation.get('image_id'))}, which `images` does not list",
                    )
                )
                continue
            entry.annotations.append((name, annotation))

    def _sample(
        self,
        entry: _ImageEntry,
        location: SampleLocation,
        categories: dict[EntryId, str],
        notes: list[AnnotationNote],
        images: _ImagesFolder,
    ) -> Sample:
        """The image's sample; annotation problems become notes, image problems raise `SampleError`."""
        if entry.problem is not None:
            raise entry.problem
        image = images.locate(entry.key)
        objects = []
        for name, annotation in entry.annotations:
            try:
                obj, note = _object(name, annotation, categories, self._keypoints)
            except SampleError as error:
                notes.append(AnnotationNote(location, error.code, f"{name} dropped: {error.message}"))
                continue
            except InvalidValueError as error:
                notes.append(AnnotationNote(location, "invalid_value", f"{name} dropped: {error}"))
                continue
            objects.append(obj)
            if note is not None:
                notes.append(AnnotationNote(location, "degenerate_polygon", note))
        try:
            return Sample(
                key=entry.key,
                location=location,
                image_path=image.path,
                image_name=image.name,
                declared_size=entry.declared_size,
                objects=tuple(objects),
                image_id=entry.image_id
                if isinstance(entry.image_id, int) and 0 <= entry.image_id < 2**63 and not entry.derive_id
                else None,
                source_split=self.split,
            )
        except InvalidValueError as error:
            raise SampleError("invalid_value", str(error)) from None


_PROBED_REFERENCES = 20
"""Image entries of a file (in file order) tried before its images folder is chosen: enough to pass
a few missing images at its start, few enough to cost nothing (20 x 5 folders x 3 paths: 300 stats)."""


@dataclass(frozen=True)
class _ImagesFolder:
    """The folder one COCO file's `file_name`s resolve under, chosen once for the file.

    With -i it is -i, as for every source; so it is when the default is a bucket prefix
    (trying prefixes would cost a listing each). Otherwise COCO files rarely sit beside
    their images, so these folders are candidates, in this order (those that exist):

    1. the default: the -a folder, or the file's folder when -a names the file; an export
       whose images resolve there keeps resolving there, with the same image names;
    2. the export root: the parent of the file's folder when that is named `annotations`,
       else the file's folder;
    3. `images/` under the export root;
    4. the folder the file names, under the export root: the file name after its last `_`,
       without `.json` (`instances_train2017.json` -> `train2017/`, COCO's own layout);
    5. that folder under `images/` (`images/train/`, datumaro's layout).

    Chosen per file rather than per image: trying five folders for every image would cost
    five failed lookups per image of a 20,000-image export whose images are all in the
    last one, while COCO keeps each file's images together. The first of the file's first
    `_PROBED_REFERENCES` references that resolves anywhere decides: the first folder, in
    the order above, where it resolves (the default by every rule of
    `converter.core.images`, the others by path only, so choosing walks no folder). The
    choice depends on nothing but the file and the folders, so it is the same on every
    run. When none resolves, the default stays, as it was before: looking further by
    file name would walk folders nobody named (an export root can be `/` or a home
    folder). An image missing after a choice says which folders were tried.
    """

    root: Path | RemotePath
    resolver: ImageResolver | RemoteImageResolver
    tried: tuple[Path, ...] = ()  # the candidates, when there was a choice
    decided_by: str | None = None  # the reference that decided it; None when none resolved

    @classmethod
    def choose(
        cls, annotations: Path, default: Path | RemotePath, given: bool, references: Sequence[str]
    ) -> _ImagesFolder:
        """The folder for a file whose valid image references are `references`, in file order."""
        if given or isinstance(default, RemotePath):
            return cls(default, image_resolver(default))
        folders = _candidate_folders(annotations, default)
        if len(folders) == 1:
            return cls(default, ImageResolver(default))
        resolvers = [ImageResolver(folder) for folder in folders]
        for reference in references[:_PROBED_REFERENCES]:
            for index, resolver in enumerate(resolvers):
                if _resolves(resolver, reference, every_rule=index == 0):
                    return cls(folders[index], resolver, folders, reference)
        return cls(default, resolvers[0], folders)

    def locate(self, reference: str) -> ResolvedImage:
        """The image a reference names; a missing one's message says where it was looked for."""
        try:
            return self.resolver.locate(reference)
        except SampleError as error:
            if error.code != "missing_image" or not self.tried:
                raise
            tried = ", ".join(str(folder) for folder in self.tried)
            if self.decided_by is not None:
                where = (
                    f"the images folder chosen, of {tried}, as the first where {quoted(self.decided_by)} is; "
                    "pass -i to name another"
                )
            else:
                where = (
                    f"looked in {tried}, none of which holds any of the file's first {_PROBED_REFERENCES} images; "
                    "pass -i with the images folder"
                )
            raise SampleError(error.code, f"{error.message} ({where})") from None


def _candidate_folders(annotations: Path, default: Path) -> tuple[Path, ...]:
    """The existing candidate images folders of a file, in `_ImagesFolder`'s order, the default first."""
    folder = annotations.parent
    if folder.name in ("", ".."):  # `-a instances.json` from inside the folder: its name decides below
        folder = folder.resolve()
    root = folder.parent if folder.name.lower() == "annotations" else folder
    named = annotations.stem.rsplit("_", 1)[-1]
    folders: dict[Path, Path] = {default.resolve(): default}  # real path -> the path as derived
    for candidate in (root, root / "images", root / named, root / "images" / named):
        if candidate.is_dir():
            folders.setdefault(candidate.resolve(), candidate)
    return tuple(folders.values())


def _resolves(resolver: ImageResolver, reference: str, every_rule: bool) -> bool:
    """Whether a reference resolves under the resolver's folder: by every rule, or by path only."""
    try:
        found = resolver.locate(reference) if every_rule else resolver.locate_by_path(reference)
    except SampleError:
        return False
    return found is not None


def _object(
    name: str,
    annotation: dict[str, Any],
    categories: dict[EntryId, str],
    keypoint_names: dict[EntryId, tuple[str, ...]] | None = None,
) -> tuple[ObjectAnnotation, str | None]:
    """One annotation as an object, and a note if polygon parts were dropped; raises `SampleError` if unusable."""
    category_id = _entry_id(annotation.get("category_id"))
    if category_id is None or category_id not in categories:
        listed = sorted(categories, key=_id_order)
        ids = ", ".join(quoted(value, _QUOTED_ID_CHARACTERS) for value in listed[:_LISTED_IDS])
        if len(listed) > _LISTED_IDS:
            ids += ", ..."
        raise SampleError(
            "unknown_class_id",
            f"category_id {shown(annotation.get('category_id'))} is not in `categories` (ids: {ids})",
        )
    box = _bbox(annotation.get("bbox"))
    crowd = annotation.get("iscrowd", 0)
    if crowd not in (0, 1):
        raise _malformed(f"`iscrowd` must be 0 or 1, got {shown(crowd)}")
    segmentation = annotation.get("segmentation")
    polygons: tuple[Polygon, ...] = ()
    rle = None
    note = None
    if isinstance(segmentation, dict):
        rle = _rle(segmentation)
    elif segmentation is not None and segmentation != []:
        parts = _polygon_parts(segmentation)
        polygons = parts.polygons
        if parts.degenerate and polygons:
            note = f"{name}: polygon parts {list(parts.degenerate)} have fewer than 3 points; dropped, the others kept"
        elif parts.degenerate and box is not None:
            note = f"{name}: no polygon part has 3 points or more; the object keeps its bbox and paints no mask"
        elif parts.degenerate:
            raise SampleError("degenerate_polygon", "no polygon part has 3 points or more, and there is no `bbox`")
    if box is None and not polygons and rle is None:
        raise _malformed("it has neither a `bbox` nor a `segmentation`")
    keypoints = _keypoints(annotation.get("keypoints"), (keypoint_names or {}).get(category_id, ()))
    area = annotation.get("area")
    if area is not None:
        area = _number(area, "`area`")
        if area < 0:
            raise _malformed(f"`area` must be >= 0, got {shown(annotation.get('area'))}")
    attributes = annotation.get("attributes")
    return (
        ObjectAnnotation(
            class_name=categories[category_id],
            bbox_xyxy=box,
            polygons=polygons,
            rle=rle,
            is_crowd=bool(crowd),
            area=area,
            keypoints=keypoints,
            attributes=tuple(
                (key, value if isinstance(value, str) else str(value))
                for key, value in attributes.items()
                if isinstance(value, str | int | float | bool)
            )
            if isinstance(attributes, dict)
            else (),
        ),
        note,
    )


def _keypoints(value: Any, names: tuple[str, ...]) -> tuple[ObjectKeypoint, ...]:
    """COCO's `[x1, y1, v1, x2, ...]`, named by the category's `keypoints` list (else by position)."""
    if value is None or value == []:
        return ()
    if not isinstance(value, list) or len(value) % 3:
        raise _malformed(f"`keypoints` must be a flat list of x, y, visibility triples, got {shown(value)}")
    points = []
    for index in range(len(value) // 3):
        x, y = (_number(number, "`keypoints`") for number in value[3 * index : 3 * index + 2])
        visibility = value[3 * index + 2]
        if visibility not in KEYPOINT_VISIBILITIES or isinstance(visibility, bool):
            raise _malformed(f"keypoint visibility must be 0, 1 or 2, got {shown(visibility)}")
        name = names[index] if index < len(names) else str(index + 1)
        points.append(ObjectKeypoint(name, x, y, int(visibility)))
    return tuple(points)


def _bbox(value: Any) -> tuple[float, float, float, float] | None:
    """`[x, y, width, height]` -> `(x_min, y_min, x_max, y_max)`; None when absent."""
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != 4:
        raise _malformed(f"`bbox` must be [x, y, width, height], got {shown(value)}")
    x, y, width, height = (_number(number, "`bbox`") for number in value)
    return x, y, x + width, y + height


def _polygon_parts(value: Any) -> _PolygonParts:
    if not isinstance(value, list):
        raise _malformed(f"`segmentation` must be a list of polygons or an RLE object, got {shown(value)}")
    polygons, degenerate = [], []
    for index, part in enumerate(value):
        if not isinstance(part, list):
            raise _malformed(f"`segmentation` part {index} must be a flat list of coordinates, got {shown(part)}")
        coordinates = tuple(_number(number, f"`segmentation` part {index}") for number in part)
        if len(coordinates) % 2:
            raise _malformed(f"`segmentation` part {index} has an odd number of coordinates ({len(coordinates)})")
        if len(coordinates) < _MIN_POLYGON_COORDINATES:
            degenerate.append(index)
        else:
            polygons.append(Polygon(coordinates))
    return _PolygonParts(tuple(polygons), tuple(degenerate))


def _rle(value: dict[str, Any]) -> RleMask:
    """An RLE as given; whether its counts fit its size is checked when it is decoded."""
    size, counts = value.get("size"), value.get("counts")
    if not isinstance(size, list) or len(size) != 2 or any(_positive_int(side) is None for side in size):
        raise _malformed(f"RLE `size` must be [height, width] in positive ints, got {shown(size)}")
    if isinstance(counts, str) and counts:
        return RleMask(size[0], size[1], counts)
    if isinstance(counts, list) and all(
        isinstance(run, int) and not isinstance(run, bool) and run >= 0 for run in counts
    ):
        return RleMask(size[0], size[1], tuple(counts))
    raise _malformed(f"RLE `counts` must be a list of run lengths or a compressed string, got {shown(counts)}")

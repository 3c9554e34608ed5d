"""Mask folders: images, a class mask per image, and a label map saying what mask values mean.

Layout (the defaults; `-i` and `--masks` name other folders):

    export/
      labels.yaml        the label map, the annotation file: `-a export/labels.yaml` or `-a export`
      images/a/b.jpg     the images, in any sub-folders
      masks/a/b.png      one mask per image: the same relative folder and file stem, any image suffix

The label map (YAML or JSON) takes one of these forms, optionally wrapped in a top-level
`mask_labels:` key as ClearML stores it in a dataset version's metadata:

- colours -> labels, the mapping ClearML's `set_masks_labels` takes: keys `"(255, 0, 0)"`,
  `"[255, 0, 0]"`, `"255,0,0"` or `"#ff0000"`, or YAML sequence keys (`? [255, 0, 0]`,
  or `!!python/tuple` as `yaml.dump` writes a tuple key); values a label or a list of labels;
- ClearML's stored form, `{"_all_": [{"value": [255, 0, 0], "labels": ["person"]}, ...]}`;
- indices -> labels for single-channel and palette masks: `{0: background, 1: car}`
  (keys integers or strings of digits);
- `{"alpha": "person"}`: the mask's alpha channel is opacity, so pixels at least half
  opaque are that class and the rest background.

Several labels on one value (ClearML allows `["person", "sitting"]`) make one class named
by joining them with `+` (`person+sitting`): a mask pixel has exactly one class. A value
labelled `background`, `_background_`, `bg`, `unlabeled` or `unlabelled` (any case) is
background, and so is index 0 in an index map when the map omits it. An index 0 that the
map names as a class (`{0: car, 1: road}`) is that class: nothing is dropped silently.
Any other value found in a mask that the map does not list makes that sample fail, naming
the value: an unknown colour is never turned silently into background.

The class order is the map's order (by value for index maps). A sample's key is its
image's path relative to the images folder, so a split survives moving the folder.
Pairing is by relative folder and stem; what does not pair (an image without a mask, a
mask without an image, two files with one stem) is reported, each with its file. Mask
values and sizes are checked when the mask is read, one image at a time.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from converter.core.input_files import parse_json, read_text, shown
from converter.core.sample import (
    InvalidValueError,
    Sample,
    SegmentationMask,
    SkipCollector,
    SkipHandler,
    SkippedSample,
    SourceContents,
    check_text,
)
from converter.errors import SampleError, SampleLocation, UsageError, quoted

IMAGES_FOLDER = "images"
MASKS_FOLDER = "masks"
MASK_LABELS_KEY = "mask_labels"  # where ClearML keeps the map in a dataset version's metadata
CLEARML_ALL_SOURCES = "_all_"  # ClearML's key for the map that applies to every mask source
ALPHA_KEY = "alpha"
BACKGROUND_NAMES = frozenset({"background", "_background_", "bg", "unlabeled", "unlabelled"})
"""Labels that mean "no class" (any case): such pixels are written as 0."""
LABEL_SEPARATOR = "+"
LABEL_MAP_SUFFIXES = (".yaml", ".yml", ".json")
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
MAX_LABEL_MAP_BYTES = 256 * 1024  # a 254-class map is a few kB; larger files are not label maps
_COLOR_TEXT = re.compile(r"^[(\[]?\s*(\d{1,3})\s*,\s*(\d{1,3})\s*,\s*(\d{1,3})\s*[)\]]?$")
_HEX_COLOR = re.compile(r"^#([0-9a-fA-F]{6})$")

Color = tuple[int, int, int]
MapKind = Literal["color", "index", "alpha"]
_TUPLE_TAG = "tag:yaml.org,2002:python/tuple"
_MESSAGE_CHARACTERS = 200  # of a parser's message quoted in ours


class _LabelMapLoader(yaml.SafeLoader):
    """Safe YAML, plus the two ways a colour tuple can be a key: `? [r, g, b]` and `!!python/tuple`.

    Plain safe loading rejects both (a list is not hashable, and the tuple tag is Python's).
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.SequenceNode):
                key_node.tag = _TUPLE_TAG
        return super().construct_mapping(node, deep)


def _construct_tuple(loader: yaml.SafeLoader, node: yaml.Node) -> tuple[Any, ...]:
    if not isinstance(node, yaml.SequenceNode):
        raise yaml.constructor.ConstructorError(None, None, "a tuple must be a sequence", node.start_mark)
    return tuple(loader.construct_sequence(node, deep=True))


_LabelMapLoader.add_constructor(_TUPLE_TAG, _construct_tuple)


@dataclass(frozen=True)
class LabelMap:
    """What the values of a mask folder's masks mean. Background values map to None."""

    kind: MapKind
    index_to_class: tuple[tuple[int, str | None], ...] = ()
    color_to_class: tuple[tuple[Color, str | None], ...] = ()
    alpha_class: str | None = None

    def class_order(self) -> tuple[str, ...]:
        """The non-background classes, in the map's order (by value for an index map)."""
        names = [name for _, name in self.index_to_class] + [name for _, name in self.color_to_class]
        return tuple(dict.fromkeys(name for name in [*names, self.alpha_class] if name is not None))

    def segmentation(self, mask_path: Path) -> SegmentationMask:
        return SegmentationMask(mask_path, self.index_to_class, self.color_to_class, self.alpha_class)


def _load_document(path: Path) -> Any:
    """The parsed label-map file; raises UsageError if it cannot be read or parsed."""
    text = read_text(path, "label map")
    if path.suffix.lower() == ".json":
        try:
            return parse_json(text)
        except SampleError as error:
            raise UsageError(f"label map {path} cannot be parsed: {error.message}") from None
    try:
        return yaml.load(text, Loader=_LabelMapLoader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.YAMLError as error:
        raise UsageError(f"label map {path} cannot be parsed: {_yaml_problem(error)}") from None
    # PyYAML's constructors let these through: an int of more than 4,300 digits (ValueError),
    # a sequence key holding a mapping (unhashable: TypeError), nesting past the recursion limit.
    except (ValueError, TypeError, RecursionError) as error:
        reason = "nested too deeply" if isinstance(error, RecursionError) else _first_line(str(error))
        raise UsageError(f"label map {path} cannot be parsed: {reason}") from None


def _first_line(message: str) -> str:
    """A parser's message as one escaped line of bounded length."""
    line = next(iter(message.splitlines()), "")
    return line if line.isprintable() and len(line) <= _MESSAGE_CHARACTERS else quoted(line, _MESSAGE_CHARACTERS)


def _yaml_problem(error: yaml.YAMLError) -> str:
    """PyYAML's complaint on one line, with its place: its own message spans lines and quotes the input."""
    if not isinstance(error, yaml.MarkedYAMLError) or error.problem is None:
        return _first_line(str(error))
    mark = error.problem_mark
    where = "" if mark is None else f" (line {mark.line + 1}, column {mark.column + 1})"
    return f"{_first_line(error.problem)}{where}"


def _mask_value(key: Any, where: str) -> int | Color:
    """An index (int) or an RGB colour from one map key: `1`, `"1"`, `"(255, 0, 0)"`, `[255, 0, 0]`, `"#ff0000"`."""
    value: Any = key
    if isinstance(key, str):
        text = key.strip()
        color_match, hex_match = _COLOR_TEXT.match(text), _HEX_COLOR.match(text)
        if text.isascii() and text.isdigit():
            value = int(text)
        elif color_match:
            value = tuple(int(part) for part in color_match.groups())
        elif hex_match:
            packed = int(hex_match.group(1), 16)
            value = ((packed >> 16) & 0xFF, (packed >> 8) & 0xFF, packed & 0xFF)
    elif isinstance(key, list | tuple) and len(key) == 1:  # ClearML writes single-channel values as [v]
        value = key[0]
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if (
        isinstance(value, list | tuple)
        and len(value) == 3
        and all(isinstance(part, int) and not isinstance(part, bool) and 0 <= part <= 255 for part in value)
    ):
        return int(value[0]), int(value[1]), int(value[2])
    raise UsageError(
        f"{where}: {shown(key)} is not a mask value; expected an index (0, 1, ...) or an RGB colour "
        '("(255, 0, 0)", [255, 0, 0] or "#ff0000")'
    )


def _class_name(labels: Any, where: str) -> str | None:
    """A label, or a list of labels joined with `+`; None for background."""
    names = [labels] if isinstance(labels, str) else labels
    if not isinstance(names, list | tuple) or not names or not all(isinstance(name, str) and name for name in names):
        raise UsageError(f"{where}: expected a label or a list of labels, got {shown(labels)}")
    if all(name.strip().lower() in BACKGROUND_NAMES for name in names):
        return None
    for name in names:
        try:
            check_text("label", name)
        except InvalidValueError as error:
            raise UsageError(f"{where}: {error}") from None
    return LABEL_SEPARATOR.join(names)


def _clearml_rows(entries: dict[Any, Any], where: str) -> list[tuple[Any, Any]] | None:
    """(value, labels) pairs of ClearML's stored form `{"_all_": [{"value": ..., "labels": ...}]}`, else None."""
    if not all(isinstance(rows, list) and all(isinstance(row, dict) for row in rows) for rows in entries.values()):
        return None
    if CLEARML_ALL_SOURCES in entries:
        rows = entries[CLEARML_ALL_SOURCES]
    elif len(entries) == 1:
        rows = next(iter(entries.values()))
    else:
        raise UsageError(
            f"{where} holds maps for several mask sources ({', '.join(map(shown, entries))}); keep the one to convert"
        )
    pairs = []
    for index, row in enumerate(rows):
        if "value" not in row or "labels" not in row:
            raise UsageError(f"{where}: entry {index} needs `value` and `labels`, got {shown(row)}")
        pairs.append((row["value"], row["labels"]))
    return pairs


def parse_label_map(document: Any, where: str) -> LabelMap:
    """Read a label map in any of the forms the module docstring lists; raises UsageError."""
    entries = document[MASK_LABELS_KEY] if isinstance(document, dict) and MASK_LABELS_KEY in document else document
    if not isinstance(entries, dict) or not entries:
        raise UsageError(
            f"{where} is not a label map: expected a mapping from mask values or colours to labels, "
            f"or {{{ALPHA_KEY}: <class>}}, got {type(entries).__name__}"
        )
    if ALPHA_KEY in entries:
        if len(entries) != 1:
            raise UsageError(f"{where}: an alpha map has the single key `{ALPHA_KEY}`, got {len(entries)} keys")
        name = _class_name(entries[ALPHA_KEY], f"{where} `{ALPHA_KEY}`")
        if name is None:
            raise UsageError(f"{where}: `{ALPHA_KEY}` names the foreground class, not background")
        return LabelMap("alpha", alpha_class=name)
    pairs = _clearml_rows(entries, where)
    if pairs is None:
        pairs = list(entries.items())
    values: dict[int | Color, str | None] = {}
    for key, labels in pairs:
        value = _mask_value(key, where)
        if value in values:
            raise UsageError(f"{where} lists the mask value {value} more than once")
        values[value] = _class_name(labels, f"{where} value {shown(key)}")
    colors = {value: name for value, name in values.items() if isinstance(value, tuple)}
    indices = {value: name for value, name in values.items() if isinstance(value, int)}
    if colors and indices:
        raise UsageError(f"{where} mixes colours and indices; a map is one or the other")
    if all(name is None for name in values.values()):
        raise UsageError(f"{where} names no class besides background")
    if colors:
        return LabelMap("color", color_to_class=tuple(colors.items()))
    indices.setdefault(0, None)  # an unlisted 0 is background; a 0 the map names as a class stays that class
    ordered = tuple(sorted(indices.items()))
    # The same indices as grey colours: a grey mask saved as RGB(A) holds (v, v, v).
    greys = tuple(((index, index, index), name) for index, name in ordered if index <= 255)
    return LabelMap("index", index_to_class=ordered, color_to_class=greys)


def read_label_map(path: Path) -> LabelMap:
    return parse_label_map(_load_document(path), f"label map {path}")


def looks_like_label_map(path: Path) -> bool:
    """Whether a file is a mask folder's label map: a small .yaml/.yml/.json file that parses as one."""
    try:
        if path.suffix.lower() not in LABEL_MAP_SUFFIXES or not path.is_file():
            return False
        if path.stat().st_size > MAX_LABEL_MAP_BYTES:
            return False
        read_label_map(path)
    except (UsageError, OSError):
        return False
    return True


def _images_under(root: Path, excluded: Path) -> Iterator[Path]:
    """Image files under `root` in a stable order, hidden entries and the `excluded` folder left out."""
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(
            name
            for name in subfolders
            if not name.startswith(".") and Path(folder, name).resolve() != excluded.resolve()
        )
        for name in sorted(files):
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES:
                yield Path(folder, name)


def _by_stem(root: Path, excluded: Path) -> dict[tuple[str, ...], list[Path]]:
    """Image files grouped by (relative folder parts, stem): what pairs an image with its mask."""
    groups: dict[tuple[str, ...], list[Path]] = defaultdict(list)
    for path in _images_under(root, excluded):
        relative = path.relative_to(root)
        groups[(*relative.parent.parts, relative.stem)].append(path)
    return groups


class MaskFolderSource:
    """`--source mask_folder`: images, same-named masks and a label map."""

    def __init__(self, label_map: Path, images_root: Path | None, masks_root: Path | None = None) -> None:
        self.label_map = label_map
        self.images_root = images_root if images_root is not None else self._default_images_folder(label_map)
        self.masks_root = masks_root if masks_root is not None else label_map.parent / MASKS_FOLDER

    @staticmethod
    def _default_images_folder(label_map: Path) -> Path:
        """`images/` beside the label map, or the label map's own folder when there is none."""
        beside = label_map.parent / IMAGES_FOLDER
        return beside if beside.is_dir() else label_map.parent

    def read(self, on_skip: SkipHandler | None = None) -> SourceContents:
        label_map = read_label_map(self.label_map)
        if not self.masks_root.is_dir():
            raise UsageError(
                f"masks folder {self.masks_root} does not exist; put the masks in {MASKS_FOLDER}/ beside the "
                "label map or pass --masks"
            )
        if self.masks_root.resolve() == self.images_root.resolve():
            raise UsageError(f"images and masks are both in {self.images_root}; masks need a folder of their own")
        images = _by_stem(self.images_root, excluded=self.masks_root)
        masks = _by_stem(self.masks_root, excluded=self.images_root)
        samples: list[Sample] = []
        skipped = SkipCollector(on_skip)
        for stem in sorted(images.keys() | masks.keys()):
            found_images, found_masks = images.get(stem, []), masks.get(stem, [])
            if len(found_images) == 1 and len(found_masks) == 1:
                try:
                    samples.append(self._sample(found_images[0], found_masks[0], label_map))
                except InvalidValueError as error:  # a file name of bytes that are not UTF-8
                    location = SampleLocation(str(found_masks[0]), key=self._key(found_images[0]))
                    skipped.append(SkippedSample(location, "invalid_value", str(error)))
            else:
                skipped.extend(self._unpaired(found_images, found_masks))
        description = {
            "source": "mask_folder",
            "annotations": str(self.label_map),
            "images": str(self.images_root),
            "masks": str(self.masks_root),
            "label_map": label_map.kind,
        }
        return SourceContents(tuple(samples), skipped.kept(), label_map.class_order(), description)

    def _key(self, image: Path) -> str:
        return image.relative_to(self.images_root).as_posix()

    def _sample(self, image: Path, mask: Path, label_map: LabelMap) -> Sample:
        key = self._key(image)
        return Sample(
            key=key,
            location=SampleLocation(str(mask), key=key),
            image_path=image,
            image_name=key,
            segmentation=label_map.segmentation(mask),
        )

    def _unpaired(self, images: list[Path], masks: list[Path]) -> list[SkippedSample]:
        """Why files of one stem make no sample: one entry per image, or per mask when there is no image."""
        if not images:
            return [
                SkippedSample(
                    SampleLocation(str(mask), key=mask.relative_to(self.masks_root).as_posix()),
                    "missing_image",
                    f"mask {mask} has no image of the same name (stem {quoted(mask.stem)}) in {self.images_root}",
                )
                for mask in masks
            ]
        if not masks:
            return [
                SkippedSample(
                    SampleLocation(str(image), key=self._key(image)),
                    "missing_mask",
                    f"no mask named {Path(self._key(image)).with_suffix('.png')} (or another image suffix) "
                    f"in {self.masks_root}",
                )
                for image in images
            ]
        listed = ", ".join(str(path) for path in [*images, *masks])
        reason = f"masks pair with images by name, and these files share one stem: {listed}; rename them"
        return [
            SkippedSample(SampleLocation(str(image), key=self._key(image)), "ambiguous_mask", reason)
            for image in images
        ]

"""The run's class list: which names exist and which id each gets.

Ids written to records start at 1, in list order; 0 is background in masks and is never
a class (the Object Detection API convention; 0-based label maps are a classic trap).

Without `--classes`, the list is the export's own order (`SourceContents.native_class_order`).
With `--classes FILE`, the file pins names and order, so ids never shift between runs
when new data brings a new class. A class outside a pinned list either makes its sample
fail (the default, reported per sample) or, with `--allow-new-classes`, is appended after
the pinned ones in the export's order.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from converter.core.input_files import read_text
from converter.core.sample import InvalidValueError, check_text
from converter.errors import UsageError

FIRST_CLASS_ID = 1
"""Id of the first class; 0 is background."""


@dataclass(frozen=True)
class ClassList:
    """An ordered, duplicate-free list of class names."""

    names: tuple[str, ...]

    def __post_init__(self) -> None:
        duplicates = sorted({name for name in self.names if self.names.count(name) > 1})
        if duplicates:
            raise ValueError(f"class names must be unique, repeated: {duplicates}")
        if any(not name for name in self.names):
            raise ValueError("class names must not be empty")

    def id_of(self, name: str) -> int:
        """The record id of a class (from 1)."""
        return self.names.index(name) + FIRST_CLASS_ID

    def __contains__(self, name: object) -> bool:
        return name in self.names

    def __len__(self) -> int:
        return len(self.names)


def load_pinned_classes(path: Path) -> tuple[str, ...]:
    """Read `--classes`: a text file with one name per line, or a dataset_info.yaml.

    In the text form blank lines and lines starting with `#` are ignored.
    """
    text = read_text(path, "--classes file")
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise UsageError(f"--classes file {path} is not valid YAML: {error}") from None
        names = document.get("classes") if isinstance(document, dict) else None
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            raise UsageError(f"--classes file {path} has no `classes:` list of names (a dataset_info.yaml has one)")
        return _checked_unique(names, path)
    lines = (line.strip() for line in text.splitlines())
    return _checked_unique([line for line in lines if line and not line.startswith("#")], path)


def _checked_unique(names: Sequence[str], path: Path) -> tuple[str, ...]:
    if not names:
        raise UsageError(f"--classes file {path} lists no class")
    for name in names:
        try:
            check_text("class name", name)
        except InvalidValueError as error:
            raise UsageError(f"--classes file {path}: {error}") from None
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise UsageError(f"--classes file {path} lists these classes more than once: {', '.join(repeated)}")
    return tuple(names)


def build_class_list(native_order: Iterable[str], pinned: Sequence[str] | None, allow_new_classes: bool) -> ClassList:
    """The class list of a run: pinned names first (if any), then what the rules admit."""
    native = tuple(dict.fromkeys(native_order))
    if pinned is None:
        return ClassList(native)
    if not allow_new_classes:
        return ClassList(tuple(pinned))
    return ClassList(tuple(pinned) + tuple(name for name in native if name not in pinned))

"""Input formats, registered by their `--source` name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from converter.core.protocols import Source
from converter.sources.sagemaker_gt import SageMakerGroundTruthSource, find_manifest


@dataclass(frozen=True)
class SourceOptions:
    """What the command line tells a source. `annotations` is a file, never a folder."""

    annotations: Path
    images: Path
    label_attribute: str | None = None


@dataclass(frozen=True)
class SourceFormat:
    """One input format: how to find its annotation file in a folder, and how to read it."""

    find_annotations: Callable[[Path], Path]
    build: Callable[[SourceOptions], Source]


SOURCES: dict[str, SourceFormat] = {
    "sagemaker_gt": SourceFormat(
        find_annotations=find_manifest,
        build=lambda options: SageMakerGroundTruthSource(options.annotations, options.images, options.label_attribute),
    ),
}

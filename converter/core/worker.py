"""What a worker process does with one sample: materialize it and encode its record.

The parent hands each worker the run-wide settings once (`install`), then streams samples
through `convert_sample`. What comes back is small besides the sink's payload: the class
ids the parent counts for dataset_info.yaml, and the notes and warnings for the report.
A sample that cannot be written comes back as a `FailedSample`, never as an exception, so
one bad sample never stops the run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import shapely

from converter.core.classes import ClassList
from converter.core.input_files import named
from converter.core.materialize import EncodedSample, ObjectNote, RecordOptions, materialize
from converter.core.protocols import RecordEncoder
from converter.core.rasterize import CombinationClasses
from converter.core.sample import Sample
from converter.errors import SampleError


@dataclass(frozen=True)
class WorkerSettings:
    """Everything every sample of a run needs; pickled once per worker, not once per sample."""

    classes: ClassList
    options: RecordOptions
    combinations: CombinationClasses | None
    encoder: RecordEncoder[Any]
    image_id_overrides: dict[str, int]  # keys whose derived image id collided (`converter.core.image_ids`)
    describe: Callable[[EncodedSample], Any] | None = None  # a record observer's (`RecordObserver.describe`)


@dataclass(frozen=True)
class ConvertedSample:
    """A sample ready for its split's writer."""

    payload: Any
    object_class_ids: tuple[int, ...]
    class_ids_present: frozenset[int]
    notes: tuple[ObjectNote, ...]
    warnings: tuple[str, ...]
    description: Any = None  # what the run's record observer took from it (statistics), if it has one


@dataclass(frozen=True)
class FailedSample:
    """A sample that cannot be written, and why (for the report)."""

    code: str
    message: str


_settings: WorkerSettings | None = None
MIN_REPAIRED_AREA = 0.5  # square pixels: less than this is float noise (a collinear ring), not a shape


def install(settings: WorkerSettings) -> None:
    """Set this process's run settings; the pool's initializer, or the parent with one worker."""
    global _settings
    _settings = settings


def _materialized(sample: Sample) -> tuple[WorkerSettings, EncodedSample | FailedSample]:
    """The installed settings, and the sample materialized with them (or why it cannot be)."""
    if _settings is None:
        raise RuntimeError("worker settings not installed; call install() first")
    try:
        encoded = materialize(
            sample,
            _settings.classes,
            _settings.options,
            _settings.combinations,
            _settings.image_id_overrides.get(sample.key),
        )
    except SampleError as error:
        return _settings, FailedSample(error.code, error.message)
    return _settings, encoded


def convert_sample(sample: Sample) -> ConvertedSample | FailedSample:
    """Materialize one sample and encode its record with the installed settings."""
    settings, encoded = _materialized(sample)
    if isinstance(encoded, FailedSample):
        return encoded
    return ConvertedSample(
        payload=settings.encoder(encoded),
        object_class_ids=tuple(obj.class_id for obj in encoded.objects),
        class_ids_present=encoded.class_ids_present(),
        notes=encoded.notes,
        warnings=encoded.warnings,
        description=settings.describe(encoded) if settings.describe is not None else None,
    )


@dataclass(frozen=True)
class InspectedSample:
    """What `dataset-converter check` learns from a sample that a conversion would write (nothing is encoded)."""

    sha256: bytes  # the image's digest: the parent finds the same image under different keys
    notes: tuple[ObjectNote, ...]
    warnings: tuple[str, ...]
    declared_size_mismatch: str | None
    invalid_polygons: tuple[str, ...]


def inspect_sample(sample: Sample) -> InspectedSample | FailedSample:
    """Materialize one sample as a conversion would, and look for what is wrong with it; encode no record."""
    _, encoded = _materialized(sample)
    if isinstance(encoded, FailedSample):
        return encoded
    displayed = (encoded.image.width, encoded.image.height)
    mismatch = None
    if sample.declared_size is not None and sample.declared_size != displayed:
        mismatch = (
            f"the export declares {sample.declared_size[0]}x{sample.declared_size[1]}, the image file displays as "
            f"{displayed[0]}x{displayed[1]}"
        )
    return InspectedSample(
        sha256=bytes.fromhex(encoded.sha256_hex),
        notes=encoded.notes,
        warnings=encoded.warnings,
        declared_size_mismatch=mismatch,
        invalid_polygons=invalid_polygons(sample),
    )


def invalid_polygons(sample: Sample) -> tuple[str, ...]:
    """Each polygon that is not a valid simple shape (a self-intersection, a spike), and what repair would make of it.

    A conversion paints such a polygon as drawn (OpenCV fills it), which is rarely what the
    annotator meant; `shapely.make_valid` is the usual repair, and says whether any area survives.
    """
    problems = []
    for index, obj in enumerate(sample.objects):
        for part in obj.polygons:
            shape = part.geometry()
            if shape.is_valid:
                continue
            repaired = shapely.make_valid(shape).area
            repair = (
                f"shapely.make_valid would repair it into {repaired:g} square pixels"
                if repaired >= MIN_REPAIRED_AREA
                else "repair leaves no area: fix or delete it"
            )
            problems.append(
                f"object {index} ({named(obj.class_name)}): {shapely.is_valid_reason(shape)}; converted as drawn, "
                f"{repair}"
            )
    return tuple(problems)

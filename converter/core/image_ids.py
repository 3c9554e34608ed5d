"""Numeric image ids: what a record's `image/source_id` holds.

Model Garden, its COCO evaluator and EfficientDet parse `image/source_id` as a number
(`tf.strings.to_number(..., tf.int64)`), and COCO-style evaluation matches detections to
ground truth by it, so it must be a decimal integer, unique in the dataset, and the same
on every run. A COCO export has its own image ids and they are kept. Any other sample's
id is derived from its key alone, so reruns and appended data never change it:

    id = first 8 bytes of SHA-256("image-id:" + normalized key), big-endian, mod (2**53 - 1), + 1

which lies in [1, 2**53 - 1]: exact in a float64, hence in every JSON reader. Two keys of a
dataset deriving the same id (about one chance in 18 million for a million images) are
told apart by deriving again, with `#1`, `#2`... appended to the key, for every key of the
collision but the one that sorts first; the run's report lists them. Only the keys of such
a collision can change id when data is appended, and only if the new key sorts first.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from converter.core.sample import Sample
from converter.core.split import normalize_key

_DERIVED_ID_RANGE = 2**53 - 1


def derived_image_id(key: str, attempt: int = 0) -> int:
    """The id of a sample whose export gives none; `attempt` > 0 only to resolve a collision."""
    text = "image-id:" + normalize_key(key) + (f"#{attempt}" if attempt else "")
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % _DERIVED_ID_RANGE + 1


def image_id_of(sample: Sample, overrides: dict[str, int]) -> int:
    """The sample's `image/source_id`: its export's id, a collision's resolution, or the derived id."""
    if sample.image_id is not None:
        return sample.image_id
    return overrides.get(sample.key) or derived_image_id(sample.key)


@dataclass(frozen=True)
class ImageIdCollision:
    """A key whose derived id another key of the dataset already has, and the id it gets instead."""

    sample: Sample
    image_id: int
    taken_by: str


def resolve_collisions(samples: Sequence[Sample]) -> tuple[dict[str, int], list[ImageIdCollision]]:
    """Ids for the keys whose derived id collides: `{key: id}`, and what was changed, for the report.

    Export ids are kept as they are (a COCO file lists each id once; the source skips repeats).
    """
    owner: dict[int, str] = {}
    derived: list[tuple[str, Sample]] = []
    for sample in samples:
        if sample.image_id is not None:
            owner[sample.image_id] = sample.key
        else:
            derived.append((normalize_key(sample.key), sample))
    colliding: list[tuple[str, Sample]] = []
    first_owner: dict[int, tuple[str, Sample]] = {}
    for normalized, sample in derived:
        image_id = derived_image_id(sample.key)
        holder = first_owner.get(image_id)
        if image_id in owner and holder is None:
            colliding.append((normalized, sample))  # an export id took it: export ids win
        elif holder is None:
            first_owner[image_id] = (normalized, sample)
        elif normalized == holder[0]:
            continue  # the same key twice: the split plan reports it, not this
        elif normalized < holder[0]:
            first_owner[image_id] = (normalized, sample)
            colliding.append(holder)
        else:
            colliding.append((normalized, sample))
    owner.update({image_id: holder[1].key for image_id, holder in first_owner.items()})
    return _rederive(sorted(colliding, key=lambda pair: pair[0]), owner)


def _rederive(
    colliding: Iterable[tuple[str, Sample]], owner: dict[int, str]
) -> tuple[dict[str, int], list[ImageIdCollision]]:
    overrides: dict[str, int] = {}
    changes: list[ImageIdCollision] = []
    for _, sample in colliding:
        taken_by = owner[derived_image_id(sample.key)]
        attempt = 1
        while (image_id := derived_image_id(sample.key, attempt)) in owner:
            attempt += 1
        owner[image_id] = sample.key
        overrides[sample.key] = image_id
        changes.append(ImageIdCollision(sample, image_id, taken_by))
    return overrides, changes

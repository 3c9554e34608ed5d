"""Stable, seeded train/validation/test assignment and record order.

A sample's split is a pure function of `(seed, key)`: the key is hashed with SHA-256
and the first 8 bytes, read as a fraction of 2**64, fall into one of the cumulative
split ranges. The result ignores input order and every other sample, so re-running
gives the same split and appending lines never moves an existing sample to another
split (the failure of tools that shuffle a list and cut it).

Within a split, records are ordered by a second hash of `(seed, key)` with a different
salt, so the order is shuffled (no class runs in the shards) yet just as stable.

Changing the hash, the salts or the key normalization moves samples between splits:
treat it as a breaking change of the output format.

`--split from-source` replaces the hash by the export's own split files (COCO's
`instances_train2017.json` and `instances_val2017.json`): a sample's split is then the
one its file's name says (`split_named_in`), a pure function of that file, so it holds
just as well on a rerun and when files grow. Which splits exist is known once the files
are located, before any is read, because the output folder's entries are checked first.
"""

from __future__ import annotations

import hashlib
import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

SplitName = Literal["train", "validation", "test"]
SPLIT_NAMES: tuple[SplitName, ...] = ("train", "validation", "test")

FROM_SOURCE = "from-source"
"""The `--split` value that takes each sample's split from its export file instead of the hash."""

_SPLIT_WORDS: dict[str, SplitName] = {
    "train": "train",
    "training": "train",
    "val": "validation",
    "valid": "validation",
    "validation": "validation",
    "test": "test",
    "testing": "test",
}
"""The words of a file name that say a split; a word is a run of letters (`instances_val2017` -> `val`)."""

_SPLIT_SALT = "split"
_ORDER_SALT = "order"
_HASH_BYTES = 8  # 64 bits: collisions are irrelevant at any realistic dataset size


@dataclass(frozen=True)
class SplitFractions:
    """The share of samples each split receives; the shares sum to 1.

    `source_splits` is not None only for `--split from-source`: the splits the export's
    files name, in `SPLIT_NAMES` order (empty until the files are located, see
    `with_source_splits`). The shares are then unused, and each sample goes to the split
    its `Sample.source_split` names.
    """

    train: float
    validation: float
    test: float = 0.0
    source_splits: tuple[SplitName, ...] | None = None

    def __post_init__(self) -> None:
        shares = (self.train, self.validation, self.test)
        if any(not math.isfinite(share) or share < 0 or share > 1 for share in shares):
            raise ValueError(f"split fractions must lie in [0, 1], got {shares}")
        if not math.isclose(sum(shares), 1.0, abs_tol=1e-9):
            raise ValueError(f"split fractions must sum to 1, got {shares} (sum {sum(shares):g})")

    @property
    def from_source(self) -> bool:
        """Whether samples keep the split their export file names (`--split from-source`)."""
        return self.source_splits is not None

    def with_source_splits(self, splits: Sequence[SplitName]) -> SplitFractions:
        """The from-source fractions of an export whose files name `splits` (repeats allowed)."""
        return replace(self, source_splits=tuple(name for name in SPLIT_NAMES if name in splits))

    def active_splits(self) -> tuple[SplitName, ...]:
        """Train and validation always (possibly empty), test only when it was asked for; from
        source, exactly the splits the files name (a dataset of train and test files has no validation)."""
        if self.source_splits is not None:
            return self.source_splits
        return ("train", "validation", "test") if self.test > 0 else ("train", "validation")

    def as_dict(self) -> dict[str, float | str]:
        """What dataset_info.yaml records as `split`: each split's share, or `from-source`."""
        if self.source_splits is not None:
            return dict.fromkeys(self.source_splits, FROM_SOURCE)
        return {name: getattr(self, name) for name in self.active_splits()}


def parse_split_fractions(text: str) -> SplitFractions:
    """Parse the `--split` option.

    One number is the validation share (the replaced tool's meaning): `"0.2"` gives
    train 0.8 / validation 0.2. Two or three comma-separated numbers are the
    train,validation[,test] shares and must sum to 1: `"0.8,0.1,0.1"`. `"from-source"`
    gives fractions marked from-source whose splits are set once the files are located.
    """
    if text.strip() == FROM_SOURCE:
        return SplitFractions(train=1.0, validation=0.0, source_splits=())
    parts = [part.strip() for part in text.split(",")]
    try:
        numbers = [float(part) for part in parts]
    except ValueError:
        raise ValueError(f"expected numbers like 0.2 or 0.8,0.1,0.1, or {FROM_SOURCE}, got {text!r}") from None
    if len(numbers) == 1:
        validation = numbers[0]
        if not 0 <= validation < 1:
            raise ValueError(f"a single --split value is the validation share in [0, 1), got {text!r}")
        return SplitFractions(train=1 - validation, validation=validation)
    if len(numbers) in (2, 3):
        return SplitFractions(numbers[0], numbers[1], numbers[2] if len(numbers) == 3 else 0.0)
    raise ValueError(f"expected 1 to 3 comma-separated numbers, got {len(numbers)} in {text!r}")


def normalize_key(key: str) -> str:
    """Normalize a sample key before hashing, so equal images hash equally everywhere.

    Unicode is NFC-normalized (macOS file names arrive decomposed) and backslashes become
    slashes (Windows paths). Case is kept: S3 keys and Linux paths are case-sensitive.
    """
    return unicodedata.normalize("NFC", key).replace("\\", "/")


def _unit_hash(salt: str, seed: int, key: str) -> float:
    digest = hashlib.sha256(f"{salt}\x00{seed}\x00{normalize_key(key)}".encode()).digest()
    return int.from_bytes(digest[:_HASH_BYTES], "big") / float(1 << (8 * _HASH_BYTES))


def split_named_in(file_name: str) -> tuple[SplitName, ...]:
    """The splits a file name says, by its words: `instances_val2017.json` -> `("validation",)`.

    Several (`train_val.json`) or none (`instances_default.json`) are for the caller to refuse:
    guessing would put a whole file in the wrong split.
    """
    words = re.findall(r"[a-z]+", file_name.lower())
    return tuple(name for name in SPLIT_NAMES if any(_SPLIT_WORDS.get(word) == name for word in words))


def assign_split(key: str, seed: int, fractions: SplitFractions, source_split: SplitName | None = None) -> SplitName:
    """The split of one sample; depends on nothing but its key, the seed and the fractions, or,
    from source, on nothing but the split its file names (`source_split`)."""
    if fractions.source_splits is not None:
        if source_split is None or source_split not in fractions.source_splits:
            raise ValueError(
                f"--split {FROM_SOURCE}: sample {key!r} names split {source_split!r}, not one of the located "
                f"files' {fractions.source_splits}"
            )
        return source_split
    position = _unit_hash(_SPLIT_SALT, seed, key)
    if position < fractions.train:
        return "train"
    if position < fractions.train + fractions.validation or fractions.test == 0:
        return "validation"
    return "test"


def seeded_order(keys: Sequence[str], seed: int) -> list[int]:
    """Return the indices of `keys` in the seeded, key-hashed record order.

    Equal keys (one image listed twice) keep their input order, so the result is fully
    determined by the keys and the seed.
    """
    return sorted(range(len(keys)), key=lambda index: (_unit_hash(_ORDER_SALT, seed, keys[index]), index))

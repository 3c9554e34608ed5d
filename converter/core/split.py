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
"""

from __future__ import annotations

import hashlib
import math
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

SplitName = Literal["train", "validation", "test"]
SPLIT_NAMES: tuple[SplitName, ...] = ("train", "validation", "test")

_SPLIT_SALT = "split"
_ORDER_SALT = "order"
_HASH_BYTES = 8  # 64 bits: collisions are irrelevant at any realistic dataset size


@dataclass(frozen=True)
class SplitFractions:
    """The share of samples each split receives; the shares sum to 1."""

    train: float
    validation: float
    test: float = 0.0

    def __post_init__(self) -> None:
        shares = (self.train, self.validation, self.test)
        if any(not math.isfinite(share) or share < 0 or share > 1 for share in shares):
            raise ValueError(f"split fractions must lie in [0, 1], got {shares}")
        if not math.isclose(sum(shares), 1.0, abs_tol=1e-9):
            raise ValueError(f"split fractions must sum to 1, got {shares} (sum {sum(shares):g})")

    def active_splits(self) -> tuple[SplitName, ...]:
        """Train and validation always (possibly empty), test only when it was asked for."""
        return ("train", "validation", "test") if self.test > 0 else ("train", "validation")

    def as_dict(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in self.active_splits()}


def parse_split_fractions(text: str) -> SplitFractions:
    """Parse the `--split` option.

    One number is the validation share (the replaced tool's meaning): `"0.2"` gives
    train 0.8 / validation 0.2. Two or three comma-separated numbers are the
    train,validation[,test] shares and must sum to 1: `"0.8,0.1,0.1"`.
    """
    parts = [part.strip() for part in text.split(",")]
    try:
        numbers = [float(part) for part in parts]
    except ValueError:
        raise ValueError(f"expected numbers like 0.2 or 0.8,0.1,0.1, got {text!r}") from None
    if len(numbers) == 1:
        validation = numbers[0]
        if not 0 <= validation < 1:
            raise ValueError(f"a single --split value is the validation share in [0, 1), got {text!r}")
        return SplitFractions(train=1 - validation, validation=validation)
    if len(numbers) in (2, 3):
        return SplitFractions(*numbers)
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


def assign_split(key: str, seed: int, fractions: SplitFractions) -> SplitName:
    """The split of one sample; depends on nothing but its key, the seed and the fractions."""
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

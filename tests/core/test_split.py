"""Split assignment and record order: parsing, golden values, and invariants as properties."""

from __future__ import annotations

import hashlib
import math
import unicodedata
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from converter.core.split import (
    SplitFractions,
    SplitName,
    assign_split,
    normalize_key,
    parse_split_fractions,
    seeded_order,
)

# Keys without surrogates (a key must be encodable as UTF-8, as every real path is).
keys_strategy = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=30)


def distinct_keys(min_size: int = 0, max_size: int = 30) -> st.SearchStrategy[list[str]]:
    """Keys that stay distinct after normalization (NFC and NFD spellings of one name are one key)."""
    return st.lists(keys_strategy, min_size=min_size, max_size=max_size, unique_by=normalize_key)


seeds = st.integers(min_value=0, max_value=2**32)
fractions_strategy = st.sampled_from(
    [
        SplitFractions(0.8, 0.2),
        SplitFractions(0.8, 0.1, 0.1),
        SplitFractions(0.5, 0.3, 0.2),
        SplitFractions(1.0, 0.0),
        SplitFractions(0.0, 1.0),
        SplitFractions(0.0, 0.0, 1.0),
    ]
)


def reference_position(salt: str, seed: int, key: str) -> float:
    """The documented contract, re-derived: sha256 of `salt NUL seed NUL key`, first 8 bytes big-endian / 2**64."""
    digest = hashlib.sha256(f"{salt}\x00{seed}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def reference_split(key: str, seed: int, fractions: SplitFractions) -> SplitName:
    position = reference_position("split", seed, key)
    if position < fractions.train:
        return "train"
    if position < fractions.train + fractions.validation or fractions.test == 0:
        return "validation"
    return "test"


# --- parse_split_fractions -------------------------------------------------------------


def test_single_number_is_the_validation_share() -> None:
    fractions = parse_split_fractions("0.2")
    assert fractions == SplitFractions(train=0.8, validation=0.2, test=0.0)
    assert fractions.active_splits() == ("train", "validation")
    assert fractions.as_dict() == {"train": 0.8, "validation": 0.2}


def test_zero_validation_share_puts_everything_in_train() -> None:
    assert parse_split_fractions("0") == SplitFractions(train=1.0, validation=0.0)


def test_three_numbers_are_train_validation_test() -> None:
    fractions = parse_split_fractions("0.8,0.1,0.1")
    assert (fractions.train, fractions.validation, fractions.test) == (0.8, 0.1, 0.1)
    assert fractions.active_splits() == ("train", "validation", "test")


def test_two_numbers_and_spaces() -> None:
    assert parse_split_fractions(" 0.7 , 0.3 ") == SplitFractions(train=0.7, validation=0.3)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("1.5", "validation share in [0, 1)"),
        ("1", "validation share in [0, 1)"),
        ("-0.1", "validation share in [0, 1)"),
        ("nan", "validation share in [0, 1)"),
        ("a", "expected numbers like 0.2 or 0.8,0.1,0.1"),
        ("0.8,", "expected numbers"),
        ("0.5,0.6", "must sum to 1"),
        ("0.5,0.3,0.1", "must sum to 1"),
        ("0.7,0.1,0.1,0.1", "expected 1 to 3 comma-separated numbers, got 4"),
        ("-0.2,1.2", "must lie in [0, 1]"),
        ("0.9,0.2,-0.1", "must lie in [0, 1]"),
    ],
)
def test_invalid_split_is_refused(text: str, fragment: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse_split_fractions(text)
    assert fragment in str(raised.value)


# --- golden values ---------------------------------------------------------------------

GOLDEN_KEYS = [f"s3://bucket/images/{index:04d}.jpg" for index in range(1, 9)] + [
    "images/caf\u00e9.jpg",
    "C:/data/img 9.png",
]
GOLDEN_FRACTIONS = SplitFractions(0.5, 0.3, 0.2)
# Computed once with `reference_split` / `reference_position` above (never with the converter).
GOLDEN_SPLITS: dict[int, list[SplitName]] = {
    0: ["test", "train", "train", "test", "train", "train", "train", "validation", "train", "train"],
    42: ["train", "train", "test", "test", "train", "train", "train", "train", "validation", "train"],
}
GOLDEN_ORDERS: dict[int, list[int]] = {
    0: [6, 4, 8, 3, 0, 7, 5, 9, 2, 1],
    42: [4, 3, 0, 1, 7, 9, 5, 2, 6, 8],
}


@pytest.mark.parametrize("seed", sorted(GOLDEN_SPLITS))
def test_golden_split_assignments(seed: int) -> None:
    assert [reference_split(key, seed, GOLDEN_FRACTIONS) for key in GOLDEN_KEYS] == GOLDEN_SPLITS[seed]
    assert [assign_split(key, seed, GOLDEN_FRACTIONS) for key in GOLDEN_KEYS] == GOLDEN_SPLITS[seed]


@pytest.mark.parametrize("seed", sorted(GOLDEN_ORDERS))
def test_golden_record_order(seed: int) -> None:
    expected = sorted(range(len(GOLDEN_KEYS)), key=lambda i: (reference_position("order", seed, GOLDEN_KEYS[i]), i))
    assert expected == GOLDEN_ORDERS[seed]
    assert seeded_order(GOLDEN_KEYS, seed) == GOLDEN_ORDERS[seed]


@settings(max_examples=100)
@given(key=keys_strategy, seed=seeds, fractions=fractions_strategy)
def test_assignment_matches_the_documented_hash(key: str, seed: int, fractions: SplitFractions) -> None:
    normalized = unicodedata.normalize("NFC", key).replace("\\", "/")
    assert assign_split(key, seed, fractions) == reference_split(normalized, seed, fractions)


# --- invariants --------------------------------------------------------------------------


@settings(max_examples=60)
@given(
    keys=st.lists(keys_strategy, min_size=1, max_size=40, unique=True),
    seed=seeds,
    fractions=fractions_strategy,
    data=st.data(),
)
def test_assignment_ignores_input_order(
    keys: list[str], seed: int, fractions: SplitFractions, data: st.DataObject
) -> None:
    shuffled = data.draw(st.permutations(keys))
    assert {key: assign_split(key, seed, fractions) for key in shuffled} == {
        key: assign_split(key, seed, fractions) for key in keys
    }


@settings(max_examples=60)
@given(
    existing=st.lists(keys_strategy, min_size=1, max_size=30, unique=True),
    added=st.lists(keys_strategy, max_size=30),
    seed=seeds,
    fractions=fractions_strategy,
)
def test_adding_samples_never_moves_existing_ones(
    existing: list[str], added: list[str], seed: int, fractions: SplitFractions
) -> None:
    before = {key: assign_split(key, seed, fractions) for key in existing}
    after = {key: assign_split(key, seed, fractions) for key in added + existing}
    assert {key: after[key] for key in existing} == before


@pytest.mark.parametrize(
    "fractions",
    [SplitFractions(0.8, 0.2), SplitFractions(0.8, 0.1, 0.1), SplitFractions(0.34, 0.33, 0.33)],
    ids=str,
)
@pytest.mark.parametrize("seed", [0, 7])
def test_split_ratios_within_four_sigma(fractions: SplitFractions, seed: int) -> None:
    total = 20_000
    counts: Counter[str] = Counter(
        assign_split(f"s3://bucket/dataset/image_{index:06d}.jpg", seed, fractions) for index in range(total)
    )
    for split, share in fractions.as_dict().items():
        sigma = math.sqrt(total * share * (1 - share))
        assert abs(counts[split] - total * share) <= 4 * sigma, (split, counts)
    assert sum(counts.values()) == total


def test_zero_share_splits_receive_nothing() -> None:
    keys = [f"k{index}" for index in range(2000)]
    assert {assign_split(key, 3, SplitFractions(1.0, 0.0)) for key in keys} == {"train"}
    assert {assign_split(key, 3, SplitFractions(0.5, 0.5)) for key in keys} == {"train", "validation"}


def test_different_seeds_give_different_assignments() -> None:
    keys = [f"images/{index:05d}.png" for index in range(2000)]
    fractions = SplitFractions(0.8, 0.2)
    first = [assign_split(key, 0, fractions) for key in keys]
    second = [assign_split(key, 1, fractions) for key in keys]
    moved = sum(a != b for a, b in zip(first, second, strict=True))
    # Independent assignments disagree on 2 * 0.8 * 0.2 = 32% of keys.
    assert 0.25 * len(keys) < moved < 0.40 * len(keys)


def test_nfc_and_nfd_keys_share_a_split() -> None:
    composed = unicodedata.normalize("NFC", "s3://bucket/Fotos/Café Ärger.jpg")
    decomposed = unicodedata.normalize("NFD", composed)
    assert composed != decomposed
    for seed in range(50):
        assert assign_split(composed, seed, SplitFractions(0.5, 0.5)) == assign_split(
            decomposed, seed, SplitFractions(0.5, 0.5)
        )
    # Normalized keys are equal keys, so they keep their input order.
    assert seeded_order([decomposed, composed], 0) == [0, 1]
    assert seeded_order([composed, decomposed], 0) == [0, 1]


@settings(max_examples=100)
@given(key=keys_strategy, seed=seeds)
def test_unicode_normal_forms_never_change_the_split(key: str, seed: int) -> None:
    fractions = SplitFractions(0.5, 0.3, 0.2)
    forms = {unicodedata.normalize(form, key) for form in ("NFC", "NFD")}
    assert len({assign_split(form, seed, fractions) for form in forms}) == 1


def test_backslash_and_slash_keys_share_a_split() -> None:
    windows = "data\\images\\a.jpg"
    posix = "data/images/a.jpg"
    for seed in range(50):
        assert assign_split(windows, seed, SplitFractions(0.5, 0.5)) == assign_split(
            posix, seed, SplitFractions(0.5, 0.5)
        )


def test_case_is_significant() -> None:
    fractions = SplitFractions(0.5, 0.5)
    assert any(
        assign_split(f"IMG_{index}.JPG", 0, fractions) != assign_split(f"img_{index}.jpg", 0, fractions)
        for index in range(50)
    )


# --- seeded_order -------------------------------------------------------------------------


@settings(max_examples=80)
@given(keys=st.lists(keys_strategy, max_size=40), seed=seeds)
def test_seeded_order_is_a_deterministic_permutation(keys: list[str], seed: int) -> None:
    order = seeded_order(keys, seed)
    assert sorted(order) == list(range(len(keys)))
    assert seeded_order(list(keys), seed) == order


@settings(max_examples=80)
@given(keys=distinct_keys(min_size=1), seed=seeds, data=st.data())
def test_seeded_order_ignores_input_order(keys: list[str], seed: int, data: st.DataObject) -> None:
    shuffled = data.draw(st.permutations(keys))
    assert [keys[i] for i in seeded_order(keys, seed)] == [shuffled[i] for i in seeded_order(shuffled, seed)]


@settings(max_examples=80)
@given(
    keys=distinct_keys(min_size=2),
    extra=st.lists(keys_strategy, max_size=30),
    seed=seeds,
    data=st.data(),
)
def test_relative_order_survives_added_keys(keys: list[str], extra: list[str], seed: int, data: st.DataObject) -> None:
    extra = [key for key in extra if key not in keys]
    combined = data.draw(st.permutations(keys + extra))
    before = [keys[i] for i in seeded_order(keys, seed)]
    after = [combined[i] for i in seeded_order(combined, seed) if combined[i] in set(keys)]
    assert after == before


@settings(max_examples=60)
@given(
    distinct=distinct_keys(min_size=1, max_size=8),
    picks=st.lists(st.integers(min_value=0, max_value=7), min_size=1, max_size=30),
    seed=seeds,
)
def test_equal_keys_keep_input_order(distinct: list[str], picks: list[int], seed: int) -> None:
    keys = [distinct[pick % len(distinct)] for pick in picks]
    order = seeded_order(keys, seed)
    for key in set(keys):
        positions = [index for index in order if keys[index] == key]
        assert positions == sorted(positions)
        # Equal keys are adjacent: one image listed twice never straddles another.
        first = order.index(positions[0])
        assert order[first : first + len(positions)] == positions


def test_order_differs_from_input_order_and_between_seeds() -> None:
    keys = [f"img_{index:04d}.jpg" for index in range(200)]
    assert seeded_order(keys, 0) != list(range(200))
    assert seeded_order(keys, 0) != seeded_order(keys, 1)


def test_order_uses_a_different_salt_than_the_split() -> None:
    keys = [f"img_{index:04d}.jpg" for index in range(200)]
    by_split_hash = sorted(range(len(keys)), key=lambda i: reference_position("split", 0, keys[i]))
    assert seeded_order(keys, 0) != by_split_hash

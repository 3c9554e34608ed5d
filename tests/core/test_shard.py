"""Shard arithmetic (cap, names, greedy packing) and the sharded file writer."""

from __future__ import annotations

import hashlib
import itertools
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from converter.core.shard import MEBIBYTE, ShardInfo, megabytes_to_bytes, shard_file_name, starts_new_shard
from converter.formats.tfrecord import frame_record, read_records
from converter.sinks._sharded_file import ShardedFileWriter

# --- megabytes_to_bytes ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("megabytes", "expected"),
    [(100, 104_857_600), (1, MEBIBYTE), (0.5, 524_288), (0.001, 1048), (2048, 2048 * MEBIBYTE)],
)
def test_megabytes_are_mebibytes(megabytes: float, expected: int) -> None:
    assert megabytes_to_bytes(megabytes) == expected


@pytest.mark.parametrize("megabytes", [0, -1, -0.5, math.nan, math.inf])
def test_shard_size_must_be_positive_and_finite(megabytes: float) -> None:
    with pytest.raises(ValueError) as raised:
        megabytes_to_bytes(megabytes)
    assert "shard size must be positive" in str(raised.value)


# --- starts_new_shard --------------------------------------------------------------------


def test_first_record_never_starts_a_new_shard() -> None:
    assert not starts_new_shard(0, 10, 100)
    assert not starts_new_shard(0, 1000, 100)  # an oversized record goes alone into the open shard


def test_record_that_fits_exactly_stays() -> None:
    assert not starts_new_shard(60, 40, 100)
    assert starts_new_shard(60, 41, 100)


def test_oversized_record_after_others_opens_a_new_shard() -> None:
    assert starts_new_shard(1, 1000, 100)


# --- shard_file_name ---------------------------------------------------------------------


def test_shard_file_name_format() -> None:
    assert shard_file_name("train", 0, 12, ".tfrecord") == "train-00000-of-00012.tfrecord"
    assert shard_file_name("val", 11, 12, ".tfrecord") == "val-00011-of-00012.tfrecord"
    assert shard_file_name("test", 0, 1, "") == "test-00000-of-00001"


def test_shard_names_sort_in_shard_order() -> None:
    names = [shard_file_name("train", index, 1500, ".tfrecord") for index in range(1500)]
    assert sorted(names) == names


@pytest.mark.parametrize(("index", "count"), [(12, 12), (13, 12), (-1, 12), (0, 0)])
def test_shard_index_out_of_range(index: int, count: int) -> None:
    with pytest.raises(ValueError) as raised:
        shard_file_name("train", index, count, ".tfrecord")
    assert f"shard index {index} outside 0..{count - 1}" in str(raised.value)


# --- greedy packing as a property -------------------------------------------------------


def greedy_pack(sizes: list[int], cap: int) -> list[list[int]]:
    """Pack records in order the way the writer does: ask `starts_new_shard` before each record."""
    shards: list[list[int]] = []
    current = 0
    for size in sizes:
        if not shards or starts_new_shard(current, size, cap):
            shards.append([])
            current = 0
        shards[-1].append(size)
        current += size
    return shards


def minimal_shard_count(sizes: list[int], cap: int) -> int:
    """Fewest contiguous groups, each within the cap or a single record (dynamic programming over prefixes)."""
    best = [0] + [len(sizes) + 1] * len(sizes)  # best[i]: fewest shards holding the first i records
    for end in range(1, len(sizes) + 1):
        for start in range(end):
            group = sizes[start:end]
            if len(group) == 1 or sum(group) <= cap:
                best[end] = min(best[end], best[start] + 1)
    return best[len(sizes)]


record_sizes = st.lists(st.integers(min_value=1, max_value=300), max_size=25)
caps = st.integers(min_value=1, max_value=400)


@settings(max_examples=100)
@given(sizes=record_sizes, cap=caps)
def test_greedy_packing_respects_the_cap(sizes: list[int], cap: int) -> None:
    shards = greedy_pack(sizes, cap)
    assert [size for shard in shards for size in shard] == sizes  # order kept, nothing lost
    assert all(shard for shard in shards)  # no empty shard
    for shard in shards:
        assert sum(shard) <= cap or len(shard) == 1, (shard, cap)


@settings(max_examples=100)
@given(sizes=record_sizes, cap=caps)
def test_greedy_packing_uses_the_fewest_shards(sizes: list[int], cap: int) -> None:
    assert len(greedy_pack(sizes, cap)) == minimal_shard_count(sizes, cap)


@settings(max_examples=100)
@given(sizes=record_sizes, cap=caps)
def test_each_shard_is_filled_as_far_as_the_next_record_allows(sizes: list[int], cap: int) -> None:
    shards = greedy_pack(sizes, cap)
    for shard, following in itertools.pairwise(shards):
        assert sum(shard) + following[0] > cap


def test_minimal_shard_count_reference_examples() -> None:
    assert minimal_shard_count([], 10) == 0
    assert minimal_shard_count([5, 5, 5], 10) == 2
    assert minimal_shard_count([20], 10) == 1
    assert minimal_shard_count([3, 20, 3], 10) == 3


# --- ShardedFileWriter -----------------------------------------------------------------


def _payloads(count: int, size: int) -> list[bytes]:
    return [bytes([index % 256]) * size for index in range(count)]


def _write(folder: Path, root: Path, records: list[bytes], cap: int) -> tuple[tuple[ShardInfo, ...], Path]:
    writer = ShardedFileWriter(folder, "train", ".tfrecord", cap, relative_to=root)
    for record in records:
        writer.write(frame_record(record))
    return writer.close(), folder


def test_writer_renames_shards_and_describes_them(tmp_path: Path) -> None:
    payloads = _payloads(7, 84)  # 100 bytes framed
    shards, folder = _write(tmp_path / "tfrecord_train", tmp_path, payloads, cap=250)

    assert [shard.file for shard in shards] == [
        f"tfrecord_train/train-0000{index}-of-00004.tfrecord" for index in range(4)
    ]
    assert sorted(path.name for path in folder.iterdir()) == [Path(shard.file).name for shard in shards]
    assert [shard.records for shard in shards] == [2, 2, 2, 1]
    read_back = []
    for shard in shards:
        data = (tmp_path / shard.file).read_bytes()
        assert shard.bytes == len(data) <= 250
        assert shard.sha256 == hashlib.sha256(data).hexdigest()
        with (tmp_path / shard.file).open("rb") as stream:
            records = list(read_records(stream))
        assert len(records) == shard.records
        read_back += records
    assert read_back == payloads


def test_writer_puts_an_oversized_record_alone(tmp_path: Path) -> None:
    payloads = [b"a" * 10, b"b" * 500, b"c" * 10]
    shards, _ = _write(tmp_path / "out", tmp_path, payloads, cap=100)
    assert [shard.records for shard in shards] == [1, 1, 1]
    assert shards[1].bytes == 516


def test_writer_with_one_shard(tmp_path: Path) -> None:
    shards, _ = _write(tmp_path / "out", tmp_path, _payloads(3, 10), cap=MEBIBYTE)
    assert [shard.file for shard in shards] == ["out/train-00000-of-00001.tfrecord"]
    assert shards[0].records == 3
    assert shards[0].bytes == 3 * 26


def test_writer_with_no_records_writes_no_shard(tmp_path: Path) -> None:
    shards, folder = _write(tmp_path / "out", tmp_path, [], cap=100)
    assert shards == ()
    assert list(folder.iterdir()) == []


def test_writer_leaves_no_partial_file(tmp_path: Path) -> None:
    _write(tmp_path / "out", tmp_path, _payloads(20, 30), cap=100)
    assert not list((tmp_path / "out").glob("*.partial"))


@settings(max_examples=30, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=200), max_size=15), cap=st.integers(min_value=16, max_value=500)
)
def test_writer_matches_greedy_packing(tmp_path_factory: pytest.TempPathFactory, sizes: list[int], cap: int) -> None:
    root = tmp_path_factory.mktemp("writer")
    payloads = [bytes(size) for size in sizes]
    shards, _ = _write(root / "out", root, payloads, cap)
    expected = greedy_pack([len(frame_record(payload)) for payload in payloads], cap)
    assert [shard.records for shard in shards] == [len(shard) for shard in expected]
    assert [shard.bytes for shard in shards] == [sum(shard) for shard in expected]

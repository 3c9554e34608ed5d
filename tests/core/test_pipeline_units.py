"""Pipeline units: the --max-skipped limit, and verify_dataset on datasets damaged after writing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from converter.cli import app
from converter.core.plan import SkipLimit
from converter.core.verify import Verification, verify_dataset
from converter.formats.tfrecord import frame_record

from .gt_export import EXPORT_IMAGES

# --- SkipLimit -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "limit"),
    [
        ("10", SkipLimit(count=10)),
        ("0", SkipLimit(count=0)),
        ("1", SkipLimit(count=1)),  # a whole number is a count, never "100%"
        (" 7 ", SkipLimit(count=7)),
        ("0.05", SkipLimit(fraction=0.05)),
        ("1.0", SkipLimit(fraction=1.0)),
        ("0.0", SkipLimit(fraction=0.0)),
        ("5%", SkipLimit(fraction=0.05)),
        ("100%", SkipLimit(fraction=1.0)),
        ("0%", SkipLimit(fraction=0.0)),
    ],
)
def test_parse_skip_limit(text: str, limit: SkipLimit) -> None:
    assert SkipLimit.parse(text) == limit


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("abc", "could not convert"),
        ("", "could not convert"),
        ("%", "could not convert"),
        ("-1", "fraction must lie in [0, 1]"),
        ("1.5", "fraction must lie in [0, 1]"),
        ("150%", "fraction must lie in [0, 1]"),
        ("-5%", "fraction must lie in [0, 1]"),
        ("nan", "fraction must lie in [0, 1]"),
    ],
)
def test_parse_skip_limit_errors(text: str, fragment: str) -> None:
    with pytest.raises(ValueError) as raised:
        SkipLimit.parse(text)
    message = str(raised.value)
    assert "expected a count like 10 or a fraction like 0.05 or 5%" in message
    assert repr(text) in message
    assert fragment in message


@pytest.mark.parametrize(
    ("arguments", "fragment"),
    [
        ({}, "give exactly one of count and fraction"),
        ({"count": 1, "fraction": 0.1}, "give exactly one of count and fraction"),
        ({"count": -1}, "count must be >= 0"),
    ],
)
def test_skip_limit_needs_exactly_one_valid_bound(arguments: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValueError) as raised:
        SkipLimit(**arguments)
    assert fragment in str(raised.value)


@pytest.mark.parametrize(
    ("text", "samples", "allowed"),
    [
        ("10", 0, 10),
        ("10", 1_000_000, 10),
        ("0.05", 100, 5),
        ("0.05", 99, 4),  # rounded down: 5% of 99 is 4.95 skipped samples
        ("5%", 20, 1),
        ("29%", 100, 29),  # 0.29 * 100 is 28.999999999999996 in floating point
        ("0.07", 100, 7),
        ("0%", 1000, 0),
        ("100%", 37, 37),
        ("0.5", 0, 0),
    ],
)
def test_allowed_skips(text: str, samples: int, allowed: int) -> None:
    assert SkipLimit.parse(text).allowed(samples) == allowed


@settings(max_examples=100)
@given(percent=st.integers(0, 100), samples=st.integers(0, 1_000_000))
def test_percent_limit_is_exact_integer_arithmetic(percent: int, samples: int) -> None:
    assert SkipLimit.parse(f"{percent}%").allowed(samples) == percent * samples // 100


# --- verify_dataset ------------------------------------------------------------------------------


def _info(dataset: Path) -> dict[str, Any]:
    info: dict[str, Any] = yaml.safe_load((dataset / "dataset_info.yaml").read_text(encoding="utf-8"))
    return info


def _first_shard(dataset: Path, split: str = "train") -> tuple[Path, dict[str, Any]]:
    shard = _info(dataset)[split]["shards"][0]
    return dataset / shard["file"], shard


def _problems(dataset: Path) -> list[str]:
    result = verify_dataset(dataset / "dataset_info.yaml")
    assert result.records == EXPORT_IMAGES  # the records dataset_info.yaml lists, counted whatever the damage
    assert result.notes == []
    return result.problems


def test_intact_dataset(dataset: Path) -> None:
    info = _info(dataset)
    assert all(len(info[split]["shards"]) >= 2 for split in ("train", "validation", "test"))
    assert verify_dataset(dataset / "dataset_info.yaml") == Verification(EXPORT_IMAGES, [], [])


def test_flipped_byte_is_caught_by_hash_and_crc(dataset: Path) -> None:
    path, _ = _first_shard(dataset)
    data = bytearray(path.read_bytes())
    data[200] ^= 0x40  # inside the first record's data
    path.write_bytes(bytes(data))
    problems = _problems(dataset)
    assert len(problems) == 2, problems
    assert f"{path}: sha256" in problems[0]
    assert "differs from dataset_info.yaml" in problems[0]
    assert f"{path}: record 0: data checksum mismatch" in problems[1]


def test_flipped_byte_in_a_length_field(dataset: Path) -> None:
    path, _ = _first_shard(dataset, "validation")
    data = bytearray(path.read_bytes())
    data[1] ^= 0x01
    path.write_bytes(bytes(data))
    assert any("record 0: length checksum mismatch" in problem for problem in _problems(dataset))


def test_truncated_shard(dataset: Path) -> None:
    path, shard = _first_shard(dataset)
    path.write_bytes(path.read_bytes()[:-10])
    problems = _problems(dataset)
    assert f"{path}: {shard['bytes'] - 10} bytes, dataset_info.yaml says {shard['bytes']}" in problems
    assert any(f"{path}: sha256" in problem for problem in problems)
    assert any(f"record {shard['records'] - 1}: truncated data" in problem for problem in problems)


def test_missing_shard(dataset: Path) -> None:
    path, _ = _first_shard(dataset, "test")
    path.unlink()
    assert _problems(dataset) == [f"{path}: missing"]


def test_missing_split_folder(dataset: Path) -> None:
    info = _info(dataset)
    for shard in info["validation"]["shards"]:
        (dataset / shard["file"]).unlink()
    (dataset / info["validation"]["label_map"]).unlink()
    folder = dataset / info["validation"]["annotations"]
    folder.resolve().rmdir()  # the folder in the live generation, and the link a user sees
    folder.unlink()
    problems = _problems(dataset)
    assert len(problems) == len(info["validation"]["shards"]) + 1  # and its label map
    assert all(": missing" in problem for problem in problems)


def test_wrong_record_count_of_a_shard(dataset: Path) -> None:
    info = _info(dataset)
    shard = info["train"]["shards"][0]
    shard["records"] += 1
    (dataset / "dataset_info.yaml").write_text(yaml.safe_dump(info, sort_keys=False), encoding="utf-8")
    result = verify_dataset(dataset / "dataset_info.yaml")
    assert result.records == EXPORT_IMAGES + 1
    assert result.problems == [
        f"{dataset / shard['file']}: {shard['records'] - 1} records, dataset_info.yaml says {shard['records']}",
        f"train: shards hold {info['train']['samples'] + 1} records but `samples` says {info['train']['samples']}",
    ]


def test_wrong_sample_count_of_a_split(dataset: Path) -> None:
    info = _info(dataset)
    listed = info["test"]["samples"]
    info["test"]["samples"] = listed + 5
    (dataset / "dataset_info.yaml").write_text(yaml.safe_dump(info, sort_keys=False), encoding="utf-8")
    assert _problems(dataset) == [f"test: shards hold {listed} records but `samples` says {listed + 5}"]


def test_record_appended_to_a_shard(dataset: Path) -> None:
    path, shard = _first_shard(dataset)
    with path.open("ab") as stream:
        stream.write(frame_record(b"an extra record, framed correctly"))
    problems = _problems(dataset)
    assert any("bytes, dataset_info.yaml says" in problem for problem in problems)
    assert any(f"{shard['records'] + 1} records, dataset_info.yaml says {shard['records']}" in p for p in problems)


def test_shards_swapped(dataset: Path) -> None:
    info = _info(dataset)
    first, second = (dataset / shard["file"] for shard in info["train"]["shards"][:2])
    first_data, second_data = first.read_bytes(), second.read_bytes()
    first.write_bytes(second_data)
    second.write_bytes(first_data)
    problems = _problems(dataset)
    assert sum("differs from dataset_info.yaml" in problem for problem in problems) == 2


def test_unreadable_dataset_info(tmp_path: Path) -> None:
    path = tmp_path / "dataset_info.yaml"
    path.write_bytes(b"classes: [\xff\xfe]\n")  # not UTF-8 (an absent file is no dataset: test_verify_failed_run.py)
    result = verify_dataset(path)
    assert result.records == 0
    assert len(result.problems) == 1
    assert "dataset_info.yaml: cannot be read" in result.problems[0]


@pytest.mark.parametrize("content", ["- a\n- b\n", "just text\n", "classes: [a\n"])
def test_dataset_info_that_is_not_a_mapping(tmp_path: Path, content: str) -> None:
    path = tmp_path / "dataset_info.yaml"
    path.write_text(content, encoding="utf-8")
    result = verify_dataset(path)
    assert result.records == 0
    assert len(result.problems) == 1
    assert str(path) in result.problems[0]


def test_verify_command_exit_codes(dataset: Path) -> None:
    runner = CliRunner()
    intact = runner.invoke(app, ["verify", str(dataset)])
    assert intact.exit_code == 0, intact.output
    assert f"OK: {EXPORT_IMAGES} records" in intact.output
    path, _ = _first_shard(dataset)
    path.write_bytes(path.read_bytes()[:-1])
    damaged = runner.invoke(app, ["verify", str(dataset / "dataset_info.yaml")])
    assert damaged.exit_code == 1
    assert f"ERROR: {path}" in damaged.output

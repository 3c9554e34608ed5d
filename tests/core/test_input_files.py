"""User-named files: read as UTF-8 (a BOM dropped), failures as usage errors naming file and purpose."""

from __future__ import annotations

from pathlib import Path

import pytest

from converter.core.input_files import load_json, read_text
from converter.errors import UsageError


def test_a_byte_order_mark_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "classes.txt"
    path.write_bytes(b"\xef\xbb\xbfcat\n")

    assert read_text(path, "--classes file") == "cat\n"


def test_a_missing_file_names_its_purpose_and_path(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=rf"cannot read label map {tmp_path / 'absent.yaml'}"):
        read_text(tmp_path / "absent.yaml", "label map")


def test_non_utf8_text_says_where_it_breaks(tmp_path: Path) -> None:
    path = tmp_path / "export.json"
    path.write_bytes(b'["caf\xe9"]')

    with pytest.raises(UsageError, match=r"Scale AI export .* is not UTF-8 text \(byte 5\)"):
        load_json(path, "Scale AI export")


def test_invalid_json_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "instances.json"
    path.write_text('{"images": [', encoding="utf-8")

    with pytest.raises(UsageError, match=r"COCO file .* is not valid JSON"):
        load_json(path, "COCO file")


def test_valid_json_is_parsed(tmp_path: Path) -> None:
    path = tmp_path / "export.json"
    path.write_text('[{"id": 1}]', encoding="utf-8")

    assert load_json(path, "Label Studio export") == [{"id": 1}]

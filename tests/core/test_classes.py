"""The class list: ids from 1, pinned lists from text or dataset_info.yaml, new-class rules."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from converter.core.classes import FIRST_CLASS_ID, ClassList, build_class_list, load_pinned_classes
from converter.errors import UsageError

# --- ClassList -------------------------------------------------------------------------


def test_ids_start_at_one_in_list_order() -> None:
    classes = ClassList(("cat", "dog", "bird"))
    assert FIRST_CLASS_ID == 1
    assert [classes.id_of(name) for name in classes.names] == [1, 2, 3]
    assert len(classes) == 3
    assert "dog" in classes
    assert "fish" not in classes


def test_duplicate_names_are_rejected() -> None:
    with pytest.raises(ValueError) as raised:
        ClassList(("cat", "dog", "cat", "dog", "bird"))
    assert "repeated: ['cat', 'dog']" in str(raised.value)


def test_empty_name_is_rejected() -> None:
    with pytest.raises(ValueError) as raised:
        ClassList(("cat", ""))
    assert "must not be empty" in str(raised.value)


def test_unknown_name_has_no_id() -> None:
    with pytest.raises(ValueError):
        ClassList(("cat",)).id_of("dog")


# --- load_pinned_classes ------------------------------------------------------------------


def test_text_file_ignores_comments_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "classes.txt"
    path.write_text(
        "# pinned for model v3\n\ncat\n  dog  \n\n# retired: cow\nbird\r\ntraffic light\n", encoding="utf-8"
    )
    assert load_pinned_classes(path) == ("cat", "dog", "bird", "traffic light")


def test_text_file_with_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "classes.txt"
    path.write_bytes("\ufeffcat\ndog\n".encode())  # Windows editors save UTF-8 with a BOM
    assert load_pinned_classes(path) == ("cat", "dog")


def test_unicode_class_names(tmp_path: Path) -> None:
    path = tmp_path / "classes.txt"
    path.write_text("Fußgänger\n自転車\n", encoding="utf-8")
    assert load_pinned_classes(path) == ("Fußgänger", "自転車")


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".YAML"])
def test_dataset_info_yaml(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"dataset_info{suffix}"
    info = {
        "classes": ["person", "car", "bus"],
        "train": {"annotations": "tfrecord_train", "samples": 3, "shards": []},
        "seed": 0,
    }
    path.write_text(yaml.safe_dump(info, sort_keys=False), encoding="utf-8")
    assert load_pinned_classes(path) == ("person", "car", "bus")


@pytest.mark.parametrize(
    ("name", "content", "fragment"),
    [
        ("empty.txt", "", "lists no class"),
        ("comments.txt", "# nothing\n\n   \n", "lists no class"),
        ("twice.txt", "cat\ndog\ncat\n", "lists these classes more than once: cat"),
        ("empty.yaml", "", "has no `classes:` list"),
        ("noclasses.yaml", "seed: 0\ntrain: {}\n", "has no `classes:` list"),
        ("notalist.yaml", "classes: cat\n", "has no `classes:` list"),
        ("numbers.yaml", "classes: [1, 2]\n", "has no `classes:` list"),
        ("list.yaml", "- cat\n- dog\n", "has no `classes:` list"),
        ("emptylist.yaml", "classes: []\n", "lists no class"),
        ("twice.yaml", "classes: [cat, dog, dog]\n", "more than once: dog"),
        ("broken.yaml", "classes: [cat, dog\n", "is not valid YAML"),
    ],
)
def test_bad_classes_file_names_the_file(tmp_path: Path, name: str, content: str, fragment: str) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(UsageError) as raised:
        load_pinned_classes(path)
    assert fragment in str(raised.value)
    assert str(path) in str(raised.value)


def test_missing_classes_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.txt"
    with pytest.raises(UsageError) as raised:
        load_pinned_classes(path)
    assert f"cannot read --classes file {path}" in str(raised.value)


def test_classes_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes("café\n".encode("latin-1"))
    with pytest.raises(UsageError) as raised:
        load_pinned_classes(path)
    assert "is not UTF-8 text" in str(raised.value)
    assert str(path) in str(raised.value)


# --- build_class_list ----------------------------------------------------------------------


def test_without_pinned_list_the_native_order_is_kept_once() -> None:
    classes = build_class_list(["dog", "cat", "dog", "bird", "cat"], None, allow_new_classes=False)
    assert classes.names == ("dog", "cat", "bird")


def test_pinned_list_decides_names_and_order() -> None:
    classes = build_class_list(["dog", "cat", "fish"], ("cat", "dog", "bird"), allow_new_classes=False)
    assert classes.names == ("cat", "dog", "bird")
    assert "fish" not in classes


def test_allow_new_classes_appends_in_native_order() -> None:
    classes = build_class_list(["fish", "dog", "ant", "cat", "fish"], ("cat", "dog"), allow_new_classes=True)
    assert classes.names == ("cat", "dog", "fish", "ant")
    assert classes.id_of("cat") == 1
    assert classes.id_of("ant") == 4


def test_allow_new_classes_without_new_ones_is_the_pinned_list() -> None:
    assert build_class_list(["dog"], ("cat", "dog"), allow_new_classes=True).names == ("cat", "dog")


def test_empty_native_order() -> None:
    assert build_class_list([], None, allow_new_classes=False).names == ()

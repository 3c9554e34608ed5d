"""Where a COCO export's images are found without -i, and COCO's own files as the splits of one dataset.

Exports are laid out as COCO ships them (`annotations/instances_train2017.json` beside
`train2017/`) and as other tools write them (`images/`, `images/train/`); runs go through
the CLI and records are read back with TensorFlow. Expected values come from the JSON
each test writes, never from the converter.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from builders import (
    convert,
    dataset_files,
    flat,
    image_pixels,
    load_info,
    load_report,
    write_image,
    write_manifest,
)
from builders import detection_line as gt_detection_line
from readback import read_all, records_by_source_id
from typer.testing import Result

from converter.core.split import split_named_in
from converter.sources import SOURCES, SourceOptions

CATEGORIES = {1: "cat", 2: "dog"}


@dataclass
class CocoSplitFile:
    """One COCO file of an export: its images (written under `image_folder`) and a box on each."""

    path: Path
    image_folder: Path
    first_id: int = 1
    categories: Mapping[int, str] = field(default_factory=lambda: CATEGORIES)
    file_names: list[str] = field(default_factory=list)

    def add_images(self, *file_names: str, written: bool = True) -> CocoSplitFile:
        """Entries for these file names; their image files too unless `written` is False."""
        for file_name in file_names:
            if written:
                seed = sum(map(ord, file_name))
                write_image(self.image_folder / file_name, image_pixels(32, 24, seed=seed))
            self.file_names.append(file_name)
        return self

    def write(self) -> Path:
        images = [
            {"id": self.first_id + index, "file_name": name, "width": 32, "height": 24}
            for index, name in enumerate(self.file_names)
        ]
        annotations = [
            {"id": index + 1, "image_id": image["id"], "category_id": min(self.categories), "bbox": [2, 3, 10, 8]}
            for index, image in enumerate(images)
        ]
        document = {
            "images": images,
            "annotations": annotations,
            "categories": [{"id": key, "name": name} for key, name in self.categories.items()],
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(document), encoding="utf-8")
        return self.path


def _coco_2017(root: Path) -> tuple[CocoSplitFile, CocoSplitFile]:
    """COCO's own layout: a train and a val file under annotations/, images in train2017/ and val2017/."""
    train = CocoSplitFile(root / "annotations" / "instances_train2017.json", root / "train2017")
    val = CocoSplitFile(root / "annotations" / "instances_val2017.json", root / "val2017", first_id=100)
    train.add_images("000000000009.jpg", "000000000025.jpg", "000000000030.jpg").write()
    val.add_images("000000000139.jpg", "000000000285.jpg").write()
    return train, val


def _error_lines(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("ERROR:")]


def _keys_by_split(output: Path) -> dict[str, list[str]]:
    return {
        split: sorted(record["image/source_key"][0].decode() for record in records)
        for split, records in read_all(output).items()
    }


# ---------------------------------------------------------------------------
# Images found where users keep them


@pytest.mark.parametrize(
    "images_under",
    ["train2017", "images", "images/train2017", "."],
    ids=["coco-train2017", "images", "images-train2017", "export-root"],
)
def test_a_file_named_with_a_found_image_folder_converts_every_image_without_i(
    tmp_path: Path, images_under: str
) -> None:
    root = tmp_path / "data_in"
    export = CocoSplitFile(root / "annotations" / "instances_train2017.json", root / images_under)
    export.add_images("a.jpg", "b.jpg", "c.jpg").write()
    output = tmp_path / "out"

    # The advice "choose one with -a", followed literally: -a names the file, and no -i.
    result = convert("-a", export.path, "-o", output, "-s", "0")

    assert result.exit_code == 0, result.stderr
    report = load_report(output)
    assert report["skipped"] == []
    assert report["summary"]["converted"] == 3
    records = records_by_source_id(output)
    assert sorted(records) == ["a.jpg", "b.jpg", "c.jpg"]
    for name, record in records.items():
        assert record["image/encoded"] == [(export.image_folder / name).read_bytes()]
        assert record["image/filename"] == [name.encode()]  # relative to the folder found
    assert load_info(output)["input"]["images"] == str(root / images_under if images_under != "." else root)


def test_images_beside_the_file_keep_resolving_there(tmp_path: Path) -> None:
    root = tmp_path / "export"
    beside = CocoSplitFile(root / "annotations" / "instances_train2017.json", root / "annotations")
    beside.add_images("a.jpg").write()
    # A same-named file in train2017/ does not win: the file's folder comes first, as before.
    write_image(root / "train2017" / "a.jpg", image_pixels(8, 8, seed=99))
    output = tmp_path / "out"

    result = convert("-a", beside.path, "-o", output, "-s", "0")

    assert result.exit_code == 0, result.stderr
    assert records_by_source_id(output)["a.jpg"]["image/encoded"] == [(root / "annotations" / "a.jpg").read_bytes()]


def test_a_missing_image_is_reported_with_the_folders_looked_in(tmp_path: Path) -> None:
    root = tmp_path / "export"
    export = CocoSplitFile(root / "annotations" / "instances_train2017.json", root / "train2017")
    export.add_images("a.jpg").add_images("gone.jpg", written=False).add_images("b.jpg").write()
    (root / "images").mkdir()
    output = tmp_path / "out"

    result = convert("-a", export.path, "-o", output, "-s", "0")

    assert result.exit_code == 0, result.stderr
    [entry] = load_report(output)["skipped"]
    assert (entry["key"], entry["code"]) == ("gone.jpg", "missing_image")
    reason = flat(entry["reason"])
    assert f"not found under {root / 'train2017'}" in reason
    for folder in (root / "annotations", root, root / "images", root / "train2017"):
        assert str(folder) in reason
    assert "'a.jpg'" in reason and "pass -i" in reason
    assert sorted(records_by_source_id(output)) == ["a.jpg", "b.jpg"]


def test_when_no_folder_holds_the_images_by_path_the_message_says_so(tmp_path: Path) -> None:
    root = tmp_path / "export"
    export = CocoSplitFile(root / "annotations" / "instances_train2017.json", root / "elsewhere")
    export.add_images("gone.jpg", written=False).write()
    (root / "train2017").mkdir()
    output = tmp_path / "out"

    result = convert("-a", export.path, "-o", output, "-s", "0")

    assert result.exit_code == 1  # nothing converted
    [entry] = load_report(output)["skipped"]
    assert entry["code"] == "missing_image"
    reason = flat(entry["reason"])
    assert f"not found under {root / 'annotations'}" in reason  # the default stays: no folder was walked
    assert f"looked in {root / 'annotations'}, {root}, {root / 'train2017'}, none of which holds" in reason


def test_an_explicit_images_folder_is_the_only_place_looked_in(tmp_path: Path) -> None:
    root = tmp_path / "export"
    export = CocoSplitFile(root / "annotations" / "instances_train2017.json", root / "train2017")
    export.add_images("a.jpg").write()
    empty = tmp_path / "empty"
    empty.mkdir()
    output = tmp_path / "out"

    result = convert("-a", export.path, "-i", empty, "-o", output, "-s", "0")

    assert result.exit_code == 1
    [entry] = load_report(output)["skipped"]
    assert entry["reason"] == f"image 'a.jpg' not found under {empty}; its 1 annotations are not converted"


def test_the_folder_is_chosen_once_per_file_not_probed_per_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "export"
    export = CocoSplitFile(root / "annotations" / "instances_train2017.json", root / "train2017")
    names = [f"{index:04d}.jpg" for index in range(200)]
    export.add_images(*names).write()
    for folder in ("images", "images/train2017"):  # more candidates, tried before train2017/ or after it
        (root / folder).mkdir()
    checked: list[str] = []
    is_file = os.path.isfile

    def counting_is_file(path: Any) -> bool:
        checked.append(os.fspath(path))
        return is_file(path)

    monkeypatch.setattr(os.path, "isfile", counting_is_file)
    options = SourceOptions(annotations=export.path, images=export.path.parent, images_given=False)

    contents = SOURCES["coco"].build(options).read()

    assert sorted(sample.key for sample in contents.samples) == names
    # One lookup per image once train2017/ is chosen, plus the first image's probe of the other folders.
    assert len(checked) <= len(names) + 5


# ---------------------------------------------------------------------------
# COCO's files as the splits: --split from-source


@pytest.mark.parametrize(
    ("file_name", "splits"),
    [
        ("instances_train2017.json", ("train",)),
        ("instances_val2017.json", ("validation",)),
        ("person_keypoints_validation.json", ("validation",)),
        ("image_info_test-dev2017.json", ("test",)),
        ("Training.json", ("train",)),
        ("instances_trainval.json", ()),  # one word, no split: refused rather than guessed
        ("instances_default.json", ()),
        ("train_val.json", ("train", "validation")),
    ],
)
def test_a_file_name_says_its_split_by_its_words(file_name: str, splits: tuple[str, ...]) -> None:
    assert split_named_in(file_name) == splits


def test_from_source_puts_each_files_images_in_its_split(tmp_path: Path) -> None:
    train, val = _coco_2017(tmp_path / "coco")
    output = tmp_path / "out"

    result = convert("-a", train.path.parent, "--split", "from-source", "-o", output)

    assert result.exit_code == 0, result.stderr
    info = load_info(output)
    assert (info["train"]["samples"], info["validation"]["samples"]) == (3, 2)
    assert "test" not in info
    assert info["split"] == {"train": "from-source", "validation": "from-source"}
    assert info["classes"] == ["cat", "dog"]
    assert _keys_by_split(output) == {"train": sorted(train.file_names), "validation": sorted(val.file_names)}
    assert load_report(output)["skipped"] == []
    records = records_by_source_id(output)
    assert records["000000000139.jpg"]["image/source_id"] == [b"100"]  # COCO's own ids are kept
    assert records["000000000139.jpg"]["image/encoded"] == [(val.image_folder / "000000000139.jpg").read_bytes()]


def test_from_source_rerun_gives_identical_output(tmp_path: Path) -> None:
    train, _ = _coco_2017(tmp_path / "coco")
    output = tmp_path / "out"
    assert convert("-a", train.path.parent, "--split", "from-source", "-o", output).exit_code == 0
    first = dataset_files(output)

    result = convert("-a", train.path.parent, "--split", "from-source", "-o", output, "--seed", "0")

    assert result.exit_code == 0, result.stderr
    assert dataset_files(output) == first


def test_from_source_with_a_test_file_and_the_seed_only_orders_records(tmp_path: Path) -> None:
    root = tmp_path / "coco"
    _coco_2017(root)
    test = CocoSplitFile(root / "annotations" / "instances_test2017.json", root / "test2017", first_id=200)
    test.add_images("000000000001.jpg").write()

    for seed in ("0", "5"):
        output = tmp_path / f"out{seed}"
        result = convert("-a", root / "annotations", "--split", "from-source", "--seed", seed, "-o", output)
        assert result.exit_code == 0, result.stderr
        keys = _keys_by_split(output)
        assert keys["test"] == ["000000000001.jpg"]
        assert (len(keys["train"]), len(keys["validation"])) == (3, 2)


def test_an_image_in_two_files_is_converted_from_the_first_and_reported_in_the_second(tmp_path: Path) -> None:
    train, val = _coco_2017(tmp_path / "coco")
    val.add_images("000000000009.jpg").write()  # also listed by the train file
    output = tmp_path / "out"

    result = convert("-a", train.path.parent, "--split", "from-source", "-o", output)

    assert result.exit_code == 0, result.stderr
    [entry] = load_report(output)["skipped"]
    assert (entry["file"], entry["key"], entry["code"]) == (str(val.path), "000000000009.jpg", "duplicate_image")
    assert str(train.path) in entry["reason"]
    keys = _keys_by_split(output)
    assert "000000000009.jpg" in keys["train"] and "000000000009.jpg" not in keys["validation"]


def test_an_image_id_an_earlier_file_used_is_not_reused(tmp_path: Path) -> None:
    train, val = _coco_2017(tmp_path / "coco")
    val.first_id = 1  # as CVAT numbers each file's images from 1
    val.write()
    output = tmp_path / "out"

    result = convert("-a", train.path.parent, "--split", "from-source", "-o", output)

    assert result.exit_code == 0, result.stderr
    records = records_by_source_id(output)
    assert records["000000000009.jpg"]["image/source_id"] == [b"1"]
    ids = [record["image/source_id"][0] for record in records.values()]
    assert len(set(ids)) == len(ids) == 5


def test_class_lists_are_merged_over_the_files(tmp_path: Path) -> None:
    root = tmp_path / "coco"
    train = CocoSplitFile(root / "annotations" / "instances_train.json", root / "train", categories={7: "dog"})
    val = CocoSplitFile(
        root / "annotations" / "instances_val.json", root / "val", first_id=10, categories={3: "cat", 7: "dog"}
    )
    train.add_images("a.jpg").write()
    val.add_images("b.jpg").write()
    output = tmp_path / "out"

    result = convert("-a", root / "annotations", "--split", "from-source", "-o", output)

    assert result.exit_code == 0, result.stderr
    assert load_info(output)["classes"] == ["cat", "dog"]  # by category id over both files
    records = records_by_source_id(output)
    assert records["a.jpg"]["image/object/class/text"] == [b"dog"]
    assert records["b.jpg"]["image/object/class/text"] == [b"cat"]


@pytest.mark.parametrize(
    ("val_categories", "fragment"),
    [
        ({1: "cat", 2: "bird"}, "category id '2' is 'bird', but 'dog' in"),
        ({1: "cat", 3: "dog"}, "category 'dog' has id '3', but '2' in"),
    ],
)
def test_files_whose_categories_disagree_are_a_usage_error(
    tmp_path: Path, val_categories: dict[int, str], fragment: str
) -> None:
    root = tmp_path / "coco"
    train, val = _coco_2017(root)
    val.categories = val_categories
    val.write()

    result = convert("-a", root / "annotations", "--split", "from-source", "-o", tmp_path / "out")

    assert result.exit_code == 2
    [error] = _error_lines(result)
    assert fragment in error and str(train.path) in error and str(val.path) in error


def _single_file(root: Path) -> list[str | Path]:
    train, _ = _coco_2017(root)
    return ["-a", train.path, "--split", "from-source"]


def _one_file_in_folder(root: Path) -> list[str | Path]:
    CocoSplitFile(root / "annotations" / "instances_train2017.json", root / "train2017").add_images("a.jpg").write()
    return ["-a", root / "annotations", "--split", "from-source"]


def _unnamed_split(root: Path) -> list[str | Path]:
    _coco_2017(root)
    CocoSplitFile(root / "annotations" / "instances_default.json", root / "default").add_images("z.jpg").write()
    return ["-a", root / "annotations", "--split", "from-source"]


def _with_a_manifest(root: Path) -> list[str | Path]:
    _coco_2017(root)
    write_manifest(root / "annotations" / "output.manifest", [gt_detection_line("s3://bucket/a.jpg", [], {})])
    return ["-a", root / "annotations", "--split", "from-source"]


def _other_source(root: Path) -> list[str | Path]:
    _coco_2017(root)
    return ["-a", root / "annotations", "--split", "from-source", "--source", "sagemaker_gt"]


def _several_without_from_source(root: Path) -> list[str | Path]:
    _coco_2017(root)
    return ["-a", root / "annotations"]


USAGE_ERRORS = [
    ("single-file", _single_file, ["is one file", "drop --split from-source", "-s 0.2"]),
    ("one-file-in-folder", _one_file_in_folder, ["only one COCO file", "instances_train2017.json"]),
    ("name-says-no-split", _unnamed_split, ["instances_default.json (none)", "rename them"]),
    ("another-format", _with_a_manifest, ["reads COCO files only", "output.manifest (sagemaker_gt)"]),
    ("another-source", _other_source, ["sagemaker_gt exports are split by hash"]),
    (
        "several-without-from-source",
        _several_without_from_source,
        ["several annotation exports", "choose one with -a/--annotations", "add --split from-source"],
    ),
]


@pytest.mark.parametrize(
    ("make_arguments", "fragments"), [case[1:] for case in USAGE_ERRORS], ids=[case[0] for case in USAGE_ERRORS]
)
def test_from_source_usage_errors(tmp_path: Path, make_arguments: Any, fragments: Sequence[str]) -> None:
    output = tmp_path / "out"

    result = convert(*make_arguments(tmp_path / "coco"), "-o", output)

    assert result.exit_code == 2
    [error] = _error_lines(result)
    message = flat(result.stderr)
    for fragment in fragments:
        assert fragment in message, error
    assert not (output / "dataset_info.yaml").exists()


# ---------------------------------------------------------------------------
# The real export (datumaro's test assets: annotations/instances_{train,val}.json, images/{train,val}/)


def _datumaro(shared_samples: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    annotations = shared_samples / "coco" / "datumaro" / "annotations"
    for subset, split in (("train", "train"), ("val", "validation")):
        yield split, json.loads((annotations / f"instances_{subset}.json").read_text(encoding="utf-8"))


@pytest.mark.shared_samples
def test_datumaro_export_converts_from_source_without_i(shared_samples: Path, tmp_path: Path) -> None:
    dataset = shared_samples / "coco" / "datumaro"
    output = tmp_path / "out"

    result = convert("-a", dataset / "annotations", "--split", "from-source", "-o", output)

    assert result.exit_code == 0, result.stderr
    assert load_report(output)["skipped"] == []
    info = load_info(output)
    assert info["classes"] == ["a", "b", "c"]
    folder = {"train": "train", "validation": "val"}
    for split, document in _datumaro(shared_samples):
        [record] = read_all(output)[split]
        [image] = document["images"]
        assert record["image/source_key"] == [image["file_name"].encode()]
        assert record["image/source_id"] == [str(image["id"]).encode()]
        image_file = dataset / "images" / folder[split] / image["file_name"]
        assert record["image/encoded"] == [image_file.read_bytes()]
        assert info[split]["samples"] == len(document["images"])

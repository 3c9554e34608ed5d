"""`dataset-converter check`: every kind of problem it finds, counted, on every source that can have it.

Each test builds an export with a known number of problems, runs `check --report FILE` and
asserts the exit code, the finding's code and count in the report's `check` section (the
count is what the test built, never what the converter says) and that stdout names it.
The same small export is built for each source by `build`, so a problem that lives in the
files rather than in the annotations (a missing, truncated or duplicated image) is tested
on every source by damaging the files after the export is written.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from builders import (
    BUCKET,
    CocoExport,
    GtBox,
    convert,
    detection_line,
    image_pixels,
    load_info,
    segmentation_line,
    write_image,
    write_manifest,
    write_palette_mask,
)
from labelstudio_tasks import annotation as ls_annotation
from labelstudio_tasks import polygon as ls_polygon
from labelstudio_tasks import rectangle as ls_rectangle
from labelstudio_tasks import task as ls_task
from labelstudio_tasks import write_export as write_ls_export
from labelstudio_tasks import write_stand_in
from PIL import Image
from scale_tasks import box as scale_box
from scale_tasks import image_task as scale_task
from scale_tasks import polygon as scale_polygon
from scale_tasks import write_json_list
from typer.testing import CliRunner, Result

from converter.cli import app

CLASSES = ("cat", "dog")
SIZE = (40, 30)  # width, height of every generated image unless a test says otherwise
SCALE_URL = "https://scale-uploads.s3.amazonaws.com/kittens"
Points = list[tuple[float, float]]


# ---------------------------------------------------------------------------
# One small export, written in each source's format


@dataclass(frozen=True)
class Shape:
    """An object: a class and a box in pixels, or a polygon (`points`) where the source has polygons."""

    name: str
    box: tuple[float, float, float, float] = (5, 5, 10, 8)  # left, top, width, height
    points: Points | None = None

    def ring(self) -> Points:
        if self.points is not None:
            return self.points
        left, top, width, height = self.box
        return [(left, top), (left + width, top), (left + width, top + height), (left, top + height)]


@dataclass(frozen=True)
class Item:
    """An image of the export (its file name under the images folder), its objects, and its declared size."""

    name: str
    shapes: tuple[Shape, ...] = (Shape("cat"),)
    size: tuple[int, int] = SIZE
    declared: tuple[int, int] | None = None  # the size the annotations state, when not the file's

    @property
    def stated(self) -> tuple[int, int]:
        return self.declared or self.size


@dataclass
class Built:
    """A written export: the input options that name it, and where each item's image file is."""

    args: list[str]
    images: dict[str, Path] = field(default_factory=dict)


Builder = Callable[[Path, Sequence[Item]], Built]


def _write_images(folder: Path, items: Sequence[Item]) -> dict[str, Path]:
    """Each item's image under `folder`, from its own seed: no two files share bytes unless a test copies them."""
    paths = {}
    for seed, item in enumerate(items, start=1):
        paths[item.name] = folder / item.name
        write_image(paths[item.name], image_pixels(*item.size, seed))
    return paths


def build_gt(root: Path, items: Sequence[Item]) -> Built:
    images = _write_images(root / "images", items)
    class_map = dict(enumerate(CLASSES))
    lines = [
        detection_line(
            f"{BUCKET}/{item.name}",
            [GtBox(CLASSES.index(shape.name), *shape.box) for shape in item.shapes],
            class_map,
            item.stated,
        )
        for item in items
    ]
    manifest = write_manifest(root / "output.manifest", lines)
    return Built(["-a", str(manifest), "-i", str(root / "images"), "--source", "sagemaker_gt"], images)


def build_coco(root: Path, items: Sequence[Item]) -> Built:
    export = CocoExport(root, categories=[{"id": index + 1, "name": name} for index, name in enumerate(CLASSES)])
    for item in items:
        image_id = export.add_image(item.name, item.size)
        export.images[-1].update(width=item.stated[0], height=item.stated[1])
        for shape in item.shapes:
            fields: dict[str, Any] = {"bbox": list(shape.box)}
            if shape.points is not None:
                fields["segmentation"] = [[coordinate for point in shape.points for coordinate in point]]
            export.add_annotation(image_id, CLASSES.index(shape.name) + 1, **fields)
    export.write()
    images = {item.name: export.image_folder / item.name for item in items}
    return Built(["-a", str(export.path), "-i", str(export.image_folder), "--source", "coco"], images)


def _ls_result(shape: Shape, size: tuple[int, int]) -> dict[str, Any]:
    """Label Studio's result for a shape: percent of the declared size."""
    width, height = size
    if shape.points is not None:
        return ls_polygon([(x / width * 100, y / height * 100) for x, y in shape.points], [shape.name], size)
    left, top, box_width, box_height = shape.box
    return ls_rectangle(
        left / width * 100, top / height * 100, box_width / width * 100, box_height / height * 100, [shape.name], size
    )


def build_labelstudio(root: Path, items: Sequence[Item]) -> Built:
    images = {}
    for seed, item in enumerate(items, start=1):
        images[item.name] = root / "images" / item.name
        write_stand_in(images[item.name], item.size, seed)
    tasks = [
        ls_task(item.name, ls_annotation([_ls_result(shape, item.stated) for shape in item.shapes]), task_id=number)
        for number, item in enumerate(items, start=1)
    ]
    export = write_ls_export(root / "export.json", tasks)
    return Built(["-a", str(export), "-i", str(root / "images"), "--source", "labelstudio"], images)


def build_scale(root: Path, items: Sequence[Item]) -> Built:
    images = _write_images(root / "images", items)
    tasks = [
        scale_task(
            f"task-{number}",
            f"{SCALE_URL}/{item.name}",
            [
                scale_polygon(shape.name, shape.points)
                if shape.points is not None
                else scale_box(shape.name, *shape.box)
                for shape in item.shapes
            ],
            geometries={"box": list(CLASSES), "polygon": list(CLASSES)},
        )
        for number, item in enumerate(items, start=1)
    ]
    export = write_json_list(root / "export.json", tasks)
    return Built(["-a", str(export), "-i", str(root / "images"), "--source", "scale"], images)


def _geojson_feature(item: Item, shape: Shape) -> dict[str, Any]:
    points = shape.ring()
    ring = [[x, y] for x, y in [*points, points[0]]] if points else []
    properties: dict[str, Any] = {"image_filename": item.name, "class_id": shape.name}
    if item.declared is not None:
        properties.update(image_width=item.declared[0], image_height=item.declared[1])
    return {"type": "Feature", "properties": properties, "geometry": {"type": "Polygon", "coordinates": [ring]}}


def build_geojson(root: Path, items: Sequence[Item]) -> Built:
    """GeoJSON knows an image only through its features: an item without shapes has no sample."""
    images = _write_images(root / "images", items)
    features = [_geojson_feature(item, shape) for item in items for shape in item.shapes]
    path = root / "labels.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}), encoding="utf-8")
    return Built(["-a", str(path), "-i", str(root / "images"), "--source", "geojson"], images)


def build_mask_folder(root: Path, items: Sequence[Item]) -> Built:
    """Index masks (0 background, 1 cat, 2 dog) with each shape's box painted; a mask of the declared size."""
    images = _write_images(root / "images", items)
    (root / "labels.json").write_text(json.dumps({"0": "background", **{str(i + 1): n for i, n in enumerate(CLASSES)}}))
    for item in items:
        width, height = item.stated
        values = np.zeros((height, width), dtype=np.uint8)
        for shape in item.shapes:
            left, top, box_width, box_height = (round(value) for value in shape.box)
            values[top : top + box_height, left : left + box_width] = CLASSES.index(shape.name) + 1
        mask = (root / "masks" / item.name).with_suffix(".png")
        mask.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(values, mode="L").save(mask)
    return Built(["-a", str(root), "--source", "mask_folder"], images)


BUILDERS: dict[str, Builder] = {
    "sagemaker_gt": build_gt,
    "coco": build_coco,
    "labelstudio": build_labelstudio,
    "scale": build_scale,
    "geojson": build_geojson,
    "mask_folder": build_mask_folder,
}
BOX_SOURCES = ("sagemaker_gt", "coco", "labelstudio", "scale")  # sources with boxes of their own
POLYGON_SOURCES = ("coco", "labelstudio", "scale", "geojson")


# ---------------------------------------------------------------------------
# Running a check


@dataclass
class Checked:
    """A check's exit code, stdout, and the `check` section of its --report file."""

    result: Result
    report: dict[str, Any]

    @property
    def exit_code(self) -> int:
        return self.result.exit_code

    @property
    def stdout(self) -> str:
        return self.result.stdout

    def finding(self, section: str, code: str) -> dict[str, Any]:
        """The one finding of `code` in `section` (would_skip, annotation_notes, problems, notices)."""
        found: list[dict[str, Any]] = [entry for entry in self.report[section] if entry["code"] == code]
        assert len(found) == 1, f"{code} in {section}: {self.report}"
        return found[0]

    def codes(self, section: str) -> dict[str, int]:
        return {entry["code"]: entry["count"] for entry in self.report[section]}


def run_check(*arguments: str | Path) -> Result:
    return CliRunner().invoke(app, ["check", *(str(argument) for argument in arguments)])


def check(built: Built | Sequence[str | Path], report: Path, *options: str | Path) -> Checked:
    """`check` on an export with `--report report`; the report must be written whatever the outcome.

    Without `-s` every sample goes to train (`-s 0`), so no test meets class_missing_from_split by chance.
    """
    args = built.args if isinstance(built, Built) else list(built)
    if "-s" not in options:
        options = ("-s", "0", *options)
    result = run_check(*args, "--workers", "1", "--report", report, *options)
    assert result.exit_code in (0, 1), (result.exit_code, result.stdout, result.stderr)
    document = json.loads(report.read_text(encoding="utf-8"))
    return Checked(result, document["check"])


def assert_named(checked: Checked, section: str, code: str, count: int) -> dict[str, Any]:
    """`code` is in the report's `section` with `count`, stdout names it with that count, and the check failed."""
    finding = checked.finding(section, code)
    assert finding["count"] == count, finding
    assert f"  {code}: {count:,}" in checked.stdout, checked.stdout
    assert len(finding["examples"]) == min(count, 3)  # stdout and the report show the first three
    for example in finding["examples"]:
        assert example in checked.stdout
    return finding


def assert_only(checked: Checked, section: str, code: str, count: int) -> dict[str, Any]:
    """As `assert_named`, and nothing else is wrong: a check of the same export without the damage is clean."""
    finding = assert_named(checked, section, code, count)
    others = {
        name: checked.codes(name) for name in ("would_skip", "annotation_notes", "problems") if checked.codes(name)
    }
    assert others == {section: {code: count}}, others
    assert checked.exit_code == 1
    assert checked.report["clean"] is False
    assert "found 1 kinds of problem" in checked.stdout
    return finding


# ---------------------------------------------------------------------------
# Problems in the image files, on every source

THREE = ("a", "b", "c")  # three images: cat; dog; cat and dog


def _three(extension: str) -> list[Item]:
    return [
        Item(f"a{extension}"),
        Item(f"b{extension}", (Shape("dog"),)),
        Item(f"c{extension}", (Shape("cat"), Shape("dog", (20, 10, 8, 8)))),
    ]


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("source", sorted(BUILDERS))
def test_an_undamaged_export_is_clean(tmp_path: Path, source: str) -> None:
    """The baseline every damage test changes one thing of: exit 0, nothing found."""
    built = BUILDERS[source](tmp_path / "export", _three(".jpg"))

    checked = check(built, tmp_path / "report.json")

    assert checked.exit_code == 0, checked.stdout
    assert checked.report["clean"] is True
    assert checked.report["input_samples"] == 3
    assert sum(checked.report["splits"].values()) == 3
    for section in ("would_skip", "annotation_notes", "problems", "notices"):
        assert checked.report[section] == []
    assert "no problems found" in checked.stdout


@pytest.mark.parametrize("source", sorted(BUILDERS))
@pytest.mark.parametrize(
    ("damage", "extension", "section", "code"),
    [
        ("missing", ".jpg", "would_skip", "missing_image"),
        ("truncated", ".jpg", "would_skip", "corrupt_image"),
        ("truncated", ".png", "would_skip", "corrupt_image"),
        ("text", ".jpg", "would_skip", "corrupt_image"),
        ("copied", ".jpg", "problems", "duplicate_image"),
    ],
)
def test_a_damaged_image_file_is_found(
    tmp_path: Path, source: str, damage: str, extension: str, section: str, code: str
) -> None:
    """One of three images is damaged after the export is written: exactly one finding, on that image."""
    built = BUILDERS[source](tmp_path / "export", _three(extension))
    damaged = built.images[f"b{extension}"]
    if damage == "missing":
        damaged.unlink()
    elif damage == "truncated":
        _truncate(damaged)
    elif damage == "text":
        damaged.write_text("this is not an image\n", encoding="utf-8")
    else:
        shutil.copyfile(built.images[f"a{extension}"], damaged)

    checked = check(built, tmp_path / "report.json", "-s", "0")

    finding = assert_named(checked, section, code, 1)
    assert checked.exit_code == 1 and checked.report["clean"] is False
    (example,) = finding["examples"]
    if damage == "copied":  # the second key (in record order) is named with the first one
        assert "has the same bytes as" in example
    else:
        assert any(marker in example for marker in ("b.jpg", "b.png", "(task 2)", "task-2")), example
    # A skipped image is not counted as written: the split holds the other two (-s 0: everything in train).
    assert checked.report["splits"] == {"train": 2 if section == "would_skip" else 3, "validation": 0}


@pytest.mark.parametrize("source", ["sagemaker_gt", "labelstudio"])
def test_the_same_key_twice_is_a_duplicate_key(tmp_path: Path, source: str) -> None:
    """A manifest line repeated, or a second Label Studio task on the same image: the key would be written twice."""
    built = BUILDERS[source](tmp_path / "export", _three(".jpg"))
    annotations = Path(built.args[1])
    if source == "sagemaker_gt":
        lines = annotations.read_text(encoding="utf-8").splitlines()
        annotations.write_text("\n".join([*lines, lines[0], lines[2]]) + "\n", encoding="utf-8")
    else:
        tasks = json.loads(annotations.read_text(encoding="utf-8"))
        tasks += [{**tasks[0], "id": 90}, {**tasks[2], "id": 91}]
        annotations.write_text(json.dumps(tasks), encoding="utf-8")

    checked = check(built, tmp_path / "report.json")

    # The same image under the same key is no duplicate_image: only the key is reported.
    finding = assert_only(checked, "problems", "duplicate_key", 2)
    assert any("a.jpg" in example for example in finding["examples"])
    assert checked.report["input_samples"] == 5


def test_a_scale_task_twice_is_skipped_and_its_attachment_under_another_id_is_a_duplicate_image(
    tmp_path: Path,
) -> None:
    built = build_scale(tmp_path / "export", _three(".jpg"))
    path = Path(built.args[1])
    tasks = json.loads(path.read_text(encoding="utf-8"))
    path.write_text(json.dumps([*tasks, tasks[0], {**tasks[1], "task_id": "task-9"}]), encoding="utf-8")

    checked = check(built, tmp_path / "report.json")

    assert_named(checked, "would_skip", "duplicate_task", 1)
    finding = assert_named(checked, "problems", "duplicate_image", 1)
    assert finding["examples"] in (
        ["'task-9' has the same bytes as 'task-2'"],
        ["'task-2' has the same bytes as 'task-9'"],
    )
    assert checked.exit_code == 1


def test_a_coco_file_listed_twice_is_skipped_by_the_reader(tmp_path: Path) -> None:
    built = build_coco(tmp_path / "export", _three(".jpg"))
    path = Path(built.args[1])
    document = json.loads(path.read_text(encoding="utf-8"))
    document["images"].append({**document["images"][0], "id": 90})
    path.write_text(json.dumps(document), encoding="utf-8")

    checked = check(built, tmp_path / "report.json")

    (example,) = assert_only(checked, "would_skip", "duplicate_image", 1)["examples"]
    assert "names the same file as" in example


# ---------------------------------------------------------------------------
# Problems in the annotations


@pytest.mark.parametrize("source", ["sagemaker_gt", "coco", "labelstudio"])
def test_a_declared_size_other_than_the_files_is_a_size_mismatch(tmp_path: Path, source: str) -> None:
    items = [Item("a.jpg", declared=(80, 60)), Item("b.jpg", declared=(40, 31)), Item("c.jpg")]
    built = BUILDERS[source](tmp_path / "export", items)

    checked = check(built, tmp_path / "report.json")

    finding = assert_only(checked, "problems", "size_mismatch", 2)
    assert sorted(example.rsplit(": ", 1)[1] for example in finding["examples"]) == [
        "the export declares 40x31, the image file displays as 40x30",
        "the export declares 80x60, the image file displays as 40x30",
    ]


@pytest.mark.parametrize("source", ["geojson", "mask_folder"])
def test_shapes_or_a_mask_of_another_size_than_the_image_are_skipped(tmp_path: Path, source: str) -> None:
    """GeoJSON's declared size and a mask folder's mask size decide the mask: it cannot be painted onto the image."""
    built = BUILDERS[source](tmp_path / "export", [Item("a.jpg", declared=(80, 60)), Item("b.jpg")])

    checked = check(built, tmp_path / "report.json")

    (example,) = assert_only(checked, "would_skip", "mask_size_mismatch", 1)["examples"]
    assert "80x60" in example and "40x30" in example


def test_a_ground_truth_mask_of_another_size_than_the_image_is_skipped(tmp_path: Path) -> None:
    images = tmp_path / "export" / "images"
    colors = {0: ("BACKGROUND", "#ffffff"), 1: ("cat", "#ff0000")}
    lines = []
    for index, mask_size in enumerate([SIZE, (20, 15), SIZE]):
        write_image(images / f"{index}.jpg", image_pixels(*SIZE, index + 1))
        indices = np.zeros(mask_size[::-1], dtype=np.uint8)
        indices[2:8, 2:8] = 1
        write_palette_mask(images / f"masks/{index}.png", indices, [color for _, color in colors.values()])
        lines.append(segmentation_line(f"{BUCKET}/{index}.jpg", f"{BUCKET}/masks/{index}.png", colors))
    manifest = write_manifest(tmp_path / "export" / "output.manifest", lines)

    checked = check(["-a", manifest, "-i", images], tmp_path / "report.json")

    (example,) = assert_only(checked, "would_skip", "mask_size_mismatch", 1)["examples"]
    assert "1.jpg" in example and "20x15" in example and "40x30" in example


@pytest.mark.parametrize("source", BOX_SOURCES)
def test_boxes_outside_the_image_and_without_area(tmp_path: Path, source: str) -> None:
    """On a 40x30 image: two boxes reaching out (clipped), one of zero width and one wholly outside (dropped)."""
    items = [
        Item("a.jpg", (Shape("cat", (30, 20, 20, 20)), Shape("dog", (-4, 2, 10, 10)), Shape("cat", (5, 5, 0, 8)))),
        Item("b.jpg", (Shape("dog", (50, 5, 5, 5)), Shape("cat", (2, 2, 6, 6)))),
    ]
    built = BUILDERS[source](tmp_path / "export", items)

    checked = check(built, tmp_path / "report.json")

    outside = assert_named(checked, "problems", "box_outside_image", 2)
    degenerate = assert_named(checked, "problems", "degenerate_box", 2)
    assert checked.codes("problems") == {"box_outside_image": 2, "degenerate_box": 2}
    assert checked.exit_code == 1
    assert all("clipped to" in example for example in outside["examples"])
    assert all("has no area inside the 40x30 image; dropped" in example for example in degenerate["examples"])


BOW_TIE: Points = [(5, 5), (25, 25), (25, 5), (5, 25)]  # crosses itself at (15, 15); repair keeps both lobes
SPIKE: Points = [(5, 5), (20, 5), (20, 20), (20, 5)]  # goes out and back along one line: nothing to repair


@pytest.mark.parametrize("source", ["coco", "labelstudio", "scale"])
def test_self_intersecting_polygons_say_whether_repair_keeps_an_area(tmp_path: Path, source: str) -> None:
    items = [
        Item("a.jpg", (Shape("cat", points=BOW_TIE), Shape("dog", points=[(2, 2), (12, 2), (7, 9)]))),
        Item("b.jpg", (Shape("dog", points=SPIKE),)),
    ]
    built = BUILDERS[source](tmp_path / "export", items)

    checked = check(built, tmp_path / "report.json")

    finding = assert_only(checked, "problems", "invalid_polygon", 2)
    repaired, lost = sorted(finding["examples"], key=lambda example: "repair leaves no area" in example)
    assert "Self-intersection" in repaired and "(cat)" in repaired
    assert "shapely.make_valid would repair it into 200 square pixels" in repaired  # two 10x10 triangles
    assert "(dog)" in lost and "repair leaves no area: fix or delete it" in lost


def test_geojson_repairs_a_bow_tie_and_drops_what_repair_leaves_without_area(tmp_path: Path) -> None:
    """GeoJSON's reader repairs geometry itself, so its findings are the reader's notes, not invalid_polygon."""
    items = [Item("a.jpg", (Shape("cat", points=BOW_TIE), Shape("dog"))), Item("b.jpg", (Shape("dog", points=SPIKE),))]
    built = build_geojson(tmp_path / "export", items)

    checked = check(built, tmp_path / "report.json")

    assert checked.codes("annotation_notes") == {"repaired_geometry": 1, "invalid_geometry": 1}
    assert_named(checked, "annotation_notes", "repaired_geometry", 1)
    (dropped,) = assert_named(checked, "annotation_notes", "invalid_geometry", 1)["examples"]
    assert "nothing with an area is left" in dropped
    assert checked.codes("problems") == {}
    assert checked.codes("notices") == {"unannotated_image": 1}  # b.jpg lost its only shape
    assert checked.exit_code == 1


NAN_POLYGON: Points = [(5, 5), (math.nan, 5), (20, 20)]
# Per source: where a NaN coordinate and an empty polygon land (the reader drops the annotation, or skips the image).
BAD_POLYGONS = {
    "coco": {"nan": ("annotation_notes", "malformed_annotation"), "empty": ("annotation_notes", "degenerate_polygon")},
    "labelstudio": {"nan": ("would_skip", "malformed_annotation"), "empty": ("would_skip", "malformed_annotation")},
    "scale": {"nan": ("would_skip", "bad_geometry"), "empty": ("would_skip", "bad_geometry")},
    "geojson": {"nan": ("annotation_notes", "malformed_annotation"), "empty": ("annotation_notes", "empty_geometry")},
}


@pytest.mark.parametrize("source", sorted(BAD_POLYGONS))
@pytest.mark.parametrize("kind", ["nan", "empty"])
def test_nan_and_empty_polygons_are_what_the_source_drops(tmp_path: Path, source: str, kind: str) -> None:
    bad = Shape("dog", points=NAN_POLYGON if kind == "nan" else [])
    items = [Item("a.jpg", (Shape("cat"), bad)), Item("b.jpg", (bad,)), Item("c.jpg")]
    built = BUILDERS[source](tmp_path / "export", items)

    checked = check(built, tmp_path / "report.json")

    section, code = BAD_POLYGONS[source][kind]
    assert_named(checked, section, code, 2)
    others = {name: checked.codes(name) for name in ("would_skip", "annotation_notes", "problems")}
    assert {name: codes for name, codes in others.items() if codes} == {section: {code: 2}}
    assert checked.exit_code == 1


def test_a_coco_annotation_of_an_image_the_file_does_not_list(tmp_path: Path) -> None:
    built = build_coco(tmp_path / "export", _three(".jpg"))
    path = Path(built.args[1])
    document = json.loads(path.read_text(encoding="utf-8"))
    for number, image_id in enumerate([99, 98, 98]):
        document["annotations"].append(
            {"id": 50 + number, "image_id": image_id, "category_id": 1, "bbox": [1, 1, 3, 3]}
        )
    path.write_text(json.dumps(document), encoding="utf-8")

    checked = check(built, tmp_path / "report.json")

    # The reader reports such annotations as entries it cannot convert (as `convert` does), one per annotation.
    finding = assert_only(checked, "would_skip", "unknown_image", 3)
    assert "refers to image_id 99, which `images` does not list" in finding["examples"][0]
    assert checked.report["input_samples"] == 6


def test_a_coco_annotation_of_an_unknown_category_is_an_annotation_note(tmp_path: Path) -> None:
    built = build_coco(tmp_path / "export", _three(".jpg"))
    path = Path(built.args[1])
    document = json.loads(path.read_text(encoding="utf-8"))
    document["annotations"].append({"id": 50, "image_id": 1, "category_id": 7, "bbox": [1, 1, 3, 3]})
    path.write_text(json.dumps(document), encoding="utf-8")

    checked = check(built, tmp_path / "report.json")

    (example,) = assert_only(checked, "annotation_notes", "unknown_class_id", 1)["examples"]
    assert "annotation 50 dropped: category_id 7" in example


def test_a_ground_truth_line_whose_image_is_missing(tmp_path: Path) -> None:
    built = build_gt(tmp_path / "export", _three(".jpg"))
    built.images["b.jpg"].unlink()
    built.images["c.jpg"].unlink()

    checked = check(built, tmp_path / "report.json", "-s", "0")

    finding = assert_only(checked, "would_skip", "missing_image", 2)
    assert [example.split(" ", 1)[0] for example in finding["examples"]] == [
        f"{built.args[1]}:2",
        f"{built.args[1]}:3",
    ]
    # What remains is what a conversion writes: one image, one cat; no dog anywhere, so no split misses it.
    assert checked.report["splits"] == {"train": 1, "validation": 0}
    assert checked.report["classes"] == {
        "cat": {"train": {"images": 1, "objects": 1}, "validation": {"images": 0, "objects": 0}}
    }


@pytest.mark.parametrize("source", ["sagemaker_gt", "coco", "labelstudio", "scale"])
def test_images_without_annotations_are_a_notice_only(tmp_path: Path, source: str) -> None:
    items = [Item("a.jpg", ()), Item("b.jpg"), Item("c.jpg", ())]
    built = BUILDERS[source](tmp_path / "export", items)

    checked = check(built, tmp_path / "report.json")

    assert checked.exit_code == 0, checked.stdout
    assert checked.report["clean"] is True
    finding = checked.finding("notices", "unannotated_image")
    assert finding["count"] == 2
    assert "worth a look:" in checked.stdout and "  unannotated_image: 2" in checked.stdout
    assert "no problems found" in checked.stdout


def test_a_class_absent_from_validation(tmp_path: Path) -> None:
    """Six cats and one dog over two splits: the dog is in one of them, and the other cannot evaluate it."""
    items = [Item(f"cat{index}.jpg") for index in range(6)] + [Item("dog.jpg", (Shape("dog"),))]
    built = build_gt(tmp_path / "export", items)

    checked = check(built, tmp_path / "report.json", "-s", "0.5", "--seed", "3")

    classes = checked.report["classes"]
    assert sum(classes["dog"][split]["images"] for split in ("train", "validation")) == 1
    (without_dog,) = [split for split in ("train", "validation") if classes["dog"][split]["images"] == 0]
    assert all(classes["cat"][split]["images"] for split in ("train", "validation"))  # the seed splits the cats
    (example,) = assert_only(checked, "problems", "class_missing_from_split", 1)["examples"]
    assert example == f"'dog': 1 images, none in {without_dog}"


# ---------------------------------------------------------------------------
# What a check leaves behind, and what it says a conversion would write


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under `root` with its size and modification time (nanoseconds)."""
    return {
        path.relative_to(root).as_posix(): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in sorted(root.rglob("*"))
    }


@pytest.mark.parametrize("source", sorted(BUILDERS))
def test_check_writes_nothing_but_its_report(tmp_path: Path, source: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A check of a damaged export, run from inside its folder: no file is added, changed or touched."""
    built = BUILDERS[source](tmp_path / "export", _three(".jpg"))
    _truncate(built.images["b.jpg"])
    monkeypatch.chdir(tmp_path)
    os.utime(tmp_path / "export", ns=(1, 1))  # a folder's mtime changes when an entry is added or removed
    before = _tree(tmp_path)

    checked = check(built, tmp_path / "export" / "report.json")

    assert checked.exit_code == 1
    after = _tree(tmp_path)
    report = after.pop("export/report.json")
    assert report[0] > 0
    folder_time = after.pop("export")[1]
    assert before.pop("export")[1] == 1 and folder_time != 1  # only the report was added to it
    assert after == before


def test_the_class_table_is_what_a_conversion_writes(tmp_path: Path) -> None:
    """Per split, images and objects of each class: the check's table and report against dataset_info.yaml."""
    items = [
        Item(
            f"img{index:02d}.jpg",
            tuple(Shape(CLASSES[(index + number) % 3 % 2], (2 + number * 9, 3, 8, 8)) for number in range(index % 4)),
        )
        for index in range(14)
    ]
    built = build_gt(tmp_path / "export", items)
    options = ("-s", "0.3", "--seed", "5")

    checked = check(built, tmp_path / "report.json", *options)
    converted = convert(*built.args, "-o", tmp_path / "out", *options)

    assert converted.exit_code == 0, converted.stderr
    info = load_info(tmp_path / "out")
    assert checked.report["splits"] == {split: info[split]["samples"] for split in ("train", "validation")}
    assert checked.report["classes"] == {
        name: {split: info[split]["class_counts"][name] for split in ("train", "validation")} for name in CLASSES
    }
    # Both splits have both classes and more than one object of some class, so the comparison means something.
    assert all(info[split]["class_counts"][name]["images"] for split in ("train", "validation") for name in CLASSES)
    assert any(
        counts["objects"] > counts["images"]
        for split in ("train", "validation")
        for counts in info[split]["class_counts"].values()
    )
    lines = checked.stdout.splitlines()
    header = lines.index("classes, images/objects per split:")
    assert lines[header + 1].split() == ["class", "train", "validation"]
    for offset, name in enumerate(CLASSES, start=2):
        counts = info["train"]["class_counts"][name], info["validation"]["class_counts"][name]
        assert lines[header + offset].split() == [name, *(f"{c['images']}/{c['objects']}" for c in counts)]
    assert f"train {info['train']['samples']}, validation {info['validation']['samples']}" in checked.stdout


def test_strict_exits_2_only_on_a_lossy_conversion(tmp_path: Path) -> None:
    """Ground Truth's confidences are object attributes a TFRecord cannot hold; COCO boxes lose nothing."""
    lossy = build_gt(tmp_path / "gt", _three(".jpg"))
    lossless = build_coco(tmp_path / "coco", _three(".jpg"))
    damaged = build_coco(tmp_path / "damaged", _three(".jpg"))
    damaged.images["b.jpg"].unlink()

    refused = run_check(*lossy.args, "--strict", "--report", tmp_path / "refused.json")
    clean = run_check(*lossless.args, "--strict", "-s", "0")
    problems = run_check(*damaged.args, "--strict", "-s", "0")
    carried = run_check(*lossy.args, "--strict", "-f", "json", "-s", "0")

    assert refused.exit_code == 2
    assert "--strict: this conversion would lose 4 objects lose their attributes" in refused.stderr
    assert "3 images lose their attributes" in refused.stderr
    assert not (tmp_path / "refused.json").exists()
    assert clean.exit_code == 0, clean.stdout
    assert "would not carry" not in clean.stdout
    assert problems.exit_code == 1 and "missing_image: 1" in problems.stdout
    assert carried.exit_code == 0, carried.stdout


# ---------------------------------------------------------------------------
# The real third-party exports


def _label_studio_stand_ins(export: Path, images: Path) -> None:
    """An image of each task's declared size under the path its `data.image` names (upstream ships none)."""
    for seed, entry in enumerate(json.loads(export.read_text(encoding="utf-8")), start=1):
        first = entry["annotations"][0]["result"][0]
        write_stand_in(
            images / entry["data"]["image"].lstrip("/"), (first["original_width"], first["original_height"]), seed
        )


@pytest.mark.shared_samples
def test_real_ground_truth_bounding_boxes_are_clean_but_for_a_negative(shared_samples: Path, tmp_path: Path) -> None:
    export = shared_samples / "sagemaker_gt" / "cat_bbox"
    lines = [json.loads(line) for line in (export / "output.manifest").read_text(encoding="utf-8").splitlines()]
    empty = [number for number, line in enumerate(lines, start=1) if not line["cat-ground-truth"]["annotations"]]
    assert empty == [1]  # upstream's first line has no objects

    checked = check(["-a", export], tmp_path / "report.json")

    assert checked.exit_code == 0, checked.stdout
    assert checked.report["clean"] is True
    (example,) = checked.finding("notices", "unannotated_image")["examples"]
    assert example == f"{export / 'output.manifest'}:1 ({lines[0]['source-ref']})"
    objects = sum(len(line["cat-ground-truth"]["annotations"]) for line in lines)
    assert checked.report["classes"]["Cat"]["train"] == {"images": 3, "objects": objects}


@pytest.mark.shared_samples
def test_real_ground_truth_segmentation_is_clean(shared_samples: Path, tmp_path: Path) -> None:
    """The pcb export laid out as its bucket: the mask at the S3 key the manifest names (see test_real_samples)."""
    sample = shared_samples / "sagemaker_gt" / "pcb_semseg"
    text = (sample / "output.manifest").read_text(encoding="utf-8")
    line = json.loads(text.splitlines()[0])
    root = tmp_path / "export"
    mask_key = line["S10-label3-ref"].removeprefix("s3://pcbtest22/")
    (root / mask_key).parent.mkdir(parents=True)
    shutil.copyfile(sample / "mask.png", root / mask_key)
    (root / "label").mkdir(exist_ok=True)
    shutil.copyfile(sample / "s10.png", root / "label" / "s10.png")
    (root / "output.manifest").write_text(text, encoding="utf-8")

    checked = check(["-a", root / "output.manifest"], tmp_path / "report.json")

    assert checked.exit_code == 0, checked.stdout
    assert checked.report["clean"] is True and checked.report["notices"] == []
    assert checked.report["splits"] == {"train": 1, "validation": 0}


@pytest.mark.shared_samples
@pytest.mark.parametrize("subset", ["train", "val"])
def test_real_coco_files_are_clean(shared_samples: Path, tmp_path: Path, subset: str) -> None:
    dataset = shared_samples / "coco" / "datumaro"

    checked = check(["-a", dataset / "annotations" / f"instances_{subset}.json", "-i", dataset], tmp_path / "r.json")

    assert checked.exit_code == 0, checked.stdout
    assert checked.report["clean"] is True and checked.report["notices"] == []


@pytest.mark.shared_samples
def test_real_coco_splits_from_source_miss_a_class_in_train(shared_samples: Path, tmp_path: Path) -> None:
    """A genuine finding: upstream's train file has one image, of class b only, so train has no `a` to learn."""
    dataset = shared_samples / "coco" / "datumaro"
    documents = {
        subset: json.loads((dataset / "annotations" / f"instances_{subset}.json").read_text(encoding="utf-8"))
        for subset in ("train", "val")
    }
    names = {category["id"]: category["name"] for category in documents["train"]["categories"]}
    used = {
        subset: {names[a["category_id"]] for a in document["annotations"]} for subset, document in documents.items()
    }
    assert used == {"train": {"b"}, "val": {"a", "b"}}

    checked = check(["-a", dataset / "annotations", "-i", dataset], tmp_path / "r.json", "-s", "from-source")

    (example,) = assert_only(checked, "problems", "class_missing_from_split", 1)["examples"]
    assert example == "'a': 1 images, none in train"  # `c` has no sample anywhere: no split can miss it


@pytest.mark.shared_samples
@pytest.mark.parametrize("name", ["rotated_rectangles_export.json", "polygons_export.json"])
def test_real_label_studio_exports_are_clean(shared_samples: Path, tmp_path: Path, name: str) -> None:
    export = shared_samples / "label_studio" / name
    _label_studio_stand_ins(export, tmp_path / "images")

    checked = check(["-a", export, "-i", tmp_path / "images"], tmp_path / "r.json")

    assert checked.exit_code == 0, checked.stdout
    assert checked.report["clean"] is True and checked.report["notices"] == []

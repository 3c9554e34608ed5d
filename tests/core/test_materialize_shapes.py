"""Shapes through the whole command line: class masks, instance masks, derived boxes, keypoints, overlaps.

The samples are built here, in the normalized model, and handed to the CLI by a tiny
source registered for the test (it recognizes the `.shapes-test` file the test writes),
so everything after `Source.read` runs as in production. Records are read back with
TensorFlow; expected masks are pixel blocks written out by hand (integer rectangles
cover exactly `[x0, x1) x [y0, y1)`, the rasterizer's stated convention).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from builders import convert, flat, image_pixels, leftovers, load_info, load_report, verify, write_image
from pycocotools import mask as coco_mask
from readback import decode_png, read_all

from converter.core.sample import (
    Keypoint,
    ObjectAnnotation,
    Polygon,
    RleMask,
    Sample,
    SkipCollector,
    SkipHandler,
    SourceContents,
)
from converter.errors import SampleLocation
from converter.sources import SOURCES, SourceFormat

# pycocotools 2.0.x under NumPy 2 warns on every decode; the values are right, the warning is its own.

WIDTH, HEIGHT = 64, 48
SEGMENTATION = "image/segmentation/class/encoded"
Record = dict[str, list[Any]]


def _rectangle(x0: float, y0: float, x1: float, y1: float) -> Polygon:
    return Polygon((x0, y0, x1, y0, x1, y1, x0, y1))


def _block(x0: int, y0: int, x1: int, y1: int) -> npt.NDArray[np.bool_]:
    """The pixels an integer rectangle covers: columns x0..x1-1, rows y0..y1-1."""
    mask = np.zeros((HEIGHT, WIDTH), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


@dataclass(frozen=True)
class _ShapesSource:
    contents: SourceContents

    def read(self, on_skip: SkipHandler | None = None) -> SourceContents:
        skipped = SkipCollector(on_skip)
        skipped.extend(self.contents.skipped)
        return dataclasses.replace(self.contents, skipped=skipped.kept())


@dataclass
class ShapesExport:
    """Samples built in the test, and the images they point at; `write` gives the `-a` file."""

    root: Path
    classes: tuple[str, ...] = ()
    samples: list[Sample] = field(default_factory=list)

    @property
    def annotations(self) -> Path:
        return self.root / "export.shapes-test"

    @property
    def images(self) -> Path:
        return self.root / "images"

    def add(
        self,
        name: str,
        objects: Sequence[ObjectAnnotation] = (),
        keypoints: Sequence[Keypoint] = (),
        declared_size: tuple[int, int] | None = None,
        size: tuple[int, int] = (WIDTH, HEIGHT),
    ) -> str:
        image = self.images / name
        write_image(image, image_pixels(*size, seed=len(self.samples) + 1))
        self.samples.append(
            Sample(
                key=name,
                location=SampleLocation(str(self.annotations), len(self.samples) + 1, name),
                image_path=image,
                image_name=name,
                declared_size=declared_size,
                objects=tuple(objects),
                keypoints=tuple(keypoints),
            )
        )
        return name

    def run(self, output: Path, *options: str) -> Any:
        self.annotations.parent.mkdir(parents=True, exist_ok=True)
        self.annotations.write_text("samples are built by the test\n")
        return convert("-a", self.annotations, "-i", self.images, "-o", output, *options)

    def contents(self) -> SourceContents:
        return SourceContents(tuple(self.samples), (), self.classes, {"source": "shapes_test"})


@pytest.fixture
def export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ShapesExport:
    """A shapes export whose test source is registered for auto-detection (and removed afterwards)."""
    shapes = ShapesExport(tmp_path / "export")
    monkeypatch.setitem(
        SOURCES,
        "shapes_test",
        SourceFormat(
            summary="samples built by a test",
            recognizes=lambda path: path.name.endswith(".shapes-test"),
            build=lambda options: _ShapesSource(shapes.contents()),
        ),
    )
    return shapes


def _converted(export: ShapesExport, output: Path, *options: str) -> tuple[dict[str, Record], dict[str, Any]]:
    """Run, check `verify` accepts the output, and return records by key and dataset_info."""
    result = export.run(output, *options)
    assert result.exit_code == 0, result.stderr
    checked = verify(output)
    assert checked.exit_code == 0, checked.stderr
    records = {
        record["image/source_key"][0].decode(): record for split in read_all(output).values() for record in split
    }
    return records, load_info(output)


def _class_mask(record: Record) -> npt.NDArray[np.uint8]:
    [png] = record[SEGMENTATION]
    mask: npt.NDArray[np.uint8] = decode_png(png)
    return mask


def _normalized_box(record: Record, index: int) -> tuple[float, float, float, float]:
    return (
        record["image/object/bbox/xmin"][index],
        record["image/object/bbox/ymin"][index],
        record["image/object/bbox/xmax"][index],
        record["image/object/bbox/ymax"][index],
    )


def _pixels_box(x0: float, y0: float, x1: float, y1: float, size: tuple[int, int] = (WIDTH, HEIGHT)) -> Any:
    return pytest.approx((x0 / size[0], y0 / size[1], x1 / size[0], y1 / size[1]), abs=1e-6)


def test_class_masks_are_on_every_record_once_any_sample_has_a_shape(export: ShapesExport, tmp_path: Path) -> None:
    export.classes = ("a", "b")
    holed = Polygon(_rectangle(30, 10, 50, 30).exterior, holes=(_rectangle(35, 15, 40, 20).exterior,))
    export.add(
        "shapes.jpg",
        [ObjectAnnotation("a", polygons=(_rectangle(4, 4, 20, 12),)), ObjectAnnotation("b", polygons=(holed,))],
    )
    export.add("box_only.jpg", [ObjectAnnotation("a", (1, 1, 30, 30))])
    export.add("nothing.jpg")

    records, info = _converted(export, tmp_path / "out", "-s", "0.5")

    expected = np.zeros((HEIGHT, WIDTH), np.uint8)
    expected[_block(4, 4, 20, 12)] = 1
    expected[_block(30, 10, 50, 30) & ~_block(35, 15, 40, 20)] = 2
    np.testing.assert_array_equal(_class_mask(records["shapes.jpg"]), expected)
    for background_only in ("box_only.jpg", "nothing.jpg"):  # a plain box is not a segmentation
        np.testing.assert_array_equal(_class_mask(records[background_only]), np.zeros((HEIGHT, WIDTH), np.uint8))
    assert "image/segmentation/class/encoded" in info["record_layout"]["keys"]
    assert "image/object/mask" not in info["record_layout"]["keys"]
    assert info["masks"]["overlap"] == "order"
    assert info["masks"]["instance_masks"] is False
    assert all("image/object/mask" not in record for record in records.values())


def test_instance_masks_give_one_png_per_object_aligned_with_its_box(export: ShapesExport, tmp_path: Path) -> None:
    export.classes = ("a", "b")
    rle_pixels = _block(40, 20, 44, 30) | _block(50, 35, 52, 40)
    encoded = coco_mask.encode(np.asfortranarray(rle_pixels.astype(np.uint8)))
    export.add(
        "objects.jpg",
        [
            ObjectAnnotation("a", polygons=(_rectangle(2, 3, 10, 9),)),
            ObjectAnnotation("b", polygons=(_rectangle(70, 10, 80, 20),)),  # wholly outside: dropped, with its mask
            ObjectAnnotation("b", (20, 5, 30, 15)),  # a plain box paints its rectangle
            ObjectAnnotation("a", rle=RleMask(HEIGHT, WIDTH, encoded["counts"].decode())),
        ],
    )
    export.add("none.jpg")

    records, info = _converted(export, tmp_path / "out", "--instance-masks")

    record = records["objects.jpg"]
    instance_masks = [decode_png(png) for png in record["image/object/mask"]]
    expected = [_block(2, 3, 10, 9), _block(20, 5, 30, 15), rle_pixels]
    assert len(instance_masks) == len(record["image/object/class/label"]) == 3
    for mask, pixels in zip(instance_masks, expected, strict=True):
        np.testing.assert_array_equal(mask, pixels.astype(np.uint8))
    assert record["image/object/class/text"] == [b"a", b"b", b"a"]
    assert _normalized_box(record, 0) == _pixels_box(2, 3, 10, 9)
    assert _normalized_box(record, 1) == _pixels_box(20, 5, 30, 15)
    assert _normalized_box(record, 2) == _pixels_box(40, 20, 52, 40)  # the RLE mask's pixel extent
    class_mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    class_mask[_block(2, 3, 10, 9) | rle_pixels] = 1  # the box of b paints no class pixel
    np.testing.assert_array_equal(_class_mask(record), class_mask)
    assert records["none.jpg"]["image/object/mask"] == []
    assert "image/object/mask" in info["record_layout"]["keys"]
    assert info["masks"]["instance_masks"] is True


def test_boxes_are_derived_from_the_shapes_extent_and_clipped(export: ShapesExport, tmp_path: Path) -> None:
    export.classes = ("a",)
    export.add(
        "shapes.jpg",
        [
            ObjectAnnotation("a", polygons=(Polygon((2.25, 3.5, 17.75, 4.0, 10.0, 9.125)),)),
            ObjectAnnotation("a", polygons=(_rectangle(-5, 10, 20, 60),)),  # partly outside
            ObjectAnnotation("a", polygons=(_rectangle(1, 1, 5, 5), _rectangle(30, 20, 33, 40))),  # two parts
            ObjectAnnotation(
                "a", polygons=(Polygon(_rectangle(40, 2, 60, 12).exterior, (_rectangle(45, 4, 50, 8).exterior,)),)
            ),
            ObjectAnnotation("a", polygons=(_rectangle(70, 10, 80, 20),)),  # wholly outside: dropped
        ],
    )

    records, _ = _converted(export, tmp_path / "out")

    record = records["shapes.jpg"]
    assert len(record["image/object/class/label"]) == 4
    assert _normalized_box(record, 0) == _pixels_box(2.25, 3.5, 17.75, 9.125)  # the polygon's own extent
    assert _normalized_box(record, 1) == _pixels_box(0, 10, 20, 48)
    assert _normalized_box(record, 2) == _pixels_box(1, 1, 33, 40)
    assert _normalized_box(record, 3) == _pixels_box(40, 2, 60, 12)
    notes = {(entry["object"], entry["code"]) for entry in load_report(tmp_path / "out")["objects"]}
    assert notes == {(1, "clipped"), (4, "degenerate_box")}


def test_keypoints_are_written_and_one_outside_the_image_is_reported(export: ShapesExport, tmp_path: Path) -> None:
    export.classes = ("nose", "eye")
    export.add(
        "face.jpg",
        [ObjectAnnotation("nose", polygons=(_rectangle(1, 1, 4, 4),))],
        keypoints=[Keypoint("nose", 10.5, 20.25), Keypoint("eye", 70, 10), Keypoint("eye", 64, 48)],
    )
    export.add("no_points.jpg")

    records, info = _converted(export, tmp_path / "out")

    face = records["face.jpg"]
    assert face["image/keypoint/x"] == pytest.approx([10.5 / WIDTH, 1.0])
    assert face["image/keypoint/y"] == pytest.approx([20.25 / HEIGHT, 1.0])
    assert face["image/keypoint/text"] == [b"nose", b"eye"]
    for key in ("image/keypoint/x", "image/keypoint/y", "image/keypoint/text"):
        assert records["no_points.jpg"][key] == []
        assert key in info["record_layout"]["keys"]
    [note] = load_report(tmp_path / "out")["objects"]
    assert (note["key"], note["object"], note["code"]) == ("face.jpg", 1, "keypoint_outside")
    assert "(70, 10)" in note["message"]


def test_overlap_combine_adds_combination_classes(export: ShapesExport, tmp_path: Path) -> None:
    export.classes = ("a", "b", "c")
    export.add(
        "first.jpg",
        [
            ObjectAnnotation("a", polygons=(_rectangle(0, 0, 20, 10),)),
            ObjectAnnotation("c", polygons=(_rectangle(10, 0, 30, 10),)),
            ObjectAnnotation("b", polygons=(_rectangle(40, 0, 50, 10),)),
        ],
    )
    export.add(
        "second.jpg",
        [
            ObjectAnnotation("c", polygons=(_rectangle(0, 20, 10, 30),)),
            ObjectAnnotation("a", polygons=(_rectangle(5, 20, 15, 30),)),
        ],
    )

    records, info = _converted(export, tmp_path / "out", "--overlap", "combine", "-s", "0.5")

    assert info["classes"] == ["a", "b", "c", "a+c"]
    assert info["masks"]["overlap"] == "combine"
    assert info["masks"]["combinations"] == {"a+c": ["a", "c"]}
    first = np.zeros((HEIGHT, WIDTH), np.uint8)
    first[_block(0, 0, 10, 10)] = 1
    first[_block(10, 0, 20, 10)] = 4
    first[_block(20, 0, 30, 10)] = 3
    first[_block(40, 0, 50, 10)] = 2
    np.testing.assert_array_equal(_class_mask(records["first.jpg"]), first)
    second = np.zeros((HEIGHT, WIDTH), np.uint8)
    second[_block(0, 20, 5, 30)] = 3
    second[_block(5, 20, 10, 30)] = 4  # met again, in the other order: the same id
    second[_block(10, 20, 15, 30)] = 1
    np.testing.assert_array_equal(_class_mask(records["second.jpg"]), second)
    counts = {
        name: split["class_counts"]["a+c"]["images"] for name, split in info.items() if name in ("train", "validation")
    }
    assert sum(counts.values()) == 2


def test_overlap_priority_lets_the_listed_class_win(export: ShapesExport, tmp_path: Path) -> None:
    export.classes = ("a", "b")
    a_first = [
        ObjectAnnotation("a", polygons=(_rectangle(0, 0, 20, 10),)),
        ObjectAnnotation("b", polygons=(_rectangle(10, 0, 30, 10),)),
    ]
    export.add("a_first.jpg", a_first)
    export.add("b_first.jpg", list(reversed(a_first)))

    by_priority, info = _converted(export, tmp_path / "priority", "--overlap", "priority", "--class-priority", "b,a")
    by_order, _ = _converted(export, tmp_path / "order")

    assert info["masks"]["class_priority"] == ["b", "a"]
    for name in ("a_first.jpg", "b_first.jpg"):
        assert list(_class_mask(by_priority[name])[5, 5:25:5]) == [1, 2, 2, 2]
    assert list(_class_mask(by_order["b_first.jpg"])[5, 5:25:5]) == [1, 1, 1, 2]  # later paints over earlier


def test_class_priority_naming_an_unknown_class_is_a_usage_error(export: ShapesExport, tmp_path: Path) -> None:
    export.classes = ("a", "b")
    export.add("a.jpg", [ObjectAnnotation("a", polygons=(_rectangle(0, 0, 20, 10),))])
    output = tmp_path / "out"

    result = export.run(output, "--overlap", "priority", "--class-priority", "b,zebra")

    assert result.exit_code == 2
    assert "--class-priority" in flat(result.stderr) and "zebra" in flat(result.stderr)
    assert not (output / "dataset_info.yaml").exists()
    assert leftovers(output) == []


def test_a_declared_size_other_than_the_displayed_one_fails_a_sample_with_shapes(
    export: ShapesExport, tmp_path: Path
) -> None:
    export.classes = ("a",)
    export.add("shape.jpg", [ObjectAnnotation("a", polygons=(_rectangle(0, 0, 20, 10),))], declared_size=(100, 100))
    export.add("box.jpg", [ObjectAnnotation("a", (10, 10, 40, 30))], declared_size=(128, 96))

    records, _ = _converted(export, tmp_path / "out")

    report = load_report(tmp_path / "out")
    [skipped] = report["skipped"]
    assert (skipped["key"], skipped["code"]) == ("shape.jpg", "mask_size_mismatch")
    assert "100x100" in skipped["reason"] and f"{WIDTH}x{HEIGHT}" in skipped["reason"]
    assert sorted(records) == ["box.jpg"]  # a box is normalized by the declared size, with a warning
    assert _normalized_box(records["box.jpg"], 0) == _pixels_box(10, 10, 40, 30, size=(128, 96))
    [warning] = report["warnings"]
    assert warning["key"] == "box.jpg" and "128x96" in warning["message"]

"""The GeoJSON source end to end: FeatureCollections in, TFRecords read back with TensorFlow.

Expected masks are pycocotools' rasterization of the rings the test wrote (a hole's
pixels removed from its exterior's), the converter's pixel convention; expected boxes
are the rings' extent over the image size.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import shapely
from builders import convert, image_pixels, load_info, load_report, write_image
from pycocotools import mask as coco_mask
from readback import Record, decode_png, records_by_source_id

from converter.sources.geojson import looks_like_geojson

BoolMask = npt.NDArray[np.bool_]
Points = list[tuple[float, float]]
CLASS_MASK = "image/segmentation/class/encoded"


def _closed(points: Points) -> list[list[float]]:
    """A GeoJSON ring: positions as [x, y], the first repeated at the end."""
    return [[x, y] for x, y in [*points, points[0]]]


def _feature(image: str | None, geometry: Any, **properties: Any) -> dict[str, Any]:
    feature: dict[str, Any] = {"type": "Feature", "properties": dict(properties)}
    if image is not None:
        feature["properties"]["image_filename"] = image
    if geometry is not ...:
        feature["geometry"] = geometry
    return feature


def _polygon(*rings: Points) -> dict[str, Any]:
    return {"type": "Polygon", "coordinates": [_closed(ring) for ring in rings]}


def _write(root: Path, features: Sequence[dict[str, Any]], images: dict[str, tuple[int, int]]) -> Path:
    """Images under root/images, the collection at root/labels.geojson; returns its path."""
    for index, (name, size) in enumerate(images.items()):
        write_image(root / "images" / name, image_pixels(*size, seed=index + 1))
    path = root / "labels.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": list(features)}), encoding="utf-8")
    return path


def _convert(path: Path, output: Path, *options: str) -> None:
    result = convert("-a", path, "-i", path.parent / "images", "-o", output, "-s", "0", *options)
    assert result.exit_code == 0, result.stderr


def ring_mask(points: Points, height: int, width: int) -> BoolMask:
    """pycocotools' rasterization of one ring."""
    flat_ring = [float(number) for point in points for number in point]
    return coco_mask.decode(coco_mask.frPyObjects([flat_ring], height, width))[..., 0].astype(bool)


def _assert_boxes(record: Record, rings: Sequence[Points], size: tuple[int, int]) -> None:
    """One box per object: the extent of its rings, normalized by `size`."""
    width, height = size
    xs = [[x for x, _ in points] for points in rings]
    ys = [[y for _, y in points] for points in rings]
    assert record["image/object/bbox/xmin"] == pytest.approx([min(x) / width for x in xs], abs=1e-6)
    assert record["image/object/bbox/xmax"] == pytest.approx([max(x) / width for x in xs], abs=1e-6)
    assert record["image/object/bbox/ymin"] == pytest.approx([min(y) / height for y in ys], abs=1e-6)
    assert record["image/object/bbox/ymax"] == pytest.approx([max(y) / height for y in ys], abs=1e-6)


SQUARE: Points = [(5, 5), (25, 5), (25, 25), (5, 25)]
HOLE: Points = [(10, 10), (15, 10), (15, 15), (10, 15)]
TRIANGLES: tuple[Points, Points] = ([(30, 2), (40, 2), (35, 12)], [(45, 20), (58, 20), (58, 35)])
TREE: Points = [(2.5, 30.5), (20.25, 28), (12, 39.75)]


def test_polygons_holes_multipolygons_and_class_ids(tmp_path: Path) -> None:
    features = [
        _feature("a.png", _polygon(SQUARE, HOLE), class_id=3, class_name="building"),
        _feature("a.png", {"type": "MultiPolygon", "coordinates": [[_closed(part)] for part in TRIANGLES]}, class_id=1),
        _feature("a.png", _polygon(TREE), class_id="tree"),
        _feature("b.png", _polygon([(1, 1), (6, 1), (6, 6)]), class_id="7", label="car"),
    ]
    path = _write(tmp_path / "export", features, {"a.png": (60, 40), "b.png": (10, 10)})
    output = tmp_path / "out"

    _convert(path, output)

    info = load_info(output)
    assert info["classes"] == ["1", "building", "car", "tree"]  # by numeric class_id (1, 3, 7), then by name
    records = records_by_source_id(output)
    record = records["a.png"]
    assert record["image/object/class/text"] == [b"building", b"1", b"tree"]
    assert record["image/object/class/label"] == [2, 1, 4]
    _assert_boxes(record, [SQUARE, [*TRIANGLES[0], *TRIANGLES[1]], TREE], (60, 40))
    square, hole = ring_mask(SQUARE, 40, 60), ring_mask(HOLE, 40, 60)
    expected = np.zeros((40, 60), dtype=np.uint8)
    expected[square & ~hole] = 2
    expected[ring_mask(TRIANGLES[0], 40, 60) | ring_mask(TRIANGLES[1], 40, 60)] = 1
    expected[ring_mask(TREE, 40, 60)] = 4
    class_mask = decode_png(record[CLASS_MASK][0])
    np.testing.assert_array_equal(class_mask, expected)
    assert hole.any() and not class_mask[hole].any()  # hole pixels are background
    assert records["b.png"]["image/object/class/text"] == [b"car"]
    assert load_report(output)["objects"] == []


BOW_TIE: Points = [(0, 0), (20, 20), (20, 0), (0, 20)]  # edges cross at (10, 10)


def test_a_self_intersecting_bow_tie_is_repaired_keeping_both_lobes(tmp_path: Path) -> None:
    path = _write(tmp_path / "export", [_feature("a.png", _polygon(BOW_TIE), class_id=1)], {"a.png": (30, 30)})
    output = tmp_path / "out"

    _convert(path, output)

    record = records_by_source_id(output)["a.png"]
    lobes = ring_mask([(0, 0), (10, 10), (0, 20)], 30, 30) | ring_mask([(20, 0), (10, 10), (20, 20)], 30, 30)
    np.testing.assert_array_equal(decode_png(record[CLASS_MASK][0]), lobes.astype(np.uint8))
    _assert_boxes(record, [BOW_TIE], (30, 30))
    (note,) = load_report(output)["objects"]
    assert (note["key"], note["object"], note["code"]) == ("a.png", None, "repaired_geometry")
    assert "feature 0" in note["message"] and "Self-intersection" in note["message"]
    # Why not the zero-width buffer: it keeps one lobe, half the area.
    shape = shapely.Polygon(BOW_TIE)
    assert shape.buffer(0).area == pytest.approx(shapely.make_valid(shape).area / 2)


def test_missing_empty_unsupported_and_irreparable_geometries_are_reported(tmp_path: Path) -> None:
    features = [
        _feature("a.png", ..., class_id=1),  # no geometry member
        _feature("a.png", None, class_id=1),  # geometry: null
        _feature("a.png", {"type": "Polygon", "coordinates": []}, class_id=1),
        _feature("a.png", {"type": "Point", "coordinates": [3, 4]}, class_id=1),
        _feature("a.png", _polygon([(0, 0), (5, 5), (10, 10)]), class_id=1),  # collinear: no area
        _feature("a.png", _polygon(SQUARE), class_id=2),
        _feature(None, _polygon(SQUARE), class_id=2),  # no image
        _feature("b.png", None, class_id=1),  # b's only feature: b stays, with no object
    ]
    path = _write(tmp_path / "export", features, {"a.png": (30, 30), "b.png": (10, 10)})
    output = tmp_path / "out"

    _convert(path, output)

    records = records_by_source_id(output)
    assert records["a.png"]["image/object/class/text"] == [b"2"]
    np.testing.assert_array_equal(
        decode_png(records["a.png"][CLASS_MASK][0]), ring_mask(SQUARE, 30, 30).astype(np.uint8) * 2
    )
    assert records["b.png"]["image/object/class/text"] == []
    report = load_report(output)
    notes = [(entry["key"], entry["code"], entry["message"].split(":")[0]) for entry in report["objects"]]
    assert notes == [
        ("a.png", "missing_geometry", "feature 0 dropped"),
        ("a.png", "missing_geometry", "feature 1 dropped"),
        ("a.png", "empty_geometry", "feature 2 dropped"),
        ("a.png", "unsupported_geometry", "feature 3 dropped"),
        ("a.png", "invalid_geometry", "feature 4 dropped"),
        ("b.png", "missing_geometry", "feature 7 dropped"),
    ]
    assert [(entry["key"], entry["code"]) for entry in report["skipped"]] == [("feature 6", "malformed_annotation")]
    assert "no `image_filename`" in report["skipped"][0]["reason"]
    assert report["summary"]["input_samples"] == 3 and report["summary"]["converted"] == 2


def test_declared_image_size_comes_from_the_properties(tmp_path: Path) -> None:
    features = [_feature("a.png", _polygon(SQUARE), class_id=1, image_width=60, image_height=30)]
    path = _write(tmp_path / "export", features, {"a.png": (30, 30)})
    output = tmp_path / "out"

    result = convert("-a", path, "-i", path.parent / "images", "-o", output, "-s", "0")

    # The image is 30x30 but declared 60x30: the shape cannot be painted onto it, and the report says why.
    assert result.exit_code == 1
    (skipped,) = load_report(output)["skipped"]
    assert (skipped["key"], skipped["code"]) == ("a.png", "mask_size_mismatch")
    assert "60x30" in skipped["reason"]


def test_a_folder_with_a_geojson_file_and_images_is_recognized(tmp_path: Path) -> None:
    path = _write(tmp_path / "export", [_feature("a.png", _polygon(SQUARE), class_id=1)], {"a.png": (30, 30)})
    output = tmp_path / "out"

    result = convert("-a", path.parent, "-o", output)

    assert result.exit_code == 0, result.stderr
    assert load_info(output)["input"]["source"] == "geojson"


@pytest.mark.parametrize(
    ("document", "recognized"),
    [
        ({"type": "FeatureCollection", "features": []}, True),
        ({"features": [], "type": "FeatureCollection"}, True),
        ({"type": "Feature", "geometry": None, "properties": {}}, False),
        ([{"type": "FeatureCollection"}], False),
    ],
    ids=["collection", "type-last", "a-single-feature", "a-list"],
)
def test_recognizing_a_feature_collection(tmp_path: Path, document: Any, recognized: bool) -> None:
    path = tmp_path / "labels.geojson"
    path.write_text(json.dumps(document), encoding="utf-8")

    assert looks_like_geojson(path) is recognized

"""Facts of written records and the statistics built from them, checked against values computed here.

Records are real: samples are built in the normalized model, their images written with
OpenCV, and `materialize` turns them into what a sink writes. Expected values come from the
geometry the test chose (rectangles of known sides and angle, hand-written shoelace sums),
from the decoded PNG masks, and from `numpy.histogram` on the document's own edges.
"""

from __future__ import annotations

import dataclasses
import math
import pickle
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from converter.core.classes import ClassList, build_class_list
from converter.core.materialize import EncodedSample, RecordOptions, materialize
from converter.core.sample import Keypoint, ObjectAnnotation, ObjectKeypoint, Polygon, Sample
from converter.errors import SampleLocation
from converter.stats.facts import ObjectFacts, RecordFacts, ShapeFacts, facts_of, facts_of_sample, written_record_of
from converter.stats.folder import describe_record
from converter.stats.records import WrittenObject, WrittenRecord
from converter.stats.statistics import PENDING_RECORDS, Statistics

WIDTH, HEIGHT = 320, 240
CLASSES = ("cat", "dog", "bird")


def _image(tmp_path: Path, key: str, width: int = WIDTH, height: int = HEIGHT) -> Path:
    path = tmp_path / f"{key}.png"
    pixels = np.full((height, width, 3), 90, dtype=np.uint8)
    pixels[0, 0] = len(key)  # distinct bytes per image
    assert cv2.imwrite(str(path), pixels)
    return path


def _sample(
    tmp_path: Path,
    key: str,
    objects: Sequence[ObjectAnnotation] = (),
    size: tuple[int, int] = (WIDTH, HEIGHT),
    image_labels: tuple[str, ...] = (),
    keypoints: tuple[Keypoint, ...] = (),
) -> Sample:
    path = _image(tmp_path, key, *size)
    return Sample(
        key,
        SampleLocation("test"),
        path,
        path.name,
        objects=tuple(objects),
        image_labels=image_labels,
        keypoints=keypoints,
    )


def _encode(
    sample: Sample, class_masks: bool = False, instance_masks: bool = False, keypoints: bool = False
) -> EncodedSample:
    classes = build_class_list(CLASSES + sample.class_names(), None, False)
    options = RecordOptions(class_masks=class_masks, instance_masks=instance_masks, keypoints=keypoints, objects=True)
    return materialize(sample, classes, options)


def _decoded(png: bytes | None) -> npt.NDArray[np.uint8]:
    assert png is not None
    mask = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    assert mask is not None
    return mask.astype(np.uint8)


def _rectangle(x0: float, y0: float, x1: float, y1: float) -> Polygon:
    return Polygon((x0, y0, x1, y0, x1, y1, x0, y1))


def _rotated(cx: float, cy: float, long: float, short: float, degrees: float) -> Polygon:
    """A rectangle centred on (cx, cy) whose long side points `degrees` from the x axis (y down)."""
    angle = math.radians(degrees)
    along = (math.cos(angle), math.sin(angle))
    across = (-math.sin(angle), math.cos(angle))
    corners = [(sign_a * long / 2, sign_b * short / 2) for sign_a, sign_b in ((-1, -1), (1, -1), (1, 1), (-1, 1))]
    return Polygon(
        tuple(
            value
            for a, b in corners
            for value in (cx + a * along[0] + b * across[0], cy + a * along[1] + b * across[1])
        )
    )


def _shoelace(ring: Sequence[float]) -> tuple[float, float, float]:
    """|area|, centroid x, centroid y of a simple ring, written out by hand."""
    xs, ys = ring[0::2], ring[1::2]
    twice, moment_x, moment_y = 0.0, 0.0, 0.0
    for index in range(len(xs)):
        x0, y0, x1, y1 = xs[index], ys[index], xs[(index + 1) % len(xs)], ys[(index + 1) % len(xs)]
        cross = x0 * y1 - x1 * y0
        twice += cross
        moment_x += (x0 + x1) * cross
        moment_y += (y0 + y1) * cross
    return abs(twice) / 2, moment_x / (3 * twice), moment_y / (3 * twice)


def _ring_length(ring: Sequence[float]) -> float:
    points = list(zip(ring[0::2], ring[1::2], strict=True))
    return sum(math.dist(points[index], points[(index + 1) % len(points)]) for index in range(len(points)))


def _shape(record: WrittenRecord, index: int) -> ShapeFacts:
    shape = facts_of(record).objects[index].shape
    assert shape is not None
    return shape


# --- facts ------------------------------------------------------------------------------------------------------------


def test_rectangles_give_their_area_perimeter_centroid_and_rotated_box(tmp_path: Path) -> None:
    upright = _rectangle(10, 20, 50, 30)  # 40 x 10, long side along x
    tall = _rectangle(200, 10, 210, 70)  # 10 x 60, long side along y
    tilted = _rotated(120, 120, 60, 20, 30)
    steep = _rotated(250, 150, 50, 30, 125)
    objects = [ObjectAnnotation("cat", polygons=(polygon,)) for polygon in (upright, tall, tilted, steep)]
    record = written_record_of(_encode(_sample(tmp_path, "rects", objects)))
    expected = [(40, 10, 0, (30, 25)), (60, 10, 90, (205, 40)), (60, 20, 30, (120, 120)), (50, 30, 125, (250, 150))]
    for index, (long, short, angle, (cx, cy)) in enumerate(expected):
        shape = _shape(record, index)
        assert shape.area == pytest.approx(long * short, rel=1e-9)
        assert shape.perimeter == pytest.approx(2 * (long + short), rel=1e-9)
        assert shape.compactness == pytest.approx(4 * math.pi * long * short / (2 * (long + short)) ** 2, rel=1e-9)
        assert shape.centroid == pytest.approx((cx / WIDTH, cy / HEIGHT), abs=1e-9)
        assert shape.rotated_long == pytest.approx(long, abs=1e-3)
        assert shape.rotated_short == pytest.approx(short, abs=1e-3)
        assert shape.rotated_angle == pytest.approx(angle, abs=1e-3)
        assert 0 <= shape.rotated_angle < 180


def test_non_convex_holes_parts_and_self_intersections(tmp_path: Path) -> None:
    ell = (20.0, 20.0, 80.0, 20.0, 80.0, 35.0, 35.0, 35.0, 35.0, 90.0, 20.0, 90.0)
    framed = Polygon((100, 20, 160, 20, 160, 80, 100, 80), holes=((120, 40, 140, 40, 140, 60, 120, 60),))
    apart = (_rectangle(200, 20, 210, 30), _rectangle(230, 20, 250, 40))
    overlapping = (_rectangle(20, 120, 40, 140), _rectangle(30, 130, 50, 150))  # union: 20x20 twice less a 10x10
    bowtie = Polygon((200, 120, 260, 180, 260, 120, 200, 180))  # two triangles meeting at (230, 150)
    objects = [
        ObjectAnnotation("cat", polygons=(Polygon(ell),)),
        ObjectAnnotation("dog", polygons=(framed,)),
        ObjectAnnotation("bird", polygons=apart),
        ObjectAnnotation("cat", polygons=overlapping),
        ObjectAnnotation("dog", polygons=(bowtie,)),
    ]
    record = written_record_of(_encode(_sample(tmp_path, "shapes", objects)))

    ell_area, ell_x, ell_y = _shoelace(ell)
    assert ell_area == 60 * 15 + 15 * 55  # the hand-written shoelace agrees with the L's two rectangles
    shape = _shape(record, 0)
    assert shape.area == pytest.approx(ell_area)
    assert shape.perimeter == pytest.approx(_ring_length(ell))
    assert shape.centroid == pytest.approx((ell_x / WIDTH, ell_y / HEIGHT))
    assert (shape.rotated_long, shape.rotated_short) == pytest.approx((70, 60), abs=1e-3)  # the L's own box

    shape = _shape(record, 1)
    assert shape.area == pytest.approx(60 * 60 - 20 * 20)
    assert shape.perimeter == pytest.approx(4 * 60 + 4 * 20)
    assert shape.centroid == pytest.approx((130 / WIDTH, 50 / HEIGHT))

    shape = _shape(record, 2)
    assert shape.area == pytest.approx(100 + 400)
    assert shape.perimeter == pytest.approx(40 + 80)
    assert shape.centroid == pytest.approx(
        ((205 * 100 + 240 * 400) / 500 / WIDTH, (25 * 100 + 30 * 400) / 500 / HEIGHT)
    )
    assert shape.rotated_long * shape.rotated_short == pytest.approx(50 * 20, rel=1e-4)  # their common box

    shape = _shape(record, 3)
    assert shape.area == pytest.approx(400 + 400 - 100)
    assert shape.perimeter == pytest.approx(2 * 80 - 2 * (10 + 10))  # each outline loses its 10 + 10 inside the other
    assert shape.centroid == pytest.approx((35 / WIDTH, 135 / HEIGHT))

    shape = _shape(record, 4)
    assert shape.area == pytest.approx(2 * (60 * 30 / 2))  # even-odd: two triangles, as the rasterizer paints it
    assert shape.centroid == pytest.approx((230 / WIDTH, 150 / HEIGHT))


def test_discs_are_compact_and_slivers_are_not(tmp_path: Path) -> None:
    disc = Polygon(
        tuple(
            v
            for k in range(360)
            for v in (160 + 50 * math.cos(k * math.pi / 180), 120 + 50 * math.sin(k * math.pi / 180))
        )
    )
    objects = [
        ObjectAnnotation("cat", polygons=(disc,)),
        ObjectAnnotation("dog", polygons=(_rectangle(10, 10, 110, 12),)),
    ]
    record = written_record_of(_encode(_sample(tmp_path, "disc", objects)))
    assert _shape(record, 0).compactness > 0.9999
    assert _shape(record, 0).area == pytest.approx(math.pi * 50**2, rel=1e-4)
    assert _shape(record, 1).compactness == pytest.approx(4 * math.pi * 200 / 204**2)


def test_an_instance_mask_gives_the_polygon_s_facts_within_a_pixel(tmp_path: Path) -> None:
    objects = [
        ObjectAnnotation("cat", polygons=(_rotated(100, 90, 120, 40, 20),)),
        ObjectAnnotation("dog", polygons=(_rectangle(200, 40, 260, 200),)),
        ObjectAnnotation("bird", polygons=(_rotated(240, 60, 70, 25, 160),)),
    ]
    encoded = _encode(_sample(tmp_path, "masks", objects), instance_masks=True)
    record = written_record_of(encoded)
    traced = dataclasses.replace(record, objects=tuple(dataclasses.replace(obj, polygons=()) for obj in record.objects))
    for index, obj in enumerate(traced.objects):
        assert obj.mask_png is not None
        pixels = np.count_nonzero(_decoded(obj.mask_png))
        exact, from_mask = _shape(record, index), _shape(traced, index)
        assert from_mask.area == pytest.approx(pixels, rel=0.01)
        assert from_mask.area == pytest.approx(exact.area, abs=exact.perimeter * 0.5)  # half a pixel along the edge
        assert from_mask.centroid[0] * WIDTH == pytest.approx(exact.centroid[0] * WIDTH, abs=0.5)
        assert from_mask.centroid[1] * HEIGHT == pytest.approx(exact.centroid[1] * HEIGHT, abs=0.5)
        assert from_mask.rotated_long == pytest.approx(exact.rotated_long, abs=2)
        assert from_mask.rotated_short == pytest.approx(exact.rotated_short, abs=2)
        angle_gap = abs(from_mask.rotated_angle - exact.rotated_angle)
        assert min(angle_gap, 180 - angle_gap) < 2
    # An axis-aligned block of pixels is exactly its rectangle.
    block = _shape(traced, 1)
    assert (block.area, block.perimeter) == pytest.approx((60 * 160, 2 * (60 + 160)))
    assert (block.rotated_long, block.rotated_short, block.rotated_angle) == pytest.approx((160, 60, 90), abs=1e-3)


def test_a_mask_of_one_pixel_or_none(tmp_path: Path) -> None:
    single = np.zeros((HEIGHT, WIDTH), np.uint8)
    single[5, 7] = 1
    png = {name: cv2.imencode(".png", mask)[1].tobytes() for name, mask in (("one", single), ("none", single * 0))}
    box = (0.0, 0.0, 0.5, 0.5)
    record = WrittenRecord(
        "k", WIDTH, HEIGHT, objects=tuple(_written_object(box, png[name]) for name in ("one", "none"))
    )
    facts = facts_of(record)
    one = facts.objects[0].shape
    assert one is not None
    assert one.area == pytest.approx(1)
    assert one.centroid == pytest.approx((7.5 / WIDTH, 5.5 / HEIGHT))
    assert facts.objects[1].shape is None


def _written_object(box: tuple[float, float, float, float], mask_png: bytes | None = None) -> WrittenObject:
    return WrittenObject(1, "cat", box, mask_png=mask_png)


def test_record_facts_classes_keypoints_boxes_and_mask_pixels(tmp_path: Path) -> None:
    person = ObjectAnnotation(
        "cat",
        bbox_xyxy=(10, 20, 74, 36),
        keypoints=(ObjectKeypoint("nose", 12, 22, 2), ObjectKeypoint("eye", 0, 0, 0), ObjectKeypoint("ear", 13, 23, 1)),
    )
    shaped = ObjectAnnotation("dog", polygons=(_rectangle(100, 100, 130, 110),), area=1234.5)
    sample = _sample(
        tmp_path,
        "everything",
        [person, shaped],
        image_labels=("bird",),
        keypoints=(Keypoint("horse", 5, 5), Keypoint("horse", 6, 6)),
    )
    encoded = _encode(sample, class_masks=True, keypoints=True)
    classes = build_class_list(CLASSES + sample.class_names(), None, False)
    facts = facts_of(written_record_of(encoded))

    assert (facts.width, facts.height) == (WIDTH, HEIGHT)
    assert facts.class_ids == tuple(sorted(classes.id_of(name) for name in ("cat", "dog", "bird", "horse")))
    assert facts.keypoints == 2 + 2  # image points, and the object's labelled ones (visibility 1 and 2)
    assert facts.objects[0] == ObjectFacts(classes.id_of("cat"), 64, 16, 64 * 16, None)
    assert (facts.objects[1].box_width, facts.objects[1].area) == pytest.approx((30, 1234.5))

    mask = _decoded(encoded.segmentation_png)
    expected = tuple((int(value), int(np.count_nonzero(mask == value))) for value in np.unique(mask) if value)
    assert expected == ((classes.id_of("dog"), 300),)
    assert encoded.mask_pixels == expected
    assert (facts.mask_pixels, facts.mask_total_pixels) == (expected, WIDTH * HEIGHT)
    decoded = facts_of(dataclasses.replace(written_record_of(encoded), class_mask_pixels=None))
    assert (decoded.mask_pixels, decoded.mask_total_pixels) == (expected, mask.size)


def test_mask_pixels_decoded_keep_ignore_but_not_as_a_class() -> None:
    mask = np.zeros((40, 50), np.uint8)
    mask[:10, :10] = 2
    mask[30:, 45:] = 255
    mask[20, 20] = 7
    png = cv2.imencode(".png", mask)[1].tobytes()
    facts = facts_of(WrittenRecord("k", 50, 40, class_mask_png=png))
    assert facts.mask_pixels == ((2, 100), (7, 1), (255, 50))
    assert facts.class_ids == (2, 7)
    assert facts.mask_total_pixels == 2000
    assert facts_of(WrittenRecord("k", 50, 40)).mask_pixels == ()


def test_written_record_of_is_what_the_sink_writes(tmp_path: Path) -> None:
    sample = _sample(
        tmp_path,
        "written",
        [ObjectAnnotation("dog", bbox_xyxy=(32, 24, 64, 48), keypoints=(ObjectKeypoint("nose", 48, 36, 2),))],
        image_labels=("bird", "cat"),
        keypoints=(Keypoint("cat", 160, 60),),
    )
    encoded = _encode(sample, keypoints=True)
    record = written_record_of(encoded)
    assert (record.width, record.height, record.image_bytes) == (WIDTH, HEIGHT, None)
    assert written_record_of(encoded, with_image=True).image_bytes == Path(tmp_path / "written.png").read_bytes()
    assert record.image_labels == ((3, "bird"), (1, "cat"))
    (obj,) = record.objects
    assert (obj.class_id, obj.class_name) == (2, "dog")
    assert obj.box == pytest.approx((0.1, 0.1, 0.2, 0.2))
    assert (obj.keypoints[0].x, obj.keypoints[0].y, obj.keypoints[0].visibility) == pytest.approx((0.15, 0.15, 2))
    ((class_id, name, point),) = record.keypoints
    assert (class_id, name, point.x, point.y) == (1, "cat", 0.5, 0.25)
    assert (record.class_mask_png, record.class_mask_pixels) == (None, None)


def test_facts_survive_pickling(tmp_path: Path) -> None:
    objects = [ObjectAnnotation("cat", polygons=(_rotated(100, 90, 50, 20, 40),))]
    facts = facts_of(written_record_of(_encode(_sample(tmp_path, "pickle", objects), class_masks=True)))
    assert pickle.loads(pickle.dumps(facts)) == facts


# --- statistics -------------------------------------------------------------------------------------------------------


def _histogram(document: dict[str, object], values: Sequence[float]) -> dict[str, object]:
    """What a HIST of `values` must hold: numpy.histogram on the document's own edges, and what falls outside."""
    edges = np.asarray(document["edges"], dtype=np.float64)
    array = np.asarray(values, dtype=np.float64)
    counts, _ = np.histogram(array, bins=edges)
    return {
        "edges": document["edges"],
        "counts": counts.tolist(),
        "below": int(np.count_nonzero(array < edges[0])),
        "above": int(np.count_nonzero(array > edges[-1])),
    }


def test_statistics_match_values_computed_by_hand(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    classes = ClassList(CLASSES)
    statistics = Statistics(CLASSES)
    truth: dict[str, dict[str, list[float]]] = {}  # split -> what each statistic must be made of
    per_class: dict[tuple[str, str], dict[str, list[float]]] = {}
    masks: dict[str, list[npt.NDArray[np.uint8]]] = {}
    for index in range(40):
        split = "validation" if index % 4 == 0 else "train"
        size = ((320, 240), (200, 160))[index % 3 == 0]
        width, height = size
        objects = []
        for _ in range(int(rng.integers(0, 5))):
            name = "bird" if split == "validation" else CLASSES[int(rng.integers(0, 3))]  # no cat, no dog in validation
            long, short = float(rng.uniform(8, 60)), float(rng.uniform(4, 30))
            short = min(short, long - 1)
            angle = float(rng.integers(0, 18)) * 10 + float(rng.uniform(2, 8))  # away from bin edges
            cx, cy = float(rng.uniform(40, width - 40)), float(rng.uniform(40, height - 40))
            polygon = _rotated(cx, cy, long, short, angle)
            coco_area = float(rng.choice([200.0, 1023.0, 1024.0, 5000.0, 9216.0, 20000.0]))
            objects.append(ObjectAnnotation(name, polygons=(polygon,), area=coco_area))
            x0, y0, x1, y1 = polygon.bounds()
            for key, value in (
                ("box_area", (x1 - x0) * (y1 - y0)),
                ("box_aspect", (x1 - x0) / (y1 - y0)),
                ("coco", coco_area),
            ):
                truth.setdefault(split, {}).setdefault(key, []).append(value)
                per_class.setdefault((split, name), {}).setdefault(key, []).append(value)
            shape_values = per_class.setdefault((split, name), {})
            for key, value in (
                ("area", long * short),
                ("compactness", 4 * math.pi * long * short / (2 * (long + short)) ** 2),
                ("angle", angle),
                ("long", long),
                ("short", short),
                ("x", cx / width),
                ("y", cy / height),
            ):
                shape_values.setdefault(key, []).append(value)
        sample = _sample(tmp_path, f"s{index}", objects, size=size)
        encoded = materialize(sample, classes, RecordOptions(objects=True, class_masks=True))
        statistics.add(split, facts_of(written_record_of(encoded)))
        split_truth = truth.setdefault(split, {})
        split_truth.setdefault("objects_per_image", []).append(len(objects))
        split_truth.setdefault("width", []).append(width)
        split_truth.setdefault("height", []).append(height)
        for name in {obj.class_name for obj in objects}:
            per_class.setdefault((split, name), {}).setdefault("images", []).append(1)
        masks.setdefault(split, []).append(_decoded(encoded.segmentation_png))

    document = statistics.document()
    assert document["format"] == 1
    assert document["classes"] == list(CLASSES)
    assert list(document["splits"]) == ["train", "validation"]
    for split, split_document in document["splits"].items():
        values = truth[split]
        assert split_document["images"] == len(values["width"])
        assert split_document["objects"] == sum(values["objects_per_image"])
        assert split_document["keypoints"] == 0
        assert split_document["image_width"] == {
            "mean": pytest.approx(np.mean(values["width"])),
            "min": min(values["width"]),
            "max": max(values["width"]),
        }
        assert split_document["image_height"]["max"] == max(values["height"])
        sizes = {(w, h): 0 for w, h in zip(values["width"], values["height"], strict=True)}
        for w, h in zip(values["width"], values["height"], strict=True):
            sizes[(w, h)] += 1
        expected_sizes = sorted(([w, h, n] for (w, h), n in sizes.items()), key=lambda row: -row[2])
        assert split_document["image_sizes"] == {"sizes": expected_sizes, "other": 0}
        for key in ("objects_per_image", "box_area", "box_aspect"):
            assert split_document[key] == _histogram(split_document[key], values[key])
        coco = np.asarray(values["coco"])
        assert split_document["box_sizes"] == {
            "small": int(np.count_nonzero(coco < 32**2)),
            "medium": int(np.count_nonzero((coco >= 32**2) & (coco < 96**2))),
            "large": int(np.count_nonzero(coco >= 96**2)),
        }
        assert split_document["mask_ignore_share"] == 0.0
        assert set(split_document["classes"]) == set(CLASSES)  # every class in every split
        for position, name in enumerate(CLASSES):
            class_document = split_document["classes"][name]
            expected = per_class.get((split, name), {})
            assert class_document["images"] == len(expected.get("images", []))
            assert class_document["objects"] == len(expected.get("area", []))
            objects_per_image = (
                len(expected.get("area", [])) / len(expected["images"]) if expected.get("images") else 0.0
            )
            assert class_document["objects_per_image"] == pytest.approx(objects_per_image)
            pixels = sum(np.count_nonzero(mask == position + 1) for mask in masks[split])
            share = pixels / sum(mask.size for mask in masks[split])
            assert class_document["mask_pixel_share"] == pytest.approx(share)
            assert class_document["box_area"] == _histogram(class_document["box_area"], expected.get("box_area", []))
            assert class_document["box_aspect"] == _histogram(
                class_document["box_aspect"], expected.get("box_aspect", [])
            )
            polygons = class_document["polygons"]
            assert polygons["count"] == len(expected.get("area", []))
            for key in ("area", "compactness"):
                assert polygons[key]["counts"] == _histogram(polygons[key], expected.get(key, []))["counts"]
            angle = polygons["rotated_box"]["angle"]
            assert angle == _histogram(angle, expected.get("angle", []))
            if not expected.get("area"):
                assert polygons["centroid"]["mean"] is None
                assert polygons["rotated_box"]["long_side"] == {"mean": None, "min": None, "max": None}
                assert class_document["box_sizes"] == {"small": 0, "medium": 0, "large": 0}
                continue
            assert polygons["centroid"]["mean"] == pytest.approx([np.mean(expected["x"]), np.mean(expected["y"])])
            grid = np.zeros((8, 8), dtype=int)
            for x, y in zip(expected["x"], expected["y"], strict=True):
                grid[int(y * 8), int(x * 8)] += 1
            assert polygons["centroid"]["grid"] == grid.tolist()
            long_side = polygons["rotated_box"]["long_side"]
            assert long_side["mean"] == pytest.approx(np.mean(expected["long"]), abs=1e-3)
            assert long_side["min"] == pytest.approx(min(expected["long"]), abs=1e-3)
            assert polygons["rotated_box"]["short_side"]["max"] == pytest.approx(max(expected["short"]), abs=1e-3)

    summary = statistics.summary()
    assert summary["splits"]["validation"]["images"] == 10
    assert summary["splits"]["train"]["objects"] == sum(truth["train"]["objects_per_image"])
    assert summary["classes"]["cat"]["validation"] == {"images": 0, "objects": 0}
    assert summary["classes"]["bird"]["validation"]["objects"] == len(per_class[("validation", "bird")]["area"])


def _random_facts(rng: np.random.Generator, size: tuple[int, int]) -> RecordFacts:
    objects = tuple(
        ObjectFacts(
            int(rng.integers(1, 4)),
            float(rng.uniform(0.5, 5000)),
            float(rng.uniform(0.5, 5000)),
            float(rng.uniform(0, 20000)),
            ShapeFacts(
                float(rng.uniform(0, 2**28)),
                10.0,
                float(rng.uniform(0, 1)),
                (float(rng.uniform(-0.2, 1.2)), 0.5),
                float(rng.uniform(0, 180)),
                4.0,
                2.0,
            )
            if rng.random() < 0.5
            else None,
        )
        for _ in range(int(rng.integers(0, 1500)) if rng.random() < 0.01 else int(rng.integers(0, 30)))
    )
    mask = ((1, 10), (255, 5), (9, 3)) if rng.random() < 0.5 else ()
    return RecordFacts(
        size[0], size[1], objects, tuple(sorted({obj.class_id for obj in objects})), 3, mask, 100 if mask else 0
    )


def test_memory_does_not_grow_with_records() -> None:
    rng = np.random.default_rng(11)
    statistics = Statistics(CLASSES)
    sizes = [(640, 480), (1920, 1080), (33, 7)]
    for split in ("train", "validation", "test"):
        for size in sizes:
            statistics.add(split, _random_facts(rng, size))
    held = statistics.held_values()
    for _ in range(3000):
        statistics.add(
            str(rng.choice(["train", "validation", "test"])), _random_facts(rng, sizes[int(rng.integers(0, 3))])
        )
    assert statistics.held_values() == held
    # A new image size is held until a split has 1000 of them; after that, new sizes are only counted.
    for width in range(1, 1200):
        statistics.add("test", _random_facts(rng, (width + 2000, 1)))
    capped = statistics.held_values()
    assert capped == held + 3 * (1000 - len(sizes))
    for width in range(3000, 4000):
        statistics.add("test", _random_facts(rng, (width, 2)))
    assert statistics.held_values() == capped
    document = statistics.document()["splits"]["test"]
    assert len(document["image_sizes"]["sizes"]) == 1000
    assert (
        sum(row[2] for row in document["image_sizes"]["sizes"]) + document["image_sizes"]["other"] == document["images"]
    )


def test_facts_of_a_sample_equal_those_of_its_written_record(tmp_path: Path) -> None:
    objects = [
        ObjectAnnotation(
            "cat", polygons=(_rotated(100, 90, 50, 20, 40),), keypoints=(ObjectKeypoint("nose", 90, 85, 1),)
        ),
        ObjectAnnotation("dog", polygons=(_rectangle(20, 120, 40, 140), _rectangle(30, 130, 50, 150))),
        ObjectAnnotation("bird", bbox_xyxy=(200, 20, 260, 60)),
    ]
    sample = _sample(tmp_path, "both", objects, image_labels=("bird",), keypoints=(Keypoint("horse", 5, 5),))
    for masks in (False, True):
        encoded = _encode(sample, class_masks=masks, instance_masks=masks, keypoints=True)
        assert facts_of_sample(encoded) == facts_of(written_record_of(encoded))
        assert describe_record(encoded) == facts_of(written_record_of(encoded))


def test_records_counted_in_bulk_equal_records_counted_one_by_one() -> None:
    """Far more records than are kept pending: every bin, sum and extreme as if each were counted on arrival."""
    rng = np.random.default_rng(3)
    records = [
        (str(rng.choice(["train", "validation"])), _random_facts(rng, ((640, 480), (33, 7))[int(rng.integers(0, 2))]))
        for _ in range(2 * PENDING_RECORDS + 100)
    ]
    bulk, one_by_one = Statistics(CLASSES), Statistics(CLASSES)
    for split, facts in records:
        bulk.add(split, facts)
        one_by_one.add(split, facts)
        one_by_one.held_values()  # counts what is pending: here, this one record
    assert bulk.document() == one_by_one.document()
    assert bulk.summary() == one_by_one.summary()

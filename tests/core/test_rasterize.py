"""The rasterizer: the pixel convention its module docstring states, pycocotools agreement, RLE, overlaps.

Convention under test: pixel `(col, row)` is covered when its centre `(col + 0.5, row + 0.5)`
is inside the polygon (even-odd rule) as pycocotools traces it; a centre on a left or top
edge is outside, on a right or bottom edge inside. pycocotools rounds vertices to 1/5
pixel and walks edges on that grid, so only centres near a sloped edge can fall either
way: the properties check the exact rule for centres more than half a pixel from every edge.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from pycocotools import mask as coco_mask

from converter.core.rasterize import (
    CombinationClasses,
    Coverage,
    compose_class_mask,
    mask_bbox,
    object_coverage,
    polygon_coverage,
    polygon_mask,
    rle_mask,
)
from converter.core.sample import ObjectAnnotation, Polygon, RleMask
from converter.errors import SampleError

# pycocotools 2.0.x under NumPy 2 warns on every decode; the values are right, the warning is its own.

BoolMask = npt.NDArray[np.bool_]
Ring = tuple[float, ...]
EDGE_MARGIN = 0.5  # pixels: centres farther than this from every edge follow the even-odd rule exactly


def _rectangle(x0: float, y0: float, x1: float, y1: float) -> Ring:
    return (x0, y0, x1, y0, x1, y1, x0, y1)


def _pixels(height: int, width: int, cells: Sequence[tuple[int, int]]) -> BoolMask:
    """A mask with the given `(col, row)` pixels set."""
    mask = np.zeros((height, width), dtype=bool)
    for col, row in cells:
        mask[row, col] = True
    return mask


def _block(height: int, width: int, cols: range, rows: range) -> BoolMask:
    mask = np.zeros((height, width), dtype=bool)
    mask[rows.start : rows.stop, cols.start : cols.stop] = True
    return mask


# --- simple shapes, by hand ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("x0", "y0", "x1", "y1"),
    [(0, 0, 2, 2), (1, 2, 4, 3), (0, 0, 8, 6), (3, 1, 4, 5), (2, 2, 2, 5), (7, 5, 8, 6)],
)
def test_integer_rectangles_cover_exactly_their_pixels(x0: int, y0: int, x1: int, y1: int) -> None:
    expected = _block(6, 8, range(x0, x1), range(y0, y1))
    for ring in (_rectangle(x0, y0, x1, y1), _rectangle(x1, y1, x0, y0), (x0, y0, x0, y1, x1, y1, x1, y0)):
        np.testing.assert_array_equal(polygon_mask([Polygon(ring)], 6, 8), expected)


@pytest.mark.parametrize(
    ("ring", "cols", "rows"),
    [
        (_rectangle(0.5, 0.5, 2.5, 2.5), range(1, 3), range(1, 3)),  # left/top edge on a centre: out; right/bottom: in
        (_rectangle(0.4, 0.4, 2.6, 2.6), range(0, 3), range(0, 3)),  # every centre 0.5..2.5 inside
        (_rectangle(0.6, 0.6, 2.4, 2.4), range(1, 2), range(1, 2)),  # only centre 1.5 inside
        (_rectangle(1.5, 0.5, 3.5, 1.5), range(2, 4), range(1, 2)),
        (_rectangle(0.9, 0.1, 1.1, 3.9), range(1, 1), range(0, 4)),  # a sliver between centres covers nothing
    ],
)
def test_half_pixel_offsets_follow_the_centre_rule(ring: Ring, cols: range, rows: range) -> None:
    np.testing.assert_array_equal(polygon_mask([Polygon(ring)], 5, 5), _block(5, 5, cols, rows))


def test_a_triangle_covers_the_pixels_whose_centres_lie_inside() -> None:
    # Hypotenuse x + 2y = 10: every centre lies at least 0.22 px from it.
    cols, rows = np.meshgrid(np.arange(12) + 0.5, np.arange(8) + 0.5)
    expected = cols + 2 * rows < 10

    np.testing.assert_array_equal(polygon_mask([Polygon((0, 0, 10, 0, 0, 5))], 8, 12), expected)


def test_a_hole_removes_its_pixels() -> None:
    ring = Polygon(_rectangle(0, 0, 8, 8), holes=(_rectangle(2, 2, 6, 5),))

    expected = _block(8, 8, range(8), range(8)) & ~_block(8, 8, range(2, 6), range(2, 5))
    np.testing.assert_array_equal(polygon_mask([ring], 8, 8), expected)


def test_parts_are_painted_as_their_union_and_a_hole_only_cuts_its_own_part() -> None:
    holed = Polygon(_rectangle(0, 0, 6, 6), holes=(_rectangle(2, 2, 4, 4),))
    overlapping = Polygon(_rectangle(3, 3, 8, 5))
    plain = Polygon(_rectangle(6, 0, 7, 2))

    expected = (
        (_block(8, 8, range(6), range(6)) & ~_block(8, 8, range(2, 4), range(2, 4)))
        | _block(8, 8, range(3, 8), range(3, 5))
        | _block(8, 8, range(6, 7), range(2))
    )
    np.testing.assert_array_equal(polygon_mask([holed, overlapping, plain], 8, 8), expected)
    both_plain = polygon_mask([Polygon(_rectangle(0, 0, 3, 3)), Polygon(_rectangle(2, 2, 5, 5))], 8, 8)
    np.testing.assert_array_equal(both_plain, _block(8, 8, range(3), range(3)) | _block(8, 8, range(2, 5), range(2, 5)))


@pytest.mark.parametrize(
    ("ring", "cols", "rows"),
    [
        (_rectangle(-3, -2, 2, 3), range(0, 2), range(0, 3)),
        (_rectangle(4, 3, 20, 9), range(4, 6), range(3, 5)),
        (_rectangle(-10, -10, 20, 20), range(0, 6), range(0, 5)),
        (_rectangle(7, 0, 9, 5), range(0, 0), range(0, 0)),  # wholly outside
        (_rectangle(-1e9, -1e9, 2, 1e9), range(0, 2), range(0, 5)),  # pycocotools alone would crash here
    ],
)
def test_polygons_partly_outside_the_image_are_clipped(ring: Ring, cols: range, rows: range) -> None:
    np.testing.assert_array_equal(polygon_mask([Polygon(ring)], 5, 6), _block(5, 6, cols, rows))


def test_self_intersecting_rings_follow_the_even_odd_rule() -> None:
    bow_tie = polygon_mask([Polygon((0, 0, 8, 8, 8, 0, 0, 8))], 8, 8)  # lobes left and right, crossing at (4, 4)
    cols, rows = np.meshgrid(np.arange(8) + 0.5, np.arange(8) + 0.5)
    off_the_diagonals = (cols != rows) & (cols + rows != 8)
    in_a_lobe = (np.abs(rows - 4) < np.abs(cols - 4)) & (cols > 0)
    np.testing.assert_array_equal(bow_tie[off_the_diagonals], in_a_lobe[off_the_diagonals])

    # A pentagram's centre is wound twice: even-odd leaves it empty, non-zero would fill it.
    star: list[float] = []
    for vertex in range(5):
        angle = -math.pi / 2 + vertex * 4 * math.pi / 5
        star += [16 + 14 * math.cos(angle), 16 + 14 * math.sin(angle)]
    pentagram = polygon_mask([Polygon(tuple(star))], 32, 32)
    assert not pentagram[15:17, 15:17].any()
    assert pentagram[5, 15:17].all()  # the upper point
    # A square traced twice winds everything twice: nothing is covered.
    assert not polygon_mask([Polygon(_rectangle(0, 0, 4, 4) * 2)], 6, 6).any()


def test_a_plain_box_object_covers_its_rectangle() -> None:
    covered = object_coverage(ObjectAnnotation("a", (1, 2, 4, 3)), 5, 6).full()

    np.testing.assert_array_equal(covered, _block(5, 6, range(1, 4), range(2, 3)))


# --- random polygons: pycocotools agreement, bounding box, centre rule ------------------------


def _even_odd(ring: Ring, centres_x: npt.NDArray[np.float64], centres_y: npt.NDArray[np.float64]) -> BoolMask:
    """Centres inside the ring by the even-odd rule (a horizontal ray to the right crosses it oddly often)."""
    xs, ys = np.asarray(ring[0::2]), np.asarray(ring[1::2])
    inside = np.zeros(centres_x.shape, dtype=bool)
    for x0, y0, x1, y1 in zip(xs, ys, np.roll(xs, -1), np.roll(ys, -1), strict=True):
        if y0 == y1:
            continue
        straddles = (y0 > centres_y) != (y1 > centres_y)
        with np.errstate(over="ignore"):  # a nearly horizontal edge: its crossing is far away, which is right
            crossing_x = x0 + (centres_y - y0) * (x1 - x0) / (y1 - y0)
        inside ^= straddles & (centres_x < crossing_x)
    return inside


def _edge_distance(ring: Ring, centres_x: npt.NDArray[np.float64], centres_y: npt.NDArray[np.float64]) -> Any:
    xs, ys = np.asarray(ring[0::2]), np.asarray(ring[1::2])
    distance = np.full(centres_x.shape, np.inf)
    for x0, y0, x1, y1 in zip(xs, ys, np.roll(xs, -1), np.roll(ys, -1), strict=True):
        dx, dy = x1 - x0, y1 - y0
        length = dx * dx + dy * dy
        t = np.clip(((centres_x - x0) * dx + (centres_y - y0) * dy) / length, 0, 1) if length else 0.0
        distance = np.minimum(distance, np.hypot(centres_x - (x0 + t * dx), centres_y - (y0 + t * dy)))
    return distance


def _pycocotools_rings(rings: Sequence[Ring], height: int, width: int) -> BoolMask:
    """pycocotools' own rasterization of the union of rings (its merge is a union)."""
    objects = coco_mask.frPyObjects([list(ring) for ring in rings], height, width)
    return coco_mask.decode(coco_mask.merge(objects)).astype(bool)  # type: ignore[no-any-return]


@st.composite
def rings(draw: st.DrawFn, width: int, height: int, max_vertices: int) -> Ring:
    """A ring of 3..max_vertices float vertices reaching up to half the image beyond each side.

    Half are star-shaped (non-convex, simple), half free-form (usually self-intersecting).
    None reaches past the window of one image size around the image, where the rasterizer
    starts clipping rings itself.
    """
    count = draw(st.integers(3, max_vertices))
    fractions = st.floats(-0.5, 1.5, allow_nan=False)
    if draw(st.booleans()):
        centre_x, centre_y = draw(fractions) * width, draw(fractions) * height
        radii = draw(st.lists(st.floats(0.5, 1.0), min_size=count, max_size=count))
        angles = sorted(draw(st.lists(st.floats(0, 2 * math.pi), min_size=count, max_size=count)))
        scale = draw(st.floats(0.05, 0.5)) * max(width, height)  # stays inside the window nothing is clipped in
        return tuple(
            coordinate
            for radius, angle in zip(radii, angles, strict=True)
            for coordinate in (centre_x + scale * radius * math.cos(angle), centre_y + scale * radius * math.sin(angle))
        )
    points = draw(st.lists(st.tuples(fractions, fractions), min_size=count, max_size=count))
    return tuple(coordinate for x, y in points for coordinate in (x * width, y * height))


@st.composite
def polygon_scenes(draw: st.DrawFn) -> tuple[int, int, tuple[Polygon, ...]]:
    height, width = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    parts = []
    for _ in range(draw(st.integers(1, 3))):
        holes = tuple(draw(rings(width, height, 12)) for _ in range(draw(st.integers(0, 2))))
        parts.append(Polygon(draw(rings(width, height, 30)), holes))
    return height, width, tuple(parts)


@settings(max_examples=2000, deadline=None)
@given(scene=polygon_scenes())
def test_random_polygons_match_pycocotools_stay_in_their_box_and_follow_the_centre_rule(
    scene: tuple[int, int, tuple[Polygon, ...]],
) -> None:
    height, width, parts = scene
    covered = polygon_mask(parts, height, width)

    reference = np.zeros((height, width), dtype=bool)
    for part in parts:
        part_pixels = _pycocotools_rings([part.exterior], height, width)
        if part.holes:
            part_pixels &= ~_pycocotools_rings(part.holes, height, width)
        reference |= part_pixels
    np.testing.assert_array_equal(covered, reference)

    _assert_inside_the_boxes_and_by_the_centre_rule(covered, parts)


def _assert_inside_the_boxes_and_by_the_centre_rule(covered: BoolMask, parts: Sequence[Polygon]) -> None:
    """No pixel is covered whose centre is outside every part's box; centres away from edges follow even-odd."""
    height, width = covered.shape
    centres_x, centres_y = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    in_some_box = np.zeros((height, width), dtype=bool)
    by_rule = np.zeros((height, width), dtype=bool)
    near_an_edge = np.zeros((height, width), dtype=bool)
    for part in parts:
        x_min, y_min, x_max, y_max = part.bounds()
        in_some_box |= (x_min <= centres_x) & (centres_x <= x_max) & (y_min <= centres_y) & (centres_y <= y_max)
        in_part = _even_odd(part.exterior, centres_x, centres_y)
        for hole in part.holes:
            in_part &= ~_even_odd(hole, centres_x, centres_y)
        by_rule |= in_part
        for ring in (part.exterior, *part.holes):
            near_an_edge |= _edge_distance(ring, centres_x, centres_y) <= EDGE_MARGIN
    assert not (covered & ~in_some_box).any(), "a pixel whose centre is outside every part's box is covered"
    np.testing.assert_array_equal(covered[~near_an_edge], by_rule[~near_an_edge])


far_or_near = st.one_of(st.floats(-0.5, 1.5), st.floats(-1e9, 1e9))


@settings(max_examples=300, deadline=None)
@given(
    size=st.tuples(st.integers(1, 40), st.integers(1, 40)),
    points=st.lists(st.tuples(far_or_near, far_or_near), min_size=3, max_size=12),
)
def test_rings_reaching_far_beyond_the_image_are_clipped_by_the_same_rule(
    size: tuple[int, int], points: list[tuple[float, float]]
) -> None:
    """Fractions of the image size, or up to 1e9 px away, where pycocotools alone would crash."""
    height, width = size
    ring = tuple(
        coordinate if abs(coordinate) > 1.5 else coordinate * extent
        for x, y in points
        for coordinate, extent in ((x, width), (y, height))
    )
    parts = [Polygon(ring)]

    _assert_inside_the_boxes_and_by_the_centre_rule(polygon_mask(parts, height, width), parts)


# --- RLE -------------------------------------------------------------------------------------


def _uncompressed_counts(mask: BoolMask) -> tuple[int, ...]:
    """COCO run lengths: column-major, alternating background and foreground, starting with background."""
    flat = mask.flatten(order="F").astype(np.int8)
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate(([0], changes, [flat.size]))
    runs = np.diff(bounds).tolist()
    return tuple([0, *runs] if flat[0] else runs)


random_masks = hnp.arrays(dtype=bool, shape=hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=24))


@settings(max_examples=300, deadline=None)
@given(mask=random_masks)
def test_rle_round_trips_compressed_and_uncompressed(mask: BoolMask) -> None:
    height, width = mask.shape
    encoded = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))

    compressed = RleMask(height, width, encoded["counts"].decode())
    uncompressed = RleMask(height, width, _uncompressed_counts(mask))

    np.testing.assert_array_equal(rle_mask(compressed, height, width), mask)
    np.testing.assert_array_equal(rle_mask(uncompressed, height, width), mask)


def test_rle_of_another_size_is_a_size_mismatch() -> None:
    with pytest.raises(SampleError) as raised:
        rle_mask(RleMask(4, 5, (20,)), 5, 4)
    assert raised.value.code == "mask_size_mismatch"
    assert "5x4" in raised.value.message and "4x5" in raised.value.message


@pytest.mark.parametrize(
    ("counts", "fragment"),
    [
        ((3, 4), "add up to 7"),
        ((10, 5, 6), "add up to 21"),
        ((25, -5), "negative"),
        ("04", "add up to 4"),  # a 2x2 mask's counts given for 4x5: pycocotools would read past them
        ("0c0c0", "add up to"),
        ("52203" * 3, "add up to"),
        ("0\x7f", "cannot appear"),
        ("0k", "middle of a number"),  # 'k' sets the continuation bit and the string ends
    ],
)
def test_rle_counts_that_do_not_cover_the_mask_are_malformed(counts: tuple[int, ...] | str, fragment: str) -> None:
    with pytest.raises(SampleError) as raised:
        rle_mask(RleMask(4, 5, counts), 4, 5)
    assert raised.value.code == "malformed_annotation"
    assert fragment in raised.value.message


# --- class masks and overlaps ----------------------------------------------------------------

A, B, C = 1, 2, 3


def _layer(cols: range, rows: range) -> Coverage:
    """A rectangle as the materializer hands layers over: only its window, placed in the 4x6 image."""
    return Coverage(rows.start, cols.start, np.ones((len(rows), len(cols)), dtype=bool), 4, 6)


def test_order_paints_later_layers_over_earlier_ones() -> None:
    layers = [(A, _layer(range(0, 4), range(0, 4))), (C, _layer(range(2, 6), range(0, 2)))]

    canvas = compose_class_mask(layers, 4, 6, "order")

    expected = np.zeros((4, 6), np.uint8)
    expected[:, :4] = A
    expected[:2, 2:] = C
    np.testing.assert_array_equal(canvas, expected)


def test_priority_lets_listed_classes_win_and_ties_keep_order() -> None:
    left, right, middle = _layer(range(0, 4), range(4)), _layer(range(2, 6), range(4)), _layer(range(1, 5), range(2))
    layers = [(C, left), (B, right), (A, middle)]

    canvas = compose_class_mask(layers, 4, 6, "priority", priority=[B])

    expected = np.zeros((4, 6), np.uint8)
    expected[:, :4] = C
    expected[:2, 1:5] = A  # A and C are unlisted: A is later, so it paints over C
    expected[:, 2:6] = B  # B is listed: it wins wherever it is
    np.testing.assert_array_equal(canvas, expected)
    ranked = compose_class_mask(layers, 4, 6, "priority", priority=[C, B])
    assert ranked[0, 3] == C and ranked[0, 4] == B and ranked[0, 1] == C


def test_combine_gives_overlaps_combination_classes_numbered_after_the_base_classes() -> None:
    combinations = CombinationClasses(("a", "b", "c"))
    first = compose_class_mask(
        [(A, _layer(range(0, 4), range(4))), (C, _layer(range(2, 6), range(4)))], 4, 6, "combine", (), combinations
    )
    np.testing.assert_array_equal(first[0], [A, A, 4, 4, C, C])
    assert combinations.names == ["a+c"]

    again = compose_class_mask(
        [(C, _layer(range(0, 2), range(4))), (A, _layer(range(1, 3), range(4)))], 4, 6, "combine", (), combinations
    )
    np.testing.assert_array_equal(again[0], [C, 4, A, 0, 0, 0])  # met again, in either order: the same id

    third = compose_class_mask(
        [
            (A, _layer(range(0, 3), range(4))),
            (C, _layer(range(1, 4), range(4))),
            (B, _layer(range(2, 5), range(4))),
            (B, _layer(range(2, 3), range(4))),  # the same class twice adds nothing
        ],
        4,
        6,
        "combine",
        (),
        combinations,
    )
    # Within a layer, new combinations are met in the order of the ids they cover (c, then a+c).
    np.testing.assert_array_equal(third[0], [A, 4, 6, 5, B, 0])
    assert combinations.names == ["a+c", "b+c", "a+b+c"]  # names list members in class-list order
    assert combinations.components() == {"a+c": ["a", "c"], "b+c": ["b", "c"], "a+b+c": ["a", "b", "c"]}


def test_combine_counts_a_base_mask_as_the_first_layer() -> None:
    combinations = CombinationClasses(("a", "b", "c"))
    base = np.zeros((4, 6), np.uint8)
    base[:, :3] = A

    canvas = compose_class_mask([(B, _layer(range(2, 4), range(4)))], 4, 6, "combine", (), combinations, base)

    np.testing.assert_array_equal(canvas[0], [A, A, 4, B, 0, 0])
    assert combinations.components() == {"a+b": ["a", "b"]}
    np.testing.assert_array_equal(base[0], [A, A, A, 0, 0, 0])  # the base itself is not modified


def test_mask_bbox_is_the_pixel_extent() -> None:
    assert mask_bbox(Coverage.whole(np.zeros((3, 4), dtype=bool))) is None
    assert mask_bbox(Coverage.whole(_pixels(5, 6, [(2, 3)]))) == (2.0, 3.0, 3.0, 4.0)
    assert mask_bbox(Coverage.whole(_pixels(5, 6, [(0, 4), (5, 1)]))) == (0.0, 1.0, 6.0, 5.0)
    assert mask_bbox(Coverage(7, 3, _pixels(5, 6, [(0, 4), (5, 1)]), 20, 20)) == (3.0, 8.0, 9.0, 12.0)


def test_a_polygon_is_rasterized_in_its_window_only() -> None:
    coverage = polygon_coverage([Polygon((100.0, 200.0, 110.5, 200.0, 105.0, 212.25))], 480, 640)
    assert coverage.pixels.shape[0] < 20 and coverage.pixels.shape[1] < 20
    np.testing.assert_array_equal(
        coverage.full(), _pycocotools_rings([(100.0, 200.0, 110.5, 200.0, 105.0, 212.25)], 480, 640)
    )


@settings(max_examples=1000, deadline=None)
@given(
    origin=st.tuples(st.floats(-30, 660), st.floats(-30, 500)),
    points=st.lists(st.tuples(st.floats(-25, 25), st.floats(-25, 25)), min_size=3, max_size=10),
    hole=st.booleans(),
)
def test_windows_anywhere_in_a_large_image_equal_the_whole_image_rasterization(
    origin: tuple[float, float], points: list[tuple[float, float]], hole: bool
) -> None:
    """Shapes far from the origin, with arbitrary float digits, partly outside: shifting must not change a pixel."""
    ring = tuple(value for x, y in points for value in (origin[0] + x, origin[1] + y))
    holes = (tuple(value for x, y in points[::-1] for value in (origin[0] + x / 2, origin[1] + y / 2)),) if hole else ()
    coverage = polygon_coverage([Polygon(ring, holes)], 480, 640)
    expected = _pycocotools_rings([ring], 480, 640)
    if holes:
        expected &= ~_pycocotools_rings(holes, 480, 640)
    np.testing.assert_array_equal(coverage.full(), expected)


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 40),
    st.integers(1, 40),
    st.data(),
)
def test_a_coverage_encodes_to_the_rle_of_its_whole_image_mask(height: int, width: int, data: st.DataObject) -> None:
    top, left = data.draw(st.integers(0, height)), data.draw(st.integers(0, width))
    rows, columns = data.draw(st.integers(0, height - top)), data.draw(st.integers(0, width - left))
    pixels = data.draw(hnp.arrays(bool, (rows, columns)))
    covered = Coverage(top, left, pixels, height, width)
    expected = coco_mask.encode(np.asfortranarray(covered.full().view(np.uint8)))["counts"].decode()
    assert covered.rle_counts() == expected

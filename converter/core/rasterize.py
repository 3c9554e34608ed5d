"""Shapes to masks: polygons (non-convex, several parts, holes), rotated rectangles, RLE.

Pixel convention, pycocotools' own, so that COCO polygons give exactly the masks COCO's
reference tools give: coordinates are continuous, pixel `(col, row)` spans
`[col, col+1) x [row, row+1)`, and it is inside a polygon when its centre
`(col + 0.5, row + 0.5)` is inside the polygon's boundary as pycocotools traces it
(vertices rounded to 1/5 pixel, edges walked on that grid): a centre within about
0.3 px of a sloped edge may fall either way, farther ones follow the exact rule (the
tests check it beyond half a pixel). A square with corners
(0, 0) and (2, 2) covers exactly the 2x2 top-left pixels, and one with corners
(0.5, 0.5) and (2.5, 2.5) covers pixels 1 and 2 in each direction: a centre exactly on
a left or top edge is outside, on a right or bottom edge inside. Self-intersecting
rings follow the even-odd rule. Several parts are painted as their union; a hole
removes the pixels its own ring covers. Parts outside the image are clipped.

The rasterization itself is pycocotools' C code (polygon -> RLE -> mask); this module
adds what pycocotools lacks: holes, the union of parts, RLE checks, and the class-index
composition with its overlap policy. It also guards pycocotools' C code against input it
does not check: a ring reaching more than one image size beyond the image is first clipped
to that window (which keeps its even-odd interior there exactly), and RLE counts must add
up to the mask's size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt
from pycocotools import mask as coco_mask

from converter.core.masks import MAX_MASK_CLASS_ID
from converter.core.sample import ObjectAnnotation, Polygon, RleMask
from converter.errors import SampleError

BoolMask = npt.NDArray[np.bool_]
OverlapPolicy = Literal["order", "priority", "combine"]
COMBINATION_SEPARATOR = "+"
_MIN_RING_COORDINATES = 6  # three vertices; pycocotools reads a 4-number list as a box, not a polygon


def _clip_to_half_plane(
    points: list[tuple[float, float]], axis: int, bound: float, keep_below: bool
) -> list[tuple[float, float]]:
    """One Sutherland-Hodgman step: the ring cut at `point[axis] == bound`.

    For a point strictly inside the half-plane, a ray parallel to the cut crosses the
    result exactly as often as the original ring, so its even-odd interior there is kept,
    even for self-intersecting rings; the new edges run along the cut itself.
    """
    clipped: list[tuple[float, float]] = []
    for index, current in enumerate(points):
        previous = points[index - 1]
        current_inside = current[axis] <= bound if keep_below else current[axis] >= bound
        previous_inside = previous[axis] <= bound if keep_below else previous[axis] >= bound
        if current_inside != previous_inside:
            crossing = [bound, bound]
            crossing[1 - axis] = _crossing(previous, current, axis, bound)
            clipped.append((crossing[0], crossing[1]))
        if current_inside:
            clipped.append(current)
    return clipped


def _crossing(start: tuple[float, float], end: tuple[float, float], axis: int, bound: float) -> float:
    """The other coordinate where the edge `start`-`end` meets `point[axis] == bound`.

    Computed on halves, as a weighted mean of the two ends: the difference of two finite
    coordinates may overflow (1e308 - -1e308), half of it never does, and the result stays
    between the ends, so a ring of finite vertices always gives finite ones.
    """
    other = 1 - axis
    t = (bound / 2 - start[axis] / 2) / (end[axis] / 2 - start[axis] / 2)
    value = 2 * (start[other] / 2 * (1 - t) + end[other] / 2 * t)
    return min(max(value, min(start[other], end[other])), max(start[other], end[other]))


def _within_reach(ring: tuple[float, ...], height: int, width: int) -> tuple[float, ...]:
    """The ring, clipped to a window one image size beyond each side if it reaches farther.

    pycocotools walks every edge in 1/5-pixel steps and holds coordinates in C ints: a
    vertex 1e7 pixels away costs a second and gigabytes, one at 1e9 crashes the process.
    Rings inside the window, every ordinary one, are passed on untouched, so they keep
    pycocotools' exact result. A clipped ring keeps the convention, but a centre within
    about 0.3 px of one of its edges may fall otherwise than pycocotools would decide for
    the unclipped ring: its vertices, rounded to 1/5 pixel, differ.
    """
    margin = max(height, width)
    xs, ys = ring[0::2], ring[1::2]
    if min(xs) >= -margin and max(xs) <= width + margin and min(ys) >= -margin and max(ys) <= height + margin:
        return ring
    points = list(zip(xs, ys, strict=True))
    for axis, bound, keep_below in (
        (0, -margin, False),
        (0, width + margin, True),
        (1, -margin, False),
        (1, height + margin, True),
    ):
        points = _clip_to_half_plane(points, axis, bound, keep_below)
    return tuple(coordinate for point in points for coordinate in point)


@dataclass(frozen=True)
class Coverage:
    """The pixels a shape covers, kept as the window around the shape that holds them.

    An object covers a small part of its image; rasterizing, painting and measuring only
    its window instead of the whole frame is what makes masks cheap. `pixels` is the
    window's mask (column-major, as pycocotools decodes it); `top` and `left` place it.
    """

    top: int
    left: int
    pixels: BoolMask
    height: int  # of the whole image
    width: int

    @classmethod
    def whole(cls, mask: BoolMask) -> Coverage:
        """A whole-image mask as a coverage."""
        return cls(0, 0, mask, mask.shape[0], mask.shape[1])

    @property
    def region(self) -> tuple[slice, slice]:
        """The window's rows and columns in the image."""
        rows, columns = self.pixels.shape
        return slice(self.top, self.top + rows), slice(self.left, self.left + columns)

    def full(self) -> BoolMask:
        """The whole-image mask."""
        mask = np.zeros((self.height, self.width), dtype=bool)
        mask[self.region] = self.pixels
        return mask

    def rle_counts(self) -> str:
        """The covered pixels as COCO's compressed RLE counts (column-major, whole image), as
        pycocotools' `encode(full())` gives them.

        Only the window's columns are scanned: the columns left and right of it are whole
        runs of background, added to the first and last runs. Encoding the whole frame cost
        twice the rasterizing of a typical polygon.
        """
        rows, columns = self.pixels.shape
        band = np.zeros((self.height, columns), dtype=np.uint8, order="F")
        band[self.top : self.top + rows, :] = self.pixels
        flat = band.ravel(order="F")
        edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
        runs: list[int] = np.diff(np.concatenate(([0], edges, [flat.size]))).tolist() if flat.size else [0]
        if flat.size and flat[0]:
            runs.insert(0, 0)  # COCO's runs start with background
        runs[0] += self.left * self.height
        trailing = (self.width - self.left - columns) * self.height
        if len(runs) % 2:  # the last run is background
            runs[-1] += trailing
        elif trailing:
            runs.append(trailing)
        encoded = coco_mask.frPyObjects({"size": [self.height, self.width], "counts": runs}, self.height, self.width)
        counts: bytes = encoded["counts"]
        return counts.decode("ascii")


Window = tuple[int, int, int, int]  # top, bottom, left, right: rows [top, bottom), columns [left, right)


def _window(rings: Sequence[tuple[float, ...]], height: int, width: int) -> Window:
    """Rows and columns that can hold a pixel of the rings, one pixel of slack on each side, inside the image."""
    xs = [x for ring in rings for x in ring[0::2]]
    ys = [y for ring in rings for y in ring[1::2]]
    return (
        min(max(math.floor(min(ys)) - 1, 0), height),
        min(max(math.ceil(max(ys)) + 2, 0), height),
        min(max(math.floor(min(xs)) - 1, 0), width),
        min(max(math.ceil(max(xs)) + 2, 0), width),
    )


def _usable(rings: Sequence[tuple[float, ...]], height: int, width: int) -> list[tuple[float, ...]]:
    reachable = [_within_reach(ring, height, width) for ring in rings if len(ring) >= _MIN_RING_COORDINATES]
    return [ring for ring in reachable if len(ring) >= _MIN_RING_COORDINATES]


def _rings_in_window(rings: Sequence[tuple[float, ...]], window: Window) -> BoolMask:
    """Union of the rings' interiors inside `window` (rings already made usable).

    The rings are rasterized, unshifted, into the image cut at the window's bottom and
    right edges; the window is then a view of that. Shifting the rings to the window's
    corner would be cheaper still, but not exact: pycocotools walks edges in floating
    point, and `ys + s * t + 0.5` rounds differently at other magnitudes (a centre 0.05 px
    from an edge flipped in 3 of 4,500 bench polygons). Cutting the image short changes
    only where pycocotools clips, and it clips nothing the window does not already exclude.
    """
    top, bottom, left, right = window
    if not rings or bottom <= top or right <= left:
        return np.zeros((max(bottom - top, 0), max(right - left, 0)), dtype=bool, order="F")
    rle = coco_mask.merge(coco_mask.frPyObjects([list(ring) for ring in rings], bottom, right))
    cut: BoolMask = coco_mask.decode(rle).view(bool)
    return cut[top:, left:]


def polygon_coverage(polygons: Sequence[Polygon], height: int, width: int) -> Coverage:
    """The pixels covered by the union of `polygons`, each minus its holes, in one window."""
    exteriors = [_usable([polygon.exterior], height, width) for polygon in polygons]
    every_ring = [ring for rings in exteriors for ring in rings]
    if not every_ring:
        return Coverage(0, 0, np.zeros((0, 0), dtype=bool), height, width)
    window = _window(every_ring, height, width)
    if all(not polygon.holes for polygon in polygons):
        pixels = _rings_in_window(every_ring, window)
    else:
        pixels = _rings_in_window([], window)
        for polygon, rings in zip(polygons, exteriors, strict=True):
            part = _rings_in_window(rings, window)
            if polygon.holes:
                part &= ~_rings_in_window(_usable(polygon.holes, height, width), window)
            pixels |= part
    return Coverage(window[0], window[2], pixels, height, width)


def polygon_mask(polygons: Sequence[Polygon], height: int, width: int) -> BoolMask:
    """`polygon_coverage` as a whole-image mask."""
    return polygon_coverage(polygons, height, width).full()


def rle_mask(rle: RleMask, height: int, width: int) -> BoolMask:
    """Decode a COCO RLE; its size must be the image's displayed size."""
    if (rle.height, rle.width) != (height, width):
        raise SampleError(
            "mask_size_mismatch", f"RLE mask is {rle.width}x{rle.height} but the image displays as {width}x{height}"
        )
    # pycocotools decodes runs without checking them: runs short of the mask leave
    # uninitialised memory in it, longer ones write past its end.
    counts = _compressed_counts(rle.counts) if isinstance(rle.counts, str) else list(rle.counts)
    if any(count < 0 for count in counts):
        raise SampleError("malformed_annotation", "RLE counts include a negative run length")
    if sum(counts) != height * width:
        raise SampleError(
            "malformed_annotation",
            f"RLE counts add up to {sum(counts)} pixels, not {height}x{width} = {height * width}",
        )
    encoded = coco_mask.frPyObjects({"size": [height, width], "counts": counts}, height, width)
    return coco_mask.decode(encoded).view(bool)  # type: ignore[no-any-return]


def _compressed_counts(text: str) -> list[int]:
    """The run lengths of COCO's compressed RLE string (pycocotools' `rleFrString`, in Python).

    Each run is a little-endian sequence of 5-bit chunks written as characters from "0"
    (48); 0x20 marks a continued number, 0x10 in the last chunk the sign. From the fourth
    run on, the string holds the difference from the run two places back.
    """
    counts: list[int] = []
    position = 0
    while position < len(text):
        value, shift, more = 0, 0, True
        while more:
            if position == len(text):
                raise SampleError("malformed_annotation", "compressed RLE counts end in the middle of a number")
            chunk = ord(text[position]) - 48
            if not 0 <= chunk < 64:
                raise SampleError(
                    "malformed_annotation", f"character {text[position]!r} cannot appear in compressed RLE counts"
                )
            value |= (chunk & 0x1F) << shift
            more = bool(chunk & 0x20)
            position += 1
            shift += 5
            if not more and chunk & 0x10:
                value |= -1 << shift
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts


def object_coverage(obj: ObjectAnnotation, height: int, width: int) -> Coverage:
    """The pixels an object covers: its shape, or, for a plain box, the box's pixels."""
    if obj.rle is not None:
        covered = rle_mask(obj.rle, height, width)
        return Coverage.whole(covered | polygon_mask(obj.polygons, height, width) if obj.polygons else covered)
    if obj.polygons:
        return polygon_coverage(obj.polygons, height, width)
    if obj.bbox_xyxy is None:
        raise ValueError(f"object {obj.class_name!r} has neither a box nor a shape")
    x_min, y_min, x_max, y_max = obj.bbox_xyxy
    return polygon_coverage([Polygon((x_min, y_min, x_max, y_min, x_max, y_max, x_min, y_max))], height, width)


def mask_bbox(covered: Coverage) -> tuple[float, float, float, float] | None:
    """`(x_min, y_min, x_max, y_max)` of the covered pixels (pixel edges), or None if empty."""
    columns = np.flatnonzero(covered.pixels.any(axis=0))
    rows = np.flatnonzero(covered.pixels.any(axis=1))
    if not columns.size:
        return None
    left, top = covered.left, covered.top
    return float(left + columns[0]), float(top + rows[0]), float(left + columns[-1] + 1), float(top + rows[-1] + 1)


@dataclass
class CombinationClasses:
    """Classes named after the overlap of others (`Canvas+Obstruction`), numbered as first met.

    Under `--overlap combine` a pixel covered by several classes gets the class made of
    all of them; its id follows the base classes, in the order the combinations are
    first met, which is the record order and therefore deterministic.
    """

    base_names: tuple[str, ...]
    combinations: dict[frozenset[int], int] = field(default_factory=dict)
    names: list[str] = field(default_factory=list)

    def id_of(self, base_ids: frozenset[int]) -> int:
        if len(base_ids) == 1:
            return next(iter(base_ids))
        if base_ids not in self.combinations:
            new_id = len(self.base_names) + len(self.names) + 1
            if new_id > MAX_MASK_CLASS_ID:
                raise SampleError(
                    "too_many_classes", f"overlap combinations push the class count past {MAX_MASK_CLASS_ID}"
                )
            self.combinations[base_ids] = new_id
            self.names.append(COMBINATION_SEPARATOR.join(self.base_names[index - 1] for index in sorted(base_ids)))
        return self.combinations[base_ids]

    def components(self) -> dict[str, list[str]]:
        """Combination name -> the classes it combines, for dataset_info.yaml."""
        return {
            self.names[combination_id - len(self.base_names) - 1]: [self.base_names[i - 1] for i in sorted(ids)]
            for ids, combination_id in self.combinations.items()
        }


def compose_class_mask(
    layers: Sequence[tuple[int, Coverage]],
    height: int,
    width: int,
    policy: OverlapPolicy,
    priority: Sequence[int] = (),
    combinations: CombinationClasses | None = None,
    base: npt.NDArray[np.uint8] | None = None,
) -> npt.NDArray[np.uint8]:
    """Paint `(class_id, pixels)` layers, in annotation order, into one class-index mask.

    `order`: later layers paint over earlier ones. `priority`: layers of classes earlier
    in `priority` win; classes not listed rank below all listed ones, then by order.
    `combine`: a pixel covered by several classes gets their combination class.
    `base` is a mask to paint over (a mask file's classes), taken as the first layer.
    """
    if not layers and base is not None:
        return base  # nothing to paint: the mask file's classes as they are
    # Row-major, as PNG encoders want it; each layer touches only its window.
    canvas = np.zeros((height, width), dtype=np.uint8) if base is None else np.array(base, order="C")
    if policy == "combine":
        if combinations is None:
            raise ValueError("the combine policy needs a CombinationClasses registry")
        return _combine(canvas, layers, combinations)
    ordered = list(layers)
    if policy == "priority":
        rank = {class_id: position for position, class_id in enumerate(priority)}
        ordered.sort(key=lambda layer: -rank.get(layer[0], len(rank)))  # stable: ties keep annotation order
    for class_id, covered in ordered:
        canvas[covered.region][covered.pixels] = class_id
    return canvas


def _combine(
    canvas: npt.NDArray[np.uint8], layers: Sequence[tuple[int, Coverage]], combinations: CombinationClasses
) -> npt.NDArray[np.uint8]:
    members = {0: frozenset[int]()}
    members.update({int(value): _members_of(int(value), combinations) for value in np.unique(canvas) if value})
    for class_id, coverage in layers:
        window, covered = canvas[coverage.region], coverage.pixels
        under = window[covered]
        remapped = np.empty_like(under)
        for value in np.unique(under):
            combined = members[int(value)] | {class_id}
            new_value = combinations.id_of(combined)
            members.setdefault(new_value, combined)
            remapped[under == value] = new_value
        window[covered] = remapped
    return canvas


def _members_of(class_id: int, combinations: CombinationClasses) -> frozenset[int]:
    for ids, combination_id in combinations.combinations.items():
        if combination_id == class_id:
            return ids
    return frozenset({class_id})

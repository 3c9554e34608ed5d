"""The plots of `stats/`: PNG files drawn from the stats.json document with Pillow.

Every conversion draws them, so they must cost next to nothing: matplotlib took 2.2 s
(its import and layout engine) for five small charts, more than a whole 2,000-image
detection conversion, and 50 MB in the container image. These charts are simple (bars,
step lines, a scatter), so Pillow, already a dependency, draws them in milliseconds.
They are reproducible: the same document gives the same bytes (no timestamp, Pillow's
built-in font, no PNG text chunks).

Histograms show each split's share of its own total rather than raw counts, so a small
validation split can be compared with a large training split; the counts are in the tables.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

CLASSES_PLOT = "classes.png"
BOX_AREA_PLOT = "box_area.png"
BOX_ASPECT_PLOT = "box_aspect.png"
IMAGE_SIZES_PLOT = "image_sizes.png"
OBJECTS_PER_IMAGE_PLOT = "objects_per_image.png"

MAX_PLOTTED_CLASSES = 40
"""Classes beyond this many are left out of the class plot (those with fewest objects): bars stay readable."""

WIDTH, HEIGHT = 1000, 400
_MARGIN_LEFT, _MARGIN_RIGHT, _MARGIN_TOP, _MARGIN_BOTTOM = 70, 190, 34, 50
_COCO_SMALL, _COCO_LARGE = 32**2, 96**2  # COCO's small / medium / large box area thresholds, in pixels
_SPLIT_COLORS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189))
_INK, _GRID, _GUIDE = (34, 34, 34), (226, 226, 226), (128, 128, 128)
_TICKS = 5


def write_plots(folder: Path, document: Mapping[str, Any]) -> list[str]:
    """Write every plot of the document into `folder`; returns the file names written, always the same ones.

    A plot with nothing to show (no boxes, say) is still written, saying so: a dataset's
    `stats/` then has the same files whatever it holds, and a stale plot from an earlier
    run is always replaced.
    """
    drawers: tuple[tuple[str, Callable[[Mapping[str, Any]], Image.Image]], ...] = (
        (CLASSES_PLOT, _classes_plot),
        (BOX_AREA_PLOT, _box_area_plot),
        (BOX_ASPECT_PLOT, _box_aspect_plot),
        (IMAGE_SIZES_PLOT, _image_sizes_plot),
        (OBJECTS_PER_IMAGE_PLOT, _objects_per_image_plot),
    )
    for name, draw in drawers:
        buffer = io.BytesIO()
        draw(document).save(buffer, format="PNG")
        (folder / name).write_bytes(buffer.getvalue())
    return [name for name, _ in drawers]


def _font(size: int = 13) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _splits(document: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    return list((document.get("splits") or {}).items())


def _split_color(index: int) -> tuple[int, int, int]:
    return _SPLIT_COLORS[index % len(_SPLIT_COLORS)]


def _shortened(name: str, limit: int = 24) -> str:
    """A class name short enough for an axis label (the tables carry it whole)."""
    return name if len(name) <= limit else name[: limit - 1] + "…"


def _number(value: float) -> str:
    """An axis label: whole numbers plainly, powers of ten as 10^n, others with two significant digits."""
    if value >= 10_000 and math.log10(value).is_integer():
        return f"1e{int(math.log10(value))}"
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:.2g}"


@dataclass
class _Chart:
    """One plot area in an image: maps data to pixels, draws axes, ticks, a title and a legend."""

    draw: ImageDraw.ImageDraw
    left: int
    top: int
    right: int
    bottom: int
    x_range: tuple[float, float]
    y_range: tuple[float, float]
    log_x: bool = False

    def x(self, value: float) -> float:
        low, high = self.x_range
        if self.log_x:
            value, low, high = math.log(max(value, 1e-12)), math.log(low), math.log(high)
        return self.left + (value - low) / ((high - low) or 1) * (self.right - self.left)

    def y(self, value: float) -> float:
        low, high = self.y_range
        return self.bottom - (value - low) / ((high - low) or 1) * (self.bottom - self.top)

    def frame(self, title: str, x_label: str, y_label: str, x_ticks: Sequence[float]) -> None:
        font, small = _font(15), _font(12)
        step = (self.y_range[1] - self.y_range[0]) / _TICKS
        for index in range(_TICKS + 1):
            value = self.y_range[0] + (self.y_range[1] - self.y_range[0]) * index / _TICKS
            y = self.y(value)
            self.draw.line([(self.left, y), (self.right, y)], fill=_GRID)
            self.draw.text((self.left - 6, y), _tick_text(value, step), fill=_INK, font=small, anchor="rm")
        for value in x_ticks:
            x = self.x(value)
            self.draw.line([(x, self.bottom), (x, self.bottom + 4)], fill=_INK)
            self.draw.text((x, self.bottom + 6), _number(value), fill=_INK, font=small, anchor="ma")
        self.draw.rectangle([self.left, self.top, self.right, self.bottom], outline=_INK)
        self.draw.text(((self.left + self.right) / 2, 8), title, fill=_INK, font=font, anchor="ma")
        self.draw.text(((self.left + self.right) / 2, self.bottom + 26), x_label, fill=_INK, font=small, anchor="ma")
        self.draw.text((max(4, self.left - 62), self.top - 22), y_label, fill=_INK, font=small)

    def legend(self, entries: Sequence[tuple[str, tuple[int, int, int]]]) -> None:
        small = _font(12)
        for index, (label, color) in enumerate(entries):
            y = self.top + 8 + 18 * index
            self.draw.rectangle([self.right + 14, y, self.right + 26, y + 10], fill=color)
            self.draw.text((self.right + 32, y + 5), label, fill=_INK, font=small, anchor="lm")


def _canvas() -> tuple[Image.Image, ImageDraw.ImageDraw]:
    image = Image.new("RGB", (WIDTH, HEIGHT), "white")
    return image, ImageDraw.Draw(image)


def _nothing(image: Image.Image, draw: ImageDraw.ImageDraw, title: str, text: str) -> Image.Image:
    draw.text((WIDTH / 2, 8), title, fill=_INK, font=_font(15), anchor="ma")
    draw.text((WIDTH / 2, HEIGHT / 2), text, fill=_GUIDE, font=_font(15), anchor="mm")
    return image


def _classes_plot(document: Mapping[str, Any]) -> Image.Image:
    """Images and objects per class, splits side by side: the classes with most objects first."""
    image, draw = _canvas()
    splits = _splits(document)
    names = [str(name) for name in document.get("classes", [])]
    totals = {name: sum(int(split["classes"].get(name, {}).get("objects", 0)) for _, split in splits) for name in names}
    shown = sorted(names, key=lambda name: (-totals[name], names.index(name)))[:MAX_PLOTTED_CLASSES]
    if not shown or not splits:
        return _nothing(image, draw, "images and objects per class", "no classes")
    half = (WIDTH - _MARGIN_RIGHT) // 2
    for panel, field in enumerate(("images", "objects")):
        counts = [[int(split["classes"].get(name, {}).get(field, 0)) for name in shown] for _, split in splits]
        top = max(1, max(max(row) for row in counts))
        chart = _Chart(
            draw, 60 + panel * half, _MARGIN_TOP, (panel + 1) * half - 10, HEIGHT - 80, (0, len(shown)), (0, top)
        )
        chart.frame(f"{field} per class", "", field, [])
        slot = (chart.right - chart.left) / len(shown)
        bar = slot * 0.8 / len(splits)
        for split_index, row in enumerate(counts):
            for class_index, count in enumerate(row):
                x = chart.left + slot * class_index + slot * 0.1 + bar * split_index
                draw.rectangle([x, chart.y(count), x + max(bar - 1, 1), chart.bottom], fill=_split_color(split_index))
        small = _font(11)
        for class_index, name in enumerate(shown):
            x = chart.left + slot * (class_index + 0.5)
            label = Image.new("RGBA", (70, 14), (255, 255, 255, 0))
            ImageDraw.Draw(label).text((70, 7), _shortened(name, 12), fill=_INK, font=small, anchor="rm")
            rotated = label.rotate(45, expand=True)
            image.paste(rotated, (round(x - rotated.width + 6), chart.bottom + 2), rotated)
    _Chart(draw, 0, _MARGIN_TOP, WIDTH - _MARGIN_RIGHT, HEIGHT, (0, 1), (0, 1)).legend(
        [(name, _split_color(index)) for index, (name, _) in enumerate(splits)]
        + ([(f"top {len(shown)} of {len(names)} classes", _GUIDE)] if len(shown) < len(names) else [])
    )
    return image


def _histogram_plot(
    document: Mapping[str, Any],
    field: str,
    title: str,
    x_label: str,
    *,
    log_x: bool,
    empty: str,
    guides: Sequence[float] = (),
    x_max: float | None = None,
) -> Image.Image:
    """One split-coloured step line per split: the share of the split's values in each bin.

    Values outside the edges (`below`, `above`) count in the total and are named in the
    legend, so the shares are of everything, and nothing off the axis goes unmentioned.
    """
    image, draw = _canvas()
    lines = []
    for index, (split_name, split) in enumerate(_splits(document)):
        histogram = split.get(field) or {}
        edges: Sequence[float] = histogram.get("edges", [])
        counts: Sequence[int] = histogram.get("counts", [])
        below, above = int(histogram.get("below", 0)), int(histogram.get("above", 0))
        total = sum(counts) + below + above
        if total == 0 or len(edges) != len(counts) + 1 or not counts:
            continue
        outside = [f"{count:,} {side} the axis" for count, side in ((below, "below"), (above, "above")) if count]
        label = ", ".join([f"{split_name} ({total:,})", *outside])
        lines.append((label, _split_color(index), edges, [count / total for count in counts]))
    if not lines:
        return _nothing(image, draw, title, empty)
    edges = lines[0][2]
    low = edges[0] if not log_x else max(edges[0], edges[1] / 2)
    high = x_max if x_max is not None else edges[-1]
    top = max(max(shares) for _, _, _, shares in lines)
    chart = _Chart(
        draw, _MARGIN_LEFT, _MARGIN_TOP, WIDTH - _MARGIN_RIGHT, HEIGHT - _MARGIN_BOTTOM, (low, high), (0, top), log_x
    )
    ticks = _log_ticks(low, high) if log_x else _linear_ticks(low, high)
    chart.frame(title, x_label, "share of the split", ticks)
    for value in guides:
        x = chart.x(value)
        draw.line([(x, chart.top), (x, chart.bottom)], fill=_GUIDE, width=1)
    for _, color, split_edges, shares in lines:
        points = []
        for left, right, share in zip(split_edges, split_edges[1:], shares, strict=False):
            if right <= low or left >= high:
                continue
            x_left, x_right = chart.x(max(left, low)), chart.x(min(right, high))
            points += [(x_left, chart.y(share)), (x_right, chart.y(share))]
        if points:
            draw.line([(points[0][0], chart.bottom), *points, (points[-1][0], chart.bottom)], fill=color, width=2)
    chart.legend([(label, color) for label, color, _, _ in lines])
    return image


def _tick_text(value: float, step: float) -> str:
    """A tick label with as many decimals as the spacing of the ticks needs (0.13, 240.5, 12)."""
    decimals = max(0, 1 - math.floor(math.log10(step))) if step > 0 else 0
    text = f"{value:,.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _log_ticks(low: float, high: float) -> list[float]:
    first, last = math.ceil(math.log10(low)), math.floor(math.log10(high))
    step = max(1, (last - first) // 8)
    return [10.0**power for power in range(first, last + 1, step)]


def _linear_ticks(low: float, high: float) -> list[float]:
    step = max(1, math.ceil((high - low) / 10))
    return [float(value) for value in range(math.ceil(low), math.floor(high) + 1, step)]


def _box_area_plot(document: Mapping[str, Any]) -> Image.Image:
    return _histogram_plot(
        document,
        "box_area",
        "box area (grey lines: COCO's small/medium/large limits, 32x32 and 96x96)",
        "pixels (log scale)",
        log_x=True,
        empty="no boxes",
        guides=(_COCO_SMALL, _COCO_LARGE),
    )


def _box_aspect_plot(document: Mapping[str, Any]) -> Image.Image:
    return _histogram_plot(
        document,
        "box_aspect",
        "box aspect ratio",
        "width / height (log scale)",
        log_x=True,
        empty="no boxes",
        guides=(1,),
    )


def _objects_per_image_plot(document: Mapping[str, Any]) -> Image.Image:
    return _histogram_plot(
        document,
        "objects_per_image",
        "objects per image",
        "objects",
        log_x=False,
        empty="no images",
        x_max=_last_filled_edge(document, "objects_per_image"),  # the top bins reach 1,000 objects
    )


def _last_filled_edge(document: Mapping[str, Any], field: str) -> float:
    """The upper edge of the last bin any split has values in, so the axis ends where the data does."""
    last = 1.0
    for _, split in _splits(document):
        histogram = split.get(field) or {}
        edges, counts = histogram.get("edges", []), histogram.get("counts", [])
        filled = [index for index, count in enumerate(counts) if count]
        if filled and len(edges) == len(counts) + 1:
            last = max(last, float(edges[filled[-1] + 1]))
    return last


def _image_sizes_plot(document: Mapping[str, Any]) -> Image.Image:
    """Image sizes as a scatter of width against height, a marker's area growing with its count."""
    image, draw = _canvas()
    splits = [(name, split.get("image_sizes", {}).get("sizes", [])) for name, split in _splits(document)]
    sizes = [(int(width), int(height), int(count)) for _, rows in splits for width, height, count in rows]
    if not sizes:
        return _nothing(image, draw, "image sizes", "no images")
    widths, heights = [width for width, _, _ in sizes], [height for _, height, _ in sizes]
    pad_x, pad_y = max(1, (max(widths) - min(widths)) * 0.1), max(1, (max(heights) - min(heights)) * 0.1)
    chart = _Chart(
        draw,
        _MARGIN_LEFT,
        _MARGIN_TOP,
        WIDTH - _MARGIN_RIGHT,
        HEIGHT - _MARGIN_BOTTOM,
        (min(widths) - pad_x, max(widths) + pad_x),
        (min(heights) - pad_y, max(heights) + pad_y),
    )
    chart.frame(
        "image sizes (marker area grows with the number of images)",
        "width (pixels)",
        "height (pixels)",
        _linear_ticks(*chart.x_range) if chart.x_range[1] - chart.x_range[0] <= 20 else _spread(chart.x_range),
    )
    largest = max(count for _, _, count in sizes)
    for index, (_, rows) in enumerate(splits):
        for width, height, count in rows:
            radius = 3 + 12 * math.sqrt(count / largest)
            x, y = chart.x(width), chart.y(height)
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], outline=_split_color(index), width=2)
    chart.legend([(name, _split_color(index)) for index, (name, _) in enumerate(splits)])
    return image


def _spread(value_range: tuple[float, float]) -> list[float]:
    """About six round ticks across a range."""
    low, high = value_range
    step = 10 ** math.floor(math.log10((high - low) / 6))
    step *= 5 if (high - low) / step > 30 else 2 if (high - low) / step > 12 else 1
    return [float(value) for value in range(math.ceil(low / step) * int(step), int(high) + 1, int(step))]

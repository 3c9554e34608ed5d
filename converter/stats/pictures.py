"""The plots of `stats/`: PNG files drawn from the stats.json document.

matplotlib is imported inside the functions, so that importing the converter (every CLI
call) does not pay for it; figures are drawn on the Agg canvas directly, never through
pyplot, so no global backend is switched and nothing needs a display. Plots are
reproducible: the same document gives the same bytes (matplotlib's defaults rather than a
user's matplotlibrc, a fixed size and dpi, no Software stamp in the PNG).

Histograms show each split's share of its own total rather than raw counts, so a small
validation split can be compared with a large training split; the counts are in the tables.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

CLASSES_PLOT = "classes.png"
BOX_AREA_PLOT = "box_area.png"
BOX_ASPECT_PLOT = "box_aspect.png"
IMAGE_SIZES_PLOT = "image_sizes.png"
OBJECTS_PER_IMAGE_PLOT = "objects_per_image.png"

DPI = 100
MAX_PLOTTED_CLASSES = 40
"""Classes beyond this many are left out of the class plot (those with fewest objects): bars stay readable."""

_WIDE = (10.0, 4.0)  # figure size in inches (at DPI: 1000 x 400 pixels)
_COCO_SMALL, _COCO_LARGE = 32**2, 96**2  # COCO's small / medium / large box area thresholds, in pixels


def write_plots(folder: Path, document: Mapping[str, Any]) -> list[str]:
    """Write every plot of the document into `folder`; returns the file names written: always the same ones,
    or none where matplotlib (the `plots` extra) is not installed.

    A plot with nothing to show (no boxes, say) is still written, saying so: a dataset's
    `stats/` then has the same files whatever it holds, and a stale plot from an earlier
    run is always replaced.
    """
    drawers: tuple[tuple[str, Callable[[Mapping[str, Any]], Figure]], ...] = (
        (CLASSES_PLOT, _classes_figure),
        (BOX_AREA_PLOT, _box_area_figure),
        (BOX_ASPECT_PLOT, _box_aspect_figure),
        (IMAGE_SIZES_PLOT, _image_sizes_figure),
        (OBJECTS_PER_IMAGE_PLOT, _objects_per_image_figure),
    )
    try:
        import matplotlib
    except ImportError:  # the plots extra is not installed (the small image): the page says so
        return []
    written: list[str] = []
    with matplotlib.rc_context(), warnings.catch_warnings():
        matplotlib.rcdefaults()  # a user's matplotlibrc must not change the bytes
        # a class name in a script the default font lacks draws as boxes; the tables show it, so no warning per glyph
        warnings.filterwarnings("ignore", message="Glyph .* missing from font", category=UserWarning)
        for name, draw in drawers:
            (folder / name).write_bytes(_png(draw(document)))
            written.append(name)
    return written


def _png(figure: Figure) -> bytes:
    """The figure as PNG bytes with no Software stamp (Agg writes no date), so equal figures give equal bytes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def _figure(size: tuple[float, float], columns: int = 1) -> tuple[Figure, list[Axes]]:
    from matplotlib.figure import Figure

    figure = Figure(figsize=size, dpi=DPI, layout="constrained")
    axes = figure.subplots(1, columns, squeeze=False)[0]
    return figure, list(axes)


def _splits(document: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    return list(document.get("splits", {}).items())


def _split_color(index: int) -> str:
    """The colour of the `index`-th split, the same in every plot."""
    return f"C{index % 10}"


def _nothing(axes: Axes, text: str) -> None:
    axes.text(0.5, 0.5, text, ha="center", va="center", transform=axes.transAxes, color="0.4")
    axes.set_xticks([])
    axes.set_yticks([])


def _classes_figure(document: Mapping[str, Any]) -> Figure:
    """Images and objects per class, one bar per split, side by side; the most frequent classes if there are many."""
    from matplotlib.ticker import MaxNLocator

    names: list[str] = [str(name) for name in document.get("classes", [])]
    splits = _splits(document)

    def count(name: str, field: str) -> list[int]:
        return [int(split.get("classes", {}).get(name, {}).get(field, 0)) for _, split in splits]

    shown = names
    if len(names) > MAX_PLOTTED_CLASSES:
        ranked = sorted(range(len(names)), key=lambda index: (-sum(count(names[index], "objects")), index))
        shown = [names[index] for index in sorted(ranked[:MAX_PLOTTED_CLASSES])]
    height = max(3.0, 1.2 + 0.22 * max(1, len(shown)) * max(1, len(splits)) ** 0.5)
    figure, (images_axes, objects_axes) = _figure((_WIDE[0], height), columns=2)
    if not shown or not splits:
        _nothing(images_axes, "no classes")
        _nothing(objects_axes, "no classes")
        return figure
    bar = 0.8 / len(splits)
    positions = range(len(shown))
    for axes, field, title in (
        (images_axes, "images", "images per class"),
        (objects_axes, "objects", "objects per class"),
    ):
        for index, (split_name, _split) in enumerate(splits):
            offsets = [position - 0.4 + bar * (index + 0.5) for position in positions]
            values = [count(name, field)[index] for name in shown]
            axes.barh(offsets, values, height=bar, color=_split_color(index), label=_plain(split_name))
        labels = [_shortened(name) for name in shown] if axes is images_axes else [""] * len(shown)
        axes.set_yticks(list(positions), labels, fontsize=8)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.invert_yaxis()  # the first class at the top, as in the tables
        axes.set_title(title)
        axes.grid(axis="x", alpha=0.3)
    objects_axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # beside the bars, never on them
    if len(shown) < len(names):
        figure.suptitle(f"the {len(shown)} classes with most objects, of {len(names)}", fontsize=9)
    return figure


def _histogram_figure(
    document: Mapping[str, Any], field: str, title: str, x_label: str, *, log_x: bool, empty: str
) -> tuple[Figure, Axes, bool]:
    """One split-coloured step line per split: the share of the split's values in each bin.

    Values outside the edges (`below`, `above`) count in the total and are named in the
    legend, so the shares are of everything, and nothing off the axis goes unmentioned.
    Returns the figure, its axes and whether anything was drawn.
    """
    figure, (axes,) = _figure(_WIDE)
    drawn = False
    for index, (split_name, split) in enumerate(_splits(document)):
        histogram = split.get(field) or {}
        edges: Sequence[float] = histogram.get("edges", [])
        counts: Sequence[int] = histogram.get("counts", [])
        below, above = int(histogram.get("below", 0)), int(histogram.get("above", 0))
        total = sum(counts) + below + above
        if total == 0 or len(edges) != len(counts) + 1 or not counts:
            continue
        outside = [f"{count:,} {side} the axis" for count, side in ((below, "below"), (above, "above")) if count]
        label = ", ".join([f"{_plain(split_name)} ({total:,})", *outside])
        axes.stairs([value / total for value in counts], edges, color=_split_color(index), label=label, linewidth=1.5)
        drawn = True
    if not drawn:
        _nothing(axes, empty)
        return figure, axes, False
    if log_x:
        axes.set_xscale("log")
    axes.set_title(title)
    axes.set_xlabel(x_label)
    axes.set_ylabel("share of the split")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    return figure, axes, True


def _plain(text: str) -> str:
    """User text (a class or split name) as matplotlib shows it literally: `$` would start a formula.

    Escaping the dollar, rather than switching mathtext off, keeps the axes' own `10^n` labels.
    """
    return text.replace("$", r"\$")


def _shortened(name: str, limit: int = 32) -> str:
    """A class name short enough for an axis label (the tables carry it whole)."""
    return _plain(name if len(name) <= limit else name[: limit - 1] + "…")


def _box_area_figure(document: Mapping[str, Any]) -> Figure:
    figure, axes, drawn = _histogram_figure(
        document, "box_area", "box area", "pixels (log scale)", log_x=True, empty="no boxes"
    )
    if drawn:
        for threshold, name in ((_COCO_SMALL, "32²"), (_COCO_LARGE, "96²")):
            axes.axvline(threshold, color="0.5", linestyle="--", linewidth=1)
            axes.annotate(name, (threshold, 1), xycoords=("data", "axes fraction"), fontsize=8, va="bottom")
    return figure


def _box_aspect_figure(document: Mapping[str, Any]) -> Figure:
    figure, axes, drawn = _histogram_figure(
        document, "box_aspect", "box aspect ratio", "width / height (log scale)", log_x=True, empty="no boxes"
    )
    if drawn:
        axes.axvline(1, color="0.5", linestyle="--", linewidth=1)
    return figure


def _objects_per_image_figure(document: Mapping[str, Any]) -> Figure:
    from matplotlib.ticker import MaxNLocator

    figure, axes, drawn = _histogram_figure(
        document, "objects_per_image", "objects per image", "objects", log_x=False, empty="no images"
    )
    if drawn:
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_xlim(0, _last_filled_edge(document, "objects_per_image"))  # the top bins reach 1,000 objects
    return figure


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


def _image_sizes_figure(document: Mapping[str, Any]) -> Figure:
    """Image sizes as a scatter of width against height, a marker's area growing with its count."""
    figure, (axes,) = _figure(_WIDE)
    splits = _splits(document)
    largest = max(
        (int(size[2]) for _, split in splits for size in split.get("image_sizes", {}).get("sizes", [])), default=0
    )
    if largest == 0:
        _nothing(axes, "no images")
        return figure
    for index, (split_name, split) in enumerate(splits):
        sizes = split.get("image_sizes", {})
        points = sizes.get("sizes", [])
        if not points:
            continue
        label = _plain(split_name)
        if sizes.get("other"):
            label += f" (and {int(sizes['other']):,} images of other sizes)"
        axes.scatter(
            [point[0] for point in points],
            [point[1] for point in points],
            s=[15 + 285 * math.sqrt(int(point[2]) / largest) for point in points],
            color=_split_color(index),
            alpha=0.55,
            label=label,
            edgecolors="none",
        )
    axes.set_title("image sizes (marker area grows with the number of images)")
    axes.set_xlabel("width (pixels)")
    axes.set_ylabel("height (pixels)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, markerscale=0.5)
    return figure

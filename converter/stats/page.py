"""`stats/index.html`: one self-contained page with a dataset's numbers, plots and previews.

The page must open anywhere, offline, from a bucket or an email attachment: every image
is inline as a `data:` URI, the CSS is inline, there is no script and no external font,
and a Content-Security-Policy forbids the page to load anything else. Keys, class names
and skip reasons are user data, so all text is HTML-escaped.

The page is reproducible (the same input gives the same bytes): no timestamp, fixed
number formats, tables in the document's order. Preview `<img>`s carry their pixel size
and are never scaled by CSS, so a thumbnail is shown pixel for pixel as drawn.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2

from converter.stats.pictures import write_plots
from converter.stats.previews import BGR, IGNORE_GREY, class_colors, draw_record
from converter.stats.records import WrittenRecord

PAGE = "index.html"
MAX_SKIPPED_ROWS = 500
"""Skipped samples listed on the page; report.json lists them all."""

JPEG_QUALITY = 85
_CONTENT_SECURITY_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
_COMMON_SIZES = 3  # image sizes named in the summary table, most frequent first

_STYLE = """
body { font-family: sans-serif; margin: 16px; color: #222; background: #fff; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 28px; } h3 { font-size: 15px; }
table { border-collapse: collapse; margin: 8px 0; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f0f0f0; } td.name, th.name, table.text td, table.text th { text-align: left; }
tr.absent td { background: #fde2e2; color: #8a1c1c; }
.plots img { display: block; margin: 8px 0; max-width: 100%; }
.legend span.item { display: inline-block; margin: 2px 12px 2px 0; font-size: 13px; }
.swatch { display: inline-block; width: 12px; height: 12px; margin-right: 4px; vertical-align: middle;
  border: 1px solid #0004; }
.grid { display: flex; flex-wrap: wrap; gap: 10px; align-items: flex-start; }
figure.preview { margin: 0; }
figure.preview img { display: block; max-width: none; }
figure.preview figcaption { font-size: 11px; max-width: 320px; overflow-wrap: anywhere; }
.note { color: #666; font-size: 13px; }
"""


def write_stats_pages(
    folder: Path,
    document: dict[str, Any],
    previews: Mapping[str, Sequence[WrittenRecord]],
    skipped: Sequence[Mapping[str, Any]],
    *,
    skipped_total: int | None = None,
) -> list[str]:
    """Write the plots and `index.html` into `folder`; returns the names written, relative to it.

    `document` is stats.json's content (written by the caller); `previews` the records to
    draw per split; `skipped` report.json's skipped entries, possibly only the first ones,
    with `skipped_total` the full count when so. Class ids in records index
    `document["classes"]` from 1, which is what ties a preview's colours to the legend.
    """
    written = write_plots(folder, document)
    plots = [(name, (folder / name).read_bytes()) for name in written]
    names = [str(name) for name in document.get("classes", [])]
    colors = class_colors(len(names))
    sections = [
        f"<h1>Dataset statistics</h1>\n{_summary_table(document)}",
        _class_tables(document, names),
        _plots_section(plots),
        _legend(names, colors),
        _previews_section(previews, colors),
        _skipped_section(skipped, skipped_total),
    ]
    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{_CONTENT_SECURITY_POLICY}">\n'
        "<title>Dataset statistics</title>\n"
        f"<style>{_STYLE}</style>\n</head>\n<body>\n" + "\n".join(sections) + "\n</body>\n</html>\n"
    )
    # a file name that is not UTF-8 reaches a skip reason as a lone surrogate: shown escaped, never a crash
    (folder / PAGE).write_bytes(page.encode("utf-8", "backslashreplace"))
    return [*written, PAGE]


def _text(value: object) -> str:
    """Any value as escaped HTML text (quotes too: the same helper fills attributes)."""
    return html.escape(str(value), quote=True)


def _number(value: Any, digits: int = 0) -> str:
    """A count or mean as shown in tables: thousands separated, `-` where the document has none."""
    if value is None:
        return "-"
    if isinstance(value, float) or digits:
        return f"{float(value):,.{digits}f}"
    return f"{int(value):,}"


def _row(cells: Sequence[str], *, header: bool = False, css: str = "") -> str:
    tag = "th" if header else "td"
    attribute = f' class="{css}"' if css else ""
    body = "".join(
        f'<{tag} class="name">{cell}</{tag}>' if index == 0 else f"<{tag}>{cell}</{tag}>"
        for index, cell in enumerate(cells)
    )
    return f"<tr{attribute}>{body}</tr>"


def _side(side: Mapping[str, Any]) -> str:
    """An image side's mean, min and max, as `mean (min-max)`."""
    return f"{_number(side.get('mean'), 1)} ({_number(side.get('min'))}-{_number(side.get('max'))})"


def _summary_table(document: Mapping[str, Any]) -> str:
    header = ["split", "images", "objects", "keypoints"]
    header += ["width mean (min-max)", "height mean (min-max)", "common sizes"]
    rows = [_row(header, header=True)]
    for split_name, split in document.get("splits", {}).items():
        sizes = split.get("image_sizes", {})
        common = sorted(sizes.get("sizes", []), key=lambda size: -int(size[2]))[:_COMMON_SIZES]
        named = ", ".join(f"{_number(w)}x{_number(h)} ({_number(count)})" for w, h, count in common)
        rows.append(
            _row(
                [
                    _text(split_name),
                    _number(split.get("images", 0)),
                    _number(split.get("objects", 0)),
                    _number(split.get("keypoints", 0)),
                    _side(split.get("image_width", {})),
                    _side(split.get("image_height", {})),
                    named or "-",
                ]
            )
        )
    return "<h2>Splits</h2>\n<table>\n" + "\n".join(rows) + "\n</table>"


def _class_tables(document: Mapping[str, Any], names: Sequence[str]) -> str:
    """One table per split, every class of the dataset in it: a class with no image in a split is marked absent."""
    header = ["class", "images", "objects", "objects / image", "mask share", "small", "medium", "large"]
    parts = ["<h2>Classes</h2>"]
    for split_name, split in document.get("splits", {}).items():
        rows = [_row(header, header=True)]
        for name in names:
            row = split.get("classes", {}).get(name, {})
            images = int(row.get("images", 0))
            buckets = row.get("box_sizes", {})
            share = row.get("mask_pixel_share")
            label = _text(name) if images else f"{_text(name)} (absent from this split)"
            cells = [
                label,
                _number(images),
                _number(row.get("objects", 0)),
                _number(row.get("objects_per_image"), 2),
                "-" if share is None else f"{100 * float(share):.2f}%",
                _number(buckets.get("small", 0)),
                _number(buckets.get("medium", 0)),
                _number(buckets.get("large", 0)),
            ]
            rows.append(_row(cells, css="" if images else "absent"))
        parts.append(f"<h3>{_text(split_name)}</h3>\n<table>\n" + "\n".join(rows) + "\n</table>")
    return "\n".join(parts)


def _data_uri(media_type: str, data: bytes) -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode('ascii')}"


def _plots_section(plots: Sequence[tuple[str, bytes]]) -> str:
    images = "\n".join(f'<img src="{_data_uri("image/png", data)}" alt="{_text(name)}">' for name, data in plots)
    return f'<h2>Plots</h2>\n<div class="plots">\n{images}\n</div>'


def _css_color(color: BGR) -> str:
    blue, green, red = color
    return f"rgb({red},{green},{blue})"


def _legend(names: Sequence[str], colors: Sequence[BGR]) -> str:
    items = [
        f'<span class="item"><span class="swatch" style="background:{_css_color(color)}"></span>{_text(name)}</span>'
        for name, color in zip(names, colors, strict=True)
    ]
    items.append(
        f'<span class="item"><span class="swatch" style="background:{_css_color(IGNORE_GREY)}"></span>'
        "ignored pixels (hatched)</span>"
    )
    return '<h2>Classes in the previews</h2>\n<div class="legend">' + "".join(items) + "</div>"


def _preview(split_name: str, index: int, record: WrittenRecord, colors: Sequence[BGR]) -> str:
    """One thumbnail (JPEG, 4:4:4 so thin coloured lines keep their colour) captioned with its key and labels."""
    thumbnail = draw_record(record, colors)
    ok, encoded = cv2.imencode(
        ".jpg",
        thumbnail,
        [
            cv2.IMWRITE_JPEG_QUALITY,
            JPEG_QUALITY,
            cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
            cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444,
        ],
    )
    if not ok:  # pragma: no cover - encoding a uint8 BGR array does not fail
        raise RuntimeError(f"cannot encode the preview of {record.key!r}")
    height, width = thumbnail.shape[:2]
    caption = _text(record.key)
    if record.image_labels:
        caption += "<br>" + _text(", ".join(name for _, name in record.image_labels))
    identifier = _text(f"preview-{split_name}-{index}")
    return (
        f'<figure class="preview"><img id="{identifier}" width="{width}" height="{height}" '
        f'src="{_data_uri("image/jpeg", encoded.tobytes())}" alt="{_text(record.key)}">'
        f"<figcaption>{caption}</figcaption></figure>"
    )


def _previews_section(previews: Mapping[str, Sequence[WrittenRecord]], colors: Sequence[BGR]) -> str:
    parts = ["<h2>Previews</h2>"]
    if not any(previews.values()):
        parts.append('<p class="note">no previews</p>')
    for split_name, records in previews.items():
        if not records:
            continue
        figures = "\n".join(_preview(split_name, index, record, colors) for index, record in enumerate(records))
        parts.append(f'<h3>{_text(split_name)}</h3>\n<div class="grid">\n{figures}\n</div>')
    return "\n".join(parts)


def _location(entry: Mapping[str, Any]) -> str:
    """Where a skipped sample came from: `file:line`, and its key where it has one."""
    place = str(entry.get("file") or "")
    if entry.get("line") is not None:
        place += f":{entry['line']}"
    if entry.get("key"):
        place += f" ({entry['key']})"
    return place


def _skipped_section(skipped: Sequence[Mapping[str, Any]], skipped_total: int | None) -> str:
    total = len(skipped) if skipped_total is None else max(skipped_total, len(skipped))
    if total == 0:
        return '<h2>Skipped samples</h2>\n<p class="note">none</p>'
    shown = skipped[:MAX_SKIPPED_ROWS]
    rows = [_row(["location", "code", "reason"], header=True)]
    rows.extend(
        _row([_text(_location(entry)), _text(entry.get("code", "")), _text(entry.get("reason", ""))]) for entry in shown
    )
    more = total - len(shown)
    note = f'\n<p class="note">and {more:,} more (report.json lists them all)</p>' if more else ""
    return f'<h2>Skipped samples ({total:,})</h2>\n<table class="text">\n' + "\n".join(rows) + "\n</table>" + note

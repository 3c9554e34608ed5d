"""Previews, plots and the stats page: drawn where the record says, reproducible, safe, and right in a browser.

The drawing tests pin pixels exactly (a box's outline on the pixels its normalized
coordinates name, a mask's tint on exactly the mask); the browser test checks that the
same pixels come out where the page shows the first preview, with no console error and no
request leaving the file.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image

from converter.core.sample import Polygon
from converter.stats.page import MAX_SKIPPED_ROWS, PAGE, write_stats_pages
from converter.stats.pictures import write_plots
from converter.stats.previews import (
    IGNORE_GREY,
    MASK_OPACITY,
    THUMBNAIL_SIDE,
    box_pixels,
    class_colors,
    draw_record,
)
from converter.stats.records import WrittenKeypoint, WrittenObject, WrittenRecord

from . import browser
from .browser import open_page

GREY = 128
WIDTH, HEIGHT = 200, 100
BOX = (0.1, 0.2, 0.5, 0.8)  # pixels: columns 20-99, rows 20-79 of a 200x100 image
HOSTILE = "<script>alert(1)</script>"
COLORS = class_colors(3)


def _png(array: NDArray[np.uint8]) -> bytes:
    ok, encoded = cv2.imencode(".png", array)
    assert ok
    return encoded.tobytes()


def _grey_image(width: int = WIDTH, height: int = HEIGHT) -> bytes:
    return _png(np.full((height, width, 3), GREY, np.uint8))


def _record(**changes: Any) -> WrittenRecord:
    fields: dict[str, Any] = {
        "key": "images/a.png",
        "width": WIDTH,
        "height": HEIGHT,
        "objects": (WrittenObject(1, "cat", BOX),),
        "image_bytes": _grey_image(),
    }
    fields.update(changes)
    return WrittenRecord(**fields)


def _histogram(edges: list[float], counts: list[int]) -> dict[str, Any]:
    return {"edges": edges, "counts": counts, "below": 0, "above": 1}


def _document(classes: list[str]) -> dict[str, Any]:
    """A stats.json document: two splits, the last class absent from validation."""
    area = _histogram([1.0, 10.0, 100.0, 1000.0, 10000.0], [0, 2, 5, 1])
    aspect = _histogram([0.25, 0.5, 1.0, 2.0, 4.0], [1, 3, 3, 1])
    per_image = _histogram([0, 1, 2, 3, 4], [1, 4, 2, 1])
    buckets = {"small": 2, "medium": 5, "large": 1}

    def split(images: int, present: list[str]) -> dict[str, Any]:
        return {
            "images": images,
            "objects": 2 * images,
            "keypoints": 0,
            "image_width": {"mean": 200.0, "min": 200, "max": 200},
            "image_height": {"mean": 100.0, "min": 100, "max": 100},
            "image_sizes": {"sizes": [[200, 100, images - 1], [640, 480, 1]], "other": 0},
            "objects_per_image": per_image,
            "box_area": area,
            "box_aspect": aspect,
            "box_sizes": buckets,
            "classes": {
                name: {
                    "images": images if name in present else 0,
                    "objects": 2 * images if name in present else 0,
                    "objects_per_image": 2.0 if name in present else 0.0,
                    "mask_pixel_share": 0.125,
                    "box_area": area,
                    "box_aspect": aspect,
                    "box_sizes": buckets,
                }
                for name in classes
            },
        }

    return {
        "format": 1,
        "classes": classes,
        "splits": {"train": split(8, classes), "validation": split(3, classes[:-1])},
    }


def _blend(base: int, color: tuple[int, int, int]) -> NDArray[np.uint8]:
    blended = np.asarray([base] * 3, np.float32) * (1 - MASK_OPACITY) + np.asarray(color, np.float32) * MASK_OPACITY
    return np.rint(blended).astype(np.uint8)


# --- class_colors ----------------------------------------------------------------------


def test_class_colors_are_distinct_and_do_not_depend_on_the_class_count() -> None:
    many = class_colors(300)
    assert len(set(many)) == 300
    assert class_colors(5) == many[:5]
    assert IGNORE_GREY not in many
    assert all(all(0 <= channel <= 255 for channel in color) for color in many)


# --- draw_record -----------------------------------------------------------------------


def test_box_outline_lies_on_exactly_the_box_border_pixels() -> None:
    drawn = draw_record(_record(), COLORS)
    assert drawn.shape == (HEIGHT, WIDTH, 3)
    assert drawn.dtype == np.uint8
    assert box_pixels(BOX, WIDTH, HEIGHT) == (20, 20, 99, 79)
    color = np.asarray(COLORS[0], np.uint8)
    grey = np.asarray([GREY] * 3, np.uint8)
    # the outermost outline pixels are the box's own border pixels, all round
    assert (drawn[20, 20:100] == color).all() and (drawn[79, 20:100] == color).all()
    assert (drawn[20:80, 20] == color).all() and (drawn[20:80, 99] == color).all()
    # and nothing outside the box is touched
    assert (drawn[19, :] == grey).all() and (drawn[80, :] == grey).all()
    assert (drawn[:, 19] == grey).all() and (drawn[:, 100] == grey).all()
    # the outline is 2 pixels thick at full size, drawn inwards; the inside stays the image
    assert (drawn[50, 21] == color).all() and (drawn[50, 22] == grey).all()
    assert (drawn[30:70, 30:90] == grey).all()


def test_class_mask_tints_exactly_its_pixels_in_each_class_colour_and_ignore_in_grey() -> None:
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    mask[10:40, 30:70] = 2
    mask[60:90, 120:180] = 255
    drawn = draw_record(_record(objects=(), class_mask_png=_png(mask)), COLORS)
    changed = (drawn != GREY).any(axis=2)
    assert (changed == (mask != 0)).all()
    assert (drawn[mask == 2] == _blend(GREY, COLORS[1])).all()
    ignored = drawn[mask == 255]
    assert {tuple(pixel) for pixel in ignored.tolist()} == {tuple(_blend(GREY, IGNORE_GREY)), (208, 208, 208)}


@pytest.mark.parametrize("foreground", [1, 255])
def test_instance_mask_tints_exactly_its_pixels_in_the_class_colour(foreground: int) -> None:
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    cv2.circle(mask, (60, 50), 20, foreground, -1)
    box = (40 / WIDTH, 30 / HEIGHT, 81 / WIDTH, 71 / HEIGHT)  # the circle's bounding box
    obj = WrittenObject(3, "bird", box, mask_png=_png(mask))
    drawn = draw_record(_record(objects=(obj,)), COLORS)
    left, top, right, bottom = box_pixels(box, WIDTH, HEIGHT)
    outline = np.zeros((HEIGHT, WIDTH), bool)
    outline[top : bottom + 1, left : right + 1] = True
    outline[top + 2 : bottom - 1, left + 2 : right - 1] = False
    changed = (drawn != GREY).any(axis=2)
    assert (changed[~outline] == (mask != 0)[~outline]).all()
    assert (drawn[(mask != 0) & ~outline] == _blend(GREY, COLORS[2])).all()
    assert (drawn[outline] == COLORS[2]).all()


def test_exif_rotated_jpeg_is_drawn_in_the_displayed_frame() -> None:
    stored = np.full((200, 100, 3), GREY, np.uint8)  # stored portrait, 100 wide and 200 tall
    stored[:40, :40] = (0, 0, 255)  # a red corner, top left as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated 90 degrees clockwise: landscape, the red corner top right
    buffer = io.BytesIO()
    Image.fromarray(stored[:, :, ::-1]).save(buffer, "JPEG", quality=95, exif=exif.tobytes())
    drawn = draw_record(_record(image_bytes=buffer.getvalue()), COLORS)
    assert drawn.shape == (HEIGHT, WIDTH, 3)
    assert np.abs(drawn[10, 190].astype(int) - (0, 0, 255)).max() < 30
    assert np.abs(drawn[90, 10].astype(int) - GREY).max() < 10
    assert (drawn[20, 20:100] == COLORS[0]).all()  # the box in the displayed frame, not the stored one


@pytest.mark.parametrize("data", [b"not an image", _grey_image()[:200], None], ids=["garbage", "truncated", "none"])
def test_an_undecodable_image_gives_a_placeholder(data: bytes | None) -> None:
    drawn = draw_record(_record(image_bytes=data, image_labels=((2, "night"),)), COLORS)
    assert drawn.dtype == np.uint8
    assert drawn.shape[1] == THUMBNAIL_SIDE  # the record's 2:1 at thumbnail size, and the caption band below
    assert drawn.shape[0] > THUMBNAIL_SIDE // 2


def test_large_images_are_drawn_full_size_then_scaled_down_with_everything_on_them() -> None:
    record = _record(
        width=1600,
        height=800,
        image_bytes=_grey_image(1600, 800),
        objects=(
            WrittenObject(
                2,
                "dog",
                (0.5, 0.5, 0.75, 0.75),
                polygons=(Polygon((800.0, 400.0, 1200.0, 400.0, 1000.0, 600.0)),),
                keypoints=(WrittenKeypoint("nose", 0.25, 0.25),),
            ),
        ),
        image_labels=((1, "cat"), (3, "naïve")),
    )
    drawn = draw_record(record, COLORS)
    assert drawn.shape[1] == THUMBNAIL_SIDE
    image = drawn[:160]
    assert (image[80, 160:240] == COLORS[1]).all()  # the box's top edge, still 2 pixels thick after scaling
    assert np.abs(image[40, 80].astype(int) - COLORS[1]).max() < 10  # the keypoint's dot
    assert drawn.shape[0] > 160  # the caption band


# --- plots -----------------------------------------------------------------------------


def test_plots_are_reproducible_byte_for_byte(tmp_path: Path) -> None:
    document = _document(["cat", "dog", "$5 bill", "$x_{2$ or $", "猫"])
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    names = write_plots(first, document)
    assert names == write_plots(second, document)
    assert len(names) == 5
    for name in names:
        data = (first / name).read_bytes()
        assert data.startswith(b"\x89PNG") and data == (second / name).read_bytes()
        assert b"tEXt" not in data and b"tIME" not in data  # no text or time stamp that would differ


def test_the_class_plot_draws_a_bar_per_split_where_the_class_has_images(tmp_path: Path) -> None:
    """Bars in each split's colour exist exactly for the splits that have images of a class."""
    from converter.stats.pictures import CLASSES_PLOT, _split_color

    document = _document(["cat", "dog"])
    write_plots(tmp_path, document)
    pixels = cv2.cvtColor(cv2.imread(str(tmp_path / CLASSES_PLOT)), cv2.COLOR_BGR2RGB)
    for index, split in enumerate(document["splits"].values()):
        drawn = int((pixels == np.asarray(_split_color(index))).all(axis=2).sum())
        has_images = any(numbers["images"] for numbers in split["classes"].values())
        assert (drawn > 200) == has_images, (index, drawn)


def test_plots_of_an_empty_dataset_are_still_written(tmp_path: Path) -> None:
    assert len(write_plots(tmp_path, {"format": 1, "classes": [], "splits": {}})) == 5


# --- the page --------------------------------------------------------------------------


def _write_page(folder: Path, **changes: Any) -> list[str]:
    classes = ["cat", "dog", HOSTILE]
    skipped = [
        {"file": "export.json", "line": line, "key": f"k{line}", "code": "corrupt_image", "reason": "<b>bad</b>"}
        for line in range(600)
    ]
    arguments: dict[str, Any] = {
        "document": _document(classes),
        "previews": {"train": [_record(key=HOSTILE), _record(key="b")], "validation": [_record(key="c")]},
        "skipped": skipped,
        "skipped_total": 1000,
    }
    arguments.update(changes)
    return write_stats_pages(folder, **arguments)


def test_page_escapes_user_text_and_caps_the_skipped_rows(tmp_path: Path) -> None:
    names = _write_page(tmp_path)
    assert names[-1] == PAGE and len(names) == 6
    assert all((tmp_path / name).is_file() for name in names)
    text = (tmp_path / PAGE).read_text(encoding="utf-8")
    assert "<script" not in text and "<b>bad" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert text.count("&lt;b&gt;bad&lt;/b&gt;") == MAX_SKIPPED_ROWS
    assert "and 500 more" in text
    assert 'src="http' not in text and "url(" not in text
    assert text.count('<tr class="absent">') == 1  # the hostile class, absent from validation


def test_page_is_reproducible_byte_for_byte(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    names = _write_page(first)
    assert names == _write_page(second)
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes()


def _near(pixels: NDArray[np.uint8], color: tuple[int, int, int], tolerance: int = 24) -> bool:
    """Whether every pixel is within `tolerance` of `color` per channel (JPEG moves colours a little)."""
    return bool((np.abs(pixels.astype(int) - np.asarray(color)) <= tolerance).all())


def test_page_in_chromium_shows_the_box_where_the_record_puts_it(tmp_path: Path) -> None:
    _write_page(tmp_path)
    visit = open_page(
        tmp_path / PAGE,
        evaluate=[
            "(() => { const r = document.getElementById('preview-train-0').getBoundingClientRect();"
            " return [r.left + window.scrollX, r.top + window.scrollY, r.width, r.height]; })()",
            "document.querySelectorAll('script').length",
            "document.body.innerText.includes('<script>alert(1)</script>')",
        ],
    )
    assert visit.console_errors == []
    page_url = (tmp_path / PAGE).resolve().as_uri()
    assert visit.requests[0] == page_url
    assert [url for url in visit.requests if url != page_url and not url.startswith("data:")] == []
    assert any(url.startswith("data:image/jpeg") for url in visit.requests)  # the previews (equal ones load once)
    (left, top, width, height), scripts, shown = visit.values
    assert (width, height) == (WIDTH, HEIGHT)  # shown pixel for pixel: no caption band, no CSS scaling
    assert scripts == 0 and shown is True
    x, y = round(left), round(top)
    preview = visit.screenshot[y : y + HEIGHT, x : x + WIDTH]
    color = COLORS[0]
    assert _near(preview[20, 22:98], color) and _near(preview[79, 22:98], color)  # top and bottom edges
    assert _near(preview[22:78, 20], color) and _near(preview[22:78, 99], color)  # left and right edges
    assert _near(preview[19, 22:98], (GREY,) * 3) and _near(preview[22:78, 100], (GREY,) * 3)  # just outside
    assert _near(preview[30:70, 30:90], (GREY,) * 3)  # the inside


@pytest.mark.parametrize(("required", "outcome"), [("", pytest.skip.Exception), ("1", pytest.fail.Exception)])
def test_a_missing_chromium_skips_unless_the_environment_requires_it(
    monkeypatch: pytest.MonkeyPatch, required: str, outcome: type[BaseException]
) -> None:
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    monkeypatch.setenv(browser.REQUIRE_VARIABLE, required)
    with pytest.raises(outcome, match="Chromium not found"):
        browser.chromium_or_skip()

"""`stats/` end to end: a real conversion's statistics against values computed from the export in the test,
`dataset-converter stats` rebuilding the same folder, ownership, and the page in a real browser."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from builders import CocoExport, convert, load_info
from typer.testing import CliRunner

from converter.cli import app
from converter.stats.page import PAGE
from converter.stats.previews import class_colors
from tests.readback import read_all
from tests.stats.browser import open_page

WIDTH, HEIGHT = 96, 64
# (class, x, y, width, height) rectangles per image: axis-aligned with integer corners, so the pixels
# a rectangle covers are exactly width x height, and every number below follows from these by hand.
SHAPES = {
    f"img{index:02d}.png": [("car", 4 + index, 6, 10, 10)] + ([("bus", 40, 8 + index, 40, 30)] if index % 2 else [])
    for index in range(10)
}


def _export(root: Path) -> CocoExport:
    export = CocoExport(root, categories=[{"id": 1, "name": "car"}, {"id": 2, "name": "bus"}])
    for name, shapes in SHAPES.items():
        image_id = export.add_image(name, size=(WIDTH, HEIGHT))
        for class_name, x, y, width, height in shapes:
            corners = [x, y, x + width, y, x + width, y + height, x, y + height]
            export.add_annotation(image_id, 1 if class_name == "car" else 2, segmentation=[corners])
    export.write()
    return export


def _stats(output: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((output / "stats" / "stats.json").read_text(encoding="utf-8"))
    return loaded


def _split_of_each_image(output: Path) -> dict[str, str]:
    """Which split each image went to, read back with TensorFlow (not with the converter's own reader)."""
    return {
        Path(record["image/filename"][0].decode()).name: split
        for split, records in read_all(output).items()
        for record in records
    }


def test_statistics_of_a_conversion_equal_values_computed_from_the_export(tmp_path: Path) -> None:
    export = _export(tmp_path / "export")
    output = tmp_path / "out"
    result = convert("-a", export.path, "-i", export.image_folder, "-o", output, "-s", "0.3", "--seed", "4")
    assert result.exit_code == 0, result.output
    stats = _stats(output)
    splits = _split_of_each_image(output)
    assert stats["classes"] == ["car", "bus"] and set(stats["splits"]) == set(splits.values())
    for split, numbers in stats["splits"].items():
        names = [name for name, where in splits.items() if where == split]
        shapes = [shape for name in names for shape in SHAPES[name]]
        assert numbers["images"] == len(names) and numbers["objects"] == len(shapes)
        assert numbers["image_width"] == {"mean": WIDTH, "min": WIDTH, "max": WIDTH}
        areas = [width * height for _, _, _, width, height in shapes]
        assert numbers["box_sizes"] == {
            "small": sum(area < 32**2 for area in areas),
            "medium": sum(32**2 <= area < 96**2 for area in areas),
            "large": sum(area >= 96**2 for area in areas),
        }
        for class_name in ("car", "bus"):
            own = [shape for shape in shapes if shape[0] == class_name]
            numbers_of_class = stats["splits"][split]["classes"][class_name]
            images_with = sum(any(shape[0] == class_name for shape in SHAPES[name]) for name in names)
            assert (numbers_of_class["images"], numbers_of_class["objects"]) == (images_with, len(own))
            pixels = sum(width * height for _, _, _, width, height in own)
            assert numbers_of_class["mask_pixel_share"] == pytest.approx(pixels / (len(names) * WIDTH * HEIGHT))
            polygons = numbers_of_class["polygons"]
            assert polygons["count"] == len(own)
            if not own:
                continue
            histogram = polygons["area"]
            expected, _ = np.histogram([w * h for _, _, _, w, h in own], bins=histogram["edges"])
            assert histogram["counts"] == expected.tolist()
            compactness = [4 * math.pi * w * h / (2 * (w + h)) ** 2 for _, _, _, w, h in own]
            expected, _ = np.histogram(compactness, bins=polygons["compactness"]["edges"])
            assert polygons["compactness"]["counts"] == expected.tolist()
            centroids = [((x + w / 2) / WIDTH, (y + h / 2) / HEIGHT) for _, x, y, w, h in own]
            assert polygons["centroid"]["mean"] == pytest.approx(np.mean(centroids, axis=0).tolist())
            long_sides = [max(w, h) for _, _, _, w, h in own]
            assert polygons["rotated_box"]["long_side"]["max"] == pytest.approx(max(long_sides), abs=1e-3)
    info = load_info(output)
    assert info["stats"]["page"] == "stats/index.html" and "stats" in info["entries"]


def test_the_stats_command_rebuilds_exactly_what_a_conversion_writes(tmp_path: Path) -> None:
    export = _export(tmp_path / "export")
    common = ["-a", export.path, "-i", export.image_folder, "-s", "0.3", "--seed", "4", "-f", "json"]
    with_stats, without = tmp_path / "with", tmp_path / "without"
    assert convert(*common, "-o", with_stats).exit_code == 0
    assert convert(*common, "-o", without, "--no-stats").exit_code == 0
    assert not (without / "stats").exists() and "stats" not in load_info(without)["entries"]

    rebuilt = CliRunner().invoke(app, ["stats", str(without)])
    assert rebuilt.exit_code == 0, rebuilt.output
    assert "stats" in load_info(without)["entries"]
    written = sorted(path.name for path in (with_stats / "stats").iterdir())
    assert written == sorted(path.name for path in (without / "stats").iterdir())
    for name in written:  # read back from the records alone, the same bytes as observed while converting
        assert (with_stats / "stats" / name).read_bytes() == (without / "stats" / name).read_bytes(), name
    assert CliRunner().invoke(app, ["verify", str(without)]).exit_code == 0


def test_a_stats_folder_the_dataset_does_not_own_is_never_replaced(tmp_path: Path) -> None:
    export = _export(tmp_path / "export")
    output = tmp_path / "out"
    assert convert("-a", export.path, "-i", export.image_folder, "-o", output, "--no-stats").exit_code == 0
    (output / "stats").mkdir()
    (output / "stats" / "mine.txt").write_text("the user's")

    refused = CliRunner().invoke(app, ["stats", str(output)])
    assert refused.exit_code == 2 and "stats" in refused.output
    again = convert("-a", export.path, "-i", export.image_folder, "-o", output)
    assert again.exit_code == 2
    assert (output / "stats" / "mine.txt").read_text() == "the user's"
    assert sorted(path.name for path in (output / "stats").iterdir()) == ["mine.txt"]


def test_stats_on_a_folder_without_a_dataset_is_one_clear_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["stats", str(tmp_path)])
    assert result.exit_code == 2
    assert result.output.startswith("ERROR: ") and "Traceback" not in result.output


def test_the_page_of_a_conversion_shows_each_records_box_in_chromium(tmp_path: Path) -> None:
    """The first train preview, as Chromium renders the page, has the box the record holds, in its class colour."""
    export = CocoExport(tmp_path / "export", categories=[{"id": 1, "name": "car"}])
    image_id = export.add_image("one.png", size=(200, 100))
    export.add_annotation(image_id, 1, bbox=[20, 10, 100, 50])  # x 20..120, y 10..60
    export.write()
    output = tmp_path / "out"
    result = convert("-a", export.path, "-i", export.image_folder, "-o", output, "-s", "0")
    assert result.exit_code == 0, result.output
    page = output / "stats" / PAGE
    visit = open_page(
        page,
        evaluate=[
            "(() => { const r = document.getElementById('preview-train-0').getBoundingClientRect();"
            " return [r.left + window.scrollX, r.top + window.scrollY, r.width, r.height]; })()"
        ],
    )
    assert visit.console_errors == []
    assert [url for url in visit.requests if not url.startswith(("data:", "file:"))] == []
    ((left, top, width, height),) = visit.values
    assert (width, height) == (200, 100)  # under the 320-pixel thumbnail side: shown at its size
    preview = visit.screenshot[round(top) : round(top) + 100, round(left) : round(left) + 200].astype(int)
    color = np.asarray(class_colors(1)[0])
    assert (np.abs(preview[10, 25:115] - color) <= 24).all()  # the top edge, where the record puts it
    assert (np.abs(preview[59, 25:115] - color) <= 24).all()  # the bottom edge
    assert (np.abs(preview[15:55, 20] - color) <= 24).all() and (np.abs(preview[15:55, 119] - color) <= 24).all()
    assert not (np.abs(preview[70:90, 25:115] - color) <= 24).all()  # below the box: the image, not the box


def test_the_dataset_info_summary_names_the_stats_and_matches_stats_json(tmp_path: Path) -> None:
    export = _export(tmp_path / "export")
    output = tmp_path / "out"
    assert convert("-a", export.path, "-i", export.image_folder, "-o", output).exit_code == 0
    summary = yaml.safe_load((output / "dataset_info.yaml").read_text())["stats"]
    stats = _stats(output)
    for split, numbers in stats["splits"].items():
        assert summary["splits"][split]["images"] == numbers["images"]
        assert summary["splits"][split]["objects"] == numbers["objects"]
    shutil.rmtree((output / "stats").resolve())  # a damaged dataset: verify names what is missing
    assert CliRunner().invoke(app, ["verify", str(output)]).exit_code == 1

"""No input crashes a run (issue 9, point 6): Label Studio and Scale AI exports made hostile.

Whatever bytes an export holds, a run ends with records and report entries naming the
file, line or task and the reason, or with one clear file-level error (exit 1 or 2),
never a traceback. The focused tests pin each crash class measured before the fix (a
bad task must cost that task alone, and the good tasks beside it must still be
converted); the property tests mutate the real Label Studio exports in
../shared/samples/label_studio, read in place, and Scale exports built by
tests/scale_tasks.py (no real Scale export is among the shared samples): bytes, JSON
values, encodings. `hostile_exports.check_run` is the contract every run must meet.
"""

from __future__ import annotations

import functools
import json
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from builders import image_pixels, write_image
from hostile_exports import (
    ENCODINGS,
    Outcome,
    byte_mutant,
    check_run,
    convert,
    encoded,
    json_mutant,
    png_claiming_size,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from labelstudio_tasks import (
    annotation,
    brush,
    choices,
    encode_brush_rle,
    mask_to_brush,
    polygon,
    rectangle,
    task,
    write_stand_in,
)
from PIL import Image
from scale_tasks import box, image_task, point, rotated_box, segment_task, write_index_mask
from scale_tasks import polygon as scale_polygon
from typer.testing import CliRunner, Result

import converter.sources.scale as scale_module
from converter.cli import app
from converter.core.input_files import iter_lines
from converter.core.sample import RleMask, SkippedSample
from converter.errors import SampleError
from converter.sources.labelstudio import build_labelstudio_source
from converter.sources.labelstudio_brush import brush_to_rle_mask
from converter.sources.scale import build_scale_source

PROPERTY_SETTINGS = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
    database=None,
)

# The real exports' image references, and the sizes their results declare (`original_width` x `_height`).
REAL_EXPORTS = {
    "polygons_export.json": {"image2": (640, 426)},
    "rotated_rectangles_export.json": {"image1": (597, 768), "image2": (433, 768), "image3": (716, 768)},
}
SIZE = (40, 30)  # the synthetic exports' image size
BUCKET = "https://scale-uploads.s3.amazonaws.com/kittens"


@pytest.fixture
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as folder:
        yield Path(folder)


def _convert(export: Path, images: Path, output: Path, *options: str) -> Result:
    """The CLI as a user runs it: the export recognized, not named with --source."""
    arguments = ["convert", "-a", str(export), "-i", str(images), "-o", str(output), "--workers", "1", *options]
    return CliRunner().invoke(app, arguments)


def _skipped(outcome: Outcome) -> dict[str | int, tuple[str, str]]:
    """Report entries by line number (JSON Lines) or task key (a JSON list) -> (code, reason)."""
    assert outcome.report is not None
    return {
        entry["key"] if entry["line"] is None else entry["line"]: (entry["code"], entry["reason"])
        for entry in outcome.report["skipped"]
    }


def _converted(outcome: Outcome) -> int:
    assert outcome.report is not None
    converted: int = outcome.report["summary"]["converted"]
    return converted


# --- Label Studio: a good task beside a hostile one -----------------------------------------------


def _label_studio_images(root: Path) -> Path:
    images = root / "images"
    write_stand_in(images / "a.jpg", SIZE, seed=1)
    write_stand_in(images / "b.jpg", SIZE, seed=2)
    return images


def _good_task() -> dict[str, Any]:
    return task("a.jpg", annotation([rectangle(10, 10, 50, 50, ["cat"], SIZE)]), task_id=1)


def _bad_task(*results: dict[str, Any], image: str = "b.jpg") -> dict[str, Any]:
    return task(image, annotation(list(results)), task_id=2)


def _run_label_studio(root: Path, text: str, *options: str) -> Outcome:
    """A Label Studio export of `text` (JSON) converted; the run must meet the contract."""
    export = root / "export.json"
    export.write_text(text, encoding="utf-8", errors="surrogatepass")
    output = root / "out"
    return check_run(_convert(export, _label_studio_images(root), output, *options), output)


def _with_bad_task(bad: dict[str, Any], raw: tuple[str, str] | None = None) -> str:
    """The export text of the good task and `bad`; `raw` replaces a JSON string by a raw literal."""
    text = json.dumps([_good_task(), bad])
    if raw is not None:
        assert text.count(json.dumps(raw[0])) == 1
        text = text.replace(json.dumps(raw[0]), raw[1])
    return text


def _rectangle(**value: Any) -> dict[str, Any]:
    result = rectangle(10, 10, 50, 50, ["dog"], SIZE)
    result["value"].update(value)
    return result


def _sized(width: Any, height: Any = SIZE[1]) -> dict[str, Any]:
    return {**rectangle(10, 10, 50, 50, ["dog"], SIZE), "original_width": width, "original_height": height}


_NOT_BYTES: list[Any] = ["a", 1.5, None]
_NOT_AN_OBJECT: Any = "x"

LABEL_STUDIO_TASK_CRASHES: dict[str, tuple[dict[str, Any], tuple[str, str] | None, str, str]] = {
    # name: (bad task, raw literal replacing a placeholder, code, fragment of the reason)
    "NaN percentage": (
        _bad_task(_rectangle(x="@nan")),
        ("@nan", "NaN"),
        "malformed_annotation",
        "`x` must be a finite",
    ),
    "Infinity rotation": (
        _bad_task(_rectangle(rotation="@inf")),
        ("@inf", "-Infinity"),
        "malformed_annotation",
        "`rotation` must be a finite",
    ),
    "5000-digit percentage": (
        _bad_task(_rectangle(width="@digits")),
        ("@digits", "9" * 5000),
        "malformed_annotation",
        "`width` must be a finite",
    ),
    "400-digit percentage": (
        _bad_task(_rectangle(width="@digits")),
        ("@digits", "1" + "0" * 400),
        "malformed_annotation",
        "`width` must be a finite",
    ),
    "percentage overflowing in pixels": (
        _bad_task({**_rectangle(width=1e308), "original_width": 100_000}),
        None,
        "invalid_value",
        "finite",
    ),
    "huge polygon point": (
        _bad_task({**polygon([(1e308, 0), (0, 1), (1, 1)], ["dog"], SIZE), "original_width": 100_000}),
        None,
        "invalid_value",
        "finite",
    ),
    "original_width 1e12 (int)": (_bad_task(_sized(10**12)), None, "image_too_large", "1000000000000x30"),
    "original_width 1e12 (float)": (_bad_task(_sized(1e12)), None, "malformed_annotation", "positive integer"),
    "original_width 0": (_bad_task(_sized(0)), None, "malformed_annotation", "positive integer"),
    "original_width negative": (_bad_task(_sized(-40)), None, "malformed_annotation", "positive integer"),
    "original_width a string": (_bad_task(_sized("40")), None, "malformed_annotation", "positive integer, got '40'"),
    "lone surrogate label": (
        _bad_task(rectangle(10, 10, 50, 50, ["d\ud800g"], SIZE)),
        None,
        "invalid_value",
        "'d\\ud800g'",
    ),
    "lone surrogate choice": (_bad_task(choices(["\udfff"])), None, "invalid_value", "'\\udfff'"),
    "lone surrogate image reference": (_bad_task(image="b\ud800.jpg"), None, "missing_image", "'b\\ud800.jpg'"),
    "unparseable URL reference": (
        _bad_task(image="http://[bucket/b.jpg"),
        None,
        "malformed_image_reference",
        "Invalid IPv6 URL",
    ),
    "port out of range": (
        _bad_task(image="http://host:99999999/b.jpg"),
        None,
        "malformed_image_reference",
        "'http://host:99999999/b.jpg'",
    ),
    "result not an object": (_bad_task(_NOT_AN_OBJECT), None, "malformed_annotation", "result 0 must be an object"),
    "result type a list": (_bad_task({**_rectangle(), "type": [1]}), None, "unsupported_result_type", "a list"),
    "labels an object": (
        _bad_task(_rectangle(rectanglelabels={"a": 1})),
        None,
        "malformed_annotation",
        "got an object of 1 key",
    ),
    "brush announcing four billion words": (
        _bad_task(brush([255, 255, 255, 255, 0x38, 0x74, 0xF0, 0xFF, 0xFF, 0xFF], ["dog"], SIZE)),
        None,
        "malformed_annotation",
        "announces 4294967295 values",
    ),
    "brush of strings": (_bad_task(brush(_NOT_BYTES, ["dog"], SIZE)), None, "malformed_annotation", "byte values"),
    "brush of huge ints": (_bad_task(brush([10**30, -1], ["dog"], SIZE)), None, "malformed_annotation", "byte values"),
    "brush garbage bytes": (
        _bad_task(brush([0, 0, 0, 9, 0xE0, 1, 2, 3], ["dog"], SIZE)),
        None,
        "malformed_annotation",
        "brush mask cannot be decoded",
    ),
    "brush on a 1e6 x 1e6 canvas": (
        _bad_task(
            {**brush([0, 0, 0, 4, 0x38] + [0] * 8, ["dog"], SIZE), "original_width": 10**6, "original_height": 10**6}
        ),
        None,
        "image_too_large",
        "1000000x1000000",
    ),
}


@pytest.mark.parametrize("case", LABEL_STUDIO_TASK_CRASHES)
def test_a_hostile_label_studio_task_costs_that_task_only(workdir: Path, case: str) -> None:
    bad, raw, code, fragment = LABEL_STUDIO_TASK_CRASHES[case]

    outcome = _run_label_studio(workdir, _with_bad_task(bad, raw))

    assert outcome.exit_code == 0
    assert _converted(outcome) == 1
    assert _skipped(outcome)["task 2"][0] == code
    assert fragment in _skipped(outcome)["task 2"][1]


def test_hostile_text_in_a_message_is_escaped_and_shortened(workdir: Path) -> None:
    bad = _bad_task(image="b" * 100_000 + "\x1b[31m\ud800.jpg")

    outcome = _run_label_studio(workdir, _with_bad_task(bad))

    code, reason = _skipped(outcome)["task 2"]
    assert code == "missing_image"
    assert len(reason) < 400 and "(100010 characters)" in reason
    assert "\x1b" not in reason and "\ud800" not in reason


def test_control_characters_and_long_names_are_converted_as_written(workdir: Path) -> None:
    long_name = "n" * 100_000
    bad = _bad_task(rectangle(10, 10, 50, 50, ["ca\x00t\x1b[31m", long_name], SIZE))

    outcome = _run_label_studio(workdir, _with_bad_task(bad))

    assert outcome.exit_code == 0
    assert _converted(outcome) == 2


@pytest.mark.parametrize("where", ["inside a task", "as a task"])
def test_nesting_past_the_recursion_limit_is_one_clear_usage_error(workdir: Path, where: str) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    if where == "inside a task":
        text = _with_bad_task({**_bad_task(), "meta": "@deep"}, ("@deep", deep))
    else:
        text = json.dumps([_good_task()])[:-1] + ", " + deep + "]"

    outcome = _run_label_studio(workdir, text, "--source", "labelstudio")

    assert outcome.exit_code == 2
    assert "nested too deeply" in outcome.stderr


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_a_label_studio_export_converts_in_any_unicode_encoding(workdir: Path, encoding: str) -> None:
    export = workdir / "export.json"
    export.write_bytes(encoded(json.dumps([_good_task(), _bad_task(_rectangle())], indent=2), encoding))
    images, output = _label_studio_images(workdir), workdir / "out"

    named = check_run(convert(export, images, output, "labelstudio"), output)
    recognized = check_run(_convert(export, images, workdir / "recognized"), workdir / "recognized")

    assert named.exit_code == 0 and _converted(named) == 2
    assert recognized.exit_code in (0, 2)  # recognition peeks UTF-8 only (_peek.json_file_head): else exit 2


def test_invalid_utf8_in_a_label_studio_export_is_one_clear_usage_error(workdir: Path) -> None:
    text = _with_bad_task(_bad_task(_rectangle()))
    export = workdir / "export.json"
    export.write_bytes(text.encode().replace(b'"b.jpg"', b'"b\xff.jpg"'))
    output = workdir / "out"

    outcome = check_run(convert(export, _label_studio_images(workdir), output, "labelstudio"), output)

    assert outcome.exit_code == 2 and "not UTF-8 text" in outcome.stderr


def test_a_label_studio_brush_decodes_no_more_than_its_canvas(workdir: Path) -> None:
    """A few bytes of repeated runs may announce 4 GB of words: refused before allocating, by the header."""
    words = [0] * (SIZE[0] * SIZE[1] * 4)
    announced = encode_brush_rle(words)
    announced[:4] = [0xFF, 0xFF, 0xFF, 0xFF]

    outcome = _run_label_studio(workdir, _with_bad_task(_bad_task(brush(announced, ["dog"], SIZE))))

    code, reason = _skipped(outcome)["task 2"]
    assert code == "malformed_annotation" and f"more than the {len(words)} expected" in reason


def test_label_studio_skips_stream_to_the_handler(workdir: Path) -> None:
    export = workdir / "export.json"
    export.write_text(_with_bad_task(_bad_task(_sized(0))), encoding="utf-8")
    streamed: list[SkippedSample] = []

    contents = build_labelstudio_source(export, _label_studio_images(workdir), "newest").read(streamed.append)

    assert [entry.location.key for entry in streamed] == ["task 2"]
    assert contents.skipped == () and len(contents.samples) == 1


def test_max_skipped_stops_a_label_studio_run_cleanly(workdir: Path) -> None:
    outcome = _run_label_studio(workdir, _with_bad_task(_bad_task(_sized(0))), "--max-skipped", "0")

    assert outcome.exit_code == 1


# --- Scale AI: JSON lists and JSON Lines ----------------------------------------------------------


def _scale_images(root: Path) -> Path:
    images = root / "images"
    for index, name in enumerate(("a.jpg", "b.jpg", "c.jpg", "d.jpg")):
        write_image(images / name, image_pixels(64, 48, index + 1))
    indices = np.zeros((48, 64), dtype=np.uint8)
    indices[10:20, 10:30] = 1
    write_index_mask(images / "d-index.png", indices)
    return images


def _scale_tasks() -> list[dict[str, Any]]:
    """Four completed tasks, every annotation type the source reads."""
    return [
        image_task("t-a", f"{BUCKET}/a.jpg?X-Amz-Signature=1", [box("cat", 1, 2, 20, 10), point("eye", 3, 4)]),
        image_task("t-b", f"{BUCKET}/b.jpg?X-Amz-Signature=2", [rotated_box("dog", 10, 10, 20, 10, 0.5)]),
        image_task("t-c", f"{BUCKET}/c.jpg", [scale_polygon("cat", [(1, 1), (30, 2), (20, 30)])]),
        segment_task("t-d", f"{BUCKET}/d.jpg", f"{BUCKET}/d-index.png", {"road": {"index": 1, "color": "#ff0000"}}),
    ]


def _json_lines(tasks: list[Any]) -> str:
    return "".join(json.dumps(item) + "\n" for item in tasks)


def _run_scale(root: Path, data: bytes, suffix: str = ".jsonl", *options: str) -> Outcome:
    export = root / f"export{suffix}"
    export.write_bytes(data)
    output = root / "out"
    return check_run(_convert(export, _scale_images(root), output, *options), output)


def _scale_task_b(**changes: Any) -> dict[str, Any]:
    """Task t-b (a rotated box) with its box's fields changed."""
    tasks = _scale_tasks()
    annotation_b = tasks[1]["response"]["annotations"][0]
    annotation_b.update(changes)
    return tasks[1]


SCALE_TASK_CRASHES: dict[str, tuple[dict[str, Any], tuple[str, str] | None, str, str]] = {
    "NaN left": (_scale_task_b(left="@x"), ("@x", "NaN"), "bad_geometry", "`left` must be a finite number, got nan"),
    "5000-digit width": (_scale_task_b(width="@x"), ("@x", "9" * 5000), "bad_geometry", "`width` must be a finite"),
    "400-digit rotation": (_scale_task_b(rotation="@x"), ("@x", "1" + "0" * 400), "bad_geometry", "`rotation`"),
    "box overflowing to infinity": (
        _scale_task_b(left=1e308, width=1e308, rotation=0),
        None,
        "invalid_value",
        "finite",
    ),
    "lone surrogate label": (_scale_task_b(label="d\ud800g"), None, "invalid_value", "'d\\ud800g'"),
    "lone surrogate task_id": ({**_scale_task_b(), "task_id": "t\udfff"}, None, "invalid_value", "'t\\udfff'"),
    "lone surrogate project": ({**_scale_task_b(), "project": "\ud800"}, None, "invalid_value", "scale_project"),
    "unparseable URL": (
        {**_scale_task_b(), "params": {"attachment": "https://[bucket/b.jpg"}},
        None,
        "malformed_image_reference",
        "Invalid IPv6 URL",
    ),
    "port out of range": (
        {**_scale_task_b(), "params": {"attachment": "https://host:99999999/b.jpg"}},
        None,
        "malformed_image_reference",
        "not a readable URL",
    ),
    "status an object": ({**_scale_task_b(), "status": {"a": [1]}}, None, "not_completed", "an object of 1 key"),
    "type a list": ({**_scale_task_b(), "type": [1, 2]}, None, "unsupported_task_type", "a list of 2 items"),
    "annotations a string": (
        {**_scale_task_b(), "response": {"annotations": "x"}},
        None,
        "missing_response",
        "no `annotations` list",
    ),
    "labelMapping index overflowing": (
        segment_task("t-b", f"{BUCKET}/b.jpg", f"{BUCKET}/d-index.png", {"road": {"index": "@x"}}),
        ("@x", "9" * 5000),
        "malformed_annotation",
        "has index inf",
    ),
}


@pytest.mark.parametrize("layout", ["json-list", "json-lines"])
@pytest.mark.parametrize("case", SCALE_TASK_CRASHES)
def test_a_hostile_scale_task_costs_that_task_only(workdir: Path, case: str, layout: str) -> None:
    bad, raw, code, fragment = SCALE_TASK_CRASHES[case]
    tasks = _scale_tasks()
    tasks[1] = bad
    text = json.dumps(tasks) if layout == "json-list" else _json_lines(tasks)
    if raw is not None:
        text = text.replace(json.dumps(raw[0]), raw[1])

    outcome = _run_scale(workdir, text.encode("utf-8", "surrogatepass"), ".json" if layout == "json-list" else ".jsonl")

    assert outcome.exit_code == 0
    assert _converted(outcome) == 3
    [(where, (skipped_code, reason))] = _skipped(outcome).items()
    assert where == 2 if layout == "json-lines" else str(where).startswith("task ")
    assert skipped_code == code and fragment in reason


def test_a_declared_class_that_is_not_unicode_stays_out_of_the_class_list(workdir: Path) -> None:
    tasks = _scale_tasks()
    tasks[0]["params"]["geometries"]["box"]["objects_to_annotate"] += ["\ud800", {"choice": "x\udfff"}]

    outcome = _run_scale(workdir, _json_lines(tasks).encode())

    assert outcome.exit_code == 0 and _converted(outcome) == 4
    info = (workdir / "out" / "dataset_info.yaml").read_text(encoding="utf-8")
    assert "\\UD800" not in info.upper() and "\\UDFFF" not in info.upper()


@pytest.mark.parametrize("source", ["labelstudio", "scale"])
def test_an_export_is_recognized_with_a_5000_digit_number_in_its_first_task(workdir: Path, source: str) -> None:
    """Recognition reads the first task as the source does: a number too long for an int is no reason to fail."""
    if source == "labelstudio":
        first: dict[str, Any] = {**_bad_task(_rectangle()), "id": "@digits"}
        outcome = _run_label_studio(workdir, json.dumps([first, _good_task()]).replace('"@digits"', "9" * 5000))
        assert _skipped(outcome) == {} and _converted(outcome) == 2
    else:
        tasks = _scale_tasks()
        tasks[0]["metadata"] = {"n": "@digits"}
        outcome = _run_scale(workdir, json.dumps(tasks).replace('"@digits"', "9" * 5000).encode(), ".json")
        assert _converted(outcome) == 4


@pytest.mark.parametrize("counted", [False, True], ids=["presence from the mask", "presence from numPixels"])
def test_a_hostile_index_mask_costs_its_task_only(workdir: Path, counted: bool) -> None:
    """An index mask declaring 100,000 x 100,000 pixels, or cut short, is never decoded whole, nor a crash."""
    entry = {"index": 1, "color": "#ff0000", **({"numPixels": 5} if counted else {})}
    tasks = [
        *_scale_tasks(),
        segment_task("t-bomb", f"{BUCKET}/a.jpg", f"{BUCKET}/bomb.png", {"road": entry}),
        segment_task("t-cut", f"{BUCKET}/b.jpg", f"{BUCKET}/cut.png", {"road": entry}),
    ]
    images = _scale_images(workdir)
    (images / "bomb.png").write_bytes(png_claiming_size(100_000, 100_000))
    (images / "cut.png").write_bytes(png_claiming_size(64, 48)[:40])
    export, output = workdir / "export.jsonl", workdir / "out"
    export.write_text(_json_lines(tasks), encoding="utf-8")

    outcome = check_run(_convert(export, images, output), output)

    assert outcome.exit_code == 0 and _converted(outcome) == 4
    skipped = _skipped(outcome)
    assert skipped[5][0] == "image_too_large" and "bomb.png" in skipped[5][1]
    assert skipped[6][0] in ("corrupt_mask", "corrupt_image") and "cut.png" in skipped[6][1]


def test_json_lines_whose_first_line_opens_a_list_are_still_json_lines(workdir: Path) -> None:
    """Found by the property test: a first line of `[[[...` made the whole .jsonl file read as one JSON list."""
    data = b"[" * 5_000 + b"\n" + _json_lines(_scale_tasks()).encode()  # recognition still sees the tasks

    outcome = _run_scale(workdir, data)

    assert outcome.exit_code == 0 and _converted(outcome) == 4
    assert _skipped(outcome) == {1: ("malformed_json", "malformed JSON: nested too deeply to read")}


def test_bad_json_lines_cost_those_lines_only(workdir: Path) -> None:
    """Undecodable bytes, nesting past the recursion limit, a 5000-digit number, garbage: each one line."""
    lines = [json.dumps(task).encode() for task in _scale_tasks()]
    data = b"\n".join(
        [
            lines[0],
            b'{"task_id": "t-x", "label": "\xff\xfe"}',
            b"[" * 100_000 + b"]" * 100_000,
            lines[1],
            b'{"task_id": "t-y", "n": ' + b"9" * 5000 + b"}",
            b"\x00\x01garbage",
            lines[2],
            b"",
            lines[3],
        ]
    )

    outcome = _run_scale(workdir, data)

    assert outcome.exit_code == 0
    assert _converted(outcome) == 4
    skipped = _skipped(outcome)
    assert skipped[2] == ("undecodable_line", "not UTF-8 text (byte 30 of the line)")
    assert skipped[3] == ("malformed_json", "malformed JSON: nested too deeply to read")
    assert skipped[5][0] == "not_completed"  # the number parsed (as infinity); the task is judged on its merits
    assert skipped[6][0] == "malformed_json"
    assert set(skipped) == {2, 3, 5, 6}


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_scale_json_lines_convert_in_any_unicode_encoding(workdir: Path, encoding: str) -> None:
    data = encoded(_json_lines(_scale_tasks()), encoding)

    outcome = _run_scale(workdir, data, ".jsonl", "--source", "scale")

    assert outcome.exit_code == 0 and _converted(outcome) == 4


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_a_scale_json_list_converts_in_any_unicode_encoding(workdir: Path, encoding: str) -> None:
    data = encoded(json.dumps(_scale_tasks(), indent=2), encoding)

    outcome = _run_scale(workdir, data, ".json", "--source", "scale")

    assert outcome.exit_code == 0 and _converted(outcome) == 4


def test_one_undecodable_unit_in_utf16_json_lines_costs_that_line_only(workdir: Path) -> None:
    lines = [_json_lines([task]).encode("utf-16-le") for task in _scale_tasks()]
    high_surrogate = b"\x00\xd8"  # a code unit that must be followed by a low surrogate, here by "-"
    lines[1] = lines[1].replace("t-b".encode("utf-16-le"), high_surrogate + "-b".encode("utf-16-le"))
    data = b"\xff\xfe" + b"".join(lines)

    outcome = _run_scale(workdir, data, ".jsonl", "--source", "scale")

    assert _converted(outcome) == 3
    assert _skipped(outcome) == {2: ("undecodable_line", "not valid UTF-16-LE text")}


def test_a_line_longer_than_the_limit_costs_that_line_only(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real limit is 64 MiB; a smaller one shows the rule without writing 64 MiB."""
    monkeypatch.setattr(scale_module, "iter_lines", functools.partial(iter_lines, max_line_bytes=4096))
    tasks: list[Any] = _scale_tasks()
    tasks.insert(2, {"task_id": "t-long", "padding": "x" * 20_000})

    outcome = _run_scale(workdir, _json_lines(tasks).encode())

    assert _converted(outcome) == 4
    assert _skipped(outcome) == {3: ("line_too_long", "line longer than 0 MiB")}


def test_a_deeply_nested_scale_json_list_is_one_clear_usage_error(workdir: Path) -> None:
    text = json.dumps(_scale_tasks())[:-1] + ", " + "[" * 100_000 + "]" * 100_000 + "]"

    outcome = _run_scale(workdir, text.encode(), ".json", "--source", "scale")

    assert outcome.exit_code == 2 and "nested too deeply" in outcome.stderr


def test_scale_skips_stream_to_the_handler(workdir: Path) -> None:
    export = workdir / "export.jsonl"
    export.write_bytes(_json_lines(_scale_tasks()[:2]).encode() + b"garbage\n")
    streamed: list[SkippedSample] = []

    contents = build_scale_source(export, _scale_images(workdir)).read(streamed.append)

    assert [(entry.location.line, entry.code) for entry in streamed] == [(3, "malformed_json")]
    assert contents.skipped == () and len(contents.samples) == 2


def test_max_skipped_stops_a_scale_run_cleanly(workdir: Path) -> None:
    outcome = _run_scale(workdir, _json_lines(_scale_tasks()).encode() + b"garbage\n", ".jsonl", "--max-skipped", "0")

    assert outcome.exit_code == 1


# --- properties -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_label_studio(shared_samples: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[bytes, Path]]:
    """Each real export's bytes (read in place) and a folder of stand-in images of the sizes it declares."""
    exports = {}
    for name, sizes in REAL_EXPORTS.items():
        images = tmp_path_factory.mktemp("images")
        for reference, size in sizes.items():
            write_stand_in(images / reference, size)
        exports[name] = ((shared_samples / "label_studio" / name).read_bytes(), images)
    return exports


def _check_label_studio(data: bytes, images: Path) -> Outcome:
    with tempfile.TemporaryDirectory() as folder:
        export, output = Path(folder) / "export.json", Path(folder) / "out"
        export.write_bytes(data)
        return check_run(convert(export, images, output, "labelstudio"), output)


_EXPORT_NAMES = st.sampled_from(sorted(REAL_EXPORTS))


@pytest.mark.shared_samples
@PROPERTY_SETTINGS
@given(data=st.data(), name=_EXPORT_NAMES, encoding=st.sampled_from(ENCODINGS))
def test_property_a_real_label_studio_export_with_a_hostile_value(
    real_label_studio: dict[str, tuple[bytes, Path]], data: st.DataObject, name: str, encoding: str
) -> None:
    """One value (or key) anywhere in a real export made hostile, in any encoding: a task at most is lost."""
    original, images = real_label_studio[name]
    document = json.loads(original)
    text = data.draw(json_mutant(document))

    outcome = _check_label_studio(encoded(text, encoding), images)

    if outcome.report is not None and outcome.report["summary"]["input_samples"] == len(document):
        assert _converted(outcome) >= len(document) - 1  # the mutant's task at most


@pytest.mark.shared_samples
@PROPERTY_SETTINGS
@given(data=st.data(), name=_EXPORT_NAMES)
def test_property_a_real_label_studio_export_with_hostile_bytes(
    real_label_studio: dict[str, tuple[bytes, Path]], data: st.DataObject, name: str
) -> None:
    original, images = real_label_studio[name]

    _check_label_studio(data.draw(byte_mutant(original)), images)


@pytest.fixture(scope="module")
def real_brush(shared_samples: Path) -> tuple[list[int], int, int]:
    """Upstream's brush test mask (640x427) as a brush RLE, with its width and height."""
    with Image.open(shared_samples / "label_studio" / "brush_source_mask.png") as image:
        mask = np.asarray(image.convert("L")) > 0
    return mask_to_brush(mask), mask.shape[1], mask.shape[0]


@pytest.mark.shared_samples
@PROPERTY_SETTINGS
@given(data=st.data())
def test_property_a_mutated_real_brush_decodes_or_is_a_sample_error(
    real_brush: tuple[list[int], int, int], data: st.DataObject
) -> None:
    """Any bytes in a brush's `rle`: a mask of the canvas size, or a `SampleError`, never another exception."""
    rle, width, height = real_brush
    mutant = list(data.draw(byte_mutant(bytes(rle))))
    try:
        mask = brush_to_rle_mask(mutant, width, height)
    except SampleError as error:
        assert error.code == "malformed_annotation"
    else:
        assert isinstance(mask, RleMask) and (mask.width, mask.height) == (width, height)


def _scale_mutant_runner(root: Path) -> Callable[[bytes, str], Outcome]:
    images = _scale_images(root)

    def run(data: bytes, suffix: str) -> Outcome:
        with tempfile.TemporaryDirectory() as folder:
            export, output = Path(folder) / f"export{suffix}", Path(folder) / "out"
            export.write_bytes(data)
            return check_run(convert(export, images, output, "scale"), output)

    return run


@PROPERTY_SETTINGS
@given(data=st.data(), layout=st.sampled_from([".json", ".jsonl"]), encoding=st.sampled_from(ENCODINGS))
def test_property_a_scale_export_with_a_hostile_value(data: st.DataObject, layout: str, encoding: str) -> None:
    """One value (or key) of one task made hostile: the other three tasks are still converted."""
    tasks = _scale_tasks()
    index = data.draw(st.integers(0, len(tasks) - 1))
    mutated = data.draw(json_mutant(tasks[index]))
    texts = [json.dumps(item) for item in tasks]
    texts[index] = mutated  # one line still: JSON text escapes newlines inside strings
    text = "[" + ", ".join(texts) + "]" if layout == ".json" else "\n".join(texts) + "\n"
    with tempfile.TemporaryDirectory() as folder:
        outcome = _scale_mutant_runner(Path(folder))(encoded(text, encoding), layout)

    if layout == ".jsonl":  # in a list, one bad value may make the whole document invalid JSON
        assert outcome.exit_code == 0 and outcome.report is not None
        assert _converted(outcome) >= len(tasks) - 1
        assert outcome.report["summary"]["input_samples"] == len(tasks)


@PROPERTY_SETTINGS
@given(data=st.data(), layout=st.sampled_from([".json", ".jsonl"]))
def test_property_a_scale_export_with_hostile_bytes(data: st.DataObject, layout: str) -> None:
    tasks = _scale_tasks()
    original = (json.dumps(tasks, indent=2) if layout == ".json" else _json_lines(tasks)).encode()
    with tempfile.TemporaryDirectory() as folder:
        _scale_mutant_runner(Path(folder))(data.draw(byte_mutant(original)), layout)

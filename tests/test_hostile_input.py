"""No input crashes a run (issue 9, point 6), on real exports made hostile.

Whatever bytes an annotation file holds, a run ends with records and report entries
naming file, line or key and reason, or with one clear file-level error (exit 1 or 2),
never a traceback. The focused tests pin each crash measured before the fix; the
property tests mutate the real exports in ../shared/samples (bytes, JSON values,
encodings) and check the contract on whatever comes out (`hostile_exports.check_run`).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hostile_exports import (
    CAT_IMAGES,
    COCO_FILES,
    COCO_IMAGES,
    ENCODINGS,
    PCB_LABELS,
    PCB_SEMSEG,
    Outcome,
    byte_mutant,
    cat_manifest_lines,
    check_every_line_accounted,
    check_run,
    convert,
    encoded,
    geojson_from_coco,
    json_mutant,
    mask_folder,
    png_claiming_size,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from converter.core.input_files import iter_lines, load_json, parse_json
from converter.core.rasterize import polygon_coverage
from converter.core.sample import Polygon
from converter.errors import SampleError, UsageError
from converter.sources import locate_export

pytestmark = pytest.mark.shared_samples

PROPERTY_SETTINGS = settings(
    max_examples=int(os.environ.get("HOSTILE_INPUT_EXAMPLES", "40")),  # more for a deeper search
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
    database=None,
)


@pytest.fixture(autouse=True)
def _shared(shared_samples: Path) -> None:
    """Every test here reads the real exports: skip (or fail in CI) without them."""


@pytest.fixture
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as folder:
        yield Path(folder)


def _run_manifest(root: Path, manifest: bytes, images: Path = CAT_IMAGES) -> Outcome:
    (root / "output.manifest").write_bytes(manifest)
    output = root / "out"
    outcome = check_run(convert(root / "output.manifest", images, output, "sagemaker_gt"), output)
    check_every_line_accounted(outcome, manifest)
    return outcome


def _skipped(outcome: Outcome) -> dict[int, tuple[str, str]]:
    assert outcome.report is not None
    return {entry["line"]: (entry["code"], entry["reason"]) for entry in outcome.report["skipped"]}


def _with_line_2(replace: str, by: str) -> bytes:
    lines = cat_manifest_lines()
    assert replace in lines[1]
    lines[1] = lines[1].replace(replace, by)
    return "\n".join(lines).encode()


# --- the crashes measured before the fix, one by one -----------------------------------------------


def test_a_decompression_bomb_image_costs_its_sample_only(workdir: Path) -> None:
    images = workdir / "images"
    images.mkdir()
    for name in ("0001.jpg", "0003.jpg", "0004.jpg"):
        (images / name).write_bytes((CAT_IMAGES / name).read_bytes())  # a link would lead out of the folder
    (images / "0002.jpg").write_bytes(png_claiming_size(100_000, 100_000))

    outcome = _run_manifest(workdir, "\n".join(cat_manifest_lines()).encode(), images)

    assert outcome.exit_code == 0
    assert outcome.report is not None and outcome.report["summary"]["converted"] == 3
    code, reason = _skipped(outcome)[2]
    assert code == "image_too_large" and "decompression bomb" in reason


def test_an_absurd_declared_image_size_costs_its_sample_only(workdir: Path) -> None:
    outcome = _run_manifest(workdir, _with_line_2('"width":601', '"width":1000000000000'))

    assert outcome.exit_code == 0
    code, reason = _skipped(outcome)[2]
    assert code == "image_too_large" and "1000000000000x453" in reason


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_a_non_finite_coordinate_costs_its_line_only(workdir: Path, literal: str) -> None:
    outcome = _run_manifest(workdir, _with_line_2('"left":237', f'"left":{literal}'))

    assert outcome.exit_code == 0
    assert outcome.report is not None and outcome.report["summary"]["converted"] == 3
    code, reason = _skipped(outcome)[2]
    assert code == "malformed_annotation" and "`left` must be a finite number" in reason


def test_a_5000_digit_number_costs_its_line_only(workdir: Path) -> None:
    outcome = _run_manifest(workdir, _with_line_2('"left":237', '"left":' + "9" * 5000))

    assert outcome.exit_code == 0
    assert outcome.report is not None and outcome.report["summary"]["converted"] == 3
    assert _skipped(outcome)[2][0] == "malformed_annotation"


def test_a_lone_surrogate_class_name_costs_its_line_and_is_quoted_escaped(workdir: Path) -> None:
    outcome = _run_manifest(workdir, _with_line_2('"0":"Cat"', '"0":"C\\ud800t"'))

    assert outcome.exit_code == 0
    assert outcome.report is not None and outcome.report["summary"]["converted"] == 3
    code, reason = _skipped(outcome)[2]
    assert code == "invalid_value" and "'C\\ud800t'" in reason
    assert "\ud800" not in reason


def test_nesting_past_the_recursion_limit_costs_its_line_only(workdir: Path) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    outcome = _run_manifest(workdir, _with_line_2('"annotations":[', f'"deep":{deep},"annotations":['))

    assert outcome.exit_code == 0
    assert outcome.report is not None and outcome.report["summary"]["converted"] == 3
    assert _skipped(outcome)[2] == ("malformed_json", "malformed JSON: nested too deeply to read")


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_a_manifest_converts_in_any_unicode_encoding(workdir: Path, encoding: str) -> None:
    outcome = _run_manifest(workdir, "\n".join(cat_manifest_lines()).encode(encoding))

    assert outcome.exit_code == 0
    assert outcome.report is not None and outcome.report["summary"]["converted"] == 4


def test_one_undecodable_line_costs_that_line_only(workdir: Path) -> None:
    lines = [line.encode() for line in cat_manifest_lines()]
    manifest = b"\n".join([lines[0], b"\xff\xfe{not text\xc3", *lines[1:]])

    outcome = _run_manifest(workdir, manifest)

    assert outcome.exit_code == 0
    assert outcome.report is not None and outcome.report["summary"]["converted"] == 4
    assert _skipped(outcome) == {2: ("undecodable_line", "not UTF-8 text (byte 1 of the line)")}


def test_one_undecodable_unit_in_utf16_costs_that_line_only(workdir: Path) -> None:
    lines = [line.encode("utf-16-le") for line in cat_manifest_lines()]
    newline = "\n".encode("utf-16-le")
    manifest = b"\xff\xfe" + newline.join([lines[0], b"\x00\xd8{\x00", *lines[1:]])  # a lone high surrogate

    outcome = _run_manifest(workdir, manifest)

    assert outcome.exit_code == 0
    assert outcome.report is not None and outcome.report["summary"]["converted"] == 4
    assert _skipped(outcome) == {2: ("undecodable_line", "not valid UTF-16-LE text")}


def test_a_line_longer_than_the_limit_is_skipped_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "output.manifest"
    path.write_bytes(b'{"a": 1}\n' + b"x" * 5000 + b"\n" + b'{"b": 2}')

    lines = list(iter_lines(path, "manifest", max_line_bytes=1024))

    assert [(line.number, line.text, line.code) for line in lines] == [
        (1, '{"a": 1}', None),
        (2, None, "line_too_long"),
        (3, '{"b": 2}', None),
    ]


def test_a_very_long_manifest_line_costs_that_line_only(workdir: Path) -> None:
    lines = cat_manifest_lines()
    long_line = lines[1].replace('"job-name"', '"padding":"' + "x" * (65 << 20) + '","job-name"')
    outcome = _run_manifest(workdir, "\n".join([lines[0], long_line, *lines[2:]]).encode())

    assert outcome.exit_code == 0
    assert _skipped(outcome) == {2: ("line_too_long", "line longer than 64 MiB")}


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-16-le", "utf-32"])
def test_exports_are_recognized_in_any_unicode_encoding(tmp_path: Path, encoding: str) -> None:
    manifest, coco, geojson = tmp_path / "output.manifest", tmp_path / "coco.json", tmp_path / "features.geojson"
    manifest.write_bytes("\n".join(cat_manifest_lines()).encode(encoding))
    coco.write_bytes(COCO_FILES["val"].read_text(encoding="utf-8").encode(encoding))
    geojson.write_bytes(json.dumps(geojson_from_coco()).encode(encoding))

    assert [locate_export(path, None).source_name for path in (manifest, coco, geojson)] == [
        "sagemaker_gt",
        "coco",
        "geojson",
    ]


# --- whole JSON documents --------------------------------------------------------------------------


def test_json_numbers_and_nesting_never_raise_anything_but_sample_errors() -> None:
    assert parse_json("[NaN, 1e400, " + "9" * 5000 + "]")[2] == float("inf")
    with pytest.raises(SampleError, match="nested too deeply"):
        parse_json("[" * 100_000 + "]" * 100_000)


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_a_json_document_loads_in_any_unicode_encoding(tmp_path: Path, encoding: str) -> None:
    path = tmp_path / "instances.json"
    path.write_bytes(COCO_FILES["val"].read_text(encoding="utf-8").encode(encoding))

    assert load_json(path, "COCO file") == json.loads(COCO_FILES["val"].read_text(encoding="utf-8"))


def test_a_deeply_nested_coco_file_is_one_clear_usage_error(workdir: Path) -> None:
    path = workdir / "instances.json"
    path.write_text('{"images": ' + "[" * 100_000 + "]" * 100_000 + "}", encoding="utf-8")

    outcome = check_run(convert(path, COCO_IMAGES["val"], workdir / "out", "coco"), workdir / "out")

    assert outcome.exit_code == 2
    assert "is not valid JSON: nested too deeply to read" in outcome.stderr
    with pytest.raises(UsageError):
        load_json(path, "COCO file")


def test_a_non_finite_coco_box_costs_its_annotation_only(workdir: Path) -> None:
    document = json.loads(COCO_FILES["val"].read_text(encoding="utf-8"))
    document["annotations"][0]["bbox"][0] = float("nan")
    path = workdir / "instances.json"
    path.write_text(json.dumps(document), encoding="utf-8")

    outcome = check_run(convert(path, COCO_IMAGES["val"], workdir / "out", "coco"), workdir / "out")

    assert outcome.exit_code == 0 and outcome.report is not None
    assert outcome.report["summary"]["converted"] == 1
    [note] = [entry for entry in outcome.report["objects"] if entry["code"] == "malformed_annotation"]
    assert "annotation 1 dropped: `bbox` must be a finite number, got nan" in note["message"]


def test_a_lone_surrogate_coco_category_is_a_usage_error_quoted_escaped(workdir: Path) -> None:
    text = COCO_FILES["val"].read_text(encoding="utf-8").replace('"name":"a"', '"name":"a\\udc80"')
    path = workdir / "instances.json"
    path.write_text(text, encoding="utf-8")

    outcome = check_run(convert(path, COCO_IMAGES["val"], workdir / "out", "coco"), workdir / "out")

    assert outcome.exit_code == 2
    assert "categories[0]: its name 'a\\udc80' is not valid Unicode text" in outcome.stderr


def test_a_mask_declaring_a_huge_size_costs_its_sample_only(workdir: Path) -> None:
    folder = mask_folder(workdir / "export", json.dumps(PCB_LABELS).encode(), png_claiming_size(60_000, 60_000))

    output = workdir / "out"
    outcome = check_run(convert(folder.label_map, folder.images, output, "mask_folder"), output)

    assert outcome.exit_code == 1 and outcome.report is not None
    [entry] = outcome.report["skipped"]
    assert entry["code"] == "image_too_large" and "decompression bomb" in entry["reason"]


@pytest.mark.parametrize(
    ("label_map", "message"),
    [
        (b"a: " + b"[" * 100_000 + b"]" * 100_000, "cannot be parsed: nested too deeply"),
        (b"? " + b"9" * 5001 + b"\n: car\n", "cannot be parsed: Exceeds the limit (4300 digits)"),
        (b"? [{a: 1}]\n: car\n", "cannot be parsed: unhashable type: 'dict'"),
        (b'0: bg\n1: "car\\ud800"\n', "value 1: label 'car\\ud800' is not valid Unicode text"),
        (b"0: bg\n1: [\x01]\n", "cannot be parsed: unacceptable character #x0001"),
    ],
)
def test_a_hostile_yaml_label_map_is_one_clear_usage_error(workdir: Path, label_map: bytes, message: str) -> None:
    folder = mask_folder(workdir / "export", label_map, (PCB_SEMSEG / "mask.png").read_bytes(), "labels.yaml")

    outcome = check_run(convert(folder.label_map, folder.images, workdir / "out", "mask_folder"), workdir / "out")

    assert outcome.exit_code == 2
    [error] = [line for line in outcome.stderr.splitlines() if line.startswith("ERROR:")]
    assert message in error


def test_a_file_name_that_is_not_utf8_costs_its_sample_only(workdir: Path) -> None:
    folder = mask_folder(workdir / "export", json.dumps(PCB_LABELS).encode(), (PCB_SEMSEG / "mask.png").read_bytes())
    bad_name = os.fsdecode(b"bad\xff.png")  # the byte 0xff is no UTF-8: Python names it with a lone surrogate
    (folder.images / bad_name).symlink_to(PCB_SEMSEG / "s10.png")
    (folder.masks / bad_name).write_bytes((PCB_SEMSEG / "mask.png").read_bytes())

    outcome = check_run(convert(folder.label_map, folder.images, workdir / "out", "mask_folder"), workdir / "out")

    assert outcome.exit_code == 0 and outcome.report is not None
    assert outcome.report["summary"]["converted"] == 1
    [entry] = outcome.report["skipped"]
    assert entry["code"] == "invalid_value" and "'bad\\udcff.png' is not valid Unicode text" in entry["reason"]


# --- properties: mutated real exports --------------------------------------------------------------

_CAT_LINES = cat_manifest_lines() if CAT_IMAGES.is_dir() else [""]


@st.composite
def _manifest_mutant(draw: st.DrawFn) -> bytes:
    lines = list(_CAT_LINES)
    kind = draw(st.sampled_from(["value", "value", "bytes", "both"]))
    if kind in ("value", "both"):
        index = draw(st.integers(0, len(lines) - 1))
        lines[index] = draw(json_mutant(json.loads(lines[index])))
    data = encoded("\n".join(lines), draw(st.sampled_from(ENCODINGS)))
    if kind in ("bytes", "both"):
        data = draw(byte_mutant(data))
    return data


@PROPERTY_SETTINGS
@given(manifest=_manifest_mutant())
def test_property_any_mutated_ground_truth_manifest(manifest: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        _run_manifest(Path(folder), manifest)


def _document_mutant(document: object) -> st.SearchStrategy[bytes]:
    @st.composite
    def mutant(draw: st.DrawFn) -> bytes:
        kind = draw(st.sampled_from(["value", "value", "encoding", "bytes"]))
        text = draw(json_mutant(document)) if kind == "value" else json.dumps(document, indent=2)
        data = encoded(text, draw(st.sampled_from(ENCODINGS)))
        return draw(byte_mutant(data)) if kind == "bytes" else data

    return mutant()


_COCO_VAL = json.loads(COCO_FILES["val"].read_text(encoding="utf-8")) if COCO_FILES["val"].is_file() else {}


_COCO_IMAGE = (COCO_IMAGES["val"] / "b.jpg").read_bytes() if COCO_IMAGES["val"].is_dir() else b""


@PROPERTY_SETTINGS
@given(document=_document_mutant(_COCO_VAL), image=st.one_of(st.none(), byte_mutant(_COCO_IMAGE)))
def test_property_any_mutated_coco_file(document: bytes, image: bytes | None) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "instances_val.json"
        path.write_bytes(document)
        images = COCO_IMAGES["val"]
        if image is not None:
            images = Path(folder) / "images"
            images.mkdir()
            (images / "b.jpg").write_bytes(image)
        check_run(convert(path, images, Path(folder) / "out", "coco"), Path(folder) / "out")


_GEOJSON = geojson_from_coco("val") if COCO_FILES["val"].is_file() else {}


@PROPERTY_SETTINGS
@given(document=_document_mutant(_GEOJSON))
def test_property_any_mutated_geojson_file(document: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "annotations.geojson"
        path.write_bytes(document)
        check_run(convert(path, COCO_IMAGES["val"], Path(folder) / "out", "geojson"), Path(folder) / "out")


_PCB_MASK = (PCB_SEMSEG / "mask.png").read_bytes() if PCB_SEMSEG.is_dir() else b""


@st.composite
def _mask_folder_mutant(draw: st.DrawFn) -> tuple[bytes, bytes, str]:
    if draw(st.booleans()):
        name = "labels.json"
        label_map = draw(_document_mutant(PCB_LABELS))
    else:
        name = "labels.yaml"
        text = "".join(f"{index}: {label}\n" for index, label in PCB_LABELS.items())
        label_map = draw(byte_mutant(encoded(text, draw(st.sampled_from(ENCODINGS)))))
    mask = draw(byte_mutant(_PCB_MASK)) if draw(st.booleans()) else _PCB_MASK
    return label_map, mask, name


@PROPERTY_SETTINGS
@given(files=_mask_folder_mutant())
def test_property_any_mutated_mask_folder(files: tuple[bytes, bytes, str]) -> None:
    label_map, mask, name = files
    with tempfile.TemporaryDirectory() as folder:
        export = mask_folder(Path(folder) / "export", label_map, mask, name)
        output = Path(folder) / "out"
        check_run(convert(export.label_map, export.images, output, "mask_folder"), output)


_EXTREME = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([1e308, -1e308, 1.7976931348623157e308, -1.7976931348623157e308, 5e-324, 1e16, -1e16]),
    st.integers(-3, 12).map(float),
)


@PROPERTY_SETTINGS
@given(ring=st.lists(st.tuples(_EXTREME, _EXTREME), min_size=3, max_size=6), hole=st.booleans())
def test_property_geojson_polygons_of_any_finite_coordinates(ring: list[tuple[float, float]], hole: bool) -> None:
    """Coordinates near the limits of a double overflow naive clipping and defeat GEOS: each costs its feature."""
    document = json.loads(json.dumps(_GEOJSON))
    rings = [[[x, y] for x, y in ring]]
    if hole:
        rings.append([[1, 1], [2, 1], [2, 2]])
    document["features"][0]["geometry"]["coordinates"] = rings
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "annotations.geojson"
        path.write_text(json.dumps(document), encoding="utf-8")
        outcome = check_run(convert(path, COCO_IMAGES["val"], Path(folder) / "out", "geojson"), Path(folder) / "out")
        assert outcome.exit_code in (0, 1)


@PROPERTY_SETTINGS
@given(
    rings=st.lists(st.lists(st.tuples(_EXTREME, _EXTREME), min_size=3, max_size=6), min_size=1, max_size=3),
)
def test_property_rasterizing_any_finite_polygon_never_raises(rings: list[list[tuple[float, float]]]) -> None:
    """The rasterizer's clipping of far vertices must not overflow (1e308 - -1e308) into NaN."""
    flat = [tuple(coordinate for point in ring for coordinate in point) for ring in rings]
    coverage = polygon_coverage([Polygon(flat[0], tuple(flat[1:]))], 10, 5)

    assert coverage.full().shape == (10, 5)


def test_a_pinned_class_name_that_is_not_unicode_is_one_clear_usage_error(workdir: Path) -> None:
    (workdir / "output.manifest").write_text("\n".join(cat_manifest_lines()), encoding="utf-8")
    classes = workdir / "classes.yaml"
    classes.write_text('classes: ["Cat", "D\\ud800g"]\n', encoding="utf-8")

    result = convert(
        workdir / "output.manifest", CAT_IMAGES, workdir / "out", "sagemaker_gt", "--classes", str(classes)
    )
    outcome = check_run(result, workdir / "out")

    assert outcome.exit_code == 2
    assert "class name 'D\\ud800g' is not valid Unicode text" in outcome.stderr


def test_hostile_geojson_values_cost_their_feature_or_image_only(workdir: Path) -> None:
    document = geojson_from_coco()
    first, second = document["features"]
    first["properties"]["class_name"] = "b\ud800"  # a lone surrogate: this feature is dropped
    second["geometry"]["coordinates"][0][1] = [float("nan"), 1]  # NaN: this one too
    extra = json.loads(json.dumps(second))
    extra["properties"]["image_filename"] = "other.jpg"
    extra["properties"]["image_width"] = 10**12  # an absurd declared size: that image is skipped
    document["features"].append(extra)
    path = workdir / "annotations.geojson"
    path.write_text(json.dumps(document), encoding="utf-8")

    outcome = check_run(convert(path, COCO_IMAGES["val"], workdir / "out", "geojson"), workdir / "out")

    assert outcome.exit_code == 0 and outcome.report is not None
    assert outcome.report["summary"]["converted"] == 1
    assert [(entry["key"], entry["code"]) for entry in outcome.report["skipped"]] == [("other.jpg", "image_too_large")]
    notes = {entry["code"]: entry["message"] for entry in outcome.report["objects"]}
    assert "feature 0 dropped: its class name 'b\\ud800' is not valid Unicode text" in notes["invalid_value"]
    assert "feature 1 dropped: Polygon ring 0 must hold finite numbers, got nan" in notes["malformed_annotation"]

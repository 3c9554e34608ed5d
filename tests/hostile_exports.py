"""Hostile variants of real exports, and the one check every run on them must pass.

The real exports are read in place from ../shared/samples (never copied into the
project); a mutant is built in memory and written to a temporary folder, with its
images taken from the shared folder where they lie (a symlink where a folder layout
needs one). `check_run` is the contract of issue 9, point 6: whatever the bytes, a run
ends with exit 0, 1 or 2 and never a traceback, and a run that got as far as a report
accounts for every input sample in it.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from click.testing import Result
from hypothesis import strategies as st
from typer.testing import CliRunner

from converter.cli import app
from converter.core.input_files import text_encoding

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "samples"
CAT_BBOX = SHARED / "sagemaker_gt" / "cat_bbox"
PCB_SEMSEG = SHARED / "sagemaker_gt" / "pcb_semseg"
DATUMARO = SHARED / "coco" / "datumaro"
PCB_LABELS = {"0": "BACKGROUND", "1": "IC", "2": "resistor1", "3": "resistor2"}  # pcb_semseg's internal-color-map

ENCODINGS = ("utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be")


# --- running ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """A finished run: its exit code, stderr, and report.json (None when the run wrote none)."""

    exit_code: int
    stderr: str
    report: dict[str, Any] | None


def convert(annotations: Path, images: Path, output: Path, source: str, *options: str) -> Result:
    arguments = ["convert", "-a", str(annotations), "-i", str(images), "-o", str(output), "--source", source]
    return CliRunner().invoke(app, [*arguments, "--workers", "1", *options])


def check_run(result: Result, output: Path) -> Outcome:
    """Assert the contract every run meets, whatever its input; returns what it left."""
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"the run raised {type(result.exception).__name__}") from result.exception
    assert result.exit_code in (0, 1, 2), result.stderr
    assert "Traceback" not in result.stderr
    report_path = output / "report.json"
    report = json.loads(report_path.read_text(encoding="utf-8")) if report_path.exists() else None
    if result.exit_code == 2:  # a usage error: one clear line
        errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR:")]
        assert errors, result.stderr
        assert all(_plain(line) for line in errors), errors
    else:  # the run got as far as the samples: the report accounts for each
        assert report is not None, f"exit {result.exit_code} without a report.json: {result.stderr[-500:]}"
        summary = report["summary"]
        assert summary["input_samples"] == summary["converted"] + summary["skipped"], summary
        assert summary["skipped"] == len(report["skipped"]), summary
        messages = [entry["reason"] for entry in report["skipped"]]
        messages += [entry["message"] for entry in report["objects"] + report["warnings"]]
        assert all(_plain(message) for message in messages), [m for m in messages if not _plain(m)]
    return Outcome(result.exit_code, result.stderr, report)


MAX_MESSAGE_CHARACTERS = 1000


def _plain(message: str) -> bool:
    """Whether a message shows hostile text as it must: escaped (nothing unprintable) and shortened."""
    return message.isprintable() and len(message) <= MAX_MESSAGE_CHARACTERS


def non_blank_lines(data: bytes) -> set[int]:
    """The numbers of the lines a JSON Lines reader must account for: each non-blank one.

    Decoded the documented way (a byte-order mark or RFC 4627's zero bytes name the
    encoding; UTF-8 lines end at a newline byte, each decoded on its own), undecodable
    bytes replaced: a line of garbage is not blank, it must be reported.
    """
    encoding, bom = text_encoding(data[:4])
    body = data[bom:]
    if encoding == "utf-8":
        lines = [raw.decode("utf-8", errors="replace") for raw in body.split(b"\n")]
    else:
        lines = body.decode(encoding, errors="replace").split("\n")
    return {number for number, text in enumerate(lines, start=1) if text.strip()}


def check_every_line_accounted(outcome: Outcome, manifest: bytes) -> None:
    """Each non-blank manifest line is converted or listed in the report with its line number."""
    if outcome.report is None:
        return
    expected = non_blank_lines(manifest)
    reported = [entry["line"] for entry in outcome.report["skipped"] if entry["line"] is not None]
    assert set(reported) <= expected, (sorted(reported), sorted(expected))
    assert outcome.report["summary"]["input_samples"] == len(expected), (outcome.report["summary"], sorted(expected))


# --- exports ---------------------------------------------------------------------------------------


def cat_manifest_lines() -> list[str]:
    """The four lines of the real Ground Truth bounding-box manifest."""
    return (CAT_BBOX / "output.manifest").read_text(encoding="utf-8").splitlines()


CAT_IMAGES = CAT_BBOX / "input-images"
COCO_FILES = {name: DATUMARO / "annotations" / f"instances_{name}.json" for name in ("train", "val")}
COCO_IMAGES = {name: DATUMARO / "images" / name for name in ("train", "val")}


def geojson_from_coco(name: str = "val") -> dict[str, Any]:
    """The real COCO export's objects as a GeoJSON FeatureCollection over the same images.

    No GeoJSON export is among the shared samples; this keeps the real file names, sizes,
    category ids and coordinates: polygons as they are, boxes as rectangles.
    """
    document = json.loads(COCO_FILES[name].read_text(encoding="utf-8"))
    images = {image["id"]: image for image in document["images"]}
    categories = {category["id"]: category["name"] for category in document["categories"]}
    features = []
    for annotation in document["annotations"]:
        image = images[annotation["image_id"]]
        x, y, width, height = annotation["bbox"]
        segmentation = annotation["segmentation"]
        ring = (
            segmentation[0]
            if isinstance(segmentation, list) and segmentation
            else [x, y, x + width, y, x + width, y + height, x, y + height]
        )
        points = [[ring[index], ring[index + 1]] for index in range(0, len(ring), 2)]
        features.append(
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [[*points, points[0]]]},
                "properties": {
                    "image_filename": image["file_name"],
                    "image_width": image["width"],
                    "image_height": image["height"],
                    "class_id": annotation["category_id"],
                    "class_name": categories[annotation["category_id"]],
                },
            }
        )
    return {"type": "FeatureCollection", "features": features}


@dataclass(frozen=True)
class MaskFolder:
    label_map: Path
    images: Path
    masks: Path


def mask_folder(root: Path, label_map: bytes, mask: bytes, label_map_name: str = "labels.json") -> MaskFolder:
    """A mask folder of the real pcb_semseg image (linked in place) and a mask and label map as given."""
    images, masks = root / "images", root / "masks"
    images.mkdir(parents=True)
    masks.mkdir()
    (images / "s10.png").symlink_to(PCB_SEMSEG / "s10.png")
    (masks / "s10.png").write_bytes(mask)
    (root / label_map_name).write_bytes(label_map)
    return MaskFolder(root / label_map_name, images, masks)


def png_claiming_size(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares `width` x `height`: what a decompression bomb shows a reader."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


# --- mutations -------------------------------------------------------------------------------------

_RAW = "\x00raw:"  # marks a replacement that must reach the text as a raw JSON literal

HOSTILE_LITERALS = (
    "NaN",
    "Infinity",
    "-Infinity",
    "1e400",
    "-1e400",
    "9" * 5000,
    "-" + "9" * 5000,
    "1" + "0" * 400,
    "[" * 100_000 + "]" * 100_000,
    "[" * 900 + "]" * 900,  # within the recursion limit, or just past it
    "{" + '"a":{' * 50_000 + "}" * 50_001,
)

hostile_values = st.one_of(
    st.sampled_from([_RAW + literal for literal in HOSTILE_LITERALS]),
    st.sampled_from([-1, 0, -(10**12), 10**12, 2**64, 0.5, -1e308, 1e308, True, None, "", [], {}]),
    st.sampled_from(["\ud800", "a\udfffb", "\x00", "cat\x1b[31m", "\u202eevil", "\n", "\x85\u2028"]),
    st.text(min_size=0, max_size=20),
    st.just("x" * 200_000),
    st.lists(st.integers(), max_size=5),
)


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every position in a JSON value: each nested value, and each object key (as `("key", name)`)."""
    found = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            found.append((*path, ("key", key)))
            found.extend(_paths(item, (*path, key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found.extend(_paths(item, (*path, index)))
    return found


def _replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(head, tuple):  # rename a key: to a hostile string, else to a short text of the value
        name = new if isinstance(new, str) and not new.startswith(_RAW) else repr(new)[:40]
        return {name if key == head[1] else key: item for key, item in value.items()}
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[head] = _replaced(value[head], rest, new)
    return copy


def _dumped(value: Any, ascii_only: bool) -> str:
    """JSON text of a value whose raw-literal strings become the literals themselves."""
    literals: list[str] = []

    def placeholders(item: Any) -> Any:
        if isinstance(item, str) and item.startswith(_RAW):
            literals.append(item[len(_RAW) :])
            return f"@@raw{len(literals) - 1}@@"
        if isinstance(item, dict):
            return {key: placeholders(child) for key, child in item.items()}
        if isinstance(item, list):
            return [placeholders(child) for child in item]
        return item

    text = json.dumps(placeholders(value), ensure_ascii=ascii_only, allow_nan=True)
    for index, literal in enumerate(literals):
        text = text.replace(f'"@@raw{index}@@"', literal)
    return text


@st.composite
def json_mutant(draw: st.DrawFn, document: Any) -> str:
    """`document` as JSON text with one value (or key) replaced by a hostile one."""
    paths = _paths(document)
    path = draw(st.sampled_from(paths))
    mutated = _replaced(document, path, draw(hostile_values))
    return _dumped(mutated, ascii_only=draw(st.booleans()))


def encoded(text: str, encoding: str) -> bytes:
    """Text in an encoding; lone surrogates are written as their (invalid) code units."""
    return text.encode(encoding, errors="surrogatepass")


@st.composite
def byte_mutant(draw: st.DrawFn, data: bytes) -> bytes:
    """`data` with a few bytes flipped, inserted or deleted, or cut short."""
    result = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        position = draw(st.integers(0, max(len(result) - 1, 0)))
        if kind == "flip" and result:
            result[position] ^= draw(st.integers(1, 255))
        elif kind == "insert":
            result[position:position] = draw(st.binary(min_size=1, max_size=4))
        elif kind == "delete" and result:
            del result[position : position + draw(st.integers(1, 8))]
        elif kind == "truncate":
            del result[position:]
    return bytes(result)

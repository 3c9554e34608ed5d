"""Build small synthetic Ground Truth exports in a temporary folder, and run the converter on them.

Every image is generated from a seed, so its bytes (and sha256) differ from every other
image's and the same test always writes the same files. Manifest lines are built as the
Ground Truth documentation and real exports show them (see ../shared/specs/formats.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import yaml
from PIL import Image
from typer.testing import CliRunner, Result

from converter.cli import app

DETECTION = "groundtruth/object-detection"
CLASSIFICATION = "groundtruth/image-classification"
MULTILABEL = "groundtruth/image-classification-multilabel"
SEMANTIC_SEGMENTATION = "groundtruth/semantic-segmentation"

BUCKET = "s3://bucket"
# The converter's own folder in an output folder (spelled out here, not imported: the layout is documented).
STATE_FOLDER = ".dataset-converter"


# ---------------------------------------------------------------------------
# Images and masks


def image_pixels(width: int, height: int, seed: int) -> npt.NDArray[np.uint8]:
    """A smooth, seeded colour image (compresses well) with a seeded noise patch (unique bytes)."""
    rng = np.random.default_rng(seed)
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[..., 0] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
    pixels[..., 1] = np.linspace(0, 255, height, dtype=np.uint8)[:, None]
    pixels[..., 2] = seed % 256
    patch = rng.integers(0, 256, size=(min(8, height), min(8, width), 3), dtype=np.uint8)
    pixels[: patch.shape[0], : patch.shape[1]] = patch
    return pixels


def noise_pixels(width: int, height: int, seed: int) -> npt.NDArray[np.uint8]:
    """Seeded noise: a PNG of it is about `width * height * 3` bytes (incompressible)."""
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def write_image(path: Path, pixels: npt.NDArray[np.uint8]) -> bytes:
    """Encode RGB pixels by the path's suffix (`.jpg`, `.jpeg`, `.png`) and return the file's bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    extension = ".png" if path.suffix.lower() == ".png" else ".jpg"
    ok, encoded = cv2.imencode(extension, cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR))
    assert ok, f"OpenCV could not encode {path}"
    data = encoded.tobytes()
    path.write_bytes(data)
    return data


def write_palette_mask(path: Path, indices: npt.NDArray[np.uint8], palette_hex: Sequence[str]) -> None:
    """A palette ("P" mode) PNG whose pixel values are `indices` and whose palette holds the colours."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(indices, mode="P")
    palette: list[int] = []
    for color in palette_hex:
        palette.extend(hex_to_rgb(color))
    image.putpalette(palette + [0] * (768 - len(palette)))
    image.save(path)


def write_rgb_mask(path: Path, rgb: npt.NDArray[np.uint8]) -> None:
    """An RGB PNG mask (lossless)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb, mode="RGB").save(path)


def hex_to_rgb(color: str) -> tuple[int, int, int]:
    value = int(color.lstrip("#"), 16)
    return (value >> 16) & 0xFF, (value >> 8) & 0xFF, value & 0xFF


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------
# Manifest lines


@dataclass(frozen=True)
class GtBox:
    """One Ground Truth box: `class_id` into the line's class-map, pixels from the top-left corner."""

    class_id: int
    left: float
    top: float
    width: float
    height: float


def metadata(job_type: str, **fields: Any) -> dict[str, Any]:
    return {
        "job-name": "labeling-job/synthetic",
        "human-annotated": "yes",
        "creation-date": "2024-01-02T03:04:05.678901",
        "type": job_type,
        **fields,
    }


def detection_line(
    reference: str,
    boxes: Sequence[GtBox],
    class_map: Mapping[int, str],
    size: tuple[int, int] = (64, 48),
    attribute: str = "bbox",
) -> dict[str, Any]:
    """An object-detection line; `size` is the declared (width, height)."""
    return {
        "source-ref": reference,
        attribute: {
            "image_size": [{"width": size[0], "height": size[1], "depth": 3}],
            "annotations": [
                {"class_id": box.class_id, "left": box.left, "top": box.top, "width": box.width, "height": box.height}
                for box in boxes
            ],
        },
        f"{attribute}-metadata": metadata(
            DETECTION,
            **{
                "class-map": {str(key): name for key, name in class_map.items()},
                "objects": [{"confidence": 0.9} for _ in boxes],
            },
        ),
    }


def classification_line(
    reference: str, value: int | str, class_name: str, attribute: str = "category"
) -> dict[str, Any]:
    return {
        "source-ref": reference,
        attribute: value,
        f"{attribute}-metadata": metadata(CLASSIFICATION, **{"class-name": class_name, "confidence": 0.8}),
    }


def multilabel_line(
    reference: str, values: Sequence[int], class_map: Mapping[int, str], attribute: str = "tags"
) -> dict[str, Any]:
    return {
        "source-ref": reference,
        attribute: list(values),
        f"{attribute}-metadata": metadata(
            MULTILABEL,
            **{
                "class-map": {str(key): name for key, name in class_map.items()},
                "confidence-map": {str(key): 0.7 for key in class_map},
            },
        ),
    }


def segmentation_line(
    reference: str, mask_reference: str, color_map: Mapping[int, tuple[str, str]], attribute: str = "seg-ref"
) -> dict[str, Any]:
    """`color_map`: Ground Truth index -> (class name, hex colour); index 0 is Ground Truth's background."""
    return {
        "source-ref": reference,
        attribute: mask_reference,
        f"{attribute}-metadata": metadata(
            SEMANTIC_SEGMENTATION,
            **{
                "internal-color-map": {
                    str(index): {"class-name": name, "hex-color": color, "confidence": 0}
                    for index, (name, color) in color_map.items()
                }
            },
        ),
    }


def write_manifest(path: Path, lines: Iterable[Mapping[str, Any] | str]) -> Path:
    """Write JSON Lines; a `str` entry is written verbatim (blank or malformed lines)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join((entry if isinstance(entry, str) else json.dumps(entry)) + "\n" for entry in lines)
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------------------
# A whole export


@dataclass
class Export:
    """A synthetic export: images under `images`, a manifest written by `write`.

    `lines` are the manifest lines in order (1-based line n is `lines[n - 1]`); `image_bytes`
    maps each source-ref to the bytes of the file it should resolve to.
    """

    root: Path
    lines: list[Mapping[str, Any] | str] = field(default_factory=list)
    image_bytes: dict[str, bytes] = field(default_factory=dict)

    @property
    def images(self) -> Path:
        return self.root / "images"

    @property
    def manifest(self) -> Path:
        return self.root / "output.manifest"

    def add_image(
        self, name: str, size: tuple[int, int] = (64, 48), seed: int | None = None, *, noise: bool = False
    ) -> str:
        """Write `<images>/<name>` and return its reference `s3://bucket/<name>`."""
        seed = len(self.image_bytes) + 1 if seed is None else seed
        pixels = noise_pixels(*size, seed) if noise else image_pixels(*size, seed)
        reference = f"{BUCKET}/{name}"
        self.image_bytes[reference] = write_image(self.images / name, pixels)
        return reference

    def add_line(self, line: Mapping[str, Any] | str) -> int:
        """Append a line; returns its 1-based line number."""
        self.lines.append(line)
        return len(self.lines)

    def add_detection(
        self,
        name: str,
        boxes: Sequence[GtBox],
        class_map: Mapping[int, str],
        size: tuple[int, int] = (64, 48),
        **image_options: Any,
    ) -> str:
        reference = self.add_image(name, size, **image_options)
        self.add_line(detection_line(reference, boxes, class_map, size))
        return reference

    def write(self) -> Path:
        return write_manifest(self.manifest, self.lines)

    def line_of(self, reference: str) -> int:
        """The 1-based line number of the (first) line whose source-ref is `reference`."""
        for number, line in enumerate(self.lines, start=1):
            if not isinstance(line, str) and line.get("source-ref") == reference:
                return number
        raise KeyError(reference)

    def references(self) -> list[str]:
        return [line["source-ref"] for line in self.lines if not isinstance(line, str) and "source-ref" in line]


def detection_export(root: Path, count: int, *, first_seed: int = 1, prefix: str = "img") -> Export:
    """`count` detection samples with one or two boxes each, classes `cat` (GT 0) and `dog` (GT 1)."""
    export = Export(root)
    for index in range(count):
        seed = first_seed + index
        boxes = [GtBox(index % 2, 2 + index % 7, 3 + index % 5, 20 + index % 11, 15 + index % 9)]
        if index % 3 == 0:
            boxes.append(GtBox(1 - index % 2, 30, 20, 25.5, 20.25))
        class_map = {box.class_id: ("cat", "dog")[box.class_id] for box in boxes}
        export.add_detection(f"{prefix}{seed:04d}.jpg", boxes, class_map, seed=seed)
    return export


@dataclass
class CocoExport:
    """A synthetic COCO export: images under `root/images`, the JSON under `root/annotations`."""

    root: Path
    categories: list[dict[str, Any]] = field(default_factory=list)
    images: list[dict[str, Any]] = field(default_factory=list)
    annotations: list[dict[str, Any]] = field(default_factory=list)
    image_bytes: dict[str, bytes] = field(default_factory=dict)

    @property
    def image_folder(self) -> Path:
        return self.root / "images"

    @property
    def path(self) -> Path:
        return self.root / "annotations" / "instances.json"

    def add_image(self, file_name: str, size: tuple[int, int] = (64, 48), image_id: int | None = None) -> int:
        """Write the image file and its `images` entry; returns its id."""
        image_id = len(self.images) + 1 if image_id is None else image_id
        self.image_bytes[file_name] = write_image(
            self.image_folder / file_name, image_pixels(*size, seed=len(self.images) + 1)
        )
        self.images.append({"id": image_id, "file_name": file_name, "width": size[0], "height": size[1]})
        return image_id

    def add_annotation(self, image_id: int, category_id: int, **fields: Any) -> dict[str, Any]:
        annotation = {"id": len(self.annotations) + 1, "image_id": image_id, "category_id": category_id, "iscrowd": 0}
        annotation.update(fields)
        self.annotations.append(annotation)
        return annotation

    def write(self) -> Path:
        document = {
            "info": {"description": "synthetic"},
            "images": self.images,
            "annotations": self.annotations,
            "categories": self.categories,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(document), encoding="utf-8")
        return self.path


PERSON_KEYPOINTS = [f"point_{index}" for index in range(17)]  # COCO's keypoint evaluation has 17 sigmas


def person_keypoints_export(root: Path) -> tuple[CocoExport, dict[int, list[float]]]:
    """Six images, each a person with 17 keypoints (all three visibilities) and a ball with none;
    returns the export and each person annotation's keypoints by annotation id."""
    export = CocoExport(
        root,
        categories=[
            {"id": 1, "name": "person", "keypoints": PERSON_KEYPOINTS, "skeleton": []},
            {"id": 2, "name": "ball"},
        ],
    )
    keypoints_by_annotation: dict[int, list[float]] = {}
    for index in range(6):
        image_id = export.add_image(f"img{index}.jpg", size=(64, 48))
        points: list[float] = []
        for number in range(17):
            visibility = (number + index) % 3
            points += [3.0 + 3 * number, 2.0 + 2 * number, visibility] if visibility else [0, 0, 0]
        person = export.add_annotation(
            image_id, 1, bbox=[1, 1, 60, 45], area=2000.0, keypoints=points, num_keypoints=12
        )
        keypoints_by_annotation[person["id"]] = points
        export.add_annotation(image_id, 2, bbox=[40, 30, 10, 10])
    export.write()
    return export, keypoints_by_annotation


# ---------------------------------------------------------------------------
# Running the converter and reading its outputs


def convert(*arguments: str | Path) -> Result:
    """`dataset-converter convert ARGUMENTS` in process, stdout and stderr captured separately."""
    return CliRunner().invoke(app, ["convert", *(str(argument) for argument in arguments)])


def verify(dataset: Path) -> Result:
    return CliRunner().invoke(app, ["verify", str(dataset)])


def flat(text: str) -> str:
    """Error text without rich's box drawing and line wrapping, for fragment assertions."""
    return re.sub(r"\s+", " ", re.sub(r"[│╭╮╰╯─]", " ", text)).strip()


def json_events(stderr: str) -> list[dict[str, Any]]:
    """The JSON log lines of a run's stderr (lines starting with `{`)."""
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def load_info(output: Path) -> dict[str, Any]:
    info: dict[str, Any] = yaml.safe_load((output / "dataset_info.yaml").read_text(encoding="utf-8"))
    return info


def load_report(output: Path) -> dict[str, Any]:
    report: dict[str, Any] = json.loads((output / "report.json").read_text(encoding="utf-8"))
    return report


def skipped_by_line(report: Mapping[str, Any]) -> dict[int, str]:
    """Line number -> skip code."""
    return {entry["line"]: entry["code"] for entry in report["skipped"]}


def visible_names(output: Path) -> list[str]:
    """The top-level names a user sees in the output folder, sorted; the converter's state folder left out."""
    return sorted(path.name for path in output.iterdir() if path.name != STATE_FOLDER)


def dataset_files(output: Path) -> dict[str, bytes]:
    """The dataset as a user sees it: every file reached from a visible top-level name, links followed.

    Relative path as the user writes it (`tfrecord_train/train-00000-of-00001.tfrecord`) -> bytes.
    Generation folders (whose names differ between runs) and the lock never appear.
    """
    files: dict[str, bytes] = {}
    for name in visible_names(output):
        top = output / name
        if top.is_file():
            files[name] = top.read_bytes()
        for root, folders, names in os.walk(top, followlinks=True):
            folders.sort()
            for file_name in sorted(names):
                path = Path(root) / file_name
                files[path.relative_to(output).as_posix()] = path.read_bytes()
    return files


def leftovers(output: Path) -> list[str]:
    """What no dataset in `output` uses: dangling top-level links, and state-folder entries other than
    the lock, `current` and the generations that top-level links (through `current` or not) lead to."""
    state = output / STATE_FOLDER
    if not state.is_dir():
        return []
    used = {"lock", "current"}
    dangling = []
    for path in [state / "current", *(output / name for name in visible_names(output))]:
        if not path.is_symlink():
            continue
        if not path.exists():
            dangling.append(path.relative_to(output).as_posix())
            continue
        resolved = path.resolve()
        if resolved.is_relative_to(state.resolve()):
            used.add(resolved.relative_to(state.resolve()).parts[0])
    unused = [f"{STATE_FOLDER}/{path.name}" for path in state.iterdir() if path.name not in used]
    return sorted(dangling + unused)


TRAINING_STACK_NAMES = ["coco", "configs", "dataset_info.json", "features.json", "label_map.csv", "label_map.pbtxt"]
"""What the Object Detection API layout writes beside the split folders for the training stacks."""


def tfrecord_names(*split_folders: str) -> list[str]:
    """The visible names of a TFRecord dataset with these split folders (sorted, as `visible_names`), with stats/."""
    return sorted([*TRAINING_STACK_NAMES, "dataset_info.yaml", "report.json", "stats", *split_folders])


def shard_files(output: Path) -> dict[str, bytes]:
    """Every `.tfrecord` file of the dataset as a user sees it (relative path -> bytes)."""
    return {path: data for path, data in dataset_files(output).items() if path.endswith(".tfrecord")}


def assert_secrets_nowhere(secrets: Sequence[str], output: Path, *results: Result) -> None:
    """No secret in any run's stdout or stderr (the JSON log), nor in any file under `output`."""
    for secret in secrets:
        for result in results:
            assert secret not in result.stdout
            assert secret not in result.stderr
        for path in output.rglob("*") if output.exists() else ():
            if path.is_file():
                assert secret.encode() not in path.read_bytes(), f"{secret!r} written into {path}"

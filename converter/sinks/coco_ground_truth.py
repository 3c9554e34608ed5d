"""COCO ground truth beside the records: what COCO-style evaluation scores against.

Model Garden's evaluation (`task.annotation_file`) and pycocotools' COCOeval read a COCO
instances JSON whose image ids are the records' `image/source_id`. Writing it from the
very samples that become records means the evaluation scores against exactly the
converted data: the same clipped boxes, areas, crowd flags and pixels.

Per object: `bbox` is the clipped box in displayed pixels (`[x, y, width, height]`),
`area` is the record's `image/object/area`, `iscrowd` the source's, and `segmentation` is
the shape's pixels in COCO's compressed RLE where the object has a shape, else the box
as a polygon (what a box paints as an instance mask), so mask evaluation works on every
object. Annotation ids count from 1 in record order, which is deterministic.

A worker builds each sample's JSON (`sample_fragment`); the split's writer streams the
fragments to two spool files, and `assemble` writes the final file once the class list is
final, so memory holds nothing per sample.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from converter import __version__
from converter.core.classes import FIRST_CLASS_ID
from converter.core.materialize import EncodedObject, EncodedSample

COCO_FOLDER = "coco"


@dataclass(frozen=True, slots=True)
class GroundTruthFragment:
    """One sample as COCO JSON: its `images` entry, its annotations without their `id`, and the
    keypoint names of its objects' classes (`(class id, names)`) for the categories."""

    image: str
    annotations: tuple[str, ...]
    keypoint_names: tuple[tuple[int, tuple[str, ...]], ...] = ()


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))  # made once: json.dumps makes one a call


def _dumps(value: Any) -> str:
    return _ENCODER.encode(value)


def _segmentation(obj: EncodedObject, height: int, width: int) -> dict[str, Any] | list[list[float]]:
    if obj.rle_counts is not None:
        return {"size": [height, width], "counts": obj.rle_counts}
    x_min, y_min, x_max, y_max = obj.bbox_pixels
    return [[x_min, y_min, x_max, y_min, x_max, y_max, x_min, y_max]]


def sample_fragment(sample: EncodedSample) -> GroundTruthFragment:
    """The sample's COCO entries; runs in the worker, beside the record."""
    height, width = sample.image.height, sample.image.width
    image = _dumps(
        {
            "id": sample.image_id,
            "file_name": sample.sample.image_name,
            "height": height,
            "width": width,
            "source_key": sample.sample.key,
        }
    )
    annotations = []
    keypoint_names: dict[int, tuple[str, ...]] = {}
    for obj in sample.objects:
        x_min, y_min, x_max, y_max = obj.bbox_pixels
        annotation = {
            "image_id": sample.image_id,
            "category_id": obj.class_id,
            "bbox": [x_min, y_min, x_max - x_min, y_max - y_min],
            "area": obj.area_pixels,
            "iscrowd": int(obj.is_crowd),
            "segmentation": _segmentation(obj, height, width),
        }
        if obj.keypoints:
            annotation["keypoints"] = [
                value for point in obj.keypoints for value in (point.x_pixels, point.y_pixels, point.visibility)
            ]
            annotation["num_keypoints"] = sum(1 for point in obj.keypoints if point.visibility)
            keypoint_names.setdefault(obj.class_id, tuple(point.name for point in obj.keypoints))
        annotations.append(_dumps(annotation))
    return GroundTruthFragment(image, tuple(annotations), tuple(keypoint_names.items()))


class GroundTruthWriter:
    """Spools one split's fragments to disk in record order; `assemble` makes the JSON."""

    def __init__(self, output_dir: Path, file_name: str) -> None:
        self.file_name = file_name
        folder = output_dir / COCO_FOLDER
        folder.mkdir(exist_ok=True)
        self._path = folder / file_name
        self._images_path = folder / f".{file_name}.images"
        self._annotations_path = folder / f".{file_name}.annotations"
        self._images: TextIO = self._images_path.open("w", encoding="utf-8")
        self._annotations: TextIO = self._annotations_path.open("w", encoding="utf-8")
        self._next_annotation_id = 1
        self.keypoint_names: dict[int, tuple[str, ...]] = {}  # class id -> its keypoints' names, as first met

    def write(self, fragment: GroundTruthFragment) -> None:
        for class_id, names in fragment.keypoint_names:
            self.keypoint_names.setdefault(class_id, names)
        self._images.write(fragment.image + "\n")
        for annotation in fragment.annotations:
            self._append_annotation(annotation)

    def write_document(self, document: Mapping[str, Any]) -> None:
        """Append a COCO file this module wrote (a scaled-out worker's), renumbering its annotations."""
        for category in document.get("categories", []):
            if "keypoints" in category:
                self.keypoint_names.setdefault(int(category["id"]), tuple(category["keypoints"]))
        for image in document["images"]:
            self._images.write(_dumps(image) + "\n")
        for annotation in document["annotations"]:
            self._append_annotation(_dumps({key: value for key, value in annotation.items() if key != "id"}))

    def _append_annotation(self, annotation: str) -> None:
        """Spool one annotation (a JSON object without `id`) under the split's next annotation id."""
        self._annotations.write(f'{{"id":{self._next_annotation_id},{annotation[1:]}\n')
        self._next_annotation_id += 1

    def close(self) -> None:
        self._images.close()
        self._annotations.close()

    def assemble(self, class_names: Sequence[str], keypoint_names: Mapping[int, Sequence[str]]) -> None:
        """Write `coco/<file_name>` from the spool files (then removed), with the final categories.

        `keypoint_names` are the whole dataset's (class id -> names), so every split lists the same categories.
        """
        categories: list[dict[str, Any]] = [
            {"id": index, "name": name, "supercategory": ""}
            for index, name in enumerate(class_names, start=FIRST_CLASS_ID)
        ]
        for category in categories:
            if category["id"] in keypoint_names:
                category["keypoints"] = list(keypoint_names[category["id"]])
                category["skeleton"] = []
        head = {
            "info": {"description": "ground truth of the records", "version": __version__},
            "licenses": [],
            "categories": categories,
        }
        with self._path.open("w", encoding="utf-8") as out:
            out.write(_dumps(head)[:-1])
            for key, spool in (("images", self._images_path), ("annotations", self._annotations_path)):
                out.write(f',"{key}":[')
                with spool.open(encoding="utf-8") as lines:
                    for index, line in enumerate(lines):
                        out.write(("," if index else "") + "\n" + line.rstrip("\n"))
                out.write("]")
            out.write("}\n")
        self._images_path.unlink()
        self._annotations_path.unlink()

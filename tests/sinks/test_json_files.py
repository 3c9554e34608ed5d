"""`-f json`: every annotation file validated against docs/json-output.schema.json and compared with the inputs.

The schema is checked by a small validator written here for the keywords the schema uses
(`jsonschema` is not a dependency); a keyword it does not know fails the test, so the
schema can never promise more than the tests check.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from builders import PERSON_KEYPOINTS, Export, GtBox, convert, load_info, person_keypoints_export, verify
from labelstudio_tasks import (
    annotation,
    brush,
    choices,
    keypoint,
    mask_to_brush,
    polygon,
    rectangle,
    task,
    write_export,
    write_stand_in,
)
from PIL import Image
from pycocotools import mask as coco_mask

from . import HEIGHT, WIDTH, Input, detection_input, multilabel_input, segmentation_input

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "docs" / "json-output.schema.json"
SPLIT_FOLDERS = {"train": "train", "validation": "val", "test": "test"}
Document = dict[str, Any]

# --- a validator for the JSON Schema keywords the schema uses -------------------------------------

_ANNOTATION_KEYWORDS = {"$schema", "title", "description", "$defs"}
_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda value: isinstance(value, dict),
    "array": lambda value: isinstance(value, list),
    "string": lambda value: isinstance(value, str),
    "boolean": lambda value: isinstance(value, bool),
    "null": lambda value: value is None,
    "number": lambda value: isinstance(value, int | float) and not isinstance(value, bool),
    "integer": lambda value: (
        (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, float) and value.is_integer())
    ),
}


def schema_errors(value: Any, schema: dict[str, Any], root: dict[str, Any], where: str = "$") -> list[str]:
    """Where `value` breaks `schema` (draft 2020-12 semantics, for the keywords handled here)."""
    errors: list[str] = []
    for keyword, argument in schema.items():
        if keyword in _ANNOTATION_KEYWORDS:
            continue
        if keyword == "$ref":
            assert argument.startswith("#/$defs/"), argument
            errors += schema_errors(value, root["$defs"][argument.removeprefix("#/$defs/")], root, where)
        elif keyword == "type":
            types = argument if isinstance(argument, list) else [argument]
            if not any(_TYPES[name](value) for name in types):
                errors.append(f"{where}: {value!r} is not of type {argument}")
        elif keyword == "anyOf":
            if all(schema_errors(value, option, root, where) for option in argument):
                errors.append(f"{where}: {value!r} matches none of anyOf")
        elif keyword in ("properties", "required", "additionalProperties"):
            if isinstance(value, dict):
                errors += _object_errors(value, keyword, argument, schema, root, where)
        elif keyword in ("items", "minItems", "maxItems"):
            if isinstance(value, list):
                errors += _array_errors(value, keyword, argument, root, where)
        elif keyword in ("minLength", "pattern"):
            if isinstance(value, str) and not (
                len(value) >= argument if keyword == "minLength" else re.search(argument, value)
            ):
                errors.append(f"{where}: {value!r} breaks {keyword} {argument!r}")
        elif keyword in ("minimum", "maximum"):
            if _TYPES["number"](value) and not (value >= argument if keyword == "minimum" else value <= argument):
                errors.append(f"{where}: {value!r} breaks {keyword} {argument}")
        elif keyword == "enum":  # JSON equality: true is not 1
            if not any(type(value) is type(option) and value == option for option in argument):
                errors.append(f"{where}: {value!r} is none of {argument}")
        else:
            raise AssertionError(f"the test's validator does not know the keyword {keyword!r}")
    return errors


def _object_errors(
    value: dict[str, Any], keyword: str, argument: Any, schema: dict[str, Any], root: dict[str, Any], where: str
) -> list[str]:
    if keyword == "required":
        return [f"{where}: missing {name!r}" for name in argument if name not in value]
    if keyword == "additionalProperties":
        assert argument is False, "only `additionalProperties: false` is handled"
        return [f"{where}: unexpected {name!r}" for name in value if name not in schema.get("properties", {})]
    return [
        error
        for name, subschema in argument.items()
        if name in value
        for error in schema_errors(value[name], subschema, root, f"{where}.{name}")
    ]


def _array_errors(value: list[Any], keyword: str, argument: Any, root: dict[str, Any], where: str) -> list[str]:
    if keyword == "items":
        return [
            error
            for index, item in enumerate(value)
            for error in schema_errors(item, argument, root, f"{where}[{index}]")
        ]
    if (keyword == "minItems" and len(value) < argument) or (keyword == "maxItems" and len(value) > argument):
        return [f"{where}: {len(value)} items break {keyword} {argument}"]
    return []


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return loaded


def test_the_validator_rejects_what_the_schema_forbids(schema: dict[str, Any]) -> None:
    """The validator is test code too: a broken document must fail it, each error where it is."""
    document = {
        "image": {"file": "", "source_name": "a", "source_id": "a", "format": "png", "width": 0, "height": 2},
        "mask": 3,
        "attributes": [],
        "image_labels": [{"class_id": 0, "class_name": "x", "extra": True}],
        "objects": [],
        "keypoints": [{"class_id": 1, "class_name": "k", "x_pixels": 1, "y_pixels": 1, "x_normalized": 2}],
    }
    errors = schema_errors(document, schema, schema)
    assert errors == [
        "$.image: missing 'sha256'",
        "$.image.file: '' breaks minLength 1",
        "$.image.width: 0 breaks minimum 1",
        "$.mask: 3 is not of type ['string', 'null']",
        "$.image_labels[0]: unexpected 'extra'",
        "$.image_labels[0].class_id: 0 breaks minimum 1",
        "$.keypoints[0]: missing 'y_normalized'",
        "$.keypoints[0].x_normalized: 2 breaks maximum 1",
    ]
    visibility = {"enum": [0, 1, 2]}
    assert [schema_errors(value, visibility, schema) for value in (2, True, 3)] == [
        [], ["$: True is none of [0, 1, 2]"], ["$: 3 is none of [0, 1, 2]"]
    ]  # fmt: skip


# --- reading the output back ----------------------------------------------------------------------


def read_documents(output: Path, schema: dict[str, Any]) -> dict[str, tuple[Path, Document]]:
    """Every annotation file, schema-checked, by its image's source name, with its split folder."""
    info = load_info(output)
    documents: dict[str, tuple[Path, Document]] = {}
    for split, folder in SPLIT_FOLDERS.items():
        if split not in info:
            continue
        split_folder = output / folder
        annotation_files = sorted((split_folder / "annotations").glob("*.json"))
        assert len(annotation_files) == len(list((split_folder / "images").iterdir())) == info[split]["samples"]
        for path in annotation_files:
            document = json.loads(path.read_text(encoding="utf-8"))
            assert schema_errors(document, schema, schema) == [], path
            assert Path(document["image"]["file"]).stem == path.stem
            assert document["image"]["source_name"] not in documents
            documents[document["image"]["source_name"]] = (split_folder, document)
    return documents


def _image_bytes(split_folder: Path, document: Document) -> bytes:
    return (split_folder / document["image"]["file"]).read_bytes()


def _png(path: Path) -> npt.NDArray[np.uint8]:
    with Image.open(path) as image:
        assert (image.format, image.mode) == ("PNG", "L")
        return np.asarray(image)


def _check_images(documents: dict[str, tuple[Path, Document]], data: Input) -> None:
    assert sorted(documents) == sorted(data.expected)
    for name, (split_folder, document) in documents.items():
        assert _image_bytes(split_folder, document) == data.expected[name].image_bytes
        assert (document["image"]["width"], document["image"]["height"]) == (WIDTH, HEIGHT)


def test_detection_boxes_in_pixels_and_normalized(tmp_path: Path, schema: dict[str, Any]) -> None:
    data = detection_input(tmp_path / "export")
    output = tmp_path / "out"

    result = data.convert(output, "-f", "json", "-s", "0.6,0.2,0.2")

    assert result.exit_code == 0, result.stderr
    info = load_info(output)
    documents = read_documents(output, schema)
    _check_images(documents, data)
    for name, (_, document) in documents.items():
        assert document["image"]["source_id"] == f"s3://bucket/{name}"
        assert (document["mask"], document["image_labels"], document["keypoints"]) == (None, [], [])
        expected = data.expected[name].boxes
        assert len(document["objects"]) == len(expected)
        for obj, (class_name, box) in zip(document["objects"], expected, strict=True):
            assert (obj["class_name"], obj["class_id"]) == (class_name, info["classes"].index(class_name) + 1)
            assert obj["bbox_pixels_xyxy"] == list(box)  # exactly the source's numbers, clipped
            x_min, y_min, x_max, y_max = box
            assert obj["bbox_normalized_xyxy"] == [x_min / WIDTH, y_min / HEIGHT, x_max / WIDTH, y_max / HEIGHT]
            assert (obj["polygons_pixels"], obj["rle"], obj["mask"], obj["is_crowd"]) == ([], None, None, False)
    checked = verify(output)
    assert checked.exit_code == 0, checked.stderr


def test_segmentation_masks_are_png_class_ids_beside_each_image(tmp_path: Path, schema: dict[str, Any]) -> None:
    data = segmentation_input(tmp_path / "export")
    output = tmp_path / "out"

    result = data.convert(output, "-f", "json", "-s", "0.5")

    assert result.exit_code == 0, result.stderr
    classes = load_info(output)["classes"]
    documents = read_documents(output, schema)
    _check_images(documents, data)
    for name, (split_folder, document) in documents.items():
        assert document["mask"] == f"masks/{Path(document['image']['file']).stem}.png"
        np.testing.assert_array_equal(_png(split_folder / document["mask"]), data.expected[name].class_mask(classes))
    assert verify(output).exit_code == 0


def test_image_labels_keep_their_order_and_ids(tmp_path: Path, schema: dict[str, Any]) -> None:
    data = multilabel_input(tmp_path / "export")
    output = tmp_path / "out"

    result = data.convert(output, "-f", "json")

    assert result.exit_code == 0, result.stderr
    classes = load_info(output)["classes"]
    documents = read_documents(output, schema)
    _check_images(documents, data)
    for name, (_, document) in documents.items():
        assert document["image_labels"] == [
            {"class_id": classes.index(label) + 1, "class_name": label} for label in data.expected[name].labels
        ]


def _block(x0: int, y0: int, x1: int, y1: int) -> npt.NDArray[np.bool_]:
    mask = np.zeros((HEIGHT, WIDTH), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def test_shapes_keypoints_and_instance_masks_as_the_source_gave_them(tmp_path: Path, schema: dict[str, Any]) -> None:
    """Label Studio percentages chosen so the pixels are exact: 12.5 % of 64 is 8, 25 % of 48 is 12."""
    size = (WIDTH, HEIGHT)
    image_bytes = write_stand_in(tmp_path / "export" / "shapes.jpg", size)
    brushed = _block(40, 30, 56, 44)
    results = [
        polygon([(12.5, 25), (50, 25), (50, 75)], ["road"], size),
        rectangle(75, 12.5, 12.5, 25, ["car"], size),
        brush(mask_to_brush(brushed), ["road"], size),
        keypoint(25, 50, ["nose"], size),
        choices(["sunny"]),
    ]
    export = write_export(tmp_path / "export" / "export.json", [task("/data/upload/1/shapes.jpg", annotation(results))])
    output = tmp_path / "out"

    result = convert("-a", export, "-o", output, "-f", "json", "-s", "0", "--instance-masks")

    assert result.exit_code == 0, result.stderr
    info = load_info(output)
    [(split_folder, document)] = read_documents(output, schema).values()
    assert _image_bytes(split_folder, document) == image_bytes

    def class_id(name: str) -> int:
        return int(info["classes"].index(name)) + 1

    triangle, box, brush_object = document["objects"]
    assert triangle["polygons_pixels"] == [{"exterior": [[8.0, 12.0], [32.0, 12.0], [32.0, 36.0]], "holes": []}]
    assert triangle["bbox_pixels_xyxy"] == [8.0, 12.0, 32.0, 36.0]  # the polygon's extent
    assert (box["class_name"], box["bbox_pixels_xyxy"], box["polygons_pixels"]) == ("car", [48.0, 6.0, 56.0, 18.0], [])
    assert brush_object["class_id"] == class_id("road")
    assert brush_object["rle"]["height"] == HEIGHT and brush_object["rle"]["width"] == WIDTH
    rle = {"size": [HEIGHT, WIDTH], "counts": brush_object["rle"]["counts"].encode()}
    np.testing.assert_array_equal(coco_mask.decode(rle).astype(bool), brushed)
    assert brush_object["bbox_pixels_xyxy"] == [40.0, 30.0, 56.0, 44.0]  # the RLE's pixel extent
    for position, obj in enumerate(document["objects"]):
        assert obj["mask"] == f"instance_masks/{Path(document['image']['file']).stem}/{position}.png"
    np.testing.assert_array_equal(_png(split_folder / box["mask"]), _block(48, 6, 56, 18).astype(np.uint8))
    np.testing.assert_array_equal(_png(split_folder / brush_object["mask"]), brushed.astype(np.uint8))
    assert document["keypoints"] == [
        {"class_id": class_id("nose"), "class_name": "nose", "x_pixels": 16.0, "y_pixels": 24.0}
        | {"x_normalized": 0.25, "y_normalized": 0.5}
    ]
    assert document["image_labels"] == [{"class_id": class_id("sunny"), "class_name": "sunny"}]
    class_mask = _png(split_folder / document["mask"])
    assert set(np.unique(class_mask)) == {0, class_id("road")}  # the plain box paints nothing
    np.testing.assert_array_equal(class_mask[brushed], class_id("road"))
    assert verify(output).exit_code == 0


def test_images_with_the_same_name_stem_get_distinct_files(tmp_path: Path, schema: dict[str, Any]) -> None:
    """`a/x.jpg`, `b/x.jpg` and `c/X.png` share a stem (ignoring case): one keeps it, the others get a key hash."""
    export = Export(tmp_path / "export")
    for name in ("a/x.jpg", "b/x.jpg", "c/X.png"):
        export.add_detection(name, [GtBox(0, 1, 2, 3, 4)], {0: "cat"})
    export.write()
    output = tmp_path / "out"

    result = convert("-a", export.manifest, "-i", export.images, "-o", output, "-f", "json", "-s", "0")

    assert result.exit_code == 0, result.stderr
    documents = read_documents(output, schema)
    assert sorted(documents) == ["a/x.jpg", "b/x.jpg", "c/X.png"]
    stems = [Path(document["image"]["file"]).stem.casefold() for _, document in documents.values()]
    assert len(set(stems)) == 3 and "x" in stems
    for name, (split_folder, document) in documents.items():
        assert _image_bytes(split_folder, document) == export.image_bytes[f"s3://bucket/{name}"]


def test_absolute_paths_are_absolute_inside_the_annotations(tmp_path: Path, schema: dict[str, Any]) -> None:
    data = segmentation_input(tmp_path / "export")
    output = tmp_path / "out"

    result = data.convert(output, "-f", "json", "--absolute-paths")

    assert result.exit_code == 0, result.stderr
    for _, document in read_documents(output, schema).values():
        for reference in (document["image"]["file"], document["mask"]):
            assert Path(reference).is_absolute() and Path(reference).is_file()


def test_object_keypoints_are_in_the_json_and_match_the_schema(schema: dict[str, Any], tmp_path: Path) -> None:
    export, keypoints_by_annotation = person_keypoints_export(tmp_path / "coco")
    output = tmp_path / "out"
    result = convert("-a", export.path, "-i", export.image_folder, "-o", output, "-f", "json", "-s", "0")
    assert result.exit_code == 0, result.stderr
    documents = read_documents(output, schema)  # schema-checked
    assert len(documents) == len(export.images)
    for image in export.images:
        _, document = documents[image["file_name"]]
        person, ball = document["objects"]
        (annotation,) = [a for a in export.annotations if a["image_id"] == image["id"] and a["category_id"] == 1]
        expected = keypoints_by_annotation[annotation["id"]]
        assert [value for p in person["keypoints"] for value in (p["x_pixels"], p["y_pixels"], p["visibility"])] == (
            expected
        )
        assert [p["name"] for p in person["keypoints"]] == PERSON_KEYPOINTS
        assert ball["keypoints"] == []

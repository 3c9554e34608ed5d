"""The mask-folder source end to end: images, masks and a label map in, TFRecords read back with TensorFlow.

Every expected class mask is the written mask's values looked up in the label map the
test wrote, with class ids taken by name from dataset_info.yaml; nothing is computed
with the converter's own code.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import yaml
from builders import convert, flat, image_pixels, load_info, load_report, verify, write_image, write_palette_mask
from PIL import Image
from readback import OD_API_KEYS, decode_png, records_by_source_id

from converter.errors import UsageError
from converter.sources.mask_folder import LabelMap, looks_like_label_map, parse_label_map, read_label_map

RED, GREEN, BLUE, BLACK = (255, 0, 0), (0, 255, 0), (0, 0, 255), (0, 0, 0)
SIZE = (40, 30)  # width, height of every generated image


@dataclass
class MaskExport:
    """A mask folder written by a test: `labels.*`, `images/`, `masks/` under `root`."""

    root: Path
    image_bytes: dict[str, bytes] = field(default_factory=dict)

    @property
    def images(self) -> Path:
        return self.root / "images"

    @property
    def masks(self) -> Path:
        return self.root / "masks"

    def write_map(self, document: Any, name: str = "labels.yaml") -> Path:
        """Write the label map as JSON for `.json`, YAML otherwise (a `str` is written verbatim)."""
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(document, str):
            text = document
        elif path.suffix == ".json":
            text = json.dumps(document)
        else:
            text = yaml.safe_dump(document, sort_keys=False)
        path.write_text(text, encoding="utf-8")
        return path

    def add_image(self, relative: str, size: tuple[int, int] = SIZE, folder: Path | None = None) -> str:
        """Write an image at `images/<relative>` (or under `folder`); returns its key."""
        seed = len(self.image_bytes) + 1
        self.image_bytes[relative] = write_image((folder or self.images) / relative, image_pixels(*size, seed))
        return relative

    def add_rgb_mask(self, relative: str, rgb: npt.NDArray[np.uint8], folder: Path | None = None) -> Path:
        return _save(Image.fromarray(rgb, mode="RGB"), (folder or self.masks) / relative)

    def add_grey_mask(self, relative: str, values: npt.NDArray[np.uint8]) -> Path:
        return _save(Image.fromarray(values, mode="L"), self.masks / relative)

    def add_rgba_mask(self, relative: str, rgba: npt.NDArray[np.uint8]) -> Path:
        return _save(Image.fromarray(rgba, mode="RGBA"), self.masks / relative)


def _save(image: Image.Image, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def _regions(colors: tuple[tuple[int, int, int], ...], size: tuple[int, int] = SIZE) -> npt.NDArray[np.uint8]:
    """An RGB mask of vertical stripes, one per colour, left to right."""
    width, height = size
    rgb = np.zeros((height, width, 3), dtype=np.uint8)
    for index, color in enumerate(colors):
        rgb[:, index * width // len(colors) : (index + 1) * width // len(colors)] = color
    return rgb


def _indices(values: tuple[int, ...], size: tuple[int, int] = SIZE) -> npt.NDArray[np.uint8]:
    """A single-channel mask of horizontal bands, one per value, top to bottom."""
    width, height = size
    mask = np.zeros((height, width), dtype=np.uint8)
    for index, value in enumerate(values):
        mask[index * height // len(values) : (index + 1) * height // len(values)] = value
    return mask


def _expected_ids(
    values: npt.NDArray[Any], names: Mapping[Any, str | None], classes: list[str]
) -> npt.NDArray[np.uint8]:
    """Class ids of a mask whose pixels (ints, or RGB triples) `names` maps to class names."""
    ids = {value: 0 if name is None else classes.index(name) + 1 for value, name in names.items()}
    if values.ndim == 3:
        return np.array([[ids[tuple(int(c) for c in pixel)] for pixel in row] for row in values], dtype=np.uint8)
    return np.array([[ids[int(value)] for value in row] for row in values], dtype=np.uint8)


def _convert_ok(*arguments: str | Path) -> None:
    result = convert(*arguments)
    assert result.exit_code == 0, result.stderr


# ---------------------------------------------------------------------------
# End to end


def test_rgb_masks_with_a_clearml_colour_map(tmp_path: Path) -> None:
    export = MaskExport(tmp_path / "export")
    export.write_map({"mask_labels": {"(0, 0, 0)": ["background"], "(0, 0, 255)": ["car"], "(255, 0, 0)": ["person"]}})
    masks = {
        "a.jpg": _regions((BLACK, RED, BLUE)),
        "street/b.jpg": _regions((BLUE, BLACK)),
        "street/c.png": _regions((BLACK,)),
    }
    for key, rgb in masks.items():
        export.add_image(key)
        export.add_rgb_mask(str(Path(key).with_suffix(".png")), rgb)
    output = tmp_path / "out"

    _convert_ok("-a", export.root, "-o", output, "-s", "0.5")

    info = load_info(output)
    assert info["classes"] == ["car", "person"]  # the map's order, background left out
    assert info["input"]["source"] == "mask_folder"
    assert info["input"]["images"] == str(export.images)
    records = records_by_source_id(output)
    assert sorted(records) == sorted(masks)
    names = {BLACK: None, BLUE: "car", RED: "person"}
    for key, rgb in masks.items():
        record = records[key]
        assert set(OD_API_KEYS) <= set(record)
        assert record["image/encoded"] == [export.image_bytes[key]]
        assert record["image/filename"] == [key.encode()]
        assert record["image/object/bbox/xmin"] == []
        np.testing.assert_array_equal(
            decode_png(record["image/segmentation/class/encoded"][0]), _expected_ids(rgb, names, info["classes"])
        )
    report = load_report(output)
    assert report["summary"]["converted"] == 3
    assert report["skipped"] == []
    assert verify(output).exit_code == 0


def test_index_masks_palette_grey_and_grey_saved_as_rgb(tmp_path: Path) -> None:
    export = MaskExport(tmp_path / "export")
    export.write_map({0: "unlabeled", 2: "car", 1: "person"})
    values = _indices((0, 1, 2, 1))
    export.add_image("palette.jpg")
    write_palette_mask(export.masks / "palette.png", values, ["#000000", "#ff0000", "#00ff00"])
    export.add_image("grey.jpg")
    export.add_grey_mask("grey.png", values)
    export.add_image("rgb.jpg")
    export.add_rgb_mask("rgb.png", np.repeat(values[..., None], 3, axis=2))
    output = tmp_path / "out"

    _convert_ok("-a", export.root / "labels.yaml", "-o", output)

    info = load_info(output)
    assert info["classes"] == ["person", "car"]  # by value; index 0 is background whatever its name
    expected = _expected_ids(values, {0: None, 1: "person", 2: "car"}, info["classes"])
    records = records_by_source_id(output)
    assert sorted(records) == ["grey.jpg", "palette.jpg", "rgb.jpg"]
    for record in records.values():
        np.testing.assert_array_equal(decode_png(record["image/segmentation/class/encoded"][0]), expected)


def test_sixteen_bit_index_masks_use_values_above_255(tmp_path: Path) -> None:
    export = MaskExport(tmp_path / "export")
    export.write_map({"0": "background", "300": "car", "70000": "never used"}, name="labels.json")
    values = np.zeros((SIZE[1], SIZE[0]), dtype=np.uint16)
    values[10:, 5:] = 300
    export.add_image("deep.jpg")
    _save(Image.fromarray(values), export.masks / "deep.png")  # a 16-bit grey PNG
    output = tmp_path / "out"

    _convert_ok("-a", export.root, "-o", output)

    info = load_info(output)
    assert info["classes"] == ["car", "never used"]
    expected = _expected_ids(values, {0: None, 300: "car"}, info["classes"])
    np.testing.assert_array_equal(
        decode_png(records_by_source_id(output)["deep.jpg"]["image/segmentation/class/encoded"][0]), expected
    )


def test_clearml_grey_colour_keys_read_grey_and_palette_masks_by_colour(tmp_path: Path) -> None:
    """ClearML's own example maps (1, 1, 1) and (2, 2, 2): the masks are often saved grey or with a palette."""
    export = MaskExport(tmp_path / "export")
    export.write_map(
        {"mask_labels": {"(0, 0, 0)": ["background"], "(1, 1, 1)": ["person", "sitting"], "(2, 2, 2)": ["cat"]}}
    )
    values = _indices((0, 1, 2))
    export.add_image("grey.jpg")
    export.add_grey_mask("grey.png", values)
    export.add_image("palette.jpg")
    write_palette_mask(export.masks / "palette.png", values, ["#000000", "#010101", "#020202"])
    output = tmp_path / "out"

    _convert_ok("-a", export.root, "-o", output)

    info = load_info(output)
    assert info["classes"] == ["person+sitting", "cat"]  # several labels make one class
    expected = _expected_ids(values, {0: None, 1: "person+sitting", 2: "cat"}, info["classes"])
    for record in records_by_source_id(output).values():
        np.testing.assert_array_equal(decode_png(record["image/segmentation/class/encoded"][0]), expected)
    assert load_report(output)["skipped"] == []


def test_alpha_masks_paint_their_opaque_pixels(tmp_path: Path) -> None:
    export = MaskExport(tmp_path / "export")
    export.write_map({"alpha": "person"})
    width, height = SIZE
    rgba = np.zeros((height, width, 4), dtype=np.uint8)
    rgba[..., :3] = 200  # the colour is ignored: only the alpha channel counts
    rgba[:, :10, 3] = 255
    rgba[:, 10:20, 3] = 128  # half opaque: foreground
    rgba[:, 20:30, 3] = 127
    export.add_image("cutout.jpg")
    export.add_rgba_mask("cutout.png", rgba)
    export.add_image("opaque.jpg")
    opaque_mask = export.add_rgb_mask("opaque.png", _regions((RED,)))
    output = tmp_path / "out"

    _convert_ok("-a", export.root, "-o", output)

    assert load_info(output)["classes"] == ["person"]
    expected = np.zeros((height, width), dtype=np.uint8)
    expected[:, :20] = 1
    records = records_by_source_id(output)
    np.testing.assert_array_equal(decode_png(records["cutout.jpg"]["image/segmentation/class/encoded"][0]), expected)
    [skipped] = load_report(output)["skipped"]
    assert (skipped["file"], skipped["key"], skipped["code"]) == (str(opaque_mask), "opaque.jpg", "malformed_mask")
    assert "no alpha channel" in skipped["reason"]


def test_unknown_colours_and_values_fail_only_their_sample(tmp_path: Path) -> None:
    colour_export = MaskExport(tmp_path / "colour")
    colour_export.write_map({"(0, 0, 0)": "background", "(255, 0, 0)": "person"})
    colour_export.add_image("good.jpg")
    colour_export.add_rgb_mask("good.png", _regions((BLACK, RED)))
    colour_export.add_image("bad.jpg")
    bad_colour = colour_export.add_rgb_mask("bad.png", _regions((BLACK, GREEN)))
    index_export = MaskExport(tmp_path / "index")
    index_export.write_map({"0": "background", "1": "car"}, name="labels.json")
    index_export.add_image("good.jpg")
    index_export.add_grey_mask("good.png", _indices((0, 1)))
    index_export.add_image("bad.jpg")
    bad_value = index_export.add_grey_mask("bad.png", _indices((0, 7)))

    for export, bad_mask, code, fragment in [
        (colour_export, bad_colour, "unknown_mask_color", "#00ff00"),
        (index_export, bad_value, "unknown_mask_value", "[7]"),
    ]:
        output = export.root / "out"
        _convert_ok("-a", export.root, "-o", output)
        [skipped] = load_report(output)["skipped"]
        assert (skipped["file"], skipped["key"], skipped["code"]) == (str(bad_mask), "bad.jpg", code)
        assert fragment in skipped["reason"]
        assert str(bad_mask) in skipped["reason"]
        assert sorted(records_by_source_id(output)) == ["good.jpg"]


def test_files_that_do_not_pair_are_reported_with_their_file(tmp_path: Path) -> None:
    export = MaskExport(tmp_path / "export")
    export.write_map({"(0, 0, 0)": "background", "(255, 0, 0)": "person"})
    export.add_image("paired.jpg")
    export.add_rgb_mask("paired.png", _regions((BLACK, RED)))
    export.add_image("no_mask.jpg")
    orphan = export.add_rgb_mask("sub/orphan.png", _regions((RED,)))
    export.add_image("small.jpg")
    small = export.add_rgb_mask("small.png", _regions((RED,), size=(20, 15)))
    export.add_image("twice.jpg")
    twice_png = export.add_rgb_mask("twice.png", _regions((RED,)))
    twice_bmp = export.add_rgb_mask("twice.bmp", _regions((RED,)))
    (export.masks / "notes.txt").write_text("not a mask")
    output = tmp_path / "out"

    _convert_ok("-a", export.root, "-o", output)

    report = load_report(output)
    by_key = {entry["key"]: entry for entry in report["skipped"]}
    assert {key: (entry["file"], entry["code"]) for key, entry in by_key.items()} == {
        "no_mask.jpg": (str(export.images / "no_mask.jpg"), "missing_mask"),
        "sub/orphan.png": (str(orphan), "missing_image"),
        "small.jpg": (str(small), "mask_size_mismatch"),
        "twice.jpg": (str(export.images / "twice.jpg"), "ambiguous_mask"),
    }
    assert "no_mask.png" in by_key["no_mask.jpg"]["reason"]
    assert str(export.masks) in by_key["no_mask.jpg"]["reason"]
    assert str(export.images) in by_key["sub/orphan.png"]["reason"]
    assert "20x15" in by_key["small.jpg"]["reason"] and "40x30" in by_key["small.jpg"]["reason"]
    assert str(twice_png) in by_key["twice.jpg"]["reason"] and str(twice_bmp) in by_key["twice.jpg"]["reason"]
    assert report["summary"]["input_samples"] == 5
    assert sorted(records_by_source_id(output)) == ["paired.jpg"]


def test_masks_and_images_options_name_other_folders(tmp_path: Path) -> None:
    export = MaskExport(tmp_path / "export")
    label_map = export.write_map({"(0, 0, 0)": "background", "(255, 0, 0)": "person"}, name="maps/labels.json")
    pictures, annotations = tmp_path / "pictures", tmp_path / "annotations"
    export.add_image("x/a.jpg", folder=pictures)
    export.add_rgb_mask("x/a.png", _regions((RED, BLACK)), folder=annotations)
    output = tmp_path / "out"

    _convert_ok("-a", label_map, "-i", pictures, "--masks", annotations, "-o", output)

    assert sorted(records_by_source_id(output)) == ["x/a.jpg"]
    assert load_info(output)["input"]["masks"] == str(annotations)


def test_images_beside_the_label_map_leave_the_masks_folder_out(tmp_path: Path) -> None:
    export = MaskExport(tmp_path / "export")
    export.write_map({"(0, 0, 0)": "background", "(255, 0, 0)": "person"})
    export.add_image("a.jpg", folder=export.root)
    export.add_rgb_mask("a.png", _regions((RED,)))
    output = tmp_path / "out"

    _convert_ok("-a", export.root, "-o", output)

    assert sorted(records_by_source_id(output)) == ["a.jpg"]
    assert load_report(output)["summary"]["input_samples"] == 1


def test_a_missing_masks_folder_is_a_usage_error(tmp_path: Path) -> None:
    export = MaskExport(tmp_path / "export")
    label_map = export.write_map({"0": "background", "1": "car"}, name="labels.json")
    export.add_image("a.jpg")

    result = convert("-a", label_map, "-o", tmp_path / "out")

    assert result.exit_code == 2
    assert "masks folder" in flat(result.stderr) and "--masks" in flat(result.stderr)


def test_a_malformed_label_map_named_with_source_is_a_usage_error(tmp_path: Path) -> None:
    export = MaskExport(tmp_path / "export")
    label_map = export.write_map({"(0, 0, 0)": "background", "1": "car"})

    result = convert("-a", label_map, "--source", "mask_folder", "-o", tmp_path / "out")

    assert result.exit_code == 2
    assert "mixes colours and indices" in flat(result.stderr)
    assert str(label_map) in flat(result.stderr)


# ---------------------------------------------------------------------------
# Label map forms

PERSON_CAR = LabelMap("color", color_to_class=((BLACK, None), (RED, "person"), (BLUE, "car")))


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("tuple_strings.json", '{"(0, 0, 0)": ["background"], "(255, 0, 0)": ["person"], "(0, 0, 255)": ["car"]}'),
        ("wrapped.json", '{"mask_labels": {"[0,0,0]": "Background", "255, 0, 0": "person", "#0000ff": "car"}}'),
        (
            "clearml_stored.json",
            json.dumps(
                {
                    "mask_labels": {
                        "_all_": [
                            {"value": [0, 0, 0], "labels": ["background"]},
                            {"value": [255, 0, 0], "labels": ["person"]},
                            {"value": [0, 0, 255], "labels": ["car"]},
                        ]
                    },
                    "other_metadata": {"owner": "someone"},
                }
            ),
        ),
        ("sequence_keys.yaml", "? [0, 0, 0]\n: [background]\n? [255, 0, 0]\n: [person]\n? [0, 0, 255]\n: car\n"),
        ("python_tuples.yaml", yaml.dump({BLACK: ["background"], RED: ["person"], BLUE: ["car"]}, sort_keys=False)),
    ],
)
def test_colour_map_forms_read_the_same(tmp_path: Path, name: str, text: str) -> None:
    path = MaskExport(tmp_path).write_map(text, name=name)

    assert read_label_map(path) == PERSON_CAR
    assert read_label_map(path).class_order() == ("person", "car")
    assert looks_like_label_map(path)


@pytest.mark.parametrize(
    ("document", "expected_order"),
    [
        ({"0": "background", "1": "car"}, ("car",)),
        ({3: "bus", 1: ["car"], 0: "_background_"}, ("car", "bus")),
        (
            {"mask_labels": {"_all_": [{"value": [2], "labels": ["bus"]}, {"value": 1, "labels": ["car"]}]}},
            ("car", "bus"),
        ),
        ({"1": "car", "2": "Background"}, ("car",)),
        ({"0": "Unlabelled", "1": "car"}, ("car",)),
    ],
)
def test_index_maps_are_ordered_by_value_with_zero_as_background(
    document: dict[Any, Any], expected_order: tuple[str, ...]
) -> None:
    label_map = parse_label_map(document, "map")

    assert label_map.kind == "index"
    assert label_map.class_order() == expected_order
    assert dict(label_map.index_to_class)[0] is None  # unlisted or named as background, 0 is background


def test_an_index_zero_the_map_names_as_a_class_keeps_that_class() -> None:
    label_map = parse_label_map({0: "car", 1: "road"}, "map")

    assert dict(label_map.index_to_class)[0] == "car"
    assert label_map.class_order() == ("car", "road")


def test_alpha_map() -> None:
    assert parse_label_map({"alpha": "person"}, "map") == LabelMap("alpha", alpha_class="person")
    assert parse_label_map({"mask_labels": {"alpha": ["person"]}}, "map").class_order() == ("person",)


@pytest.mark.parametrize(
    ("document", "fragment"),
    [
        ({"(0, 0, 0)": "background", "1": "car"}, "mixes colours and indices"),
        ({"(255, 0, 0)": "a", "#ff0000": "b"}, "more than once"),
        ({"0": "background"}, "no class besides background"),
        ({"alpha": "person", "1": "car"}, "single key `alpha`"),
        ({"alpha": "background"}, "not background"),
        ({"(256, 0, 0)": "a"}, "is not a mask value"),
        ({"-1": "a"}, "is not a mask value"),
        ({"red": "a"}, "is not a mask value"),
        ({"1": ""}, "expected a label or a list of labels"),
        ({"1": 5}, "expected a label or a list of labels"),
        ({"seg": [{"value": 1, "labels": ["a"]}], "inst": [{"value": 1, "labels": ["b"]}]}, "several mask sources"),
        ({"_all_": [{"value": 1}]}, "needs `value` and `labels`"),
        ([{"value": 1, "labels": ["a"]}], "not a label map"),
        ({}, "not a label map"),
    ],
)
def test_malformed_label_maps_say_what_is_wrong(document: Any, fragment: str) -> None:
    with pytest.raises(UsageError, match="label map here") as raised:
        parse_label_map(document, "label map here")
    assert fragment in str(raised.value)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("dataset_info.yaml", "classes: [a, b]\ntrain: {annotations: x, images: x, samples: 3}\n"),
        ("coco.json", '{"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}]}'),
        ("tasks.json", '[{"id": 1, "data": {"image": "a.jpg"}, "annotations": []}]'),
        ("manifest.json", '{"source-ref": "s3://b/a.jpg", "x": 1}\n{"source-ref": "s3://b/b.jpg", "x": 1}\n'),
        ("labels.txt", '{"0": "background", "1": "car"}'),
        ("broken.yaml", "a: [unclosed"),
        ("binary.json", "\udcff"),
    ],
)
def test_other_files_are_not_label_maps(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8", errors="surrogateescape"))

    assert not looks_like_label_map(path)


def test_large_files_are_not_label_maps(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    path.write_text(json.dumps({str(index): f"class{index}" for index in range(1, 30000)}))

    assert not looks_like_label_map(path)
    assert not looks_like_label_map(tmp_path)  # a folder

"""What the training stacks read beside the records: numeric source ids, label maps, COCO ground
truth, areas, configs and the reading API, checked with the readers in the project's own venv
(TensorFlow, pycocotools, protobuf). The third-party stacks (Model Garden, Datumaro, TFDS,
fastai) have tests of their own, each in its own venv (tests/test_reader_*.py).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from builders import (
    PERSON_KEYPOINTS,
    CocoExport,
    GtBox,
    convert,
    detection_export,
    load_info,
    load_report,
    person_keypoints_export,
    verify,
)
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from readback import decode_png, read_all

import converter.core.image_ids as image_ids
from converter.core.sample import Sample
from converter.errors import SampleLocation

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _records(output: Path) -> dict[str, list[dict[str, list[Any]]]]:
    return read_all(output)


def _source_ids(output: Path) -> dict[str, int]:
    """Sample key -> image/source_id, parsed the way Model Garden parses it."""
    import tensorflow as tf

    ids = {}
    for records in _records(output).values():
        for record in records:
            parsed = tf.strings.to_number(record["image/source_id"][0], tf.int64)
            ids[record["image/source_key"][0].decode()] = int(parsed.numpy())
    return ids


# ---------------------------------------------------------------------------
# image/source_id


def test_source_ids_are_integers_unique_and_stable_across_reruns_and_appended_data(tmp_path: Path) -> None:
    small = detection_export(tmp_path / "small", 6)
    small.write()
    big = detection_export(tmp_path / "big", 12)  # the same first 6 images, then 6 more
    big.write()

    assert convert("-a", small.manifest, "-o", tmp_path / "a").exit_code == 0
    assert convert("-a", small.manifest, "-o", tmp_path / "b").exit_code == 0
    assert convert("-a", big.manifest, "-o", tmp_path / "c").exit_code == 0

    first, rerun, appended = (_source_ids(tmp_path / name) for name in "abc")
    assert first == rerun
    assert len(appended) == 12 and len(set(appended.values())) == 12
    assert {key: appended[key] for key in first} == first
    for key, value in appended.items():
        assert value == image_ids.derived_image_id(key)
        assert 1 <= value < 2**53  # exact in a float64, so in every JSON reader


def test_coco_sources_keep_their_image_ids(tmp_path: Path) -> None:
    export = CocoExport(tmp_path / "coco", categories=[{"id": 7, "name": "cat"}])
    for image_id in (3, 41, 900000000001):
        export.add_image(f"img{image_id}.jpg", image_id=image_id)
        export.add_annotation(image_id, 7, bbox=[2, 3, 10, 12])
    export.write()
    output = tmp_path / "out"
    assert convert("-a", export.path, "-i", export.image_folder, "-o", output).exit_code == 0
    assert _source_ids(output) == {"img3.jpg": 3, "img41.jpg": 41, "img900000000001.jpg": 900000000001}


def _sample(key: str) -> Sample:
    return Sample(key=key, location=SampleLocation("m", 1, key), image_path=Path(key), image_name=key)


def test_a_derived_id_collision_gives_the_later_key_a_new_id_and_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    export = detection_export(tmp_path / "export", 4)
    export.write()
    colliding = sorted(export.references())[1:3]
    real = image_ids.derived_image_id

    def derived(key: str, attempt: int = 0) -> int:
        return 42 if key in colliding and attempt == 0 else real(key, attempt)

    monkeypatch.setattr(image_ids, "derived_image_id", derived)
    output = tmp_path / "out"
    assert convert("-a", export.manifest, "-o", output, "--workers", "1").exit_code == 0

    ids = _source_ids(output)
    assert ids[colliding[0]] == 42  # the key that sorts first keeps the id
    assert ids[colliding[1]] == real(colliding[1], 1)
    assert len(set(ids.values())) == 4
    warnings = load_report(output)["warnings"]
    assert [warning["key"] for warning in warnings] == [colliding[1]]
    assert colliding[0] in warnings[0]["message"]


def test_collisions_never_take_an_export_id() -> None:
    coco = Sample(key="x.jpg", location=SampleLocation("m", 1, "x"), image_path=Path("x"), image_name="x",
                  image_id=image_ids.derived_image_id("y.jpg"))  # fmt: skip
    overrides, changes = image_ids.resolve_collisions([coco, _sample("y.jpg")])
    assert overrides == {"y.jpg": image_ids.derived_image_id("y.jpg", 1)}
    assert [change.taken_by for change in changes] == ["x.jpg"]


# ---------------------------------------------------------------------------
# Label maps


def _label_map_message() -> Any:
    """The Object Detection API's StringIntLabelMap, declared here so protobuf's own text parser reads the file."""
    file = descriptor_pb2.FileDescriptorProto(name="label_map_for_test.proto", package="test")
    item = file.message_type.add(name="StringIntLabelMapItem")
    item.field.add(name="name", number=1, type=9, label=1)
    item.field.add(name="id", number=2, type=5, label=1)
    item.field.add(name="display_name", number=3, type=9, label=1)
    item.field.add(name="keypoints", number=5, type=11, label=3, type_name=".test.KeypointMap")
    keypoint = file.message_type.add(name="KeypointMap")
    keypoint.field.add(name="id", number=1, type=5, label=1)
    keypoint.field.add(name="label", number=2, type=9, label=1)
    label_map = file.message_type.add(name="StringIntLabelMap")
    label_map.field.add(name="item", number=1, type=11, label=3, type_name=".test.StringIntLabelMapItem")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("test.StringIntLabelMap"))


AWKWARD_NAMES = ["cat", "it's", 'say "hi"', "back\\slash", "tab\there", "café 猫", "a,b"]


def test_label_maps_are_written_at_the_root_and_beside_each_split_and_parse_exactly(tmp_path: Path) -> None:
    export = CocoExport(tmp_path / "coco", categories=[{"id": i + 1, "name": n} for i, n in enumerate(AWKWARD_NAMES)])
    for index in range(12):
        image_id = export.add_image(f"img{index}.jpg")
        export.add_annotation(image_id, index % len(AWKWARD_NAMES) + 1, bbox=[1, 1, 20, 20])
    export.write()
    output = tmp_path / "out"
    assert convert("-a", export.path, "-i", export.image_folder, "-o", output, "-s", "0.8,0.1,0.1").exit_code == 0
    info = load_info(output)

    message_class = _label_map_message()
    splits = ("train", "validation", "test")
    texts = [output / "label_map.pbtxt"] + [output / info[split]["label_map"] for split in splits]
    for path in texts:
        parsed = text_format.Parse(path.read_text(encoding="utf-8"), message_class())
        assert [(item.id, item.name) for item in parsed.item] == list(enumerate(AWKWARD_NAMES, start=1))
    assert info["train"]["label_map"] == "tfrecord_train/label_map.pbtxt"
    with (output / "label_map.csv").open(encoding="utf-8", newline="") as rows:
        import csv

        assert [(int(i), name) for i, name in csv.reader(rows)] == list(enumerate(AWKWARD_NAMES, start=1))
    assert verify(output).exit_code == 0, verify(output).stdout
    assert {"label_map.pbtxt", "label_map.csv", "coco", "configs"} <= set(info["entries"])


# ---------------------------------------------------------------------------
# COCO ground truth and areas


def test_coco_ground_truth_matches_the_records_and_scores_ap_1_against_itself(
    shared_samples: Path, tmp_path: Path
) -> None:
    source = shared_samples / "coco" / "datumaro"
    output = tmp_path / "out"
    result = convert(
        "-a", source / "annotations" / "instances_train.json", "-i", source / "images" / "train",
        "-o", output, "-s", "0", "--instance-masks",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    original = json.loads((source / "annotations" / "instances_train.json").read_text())
    records = _records(output)["train"]
    ground_truth = COCO(str(output / "coco" / "instances_train.json"))

    assert sorted(ground_truth.getImgIds()) == sorted(int(r["image/source_id"][0]) for r in records)
    assert sorted(ground_truth.getImgIds()) == sorted(image["id"] for image in original["images"])
    for record in records:
        image_id = int(record["image/source_id"][0])
        annotations = ground_truth.loadAnns(ground_truth.getAnnIds(imgIds=[image_id], iscrowd=None))
        source_annotations = [a for a in original["annotations"] if a["image_id"] == image_id]
        # COCO's own areas are kept (a crowd RLE's 20.0 is not its box's 9.0), in the record and the JSON
        assert record["image/object/area"] == pytest.approx([a["area"] for a in source_annotations])
        assert [a["area"] for a in annotations] == pytest.approx([a["area"] for a in source_annotations])
        assert [a["iscrowd"] for a in annotations] == record["image/object/is_crowd"]
        assert [a["category_id"] for a in annotations] == record["image/object/class/label"]
        width = record["image/width"][0]
        for annotation, png in zip(annotations, record["image/object/mask"], strict=True):
            assert np.array_equal(ground_truth.annToMask(annotation), decode_png(png))
            x, y, w, h = annotation["bbox"]
            xmin = record["image/object/bbox/xmin"][annotations.index(annotation)]
            assert x / width == pytest.approx(xmin, abs=1e-6) and w > 0 and h > 0 and y >= 0

    for iou_type in ("bbox", "segm"):
        detections = [{**a, "score": 1.0} for a in ground_truth.loadAnns(ground_truth.getAnnIds()) if not a["iscrowd"]]
        evaluation = COCOeval(ground_truth, ground_truth.loadRes(detections), iou_type)
        with contextlib.redirect_stdout(io.StringIO()):
            evaluation.evaluate()
            evaluation.accumulate()
            evaluation.summarize()
        assert evaluation.stats[0] == pytest.approx(1.0), iou_type


def test_area_is_the_mask_pixel_count_where_an_object_has_a_shape_else_the_box_area(tmp_path: Path) -> None:
    export = CocoExport(tmp_path / "coco", categories=[{"id": 1, "name": "thing"}])
    image_id = export.add_image("a.jpg", size=(40, 30))
    export.add_annotation(image_id, 1, segmentation=[[2, 2, 30, 4, 12, 25]])  # a triangle, no area given
    export.add_annotation(image_id, 1, bbox=[1.5, 2, 10, 4])  # a box only
    export.write()
    output = tmp_path / "out"
    result = convert("-a", export.path, "-i", export.image_folder, "-o", output, "-s", "0", "--instance-masks")
    assert result.exit_code == 0
    (record,) = _records(output)["train"]
    triangle_pixels = int(decode_png(record["image/object/mask"][0]).sum())
    assert record["image/object/area"] == pytest.approx([triangle_pixels, 40.0])
    assert 0 < triangle_pixels < 28 * 23


# ---------------------------------------------------------------------------
# Configs


def test_configs_point_at_the_written_files_with_the_dataset_numbers(tmp_path: Path) -> None:
    export = detection_export(tmp_path / "export", 30)
    export.write()
    output = tmp_path / "out"
    assert convert("-a", export.manifest, "-o", output, "-s", "0.8,0.1,0.1", "-p", "0.01").exit_code == 0
    info = load_info(output)
    retinanet = yaml.safe_load((output / "configs" / "model_garden_retinanet.yaml").read_text())
    task = retinanet["task"]
    assert task["model"]["num_classes"] == len(info["classes"]) + 1
    train_shards = sorted(output.glob(task["train_data"]["input_path"]))
    assert [path.relative_to(output).as_posix() for path in train_shards] == [
        shard["file"] for shard in info["train"]["shards"]
    ]
    assert len(train_shards) > 1  # the glob covers every shard, and nothing else in the folder
    assert sorted(output.glob(task["validation_data"]["input_path"])) == [
        output / shard["file"] for shard in info["validation"]["shards"]
    ]
    assert task["annotation_file"] == "coco/instances_val.json" and (output / task["annotation_file"]).is_file()
    assert task["train_data"]["decoder"]["simple_decoder"]["regenerate_source_id"] is False
    assert (
        retinanet["trainer"]["validation_steps"] * task["validation_data"]["global_batch_size"]
        >= (info["validation"]["samples"])
    )
    od_api = (output / "configs" / "object_detection_api.config").read_text()
    assert f"num_classes: {len(info['classes'])}" in od_api
    assert re.findall(r'input_path: "([^"]+)"', od_api) == [
        task["train_data"]["input_path"], task["validation_data"]["input_path"]
    ]  # fmt: skip
    assert not (output / "configs" / "model_garden_maskrcnn.yaml").exists()


def test_absolute_paths_make_the_configs_absolute(tmp_path: Path) -> None:
    export = detection_export(tmp_path / "export", 6)
    export.write()
    output = tmp_path / "out"
    assert convert("-a", export.manifest, "-o", output, "--absolute-paths").exit_code == 0
    task = yaml.safe_load((output / "configs" / "model_garden_retinanet.yaml").read_text())["task"]
    assert task["train_data"]["input_path"] == f"{output.absolute()}/tfrecord_train/train-*.tfrecord"
    assert Path(task["annotation_file"]).is_file()


def test_masterful_config_points_at_its_csvs(tmp_path: Path) -> None:
    export = detection_export(tmp_path / "export", 8)
    export.write()
    output = tmp_path / "out"
    assert convert("-a", export.manifest, "-o", output, "-f", "masterful", "-s", "0.8,0.1,0.1").exit_code == 0
    config = yaml.safe_load((output / "masterful.yaml").read_text())
    assert config["dataset"]["splits"] == ["records_train", "records_val", "records_test"]
    for name in [*config["dataset"]["splits"], config["dataset"]["label_map"]]:
        assert (output / f"{name}.csv").is_file()
    assert config["training"] == {"task": "detection", "training_split": "records_train"}
    assert config["evaluation"] == {"split": "records_test"}
    assert verify(output).exit_code == 0


# ---------------------------------------------------------------------------
# The reading API, and the README snippet that uses it


def _readme_snippet() -> str:
    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"<!-- reading snippet -->\s*```python\n(.*?)```", readme, re.DOTALL)
    assert match is not None, "README.md lost its reading snippet"
    return match.group(1)


def test_the_readme_reading_snippet_runs_on_a_converted_dataset(tmp_path: Path) -> None:
    export = detection_export(tmp_path / "export", 10)
    export.add_detection("extra.png", [GtBox(0, 1, 1, 10, 10)], {0: "cat"})
    export.write()
    assert convert("-a", export.manifest, "-o", tmp_path / "out").exit_code == 0
    printed = io.StringIO()
    cwd = Path.cwd()
    os.chdir(tmp_path)
    try:
        with contextlib.redirect_stdout(printed):
            exec(compile(_readme_snippet(), "README.md", "exec"), {})  # the README's own example
    finally:
        os.chdir(cwd)
    assert printed.getvalue().strip(), "the snippet prints what it read"


def test_tf_dataset_decodes_images_boxes_labels_and_masks(tmp_path: Path) -> None:
    from converter.read import tf_dataset

    export = CocoExport(tmp_path / "coco", categories=[{"id": 1, "name": "a"}, {"id": 2, "name": "b"}])
    for index in range(4):
        image_id = export.add_image(f"img{index}.jpg", size=(40, 30))
        export.add_annotation(image_id, index % 2 + 1, segmentation=[[2, 2, 30, 4, 12, 25]])
    export.write()
    output = tmp_path / "out"
    result = convert("-a", export.path, "-i", export.image_folder, "-o", output, "-s", "0", "--instance-masks")
    assert result.exit_code == 0
    records = {int(r["image/source_id"][0]): r for r in _records(output)["train"]}
    seen = 0
    for example in tf_dataset(output, "train"):
        record = records[int(example["source_id"].numpy())]
        assert example["image"].shape == (30, 40, 3)
        assert example["objects"]["label"].numpy().tolist() == record["image/object/class/label"]
        assert example["objects"]["bbox"].numpy()[:, 1].tolist() == pytest.approx(record["image/object/bbox/xmin"])
        assert np.array_equal(example["objects"]["mask"].numpy()[0], decode_png(record["image/object/mask"][0]))
        class_mask = decode_png(record["image/segmentation/class/encoded"][0])
        assert np.array_equal(example["segmentation"].numpy()[..., 0], class_mask)
        seen += 1
    assert seen == 4
    with pytest.raises(ValueError, match="no split 'test'"):
        tf_dataset(output, "test")


# ---------------------------------------------------------------------------
# Keypoints of objects (COCO's person keypoints)


def test_object_keypoints_are_written_per_object_as_the_object_detection_api_reads_them(tmp_path: Path) -> None:
    export, keypoints_by_annotation = person_keypoints_export(tmp_path / "coco")
    output = tmp_path / "out"
    result = convert("-a", export.path, "-i", export.image_folder, "-o", output, "-s", "0")
    assert result.exit_code == 0, result.stderr
    info = load_info(output)
    assert info["record_layout"]["keypoints_per_object"] == 17
    by_image = {image["id"]: image for image in export.images}
    for record in _records(output)["train"]:
        image_id = int(record["image/source_id"][0])
        (person,) = [a for a in export.annotations if a["image_id"] == image_id and a["category_id"] == 1]
        points = np.array(keypoints_by_annotation[person["id"]]).reshape(17, 3)
        boxes = len(record["image/object/class/label"])
        # [num_boxes, num_keypoints], the layout of the Object Detection API's decoder
        xs = np.array(record["image/object/keypoint/x"]).reshape(boxes, 17)
        ys = np.array(record["image/object/keypoint/y"]).reshape(boxes, 17)
        visibility = np.array(record["image/object/keypoint/visibility"]).reshape(boxes, 17)
        width, height = by_image[image_id]["width"], by_image[image_id]["height"]
        assert record["image/object/class/text"] == [b"person", b"ball"]
        assert xs[0] == pytest.approx(points[:, 0] / width) and ys[0] == pytest.approx(points[:, 1] / height)
        assert visibility[0].tolist() == points[:, 2].astype(int).tolist()
        assert visibility[1].tolist() == [0] * 17  # the ball has no keypoints: padded, unlabelled
        assert record["image/object/keypoint/num"] == [int((points[:, 2] > 0).sum()), 0]
        assert record["image/object/keypoint/text"][:17] == [name.encode() for name in PERSON_KEYPOINTS]

    parsed = text_format.Parse((output / "label_map.pbtxt").read_text(encoding="utf-8"), _label_map_message()())
    assert [(k.id, k.label) for k in parsed.item[0].keypoints] == list(enumerate(PERSON_KEYPOINTS))
    assert list(parsed.item[1].keypoints) == []
    od_api = (output / "configs" / "object_detection_api.config").read_text()
    assert od_api.count("num_keypoints: 17") == 2

    from converter.read import tf_dataset

    example = next(iter(tf_dataset(output, "train")))
    assert example["objects"]["keypoints"].shape == (2, 17, 2)
    assert example["objects"]["keypoint_visibility"].shape == (2, 17)


def test_coco_ground_truth_keypoints_score_ap_1_against_themselves(tmp_path: Path) -> None:
    export, _ = person_keypoints_export(tmp_path / "coco")
    output = tmp_path / "out"
    assert convert("-a", export.path, "-i", export.image_folder, "-o", output, "-s", "0").exit_code == 0
    ground_truth = COCO(str(output / "coco" / "instances_train.json"))
    assert ground_truth.loadCats(1)[0]["keypoints"] == PERSON_KEYPOINTS
    people = ground_truth.loadAnns(ground_truth.getAnnIds(catIds=[1]))
    source = {a["image_id"]: a["keypoints"] for a in export.annotations if a["category_id"] == 1}
    assert {a["image_id"]: a["keypoints"] for a in people} == source
    evaluation = COCOeval(ground_truth, ground_truth.loadRes([{**a, "score": 1.0} for a in people]), "keypoints")
    evaluation.params.catIds = [1]  # as for COCO's own person keypoints: the categories that have keypoints
    with contextlib.redirect_stdout(io.StringIO()):
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    assert evaluation.stats[0] == pytest.approx(1.0)


def test_a_labelled_keypoint_outside_the_image_is_written_unlabelled_and_reported(tmp_path: Path) -> None:
    export = CocoExport(tmp_path / "coco", categories=[{"id": 1, "name": "person", "keypoints": ["a", "b"]}])
    image_id = export.add_image("img.jpg", size=(64, 48))
    export.add_annotation(image_id, 1, bbox=[1, 1, 30, 30], keypoints=[10, 10, 2, 80, 10, 2])
    export.write()
    output = tmp_path / "out"
    assert convert("-a", export.path, "-i", export.image_folder, "-o", output, "-s", "0").exit_code == 0
    (record,) = _records(output)["train"]
    assert record["image/object/keypoint/visibility"] == [2, 0]
    assert record["image/object/keypoint/x"] == pytest.approx([10 / 64, 0.0])
    (note,) = load_report(output)["objects"]
    assert note["code"] == "keypoint_outside" and "keypoint b at (80.0, 10.0)" in note["message"]

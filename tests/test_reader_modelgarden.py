"""Model Garden trains and evaluates on our output with the experiment override the converter writes.

Model Garden (tf-models-official 2.20) runs in its own venv (tests/reader_envs.py,
`.readers/modelgarden/`); tests/readers/modelgarden_inputs.py does what its trainer does with
`--experiment=E --config_file=configs/model_garden_*.yaml` from the dataset folder: the registered
experiment overridden strictly by our YAML, `task.build_inputs` for training (two batches) and for
evaluation (every record). For detection it feeds the evaluation input's ground truth back as
detections into the COCO evaluator that the task builds from our `annotation_file`: AP is 1.0 only
if the records' `image/source_id`, boxes and classes agree with coco/instances_val.json. Mask R-CNN
also compares each record's masks, as Model Garden's decoder reads them, with that file's
segmentations. Segmentation and classification compare the evaluation labels with the source.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from builders import CocoExport, convert, load_info
from pycocotools import mask as mask_utils
from readback import read_split
from reader_envs import run_reader
from sinks import HEIGHT, WIDTH, Input, classification_input, multilabel_input, segmentation_input

pytestmark = pytest.mark.reader("modelgarden")

PROJECT_ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = PROJECT_ROOT / "examples" / "sagemaker_gt"
TRAIN_BATCHES = 2
IGNORE_LABEL = 255  # Model Garden's segmentation pads labels with it


def _inputs(output: Path, experiment: str, config: str) -> dict[str, Any]:
    """Run the reader; also checks what every config must hold."""
    document = yaml.safe_load((output / config).read_text(encoding="utf-8"))
    assert document["task"]["model"]["num_classes"] == len(load_info(output)["classes"]) + 1
    inputs: dict[str, Any] = run_reader(
        "modelgarden", "modelgarden_inputs.py", output, experiment, config, str(TRAIN_BATCHES), timeout=600
    )
    assert inputs["num_classes"] == len(load_info(output)["classes"]) + 1
    train_batch = document["task"]["train_data"]["global_batch_size"]
    assert inputs["train"]["batches"] == TRAIN_BATCHES
    assert inputs["train"]["shapes"]["features"]["shape"][0] == train_batch
    assert inputs["train"]["shapes"]["features"]["shape"][-1] == 3
    return inputs


def _source_ids(output: Path, split: str) -> list[int]:
    return [int(record["image/source_id"][0]) for record in read_split(output, split)]


def _assert_detection(output: Path, inputs: dict[str, Any], *, masks: bool) -> None:
    """Every validation record evaluated once, in order, against the written COCO ground truth: AP 1.0."""
    coco = json.loads((output / "coco" / "instances_val.json").read_text(encoding="utf-8"))
    detection = inputs["detection"]
    assert detection["source_ids"] == _source_ids(output, "validation")
    assert sorted(detection["source_ids"]) == sorted(image["id"] for image in coco["images"])
    metrics = detection["metrics"]
    assert (metrics["AP"], metrics["AP50"], metrics["AP75"]) == (1.0, 1.0, 1.0), metrics
    classes = inputs["validation"]["values"]["groundtruths/classes"]["values"]
    used = {annotation["category_id"] for annotation in coco["annotations"]}
    assert set(classes) - {-1.0} == used  # -1 pads to max_num_instances
    if masks:
        # Cropped to 112 x 112 and pasted back, small masks lose pixels: only AP50 survives that round trip.
        assert metrics["mask_AP50"] == 1.0, metrics
        exact = inputs["instance_masks"]
        assert exact["equal"] == exact["objects"] == len(coco["annotations"]), exact
        assert exact["mask_AP"] == 1.0


def test_retinanet_trains_and_evaluates_on_ground_truth_boxes(tmp_path: Path) -> None:
    output = tmp_path / "out"
    result = convert("-a", EXAMPLE, "-o", output)
    assert result.exit_code == 0, result.stderr

    inputs = _inputs(output, "retinanet_resnetfpn_coco", "configs/model_garden_retinanet.yaml")

    assert inputs["task"] == "RetinaNetTask"
    assert {1.0, 2.0, 3.0} <= set(inputs["train"]["values"]["cls_targets"]["values"])  # anchors of every class
    _assert_detection(output, inputs, masks=False)


def _coco_export(root: Path) -> CocoExport:
    """Six images: a polygon, an RLE region (every third one a crowd), and on odd images a box without a shape.

    Category ids 3 and 7 (not 1 and 2): the records and the written ground truth renumber them alike.
    """
    coco = CocoExport(root)
    coco.categories = [{"id": 3, "name": "leaf"}, {"id": 7, "name": "stone"}]
    for index in range(6):
        image_id = coco.add_image(f"field{index}.jpg", (WIDTH, HEIGHT), image_id=100 + index)
        x = 4 + 3 * index
        coco.add_annotation(image_id, 3, segmentation=[[x, 4, x + 20, 6, x + 12, 30]], bbox=[x, 4, 20, 26], area=250.0)
        region = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
        region[30:44, 36 + index : 60] = 1
        rle = mask_utils.encode(np.asfortranarray(region))
        rle["counts"] = rle["counts"].decode()
        coco.add_annotation(
            image_id,
            7,
            segmentation=rle,
            bbox=[36 + index, 30, 24 - index, 14],
            area=float(region.sum()),
            iscrowd=int(index % 3 == 0),
        )
        if index % 2:
            coco.add_annotation(image_id, 7, bbox=[2, 36, 10, 8], area=80.0)
    coco.write()
    return coco


def test_mask_rcnn_trains_and_evaluates_on_coco_polygons_rle_and_boxes(tmp_path: Path) -> None:
    coco = _coco_export(tmp_path / "export")
    output = tmp_path / "out"
    result = convert("-a", coco.path, "-i", coco.image_folder, "-o", output, "--instance-masks", "-s", "0.5")
    assert result.exit_code == 0, result.stderr
    assert load_info(output)["validation"]["samples"] > 0

    inputs = _inputs(output, "maskrcnn_resnetfpn_coco", "configs/model_garden_maskrcnn.yaml")

    assert inputs["task"] == "MaskRCNNTask"
    assert inputs["train"]["shapes"]["labels/gt_masks"]["shape"][1:] == [100, 112, 112]
    assert set(inputs["train"]["values"]["gt_classes"]["values"]) <= {-1.0, 1.0, 2.0}
    _assert_detection(output, inputs, masks=True)


def test_segmentation_evaluates_on_the_class_masks_as_written(tmp_path: Path) -> None:
    data = segmentation_input(tmp_path / "export")
    output = tmp_path / "out"
    result = data.convert(output, "-s", "0.5")
    assert result.exit_code == 0, result.stderr
    classes = load_info(output)["classes"]

    inputs = _inputs(output, "seg_deeplabv3_pascal", "configs/model_garden_segmentation.yaml")

    assert inputs["task"] == "SemanticSegmentationTask"
    allowed = {float(value) for value in range(len(classes) + 1)} | {float(IGNORE_LABEL)}
    assert set(inputs["train"]["values"]["masks"]["values"]) <= allowed
    labels = inputs["validation"]["labels"]
    records = read_split(output, "validation")
    assert len(labels) == len(records) > 0
    for label, record in zip(labels, records, strict=True):
        expected = data.expected[Path(record["image/filename"][0].decode()).name].class_mask(classes)
        label = np.array(label)
        assert label.shape[0] >= HEIGHT and label.shape[1] >= WIDTH  # groundtruth_padded_size holds the image
        np.testing.assert_array_equal(label[:HEIGHT, :WIDTH], expected)
        assert (label[HEIGHT:, :] == IGNORE_LABEL).all() and (label[:, WIDTH:] == IGNORE_LABEL).all()


@pytest.mark.parametrize(
    ("build", "seed", "multilabel"),
    [(classification_input, "4", False), (multilabel_input, "0", True)],
    ids=["single-label", "multi-label"],
)
def test_classification_evaluates_on_the_image_labels(tmp_path: Path, build: Any, seed: str, multilabel: bool) -> None:
    data: Input = build(tmp_path / "export")
    output = tmp_path / "out"
    result = data.convert(output, "-s", "0.5", "--seed", seed)
    assert result.exit_code == 0, result.stderr
    classes = load_info(output)["classes"]

    inputs = _inputs(output, "resnet_imagenet", "configs/model_garden_classification.yaml")

    assert inputs["task"] == "ImageClassificationTask"
    labels = inputs["validation"]["labels"]
    records = read_split(output, "validation")
    assert len(labels) == len(records) > 0
    for label, record in zip(labels, records, strict=True):
        names = data.expected[Path(record["image/filename"][0].decode()).name].labels
        ids = sorted(classes.index(name) + 1 for name in names)
        if multilabel:
            assert len(label) == len(classes) + 1
            assert [index for index, value in enumerate(label) if value] == ids
        else:
            assert [label] == ids

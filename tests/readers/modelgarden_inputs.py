"""Model Garden builds its training and evaluation inputs from a converted dataset and its written config.

Usage: modelgarden_inputs.py OUT EXPERIMENT CONFIG [TRAIN_BATCHES]

As a user runs the trainer: from OUT (the config's paths are relative to it), the registered
experiment `exp_factory.get_exp_config(EXPERIMENT)` overridden by CONFIG
(`hyperparams.override_params_dict(..., is_strict=True)`: a key Model Garden does not know fails),
`task_factory.get_task(config.task)`, then `task.build_inputs` for `train_data` (TRAIN_BATCHES
batches) and for `validation_data` (every batch).

Detection tasks (RetinaNet, Mask R-CNN) then score the evaluation input's own ground truth as
detections (score 1, the masks the parser cropped as detection masks) with the COCO evaluator that
`task.build_metrics(training=False)` makes from the config's `annotation_file`, as the trainer's
evaluation does: every AP must be 1.0 when the records, their `image/source_id` and the COCO
ground truth agree.

Prints one JSON line: per input the batch count, the shapes of every tensor of the first batch,
the distinct values of the label tensors, and for detection the source ids seen and the metrics.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from nested import flatten
from official.core import exp_factory, task_factory
from official.modeling import hyperparams
from official.vision import registry_imports  # noqa: F401  (registers the vision experiments and tasks)
from official.vision.dataloaders import tf_example_decoder
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

# Label tensors whose distinct values are printed, by the last non-numeric part of their key path
# (cls_targets/3 is the RetinaNet level-3 anchor targets, summarized with the other levels).
VALUE_KEYS = ("labels", "classes", "gt_classes", "cls_targets", "masks", "valid_masks", "is_crowds")
MAX_VALUES = 64
MAX_LABEL_VALUES = 1_000_000  # evaluation labels printed whole up to this many numbers


def _summary(batches: list[Any]) -> dict[str, Any]:
    """Shapes and dtypes of the first batch; distinct values of label-like tensors over all batches."""
    if not batches:
        return {"batches": 0}
    features, labels = batches[0]
    shapes = {
        key: {"shape": list(tensor.shape), "dtype": tensor.dtype.name}
        for key, tensor in {**flatten(features, "features/"), **flatten(labels, "labels/")}.items()
        if hasattr(tensor, "shape")
    }
    seen: dict[str, set[float]] = {}
    for _, batch_labels in batches:
        label_tree = batch_labels if isinstance(batch_labels, dict) else {"labels": batch_labels}
        for key, tensor in flatten(label_tree).items():
            parts = [part for part in key.split("/") if not part.isdigit()]
            if parts and parts[-1] in VALUE_KEYS and hasattr(tensor, "numpy"):
                seen.setdefault("/".join(parts), set()).update(float(value) for value in np.unique(tensor.numpy()))
    values = {
        key: {"count": len(found), "min": min(found), "max": max(found), "values": sorted(found)[:MAX_VALUES]}
        for key, found in seen.items()
    }
    return {"batches": len(batches), "shapes": shapes, "values": values}


def _validation_labels(batches: list[Any]) -> list[Any] | None:
    """Every evaluation label in record order (the evaluation input is not shuffled), for small inputs.

    Classification: the one-hot (or multi-hot) label vectors; segmentation: the label masks as the
    evaluation sees them (padded to groundtruth_padded_size with the ignore value). Detection: None.
    """
    labels: list[Any] = []
    for _, batch_labels in batches:
        if isinstance(batch_labels, dict) and "groundtruths" in batch_labels:
            return None
        tensor = batch_labels["masks"][..., 0] if isinstance(batch_labels, dict) else batch_labels
        labels.extend(tensor.numpy().tolist())
    return labels if sum(np.size(label) for label in labels) <= MAX_LABEL_VALUES else None


def _detection_metrics(task: Any, batches: list[Any]) -> dict[str, Any]:
    """The config's COCO evaluator fed the evaluation input's ground truth as perfect detections."""
    task.build_metrics(training=False)
    evaluator = task.coco_metric
    source_ids: list[int] = []
    for _, labels in batches:
        truth = labels["groundtruths"]
        classes = truth["classes"].numpy()
        boxes = truth["boxes"].numpy().astype(np.float32)
        image_info = labels["image_info"].numpy()
        scale = np.tile(image_info[:, 2:3, :], (1, 1, 2))  # the evaluator maps detections back by this
        valid = classes > 0
        predictions = {
            "source_id": truth["source_id"].numpy(),
            "image_info": image_info,
            "num_detections": valid.sum(axis=1).astype(np.int32),
            "detection_boxes": np.where(valid[..., None], boxes * scale, 0.0),
            "detection_classes": np.where(valid, classes, 0).astype(np.int32),
            "detection_scores": valid.astype(np.float32),
        }
        if "masks" in truth:
            predictions["detection_masks"] = np.where(valid[..., None, None], truth["masks"].numpy(), 0.0)
        source_ids.extend(int(value) for value in truth["source_id"].numpy())
        evaluator.update_state(truth, {key: tf.constant(value) for key, value in predictions.items()})
    metrics = {name: float(value) for name, value in evaluator.result().items()}
    return {"source_ids": source_ids, "metrics": metrics}


def _instance_masks(config: Any) -> dict[str, Any]:
    """The validation records' full-resolution masks, as Model Garden's decoder reads them, against annotation_file.

    The evaluator above can only be fed masks cropped to boxes and pasted back (lossy on small objects), so the
    masks themselves are checked here: every object's decoded mask must equal its segmentation in the COCO
    ground truth pixel for pixel, and pycocotools' mask AP of those masks as detections must be 1.0.
    """
    data = config.task.validation_data
    decoder = tf_example_decoder.TfExampleDecoder(
        include_mask=True, regenerate_source_id=data.decoder.simple_decoder.regenerate_source_id
    )
    truth = COCO(config.task.annotation_file)
    files = sorted(tf.io.gfile.glob(data.input_path))
    equal, total, detections = 0, 0, []
    for serialized in tf.data.TFRecordDataset(files):
        decoded = decoder.decode(serialized)
        image_id = int(decoded["source_id"].numpy())
        masks = decoded["groundtruth_instance_masks"].numpy().astype(np.uint8)
        classes = decoded["groundtruth_classes"].numpy()
        annotations = truth.loadAnns(truth.getAnnIds(imgIds=[image_id]))
        total += max(len(annotations), len(masks))
        for annotation, mask, label in zip(annotations, masks, classes, strict=False):
            equal += int(annotation["category_id"] == label and np.array_equal(truth.annToMask(annotation), mask))
            rle = mask_utils.encode(np.asfortranarray(mask))
            rle["counts"] = rle["counts"].decode()
            detections.append({"image_id": image_id, "category_id": int(label), "segmentation": rle, "score": 1.0})
    evaluation = COCOeval(truth, truth.loadRes(detections), iouType="segm")
    evaluation.params.imgIds = sorted({detection["image_id"] for detection in detections})
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    return {"objects": total, "equal": equal, "mask_AP": float(evaluation.stats[0])}


def main(output: Path, experiment: str, config_path: str, train_batches: int) -> None:
    os.chdir(output)  # the written config's paths are relative to the dataset
    config = exp_factory.get_exp_config(experiment)
    config = hyperparams.override_params_dict(config, config_path, is_strict=True)
    config.validate()
    task = task_factory.get_task(config.task)
    report: dict[str, Any] = {"task": type(task).__name__, "num_classes": config.task.model.num_classes}

    train = task.build_inputs(config.task.train_data)
    report["train"] = _summary(list(train.take(train_batches)))

    validation = list(task.build_inputs(config.task.validation_data))  # not repeated: every record once
    report["validation"] = _summary(validation)
    report["validation"]["labels"] = _validation_labels(validation)
    if hasattr(config.task, "annotation_file") and "groundtruths" in (validation[0][1] if validation else {}):
        report["detection"] = _detection_metrics(task, validation)
        if getattr(config.task.model, "include_mask", False):
            report["instance_masks"] = _instance_masks(config)
    print(json.dumps(report))


if __name__ == "__main__":
    tf.config.set_visible_devices([], "GPU")
    main(Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else 2)

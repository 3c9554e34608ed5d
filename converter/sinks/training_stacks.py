"""What the training stacks need beside the records, written so nobody writes it by hand.

- `label_map.pbtxt` (Object Detection API, Datumaro): `item { id: N name: '...' }`, ids
  from 1. Written at the dataset root and beside each split's shards, because Datumaro's
  `tf_detection_api` importer looks for it in the shards' own folder.
- `label_map.csv` (Model Garden's `TfExampleDecoderLabelMap`): `id,name` rows, no header.
- `configs/`: a Model Garden experiment override per task the data has, and an Object
  Detection API `pipeline.config` input fragment. They fill in what depends on the data
  (paths, class count, padded sizes, validation steps) and leave the model to the user.

Paths inside the configs are relative to the dataset folder (run the trainer from there)
unless `--absolute-paths` names the final folder. Shards are given as globs of their own
names, never `tfrecord_train/*`, so the label map beside them is never read as a record.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from converter.core.classes import FIRST_CLASS_ID
from converter.core.materialize import RecordOptions
from converter.core.shard import ShardInfo
from converter.core.split import SPLIT_NAMES, SplitName
from converter.sinks.coco_ground_truth import COCO_FOLDER, GroundTruthWriter
from converter.sinks.tfds_metadata import write_tfds_metadata
from converter.sinks.tfrecord_keys import (
    KEYPOINT_X,
    LAYOUT_NAMES,
    OBJECT_DETECTION_API,
    OBJECT_MASK,
    SEGMENTATION_ENCODED,
    SHARD_PREFIXES,
    SHARD_SUFFIX,
    SPLIT_FOLDERS,
)

LABEL_MAP_PBTXT = "label_map.pbtxt"
LABEL_MAP_CSV = "label_map.csv"
CONFIGS_FOLDER = "configs"

MODEL_GARDEN_RETINANET = "model_garden_retinanet.yaml"
MODEL_GARDEN_MASKRCNN = "model_garden_maskrcnn.yaml"
MODEL_GARDEN_SEGMENTATION = "model_garden_segmentation.yaml"
MODEL_GARDEN_CLASSIFICATION = "model_garden_classification.yaml"
OBJECT_DETECTION_API_CONFIG = "object_detection_api.config"

# Model Garden's experiments that each override is written for (`--experiment`).
TFDS_DATASET_NAME = "dataset_converter"  # the name `tfds.builder_from_directory` reports
TFDS_FILES = ("dataset_info.json", "features.json")  # TFDS's metadata, at the dataset root
TRAINING_STACK_ENTRIES = (LABEL_MAP_PBTXT, LABEL_MAP_CSV, CONFIGS_FOLDER, COCO_FOLDER, *TFDS_FILES)

EXPERIMENTS = {
    MODEL_GARDEN_RETINANET: "retinanet_resnetfpn_coco",
    MODEL_GARDEN_MASKRCNN: "maskrcnn_resnetfpn_coco",
    MODEL_GARDEN_SEGMENTATION: "seg_deeplabv3_pascal",
    MODEL_GARDEN_CLASSIFICATION: "resnet_imagenet",
}

MAX_TRAIN_BATCH = 32  # a batch that fits one GPU at 640x640; an upper bound, never more than the split holds
MAX_EVAL_BATCH = 8
DEFAULT_MAX_INSTANCES = 100  # Model Garden's own default; raised when an image has more objects
PADDING_MULTIPLE = 32  # padded sizes are rounded up to what the backbones' strides divide


@dataclass
class SplitFacts:
    """What the records of one split hold, counted as they are written (an observer of records)."""

    shard_glob: str  # e.g. tfrecord_train/train-*.tfrecord, relative to the dataset folder
    coco_file: str | None  # e.g. coco/instances_train.json
    samples: int = 0
    max_height: int = 0
    max_width: int = 0
    max_objects: int = 0
    max_image_labels: int = 0

    def statistics(self) -> dict[str, int]:
        """The maxima, as dataset_info.yaml lists them per split (so that finalize can merge parts' facts)."""
        return {
            "max_height": self.max_height,
            "max_width": self.max_width,
            "max_objects": self.max_objects,
            "max_image_labels": self.max_image_labels,
        }

    def add(self, height: int, width: int, objects: int, image_labels: int) -> None:
        self.samples += 1
        self.max_height = max(self.max_height, height)
        self.max_width = max(self.max_width, width)
        self.max_objects = max(self.max_objects, objects)
        self.max_image_labels = max(self.max_image_labels, image_labels)


def _pbtxt_string(text: str) -> str:
    """A protobuf text-format string literal; the quote is one the name lacks where possible,
    because Datumaro reads label maps with a regular expression that stops at either quote."""
    quote = "'" if "'" not in text or '"' in text else '"'
    escaped = []
    for character in text:
        if character in ("\\", quote):
            escaped.append("\\" + character)
        elif character == "\n":
            escaped.append("\\n")
        elif ord(character) < 0x20 or ord(character) == 0x7F:
            escaped.append(f"\\{ord(character):03o}")
        else:
            escaped.append(character)
    return quote + "".join(escaped) + quote


def label_map_pbtxt(class_names: Sequence[str], keypoint_names: Mapping[int, Sequence[str]] | None = None) -> str:
    """The Object Detection API's label map: one `item` per class, ids from 1, with the class's
    `keypoints { id label }` where `keypoint_names` gives them (ids from 0, the records' order)."""
    items = []
    for index, name in enumerate(class_names, start=FIRST_CLASS_ID):
        keypoints = "".join(
            f"  keypoints {{\n    id: {number}\n    label: {_pbtxt_string(label)}\n  }}\n"
            for number, label in enumerate((keypoint_names or {}).get(index, ()))
        )
        items.append(f"item {{\n  id: {index}\n  name: {_pbtxt_string(name)}\n{keypoints}}}\n")
    return "".join(items)


def label_map_csv(class_names: Sequence[str]) -> str:
    """Model Garden's label map: `id,name` rows (CSV-quoted where a name needs it), no header."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for index, name in enumerate(class_names, start=FIRST_CLASS_ID):
        writer.writerow([index, name])
    return buffer.getvalue()


def _padded(size: int) -> int:
    return max(PADDING_MULTIPLE, math.ceil(size / PADDING_MULTIPLE) * PADDING_MULTIPLE)


@dataclass(frozen=True)
class DatasetFacts:
    """Everything the configs depend on; `splits` are those that hold records (an empty one has no shard to glob)."""

    class_names: Sequence[str]
    splits: Mapping[SplitName, SplitFacts]
    options: RecordOptions
    root: str  # prefix of every path inside the configs: "" (relative) or the final folder with "/"
    keypoint_names: Mapping[int, Sequence[str]] = field(default_factory=dict)  # class id -> its keypoints

    @property
    def training_split(self) -> SplitName:
        return "train" if "train" in self.splits else next(iter(self.splits))

    @property
    def evaluation_split(self) -> SplitName:
        return "validation" if "validation" in self.splits else self.training_split

    def path(self, relative: str) -> str:
        return self.root + relative

    def max_over_splits(self, attribute: str) -> int:
        return max((getattr(facts, attribute) for facts in self.splits.values()), default=0)


def _data(facts: DatasetFacts, split: SplitName, training: bool) -> dict[str, object]:
    split_facts = facts.splits[split]
    batch = max(1, min(MAX_TRAIN_BATCH if training else MAX_EVAL_BATCH, split_facts.samples))
    return {
        "input_path": facts.path(split_facts.shard_glob),
        "is_training": training,
        "global_batch_size": batch,
        "drop_remainder": training,  # evaluation sees every record
    }


def _trainer(facts: DatasetFacts) -> dict[str, object]:
    evaluation = facts.splits[facts.evaluation_split]
    batch = max(1, min(MAX_EVAL_BATCH, evaluation.samples))
    return {"validation_steps": math.ceil(evaluation.samples / batch)}


def _detection_override(facts: DatasetFacts, masks: bool) -> dict[str, object]:
    max_instances = max(DEFAULT_MAX_INSTANCES, facts.max_over_splits("max_objects"))
    decoder = {"type": "simple_decoder", "simple_decoder": {"regenerate_source_id": False}}
    parser = {"max_num_instances": max_instances}
    train, validation = _data(facts, facts.training_split, True), _data(facts, facts.evaluation_split, False)
    evaluation_coco = facts.splits[facts.evaluation_split].coco_file
    task: dict[str, object] = {
        "model": {"num_classes": len(facts.class_names) + FIRST_CLASS_ID, **({"include_mask": True} if masks else {})},
        "train_data": {**train, "decoder": decoder, "parser": parser},
        "validation_data": {**validation, "decoder": decoder, "parser": parser},
        "annotation_file": facts.path(evaluation_coco) if evaluation_coco else None,
    }
    if not masks:
        task["max_num_eval_detections"] = max_instances
    return {"task": task, "trainer": _trainer(facts)}


def _segmentation_override(facts: DatasetFacts) -> dict[str, object]:
    padded = [_padded(facts.max_over_splits("max_height")), _padded(facts.max_over_splits("max_width"))]
    validation = _data(facts, facts.evaluation_split, False)
    return {
        "task": {
            "model": {"num_classes": len(facts.class_names) + FIRST_CLASS_ID},
            "train_data": _data(facts, facts.training_split, True),
            "validation_data": {**validation, "resize_eval_groundtruth": False, "groundtruth_padded_size": padded},
        },
        "trainer": _trainer(facts),
    }


def _classification_override(facts: DatasetFacts) -> dict[str, object]:
    multilabel = facts.max_over_splits("max_image_labels") > 1
    image_data = {"decode_jpeg_only": False, "is_multilabel": multilabel}
    return {
        "task": {
            "model": {"num_classes": len(facts.class_names) + FIRST_CLASS_ID},
            "train_data": {**_data(facts, facts.training_split, True), **image_data},
            "validation_data": {**_data(facts, facts.evaluation_split, False), **image_data},
        },
        "trainer": _trainer(facts),
    }


def _header(file_name: str, facts: DatasetFacts) -> str:
    location = "the dataset folder" if not facts.root else facts.root.rstrip("/")
    return (
        f"# Written by dataset-converter for Model Garden's `{EXPERIMENTS[file_name]}` experiment; choose the model\n"
        f"# there or override it here. Paths are relative to {location}: run from it, e.g.\n"
        f"#   python -m official.vision.train --experiment={EXPERIMENTS[file_name]} "
        f"--config_file={facts.path(CONFIGS_FOLDER + '/' + file_name)} --mode=train_and_eval --model_dir=MODEL_DIR\n"
        "# num_classes counts the background (id 0): the dataset's classes + 1.\n"
        + (
            f"# The dataset has no validation records: evaluation reads the {facts.evaluation_split} split.\n"
            if facts.evaluation_split != "validation"
            else ""
        )
    )


def model_garden_overrides(facts: DatasetFacts) -> dict[str, str]:
    """The Model Garden experiment overrides this dataset supports, by file name."""
    overrides: dict[str, dict[str, object]] = {}
    has_objects = facts.max_over_splits("max_objects") > 0
    if has_objects or facts.options.objects:
        overrides[MODEL_GARDEN_RETINANET] = _detection_override(facts, masks=False)
        if facts.options.instance_masks:
            overrides[MODEL_GARDEN_MASKRCNN] = _detection_override(facts, masks=True)
    if facts.options.class_masks:
        overrides[MODEL_GARDEN_SEGMENTATION] = _segmentation_override(facts)
    if facts.max_over_splits("max_image_labels") > 0:
        overrides[MODEL_GARDEN_CLASSIFICATION] = _classification_override(facts)
    return {
        name: _header(name, facts) + yaml.dump(override, Dumper=_PlainDumper, sort_keys=False, allow_unicode=True)
        for name, override in overrides.items()
    }


class _PlainDumper(yaml.SafeDumper):
    """Writes a repeated value (the decoder shared by both inputs) in full, not as a YAML alias."""

    def ignore_aliases(self, data: object) -> bool:
        return True


def object_detection_api_config(facts: DatasetFacts) -> str:
    """The input part of an Object Detection API `pipeline.config`, to merge into a model's config."""
    reader_options = "  load_instance_masks: true\n  mask_type: PNG_MASKS\n" if facts.options.instance_masks else ""
    if facts.options.keypoints_per_object:
        reader_options += f"  num_keypoints: {facts.options.keypoints_per_object}\n"

    def reader(name: str, split: SplitName, training: bool) -> str:
        extra = "" if training else "  shuffle: false\n  num_epochs: 1\n"
        return (
            f"{name} {{\n"
            f'  label_map_path: "{facts.path(LABEL_MAP_PBTXT)}"\n'
            f"{reader_options}{extra}"
            f"  tf_record_input_reader {{\n"
            f'    input_path: "{facts.path(facts.splits[split].shard_glob)}"\n'
            "  }\n}\n"
        )

    metrics = "coco_detection_metrics" + (",coco_mask_metrics" if facts.options.instance_masks else "")
    return (
        "# Written by dataset-converter: the input readers of an Object Detection API pipeline.config.\n"
        "# Merge them into your model's config, and set there, inside model { <architecture> { ... } }:\n"
        f"#   num_classes: {len(facts.class_names)}\n"
        "# (the Object Detection API counts classes without the background). Paths are relative to the\n"
        "# dataset folder unless --absolute-paths was given.\n"
        + reader("train_input_reader", facts.training_split, True)
        + f'eval_config {{\n  metrics_set: "{metrics}"\n}}\n'
        + reader("eval_input_reader", facts.evaluation_split, False)
    )


def write_training_files(output_dir: Path, facts: DatasetFacts, split_folders: Sequence[str]) -> tuple[str, ...]:
    """Write the label maps (root and `split_folders`) and the configs; returns the top-level names."""
    # The split folders' copies list no keypoints: Datumaro reads them with a pattern that
    # expects an item to hold only `id` and `name`.
    (output_dir / LABEL_MAP_PBTXT).write_text(label_map_pbtxt(facts.class_names, facts.keypoint_names), "utf-8")
    for folder in split_folders:
        (output_dir / folder).mkdir(parents=True, exist_ok=True)  # absent where finalize stages files for a bucket
        (output_dir / folder / LABEL_MAP_PBTXT).write_text(label_map_pbtxt(facts.class_names), encoding="utf-8")
    (output_dir / LABEL_MAP_CSV).write_text(label_map_csv(facts.class_names), encoding="utf-8")
    configs = output_dir / CONFIGS_FOLDER
    configs.mkdir(exist_ok=True)
    if not facts.splits:  # no split has a record (a scaled-out worker's empty slice): nothing to train on
        return (LABEL_MAP_PBTXT, LABEL_MAP_CSV, CONFIGS_FOLDER)
    for name, text in model_garden_overrides(facts).items():
        (configs / name).write_text(text, encoding="utf-8")
    if facts.options.objects:
        (configs / OBJECT_DETECTION_API_CONFIG).write_text(object_detection_api_config(facts), encoding="utf-8")
    return (LABEL_MAP_PBTXT, LABEL_MAP_CSV, CONFIGS_FOLDER)


@dataclass(frozen=True)
class SplitPaths:
    """Where a split's records are (as a glob of their names) and where its COCO ground truth goes."""

    shard_glob: str  # relative to the dataset folder
    coco_file: str  # inside COCO_FOLDER


def split_paths(split: SplitName) -> SplitPaths:
    prefix = SHARD_PREFIXES[split]
    return SplitPaths(f"{SPLIT_FOLDERS[split]}/{prefix}-*{SHARD_SUFFIX}", f"instances_{prefix}.json")


def write_training_stack(
    output_dir: Path,
    class_names: Sequence[str],
    splits: Mapping[SplitName, tuple[SplitFacts, Sequence[ShardInfo], GroundTruthWriter]],
    options: RecordOptions,
) -> tuple[str, ...]:
    """Label maps, COCO ground truth, configs and TFDS metadata; returns the top-level names written."""
    keypoint_names: dict[int, tuple[str, ...]] = {}
    for _, _, ground_truth in splits.values():
        for class_id, names in ground_truth.keypoint_names.items():
            keypoint_names.setdefault(class_id, names)
    for _, _, ground_truth in splits.values():
        ground_truth.assemble(class_names, keypoint_names)
    facts = DatasetFacts(
        class_names,
        {split: facts for split, (facts, _, _) in splits.items() if facts.samples},
        options,
        f"{options.absolute_root}/" if options.absolute_root is not None else "",
        keypoint_names,
    )
    names = write_training_files(output_dir, facts, [SPLIT_FOLDERS[split] for split in splits])
    names += write_tfds_metadata(
        output_dir, TFDS_DATASET_NAME, class_names, {split: shards for split, (_, shards, _) in splits.items()}, options
    )
    return (*names, COCO_FOLDER)


def merge_training_stack(
    output_dir: Path, info: dict[str, Any], parts: Sequence[Callable[[str], bytes | None]]
) -> tuple[str, ...]:
    """`finalize`'s side of `write_training_stack`: the same files for a dataset merged from parts.

    `info` is the merged dataset_info (its shards renamed, its statistics merged); `parts`
    read each part's files. The COCO ground truth is the parts' files concatenated in part
    order (the records' order), one part in memory at a time; the rest is written anew.
    Adds each split's `label_map` to `info`. Other layouts get nothing.
    """
    layout = info.get("record_layout", {})
    if layout.get("layout") != LAYOUT_NAMES[OBJECT_DETECTION_API]:
        return ()
    keys = set(layout.get("keys", ()))
    splits: dict[SplitName, tuple[SplitFacts, Sequence[ShardInfo], GroundTruthWriter]] = {}
    for split in SPLIT_NAMES:
        if split not in info:
            continue
        writer = split_paths(split)
        ground_truth = GroundTruthWriter(output_dir, writer.coco_file)
        for read in parts:
            document = read(f"{COCO_FOLDER}/{writer.coco_file}")
            if document is not None:
                ground_truth.write_document(json.loads(document))
        ground_truth.close()
        statistics = info[split].get("statistics", {})
        facts = SplitFacts(writer.shard_glob, f"{COCO_FOLDER}/{writer.coco_file}", int(info[split]["samples"]))
        for name, value in statistics.items():
            setattr(facts, name, int(value))
        shards = tuple(ShardInfo(**shard) for shard in info[split]["shards"])
        splits[split] = (facts, shards, ground_truth)
        info[split]["label_map"] = f"{SPLIT_FOLDERS[split]}/{LABEL_MAP_PBTXT}"
    options = RecordOptions(
        class_masks=SEGMENTATION_ENCODED in keys,
        instance_masks=OBJECT_MASK in keys,
        keypoints=KEYPOINT_X in keys,
        layout=OBJECT_DETECTION_API,
        objects=any(facts.max_objects for facts, _, _ in splits.values()),
        keypoints_per_object=int(layout.get("keypoints_per_object", 0)),
    )
    return write_training_stack(output_dir, info["classes"], splits, options)

"""`-f masterful`: the CSV layout Masterful's CLI trainer reads, one records file per split.

    label_map.csv             `index, label` per line, no header
    records_train.csv         one image per line, no header, fields joined by ", "
    records_val.csv, records_test.csv
    train/images/<name>       the images, copied byte for byte (never re-encoded)
    train/masks/<stem>.png    segmentation only: single-channel PNG class masks
    train/SHA256SUMS          see `converter.sinks._files`

Facts from Masterful's documentation ("Data Directory Format") and its own Scale
converter (`masterful.data.converters.scale`); where they differ the converter wins,
because it is what Masterful itself writes:

* Paths are relative to the CSV's folder (the documentation's rule), so the dataset can
  move; with `--absolute-paths` they are absolute.
* Classification: `path, class[, class...]`, class indices 0-based in the label map
  (the converter enumerates its sorted labels from 0; the documentation's flowers
  example uses 0 too).
* Detection: the path, then five integers per box, `class, ymin, xmin, ymax, xmax`, in
  pixels truncated to whole numbers: the converter writes `int(top), int(left),
  int(top) + int(height), int(left) + int(width)`. UNCONFIRMED: a Masterful notebook
  describes `xmin, ymin, xmax, ymax, class` instead; we follow the converter.
* Semantic segmentation: `image_path, mask_path`; the label map starts with
  `0, background` (the converter adds it) and mask pixels are the label map's indices,
  which are exactly the converter's class ids from 1. The converter saves masks with the
  image's own extension (JPEG too); we always write PNG, which keeps indices exact.

One task per dataset, chosen from the run's data: class masks (a mask file or a shape on
any sample) make it segmentation, else objects make it detection, else classification.
What the chosen task has no place for (boxes and image labels in a segmentation run,
image labels in a detection run, keypoints always) is not written; `-f json` keeps it all.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml

from converter.core.classes import FIRST_CLASS_ID
from converter.core.lossiness import Carried
from converter.core.materialize import EncodedSample, RecordOptions
from converter.core.protocols import RecordEncoder, SplitOutput
from converter.core.split import SplitName
from converter.core.tasks import Task
from converter.errors import UsageError
from converter.sinks._files import (
    IMAGES_FOLDER,
    MASK_SUFFIX,
    MASKS_FOLDER,
    SPLIT_FOLDERS,
    SplitFiles,
    UniqueNames,
    check_unicode_names,
    file_reference,
    pass_through,
    write_file,
)

LABEL_MAP_FILE = "label_map.csv"
CONFIG_FILE = "masterful.yaml"
RECORDS_FILES: dict[SplitName, str] = {
    "train": "records_train.csv",
    "validation": "records_val.csv",
    "test": "records_test.csv",
}
FIELD_SEPARATOR = ", "
BACKGROUND_LABEL = "background"

MasterfulTask = Literal["classification", "detection", "semantic_segmentation"]


def masterful_task(options: RecordOptions) -> MasterfulTask:
    """The one task a run's records describe (Masterful's CSV holds one task per dataset)."""
    if options.class_masks:
        return "semantic_segmentation"
    return "detection" if options.objects else "classification"


def first_class_index(task: MasterfulTask) -> int:
    """The label map index of the run's first class: 1 after segmentation's background, else 0."""
    return 1 if task == "semantic_segmentation" else 0


class _MasterfulSplitWriter:
    def __init__(self, output_dir: Path, split: SplitName, options: RecordOptions) -> None:
        self._options = options
        self._task = masterful_task(options)
        self._index_shift = first_class_index(self._task) - FIRST_CLASS_ID  # class id -> label map index
        self._files = SplitFiles(output_dir, split)
        self._names = UniqueNames()
        self._records_file = RECORDS_FILES[split]
        self._images = self._files.subfolder(IMAGES_FOLDER)
        self._masks = self._files.subfolder(MASKS_FOLDER) if self._task == "semantic_segmentation" else ""
        self._lines: list[str] = []  # a few dozen bytes per image; written once, at close

    def write(self, sample: EncodedSample) -> None:
        name = self._names.claim(sample)
        image = f"{self._images}/{name.image_file}"
        self._files.write(image, sample.image_bytes)
        fields = [file_reference(self._options, image)]
        if self._task == "semantic_segmentation":
            if sample.segmentation_png is None:
                raise ValueError("a segmentation run materializes a class mask for every sample")
            mask = f"{self._masks}/{name.stem}{MASK_SUFFIX}"
            self._files.write(mask, sample.segmentation_png)
            fields.append(file_reference(self._options, mask))
        elif self._task == "detection":
            for obj in sample.objects:
                x_min, y_min, x_max, y_max = obj.bbox_pixels
                fields += map(str, (obj.class_id + self._index_shift, int(y_min), int(x_min), int(y_max), int(x_max)))
        else:
            fields += [str(class_id + self._index_shift) for class_id in sample.image_class_ids]
        self._lines.append(FIELD_SEPARATOR.join(fields) + "\n")

    def close(self) -> SplitOutput:
        self._files.write(self._records_file, "".join(self._lines).encode())
        checksums = self._files.close()
        return SplitOutput(
            annotations=self._records_file,
            images=self._images,
            samples=len(self._lines),
            entries=(self._records_file, self._files.folder),
            checksums=checksums,
        )


class MasterfulSink:
    """`-f masterful`: Masterful CLI records and label map, images copied into split folders."""

    supported_tasks: frozenset[Task] = frozenset({"detection", "segmentation", "classification"})

    def __init__(self, max_shard_bytes: int) -> None:
        """Masterful's records are not sharded; the cap is accepted so every sink is built alike."""
        self._task: MasterfulTask | None = None
        self._splits: list[SplitName] = []
        self._absolute_root: Path | None = None

    def record_encoder(self, options: RecordOptions) -> RecordEncoder[EncodedSample]:
        return pass_through

    def carries(self, options: RecordOptions) -> Carried:
        """One task per dataset: boxes, a class mask or image labels, never keypoints (see the module)."""
        task = masterful_task(options)
        return Carried(
            boxes=task == "detection",
            class_masks=task == "semantic_segmentation",
            image_labels=task == "classification",
        )

    def open_split(self, output_dir: Path, split: SplitName, options: RecordOptions) -> _MasterfulSplitWriter:
        self._task = masterful_task(options)
        self._splits.append(split)
        self._absolute_root = options.absolute_root
        return _MasterfulSplitWriter(output_dir, split, options)

    def check_class_names(self, class_names: Sequence[str]) -> None:
        """label_map.csv has no quoting: a name holding its separator or a line break cannot be written."""
        check_unicode_names(class_names)
        unwritable = [name for name in class_names if "," in name or "\n" in name or "\r" in name]
        if unwritable:
            raise UsageError(
                f"class names {unwritable} cannot be written to Masterful's label_map.csv (no quoting for commas or "
                "line breaks); rename them with --classes or choose another --format"
            )

    def entry_names(self, splits: Sequence[SplitName], layout: str) -> tuple[str, ...]:
        records = (name for split in splits for name in (RECORDS_FILES[split], SPLIT_FOLDERS[split]))
        return (*records, LABEL_MAP_FILE, CONFIG_FILE)

    def finish(self, output_dir: Path, class_names: Sequence[str]) -> tuple[str, ...]:
        """label_map.csv: `index, label` lines; segmentation adds `0, background` first."""
        if self._task is None:
            raise RuntimeError("finish() before any open_split(): the task, and so the label map, is unknown")
        labels = [BACKGROUND_LABEL] if self._task == "semantic_segmentation" else []
        labels += class_names
        lines = [f"{index}{FIELD_SEPARATOR}{label}\n" for index, label in enumerate(labels)]
        write_file(output_dir / LABEL_MAP_FILE, "".join(lines).encode())
        write_file(output_dir / CONFIG_FILE, self._config(len(labels)).encode())
        return (LABEL_MAP_FILE, CONFIG_FILE)

    def _config(self, num_classes: int) -> str:
        """The `dataset`, `training` and `evaluation` sections of Masterful's CLI config (its YAML guide),
        pointing at this dataset's files; the `model` section is the user's choice and is left out."""
        splits = [Path(RECORDS_FILES[split]).stem for split in self._splits]
        evaluation = next(
            (Path(RECORDS_FILES[split]).stem for split in ("test", "validation") if split in self._splits), splits[0]
        )
        config = {
            "dataset": {
                "root_path": str(self._absolute_root) if self._absolute_root is not None else ".",
                "splits": splits,
                "label_map": Path(LABEL_MAP_FILE).stem,
                "optimize": True,
            },
            "training": {"task": self._task, "training_split": splits[0]},
            "evaluation": {"split": evaluation},
        }
        return (
            "# Written by dataset-converter: Masterful CLI trainer config for this dataset. Add a `model` section\n"
            f"# (architecture, num_classes: {num_classes}, input_shape) and an `output` section; root_path '.' is\n"
            "# this folder (run masterful-train from it), absolute with --absolute-paths.\n"
            + yaml.safe_dump(config, sort_keys=False, allow_unicode=True)
        )

    def describe_layout(self, options: RecordOptions) -> dict[str, Any]:
        task = masterful_task(options)
        layout: dict[str, Any] = {
            "format": "masterful",
            "task": task,
            "label_map": LABEL_MAP_FILE,
            "class_id_offset": first_class_index(task),  # label map index of `classes[0]`
            "records": "one image per line, no header, fields joined by ', '",
            "paths": "absolute" if options.absolute_root is not None else "relative to the records file's folder",
        }
        if task == "semantic_segmentation":
            layout["fields"] = "image path, mask path (single-channel PNG, 0 background, label map indices)"
        elif task == "detection":
            layout["fields"] = (
                "image path, then per box: class index, ymin, xmin, ymax, xmax (displayed pixels, truncated)"
            )
        else:
            layout["fields"] = "image path, class index [, class index...]"
        return layout

"""What the records carry: chosen by `--task`, or by default whatever the data has.

A user training a detector on a COCO export with polygons should not wait for class masks
to be rasterized and encoded (a PNG per record, about four times the conversion time),
and one training a segmenter must be told at once when the export has nothing to paint.
Datumaro and the Object Detection API's own converter make masks opt-in; here the default
stays "what the data has" (the least surprising for a first run), every run says what it
writes and how to change it, and `--task` narrows or demands it:

- detection: boxes and labels only;
- segmentation: a class mask per image (shapes, RLE, brushes or mask files needed);
- instance-segmentation: boxes and a mask per object (a plain box paints its rectangle);
- classification: image-level labels only, the classes of a sample's objects when it has
  no image-level label of its own (multi-label, like Model Garden's classification input);
- keypoints: boxes, labels and keypoints.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

from converter.core.sample import Sample
from converter.errors import UsageError

Task = Literal["detection", "segmentation", "instance-segmentation", "classification", "keypoints"]
TASKS: tuple[Task, ...] = get_args(Task)


@dataclass(frozen=True)
class RecordContents:
    """The optional parts every record of a run carries, and the words that tell the user so."""

    objects: bool
    class_masks: bool
    instance_masks: bool
    keypoints: bool  # free-standing keypoints
    object_keypoints: bool  # keypoints per object (COCO person keypoints)
    writes: tuple[str, ...]  # "boxes", "class masks", ...: the start of every run lists them
    hint: str | None  # how to change it, when the default chose something costly or optional


def _contents(
    objects: bool,
    class_masks: bool,
    instance_masks: bool,
    free_keypoints: bool,
    object_keypoints: bool,
    image_labels: bool,
    hint: str | None = None,
) -> RecordContents:
    """The contents, with the words that list them ("boxes, class masks")."""
    writes = tuple(
        name
        for name, present in (
            ("boxes", objects),
            ("class masks", class_masks),
            ("instance masks", instance_masks),
            ("keypoints", free_keypoints or object_keypoints),
            ("image labels", image_labels),
        )
        if present
    )
    return RecordContents(
        objects,
        class_masks,
        instance_masks,
        free_keypoints,
        object_keypoints,
        writes or ("images only (no annotation found)",),
        hint,
    )


def choose_contents(
    task: Task | None, samples: Sequence[Sample], instance_masks: bool, supported: frozenset[Task] = frozenset(TASKS)
) -> RecordContents:
    """The record contents for `task` (None: what the data has); raises `UsageError` when the data lacks them.

    A format that holds one task only (`-f masks`: segmentation) asks for it whatever `--task` says.
    """
    asked_by, advice = f"--task {task}", "drop --task to write what the export has"
    if task is None and len(supported) == 1:
        (task,) = supported
        asked_by, advice = f"this output format (it holds {task} only)", "use -f tfrecord or -f json"
    objects = any(sample.objects for sample in samples)
    class_masks = any(sample.has_mask for sample in samples)
    image_labels = any(sample.image_labels for sample in samples)
    free_keypoints = any(sample.keypoints for sample in samples)
    object_keypoints = any(obj.keypoints for sample in samples for obj in sample.objects)
    keypoints = free_keypoints or object_keypoints
    if task is None:
        hint = None
        if class_masks:
            hint = "shapes found: --task detection writes boxes only, without rasterizing masks"
        elif keypoints:
            hint = "keypoints found: --task detection leaves them out"
        return _contents(objects, class_masks, instance_masks, free_keypoints, object_keypoints, image_labels, hint)
    needs = {
        "detection": (objects, "objects (boxes, shapes or keypoints with a box)"),
        "segmentation": (class_masks, "polygons, RLE, brushes or mask files to paint class masks from"),
        "instance-segmentation": (objects, "objects to paint instance masks from"),
        "classification": (objects or image_labels, "image-level labels or objects to take labels from"),
        "keypoints": (keypoints, "keypoints"),
    }
    present, what = needs[task]
    if samples and not present:  # with no sample left the run fails anyway, saying why
        raise UsageError(f"{asked_by} needs {what}, and no sample of this export has any; {advice}")
    if task == "classification":
        return _contents(False, False, False, False, False, True)
    carried = {  # objects, class masks, instance masks, free keypoints, object keypoints
        "detection": (True, False, False, False, False),
        "segmentation": (objects, True, False, False, False),
        "instance-segmentation": (True, False, True, False, False),
        "keypoints": (True, False, False, free_keypoints, object_keypoints),
    }[task]
    return _contents(*carried, image_labels)


def for_classification(sample: Sample) -> Sample:
    """The sample as a classification example: its image labels, else its objects' classes, first seen first."""
    labels = sample.image_labels or tuple(dict.fromkeys(obj.class_name for obj in sample.objects))
    return dataclasses.replace(sample, objects=(), keypoints=(), segmentation=None, image_labels=labels)

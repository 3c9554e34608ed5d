"""Datumaro imports a converted dataset with its `tf_detection_api` importer; prints what it found.

Usage: datumaro_import.py PATH [PATH...]   (an output folder, or one split's shard folder)

`dm.Dataset.import_from(PATH, "tf_detection_api")` is the documented call. Datumaro finds every
`*.tfrecord` under PATH, makes one subset per shard file (named by the file's stem, e.g.
`train-00000-of-00001`), and reads the label names from the `label_map.pbtxt` beside each shard.
Prints one JSON line: a list with one entry per PATH (one process, so TensorFlow imports once),
each with the subsets, the label categories, and per item its subset, id, size and annotations:
boxes in pixels (x, y, w, h) with label names; masks (Datumaro turns an object that has
`image/object/mask` into a Mask instead of a Bbox) as uncompressed COCO RLE with label names.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import datumaro as dm
import numpy as np


def _rle(mask: np.ndarray) -> dict[str, Any]:
    """Uncompressed COCO RLE (column-major run lengths, starting with zeros): exact and compact."""
    flat = np.asarray(mask, dtype=bool).flatten(order="F")
    edges = np.concatenate([[False], flat, [not flat[-1]]]).astype(np.int8)
    changes = np.flatnonzero(np.diff(edges))  # where a run ends; the sentinel closes the last one
    counts = np.diff(np.concatenate([[0], changes])).tolist()
    return {"size": list(mask.shape), "counts": counts}


def _annotation(annotation: Any, names: list[str]) -> dict[str, Any]:
    label = None if annotation.label is None else names[annotation.label]
    if annotation.type == dm.AnnotationType.bbox:
        return {"type": "bbox", "label": label, "bbox": [float(value) for value in annotation.get_bbox()]}
    if annotation.type == dm.AnnotationType.mask:
        image = np.asarray(annotation.image)
        return {
            "type": "mask",
            "label": label,
            "values": sorted(int(value) for value in np.unique(image)),
            "area": int(np.count_nonzero(image)),
            "bbox": [float(value) for value in annotation.get_bbox()],
            "rle": _rle(image),
        }
    return {"type": annotation.type.name, "label": label}


def imported(path: str) -> dict[str, Any]:
    dataset = dm.Dataset.import_from(path, "tf_detection_api")
    names = [category.name for category in dataset.categories()[dm.AnnotationType.label]]
    items = []
    for item in dataset:
        size = item.media.size if item.media is not None else None
        items.append(
            {
                "subset": item.subset,
                "id": item.id,
                "source_id": item.attributes.get("source_id"),
                "size": list(size) if size else None,  # (height, width)
                "has_image": item.media is not None and item.media.has_data,
                "annotations": [_annotation(annotation, names) for annotation in item.annotations],
            }
        )
    return {"path": path, "subsets": sorted(dataset.subsets()), "labels": names, "items": items}


if __name__ == "__main__":
    print(json.dumps([imported(path) for path in sys.argv[1:]]))

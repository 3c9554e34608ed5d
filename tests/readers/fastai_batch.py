"""fastai reads `-f masks` splits the way its segmentation tutorial does; prints what the batches hold.

Usage: fastai_batch.py OUT BATCH_SIZE SPLIT_FOLDER [SPLIT_FOLDER...]

Per split, as fastai's docs show for CamVid: `fnames = get_image_files(path/'images')`, `codes` read from
codes.txt with `np.loadtxt(..., dtype=str)`, a `label_func` from an image to its mask (ours: images/NAME.ext
-> masks/NAME.png), then `SegmentationDataLoaders.from_label_func`. Prints one JSON line: per split the
vocabulary, the class count unet_learner would size its output by, one training batch's shapes, dtypes and
mask values, and every image's mask as fastai decodes it through the same pipeline
(`test_dl(..., with_labels=True)`, in file order) so the test can compare them with the source pixel for pixel.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fastai.vision.all import SegmentationDataLoaders, get_c, get_image_files


def label_func(image: Path) -> Path:
    """images/NAME.ext -> masks/NAME.png: the pairing that -f masks promises."""
    return image.parent.parent / "masks" / f"{image.stem}.png"


def read_split(output: Path, split: str, batch_size: int) -> dict[str, Any]:
    path = output / split
    fnames = sorted(get_image_files(path / "images"))
    codes = np.loadtxt(output / "codes.txt", dtype=str)  # as fastai's CamVid example reads it
    dls = SegmentationDataLoaders.from_label_func(
        path, fnames, label_func, codes=codes, bs=batch_size, valid_pct=0.25, seed=0, num_workers=0
    )
    images, masks = dls.one_batch()
    decoded: list[list[list[int]]] = []
    for _, batch_masks in dls.test_dl(fnames, with_labels=True, bs=batch_size):
        decoded.extend(mask.to(torch.int64).tolist() for mask in batch_masks)
    return {
        "vocab": [str(code) for code in dls.train.after_item.vocab],
        "classes_out": get_c(dls),  # what unet_learner sizes its output by
        "items": [image.name for image in fnames],
        "train_items": len(dls.train.items),
        "valid_items": len(dls.valid.items),
        "batch": {
            "image_shape": list(images.shape),
            "image_dtype": str(images.dtype),
            "image_range": [float(images.min()), float(images.max())],
            "mask_shape": list(masks.shape),
            "mask_dtype": str(masks.dtype),
            "mask_values": sorted(int(value) for value in torch.unique(masks)),
        },
        "masks": dict(zip([image.name for image in fnames], decoded, strict=True)),
    }


def main(output: Path, batch_size: int, splits: list[str]) -> None:
    print(json.dumps({split: read_split(output, split, batch_size) for split in splits}))


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:])

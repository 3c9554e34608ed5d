"""`-f masks` loads in fastai exactly as fastai's segmentation tutorial loads CamVid.

fastai runs in its own venv (tests/reader_envs.py, `.readers/fastai/`, about 6 GB: torch's
CUDA build, run on CPU here); tests/readers/fastai_batch.py builds
`SegmentationDataLoaders.from_label_func` with the documented `label_func`
(images/NAME.ext -> masks/NAME.png) and `codes` from codes.txt, takes one batch, and decodes
every mask through the same pipeline. The source includes an image file without a suffix:
`-f masks` once named it `NAME..jpg`, which the documented `label_func` maps to a mask that
does not exist.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from builders import BUCKET, load_info, segmentation_line, write_palette_mask
from reader_envs import run_reader
from sinks import HEIGHT, SEGMENTATION_COLORS, WIDTH, Expected, Input, segmentation_input

pytestmark = pytest.mark.reader("fastai")

SPLIT_FOLDERS = ("train", "val")
BATCH_SIZE = 2


def _with_suffixless_image(root: Path) -> Input:
    """The sink tests' segmentation export, plus `noext`: a JPEG whose file name has no suffix."""
    data = segmentation_input(root)
    export = data.export
    reference = export.add_image("noext")
    gt_mask = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    gt_mask[8:40, 16:48] = 2  # car
    gt_mask[:8, :] = 3  # tree
    write_palette_mask(
        export.images / "labels" / "noext.png", gt_mask, [color for _, color in SEGMENTATION_COLORS.values()]
    )
    export.add_line(segmentation_line(reference, f"{BUCKET}/labels/noext.png", SEGMENTATION_COLORS))
    export.write()
    data.expected["noext.jpg"] = Expected(export.image_bytes[reference], gt_mask=gt_mask)  # named by its format
    return data


def test_fastai_segmentation_dataloaders_read_every_mask_as_written(tmp_path: Path) -> None:
    data = _with_suffixless_image(tmp_path / "export")
    output = tmp_path / "out"
    result = data.convert(output, "-f", "masks", "-s", "0.5", "--seed", "1")
    assert result.exit_code == 0, result.stderr
    classes = load_info(output)["classes"]

    read = run_reader("fastai", "fastai_batch.py", output, str(BATCH_SIZE), *SPLIT_FOLDERS, timeout=600)

    assert sorted(name for split in SPLIT_FOLDERS for name in read[split]["items"]) == sorted(data.expected)
    for split in SPLIT_FOLDERS:
        loaded = read[split]
        assert loaded["vocab"] == ["background", *classes] == ["background", "road", "car", "tree"]
        assert loaded["classes_out"] == len(classes) + 1
        assert loaded["train_items"] + loaded["valid_items"] == len(loaded["items"])
        batch = loaded["batch"]
        assert batch["image_shape"] == [BATCH_SIZE, 3, HEIGHT, WIDTH]
        assert batch["mask_shape"] == [BATCH_SIZE, HEIGHT, WIDTH]
        assert (batch["image_dtype"], batch["mask_dtype"]) == ("torch.float32", "torch.int64")
        assert 0.0 <= batch["image_range"][0] < batch["image_range"][1] <= 1.0
        assert set(batch["mask_values"]) <= set(range(len(classes) + 1))
        for name, mask in loaded["masks"].items():
            np.testing.assert_array_equal(np.array(mask), data.expected[name].class_mask(classes), err_msg=name)

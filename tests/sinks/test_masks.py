"""`-f masks`: images and same-named PNG masks per split, read back the way segmentation loaders pair them.

The pairing is fastai's `label_func` convention: for `images/x.jpg` the mask is
`masks/x.png`, and `codes.txt` names mask value `v` on line `v + 1`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml
from builders import flat, json_events, leftovers, load_info, verify, visible_names
from PIL import Image

from . import Input, classification_input, detection_input, segmentation_input

SPLIT_FOLDERS = {"train": "train", "validation": "val", "test": "test"}


def test_every_image_has_a_same_named_png_mask_of_class_ids(tmp_path: Path) -> None:
    data = segmentation_input(tmp_path / "export")
    output = tmp_path / "out"

    result = data.convert(output, "-f", "masks", "-s", "0.6,0.2,0.2", "--seed", "3")

    assert result.exit_code == 0, result.stderr
    info = load_info(output)
    codes = (output / "codes.txt").read_text(encoding="utf-8").splitlines()
    assert codes == ["background", *info["classes"]] == ["background", "road", "car", "tree"]
    seen = []
    for split, folder in SPLIT_FOLDERS.items():
        images, masks = output / folder / "images", output / folder / "masks"
        assert (info[split]["images"], info[split]["annotations"]) == (f"{folder}/images", f"{folder}/masks")
        assert sorted(path.stem for path in images.iterdir()) == sorted(path.stem for path in masks.iterdir())
        assert len(list(images.iterdir())) == info[split]["samples"]
        for image in images.iterdir():
            expected = data.expected[image.name]
            assert image.read_bytes() == expected.image_bytes
            with Image.open(masks / f"{image.stem}.png") as mask:
                assert (mask.format, mask.mode, mask.size) == ("PNG", "L", (64, 48))
                np.testing.assert_array_equal(np.asarray(mask), expected.class_mask(codes[1:]))
            seen.append(image.name)
    assert sorted(seen) == sorted(data.expected)
    assert info["record_layout"]["format"] == "masks"
    assert "codes.txt" in info["entries"]
    checked = verify(output)
    assert checked.exit_code == 0, checked.stderr


def test_a_rerun_with_another_format_replaces_the_masks_dataset(tmp_path: Path) -> None:
    """dataset_info.yaml's entries say what a dataset owns, so switching formats leaves nothing stale behind."""
    data = segmentation_input(tmp_path / "export")
    output = tmp_path / "out"
    assert data.convert(output, "-f", "masks", "-s", "0.5").exit_code == 0

    result = data.convert(output, "-f", "tfrecord", "-s", "0.5")

    assert result.exit_code == 0, result.stderr
    entries = yaml.safe_load((output / "dataset_info.yaml").read_text(encoding="utf-8"))["entries"]
    assert visible_names(output) == sorted([*entries, "dataset_info.yaml", "report.json"])
    assert "codes.txt" not in visible_names(output) and "train" not in visible_names(output)
    assert leftovers(output) == []  # nor out of sight, in the converter's own folder


@pytest.mark.parametrize("build", [detection_input, classification_input], ids=["boxes", "image labels"])
def test_a_run_without_masks_is_a_usage_error(tmp_path: Path, build: Callable[[Path], Input]) -> None:
    data = build(tmp_path / "export")

    result = data.convert(tmp_path / "out", "-f", "masks")

    assert result.exit_code == 2
    assert flat(result.stderr).endswith(
        "ERROR: this output format (it holds segmentation only) needs polygons, RLE, brushes or mask files to paint "
        "class masks from, and no sample of this export has any; use -f tfrecord or -f json"
    )
    assert not any(event["event"] == "started" for event in json_events(result.stderr))
    assert not (tmp_path / "out").exists()  # the folder this run created goes with it: nothing was written


def test_instance_masks_are_refused(tmp_path: Path) -> None:
    data = segmentation_input(tmp_path / "export")

    result = data.convert(tmp_path / "out", "-f", "masks", "--instance-masks")

    assert result.exit_code == 2
    assert "--instance-masks: -f masks holds segmentation only; -f tfrecord and -f json hold every task" in flat(
        result.stderr
    )
    assert not (tmp_path / "out").exists()  # refused before any reading

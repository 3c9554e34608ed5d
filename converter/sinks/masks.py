"""`-f masks`: per split, an images folder and a masks folder of same-named files, and codes.txt.

    codes.txt                  class names by mask value, one per line: line 1 (value 0) is `background`
    train/images/<name>        the images, copied byte for byte
    train/masks/<stem>.png     single-channel PNG: 0 background, class ids from 1 (dataset_info.yaml's order)
    train/SHA256SUMS           see `converter.sinks._files`

The layout most segmentation code reads without a custom loader: fastai's
`SegmentationDataLoaders.from_label_func(path, fnames, label_func=lambda image:
masks / f"{image.stem}.png", codes=codes)` with `codes = Path("codes.txt").read_text().splitlines()`
(the CamVid convention: `codes[v]` names mask value `v`; CamVid's own `np.loadtxt` would split
class names that hold spaces), or any PyTorch dataset that pairs
`images/x.jpg` with `masks/x.png`. Masks are written for every image of the run, all
background where an image has nothing painted, so every image has its pair.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

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
    pass_through,
    write_file,
)

CODES_FILE = "codes.txt"
BACKGROUND_CODE = "background"


class _MaskSplitWriter:
    def __init__(self, output_dir: Path, split: SplitName) -> None:
        self._files = SplitFiles(output_dir, split)
        self._names = UniqueNames()
        self._images = self._files.subfolder(IMAGES_FOLDER)
        self._masks = self._files.subfolder(MASKS_FOLDER)
        self._samples = 0

    def write(self, sample: EncodedSample) -> None:
        if sample.segmentation_png is None:
            raise ValueError("a run with class masks materializes one for every sample")
        name = self._names.claim(sample)
        self._files.write(f"{self._images}/{name.image_file}", sample.image_bytes)
        self._files.write(f"{self._masks}/{name.stem}{MASK_SUFFIX}", sample.segmentation_png)
        self._samples += 1

    def close(self) -> SplitOutput:
        return SplitOutput(
            annotations=self._masks,
            images=self._images,
            samples=self._samples,
            entries=(self._files.folder,),
            checksums=self._files.close(),
        )


class MasksSink:
    """`-f masks`: images and same-named PNG class masks per split, with fastai's codes.txt."""

    supported_tasks: frozenset[Task] = frozenset({"segmentation"})

    def __init__(self, max_shard_bytes: int) -> None:
        """Image and mask files are not sharded; the cap is accepted so every sink is built alike."""

    def record_encoder(self, options: RecordOptions) -> RecordEncoder[EncodedSample]:
        return pass_through

    def carries(self, options: RecordOptions) -> Carried:
        """A class mask per image, nothing else."""
        return Carried(class_masks=True)

    def open_split(self, output_dir: Path, split: SplitName, options: RecordOptions) -> _MaskSplitWriter:
        return _MaskSplitWriter(output_dir, split)

    def check_class_names(self, class_names: Sequence[str]) -> None:
        """codes.txt holds one name per line: a name with a line break cannot be written."""
        check_unicode_names(class_names)
        unwritable = [name for name in class_names if "\n" in name or "\r" in name]
        if unwritable:
            raise UsageError(f"class names {unwritable} hold line breaks and cannot be written to codes.txt")

    def entry_names(self, splits: Sequence[SplitName], layout: str) -> tuple[str, ...]:
        return (*(SPLIT_FOLDERS[split] for split in splits), CODES_FILE)

    def finish(self, output_dir: Path, class_names: Sequence[str]) -> tuple[str, ...]:
        """codes.txt: `background`, then the classes, so line n + 1 names mask value n."""
        write_file(output_dir / CODES_FILE, "".join(f"{name}\n" for name in [BACKGROUND_CODE, *class_names]).encode())
        return (CODES_FILE,)

    def describe_layout(self, options: RecordOptions) -> dict[str, Any]:
        return {
            "format": "masks",
            "images": f"<split>/{IMAGES_FOLDER}/<image name>",
            "masks": f"<split>/{MASKS_FOLDER}/<image stem>{MASK_SUFFIX}",
            "codes": f"{CODES_FILE}: one class name per mask value, from 0 ({BACKGROUND_CODE})",
            "class_id_offset": 1,
        }

"""Small cases a new user met on real Ground Truth manifests from ../shared/samples.

The samples are read in place; a case that needs another layout or an extra line writes a
copy of the real manifest into tmp_path, and copies the files it lays out beside it (the
resolver refuses links that leave the images folder).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from builders import convert, load_report

from converter.core.sample import SkippedSample
from converter.sources.sagemaker_gt import SageMakerGroundTruthSource, label_attributes

pytestmark = pytest.mark.shared_samples

PCB_MASK_ATTRIBUTE = "S10-label3-ref"
PCB_BUCKET = "s3://pcbtest22/"
# A Ground Truth text-classification line: the text is inline under `source`; there is no image.
TEXT_LINE = {
    "source": "The cat sat on the mat.",
    "sentiment": 1,
    "sentiment-metadata": {
        "class-name": "positive",
        "job-name": "labeling-job/sentiment",
        "human-annotated": "yes",
        "creation-date": "2019-01-29T13:29:11.798957",
        "type": "groundtruth/text-classification",
    },
}


def _pcb_layout(shared_samples: Path, root: Path, *, with_image: bool, with_mask: bool) -> tuple[Path, str, str]:
    """The pcb export laid out like its bucket under `root`: (manifest, image key, mask key)."""
    sample = shared_samples / "sagemaker_gt" / "pcb_semseg"
    manifest_text = (sample / "output.manifest").read_text(encoding="utf-8")
    line = json.loads(manifest_text.splitlines()[0])
    image_key = line["source-ref"].removeprefix(PCB_BUCKET)
    mask_key = line[PCB_MASK_ATTRIBUTE].removeprefix(PCB_BUCKET)
    for wanted, key, original in ((with_image, image_key, "s10.png"), (with_mask, mask_key, "mask.png")):
        if wanted:
            (root / key).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(sample / original, root / key)
    manifest = root / "output.manifest"
    manifest.write_text(manifest_text, encoding="utf-8")
    return manifest, image_key, mask_key


def _only_skip(manifest: Path, images: Path) -> SkippedSample:
    contents = SageMakerGroundTruthSource(manifest, images).read()
    assert contents.samples == ()
    (skipped,) = contents.skipped
    return skipped


def test_a_missing_segmentation_mask_is_missing_mask_naming_where_it_was_looked_for(
    shared_samples: Path, tmp_path: Path
) -> None:
    manifest, _, mask_key = _pcb_layout(shared_samples, tmp_path, with_image=True, with_mask=False)

    skipped = _only_skip(manifest, tmp_path)

    assert skipped.code == "missing_mask"
    assert (skipped.location.file, skipped.location.line) == (str(manifest), 1)
    assert f"looked for {tmp_path / mask_key}" in skipped.reason
    assert "segmentation mask" in skipped.reason
    assert f"image {PCB_BUCKET}" not in skipped.reason  # the image is there: it is not blamed


def test_a_missing_image_beside_its_mask_stays_missing_image(shared_samples: Path, tmp_path: Path) -> None:
    manifest, image_key, _ = _pcb_layout(shared_samples, tmp_path, with_image=False, with_mask=True)

    skipped = _only_skip(manifest, tmp_path)

    assert skipped.code == "missing_image"
    assert f"{PCB_BUCKET}{image_key}" in skipped.reason


def test_the_present_mask_and_image_make_one_sample(shared_samples: Path, tmp_path: Path) -> None:
    manifest, image_key, mask_key = _pcb_layout(shared_samples, tmp_path, with_image=True, with_mask=True)

    contents = SageMakerGroundTruthSource(manifest, tmp_path).read()

    (sample,) = contents.samples
    assert contents.skipped == ()
    assert sample.image_path == tmp_path / image_key
    assert sample.segmentation is not None
    assert sample.segmentation.path == tmp_path / mask_key


def _cat_bbox_with_a_text_line(shared_samples: Path, root: Path) -> tuple[Path, Path, list[dict[str, Any]]]:
    """(manifest, images folder, lines): the real cat_bbox manifest with a text job's line inserted as line 2."""
    export = shared_samples / "sagemaker_gt" / "cat_bbox"
    lines = [json.loads(text) for text in (export / "output.manifest").read_text(encoding="utf-8").splitlines()]
    lines.insert(1, TEXT_LINE)
    manifest = root / "output.manifest"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return manifest, export / "input-images", lines


def test_a_text_line_is_one_skipped_sample_and_does_not_ask_for_a_label_attribute(
    shared_samples: Path, tmp_path: Path
) -> None:
    manifest, images, lines = _cat_bbox_with_a_text_line(shared_samples, tmp_path)

    contents = SageMakerGroundTruthSource(manifest, images).read()

    assert contents.description["label_attribute"] == "cat-ground-truth"
    assert [sample.key for sample in contents.samples] == [line["source-ref"] for line in lines if "source-ref" in line]
    (skipped,) = contents.skipped
    assert (skipped.location.line, skipped.code) == (2, "not_an_image")
    assert "text jobs are not images" in skipped.reason


def test_a_text_line_through_the_cli_converts_the_rest_and_reports_the_line(
    shared_samples: Path, tmp_path: Path
) -> None:
    manifest, images, _ = _cat_bbox_with_a_text_line(shared_samples, tmp_path)
    output = tmp_path / "out"

    result = convert("-a", manifest, "-i", images, "-o", output)

    assert result.exit_code == 0, result.stderr
    report = load_report(output)
    assert report["summary"]["converted"] == 4
    assert [(entry["line"], entry["code"]) for entry in report["skipped"]] == [(2, "not_an_image")]


@pytest.mark.parametrize("own_key", ["source", "source-ref"])
def test_a_lines_own_keys_are_never_label_attributes(own_key: str) -> None:
    line = {
        "source-ref": "s3://bucket/a.jpg",
        "source": "text",
        f"{own_key}-metadata": {"type": "groundtruth/text-classification"},
        "bbox": {"annotations": []},
        "bbox-metadata": {"type": "groundtruth/object-detection"},
        "bbox-metadata-metadata": {"type": "groundtruth/object-detection"},
    }
    assert label_attributes(line) == {"bbox": "groundtruth/object-detection"}

"""Label Studio brush masks: the decoder against upstream's vector, our test encoder, and a real mask image.

The encoder (tests/labelstudio_tasks.py) is written from the format description, not
from the decoder, so a round trip checks both against the description.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from builders import convert, load_info, load_report
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from labelstudio_tasks import (
    annotation,
    brush,
    encode_brush_rle,
    mask_to_brush,
    task,
    write_export,
    write_stand_in,
)
from PIL import Image
from pycocotools import mask as coco_mask
from readback import decode_png, records_by_source_id

from converter.errors import SampleError
from converter.sources.labelstudio_brush import brush_to_rle_mask, decode_brush_rle

UPSTREAM_VECTOR = [0, 0, 0, 18, 57, 27, 252, 96, 32, 1, 0, 6, 0, 40, 0, 192, 3, 128, 17, 56, 32]
UPSTREAM_WORDS = [1, 1, 1, 1, 2, 3, 5, 6, 7, 8, 4, 4, 4, 4, 4, 4, 4, 4]


def _decoded(mask_counts: str, height: int, width: int) -> npt.NDArray[np.bool_]:
    decoded = coco_mask.decode({"size": [height, width], "counts": mask_counts.encode()})
    return np.asarray(decoded, dtype=bool)


def test_upstream_test_vector_decodes_to_its_words() -> None:
    assert decode_brush_rle(UPSTREAM_VECTOR).tolist() == UPSTREAM_WORDS


def test_test_encoder_output_decodes_to_the_upstream_words() -> None:
    assert decode_brush_rle(encode_brush_rle(UPSTREAM_WORDS)).tolist() == UPSTREAM_WORDS


@settings(max_examples=150, deadline=None)
@given(
    words=st.lists(st.sampled_from([0, 1, 7, 128, 255]), min_size=1, max_size=300),
    run_bits=st.lists(st.integers(min_value=1, max_value=16), min_size=4, max_size=4),
)
def test_any_words_round_trip_through_encoder_and_decoder(words: list[int], run_bits: list[int]) -> None:
    assert decode_brush_rle(encode_brush_rle(words, run_bits)).tolist() == words


@settings(max_examples=100, deadline=None)
@given(bitmap=hnp.arrays(np.bool_, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=24)))
def test_random_bitmaps_round_trip_into_coco_rle(bitmap: npt.NDArray[np.bool_]) -> None:
    height, width = bitmap.shape

    mask = brush_to_rle_mask(mask_to_brush(bitmap), width, height)

    assert (mask.height, mask.width) == (height, width)
    assert isinstance(mask.counts, str)
    np.testing.assert_array_equal(_decoded(mask.counts, height, width), bitmap)


def test_alpha_alone_decides_and_half_opaque_is_foreground() -> None:
    rgba = np.array([[[255, 255, 255, 0], [0, 0, 0, 128], [9, 9, 9, 127], [0, 0, 0, 255]]], dtype=np.uint8)

    mask = brush_to_rle_mask(encode_brush_rle(rgba.ravel().tolist()), 4, 1)

    assert isinstance(mask.counts, str)
    np.testing.assert_array_equal(_decoded(mask.counts, 1, 4), [[False, True, False, True]])


def test_truncated_stream_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="truncated"):
        decode_brush_rle(UPSTREAM_VECTOR[:-3])


def test_wrong_canvas_size_is_a_sample_error() -> None:
    rle = mask_to_brush(np.ones((3, 5), dtype=bool))

    with pytest.raises(SampleError, match=r"holds 60 values, but a 4x4 RGBA canvas has 64") as caught:
        brush_to_rle_mask(rle, 4, 4)
    assert caught.value.code == "malformed_annotation"


def test_words_wider_than_a_byte_are_refused() -> None:
    with pytest.raises(ValueError, match="16-bit words"):
        decode_brush_rle(encode_brush_rle([300, 300], word_bits=16))


def test_values_that_are_not_bytes_are_refused() -> None:
    with pytest.raises(ValueError, match="byte values"):
        decode_brush_rle([0, 0, 0, 1, 256])


@pytest.mark.shared_samples
def test_brush_from_upstream_mask_image_converts_pixel_for_pixel(shared_samples: Path, tmp_path: Path) -> None:
    """Upstream's brush test image is a photo (RGB); upstream reads it as grayscale > 128, so do we."""
    with Image.open(shared_samples / "label_studio" / "brush_source_mask.png") as source:
        expected = np.asarray(source.convert("L")) > 128
    height, width = expected.shape
    assert (width, height) == (640, 427)
    assert 0 < expected.sum() < expected.size
    write_stand_in(tmp_path / "images" / "bus.png", (width, height))
    export = write_export(
        tmp_path / "export.json",
        [task("/data/upload/1/bus.png", annotation([brush(mask_to_brush(expected), ["Bus"], (width, height))]))],
    )
    output = tmp_path / "out"

    result = convert("-a", export, "-i", tmp_path / "images", "-o", output, "-s", "0")

    assert result.exit_code == 0, result.stderr
    assert load_report(output)["skipped"] == []
    record = records_by_source_id(output)["/data/upload/1/bus.png"]
    class_id = load_info(output)["classes"].index("Bus") + 1
    np.testing.assert_array_equal(
        decode_png(record["image/segmentation/class/encoded"][0]), np.where(expected, class_id, 0)
    )
    rows, columns = np.flatnonzero(expected.any(axis=1)), np.flatnonzero(expected.any(axis=0))
    assert record["image/object/bbox/xmin"] == pytest.approx([columns[0] / width], abs=1e-6)
    assert record["image/object/bbox/xmax"] == pytest.approx([(columns[-1] + 1) / width], abs=1e-6)
    assert record["image/object/bbox/ymin"] == pytest.approx([rows[0] / height], abs=1e-6)
    assert record["image/object/bbox/ymax"] == pytest.approx([(rows[-1] + 1) / height], abs=1e-6)
    assert record["image/object/class/text"] == [b"Bus"]

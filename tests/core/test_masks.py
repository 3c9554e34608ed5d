"""Class masks: PNG encoding read back by OpenCV and TensorFlow, and source masks mapped to class ids."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from converter.core.masks import encode_png, read_class_mask
from converter.core.sample import SegmentationMask
from converter.errors import SampleError

CLASS_IDS = {"cat": 1, "dog": 2, "bird": 3}


@pytest.fixture(scope="module")
def tf() -> Any:
    """TensorFlow, imported once for the module (it takes seconds)."""
    return pytest.importorskip("tensorflow")


# --- encode_png ------------------------------------------------------------------------------

masks = hnp.arrays(
    dtype=np.uint8,
    shape=hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=24),
    elements=st.integers(min_value=0, max_value=255),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mask=masks)
def test_encode_png_round_trip(tf: Any, mask: npt.NDArray[np.uint8]) -> None:
    encoded = encode_png(mask)
    assert encoded.startswith(b"\x89PNG\r\n\x1a\n")

    by_opencv = cv2.imdecode(np.frombuffer(encoded, np.uint8), cv2.IMREAD_UNCHANGED)
    assert by_opencv is not None
    assert by_opencv.dtype == np.uint8
    assert by_opencv.shape == mask.shape  # one channel
    np.testing.assert_array_equal(by_opencv, mask)

    by_tensorflow = tf.io.decode_png(encoded, channels=0).numpy()
    assert by_tensorflow.shape == (*mask.shape, 1)  # channels=0 keeps the stored channel count
    np.testing.assert_array_equal(by_tensorflow[..., 0], mask)


def test_encode_png_is_a_grey_8_bit_png() -> None:
    with Image.open(io.BytesIO(encode_png(np.zeros((3, 5), np.uint8)))) as image:
        assert (image.format, image.mode, image.size) == ("PNG", "L", (5, 3))


@pytest.mark.parametrize(
    "mask",
    [np.zeros((4, 4, 3), np.uint8), np.zeros((4,), np.uint8), np.zeros((4, 4), np.uint16), np.zeros((4, 4), np.int64)],
    ids=["3-d", "1-d", "uint16", "int64"],
)
def test_encode_png_refuses_other_arrays(mask: npt.NDArray[Any]) -> None:
    with pytest.raises(ValueError) as raised:
        encode_png(mask)
    assert "expected a 2-D uint8 mask" in str(raised.value)


# --- read_class_mask -------------------------------------------------------------------------

INDICES = np.array([[0, 1, 1, 2], [0, 0, 2, 2], [1, 1, 0, 0]], dtype=np.uint8)
# Index 1 is a dog, index 2 a cat: the output ids (dog 2, cat 1) differ from the stored indices.
INDEX_TO_CLASS: tuple[tuple[int, str | None], ...] = ((0, None), (1, "dog"), (2, "cat"))
EXPECTED_IDS = np.array([[0, 2, 2, 1], [0, 0, 1, 1], [2, 2, 0, 0]], dtype=np.uint8)

BLACK, RED, GREEN = (0, 0, 0), (255, 0, 0), (0, 255, 0)
COLOR_TO_CLASS: tuple[tuple[tuple[int, int, int], str | None], ...] = ((BLACK, None), (RED, "dog"), (GREEN, "cat"))


def _rgb(indices: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    colours = np.array([BLACK, RED, GREEN], dtype=np.uint8)
    return colours[indices]


def _mask(path: Path, colors: bool = False) -> SegmentationMask:
    return SegmentationMask(path, INDEX_TO_CLASS, COLOR_TO_CLASS if colors else ())


def test_palette_png_is_read_by_index_not_colour(tmp_path: Path) -> None:
    path = tmp_path / "mask.png"
    image = Image.fromarray(INDICES, "P")
    # Colours that would mean other classes if the mask were read by colour.
    image.putpalette([*GREEN, *BLACK, *RED] + [0] * (253 * 3))
    image.save(path)
    with Image.open(path) as reopened:
        assert reopened.mode == "P"
    np.testing.assert_array_equal(read_class_mask(_mask(path, colors=True), CLASS_IDS), EXPECTED_IDS)


def test_grey_png_is_read_by_value(tmp_path: Path) -> None:
    path = tmp_path / "mask.png"
    Image.fromarray(INDICES, "L").save(path)
    result = read_class_mask(_mask(path), CLASS_IDS)
    assert result.dtype == np.uint8
    np.testing.assert_array_equal(result, EXPECTED_IDS)


def test_16_bit_grey_png(tmp_path: Path) -> None:
    path = tmp_path / "mask.png"
    values = np.array([[0, 300], [1000, 300]], dtype=np.uint16)
    Image.fromarray(values).save(path)
    mask = SegmentationMask(path, ((0, None), (300, "bird"), (1000, "cat")))
    np.testing.assert_array_equal(read_class_mask(mask, CLASS_IDS), [[0, 3], [1, 3]])


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_colour_png_is_read_by_exact_colour(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "mask.png"
    Image.fromarray(_rgb(INDICES), "RGB").convert(mode).save(path)
    np.testing.assert_array_equal(read_class_mask(_mask(path, colors=True), CLASS_IDS), EXPECTED_IDS)


def test_background_maps_to_zero(tmp_path: Path) -> None:
    path = tmp_path / "mask.png"
    Image.fromarray(np.zeros((5, 7), np.uint8), "L").save(path)
    result = read_class_mask(_mask(path), CLASS_IDS)
    assert result.shape == (5, 7)
    assert not result.any()


def test_unknown_index_is_listed(tmp_path: Path) -> None:
    path = tmp_path / "mask.png"
    values = INDICES.copy()
    values[0, 0], values[1, 1], values[2, 3] = 9, 7, 9
    Image.fromarray(values, "L").save(path)
    with pytest.raises(SampleError) as raised:
        read_class_mask(_mask(path), CLASS_IDS)
    assert raised.value.code == "unknown_mask_value"
    assert "pixel values [7, 9]" in raised.value.message
    assert "(known: [0, 1, 2])" in raised.value.message
    assert str(path) in raised.value.message


def test_unknown_index_below_the_largest_known_one(tmp_path: Path) -> None:
    path = tmp_path / "mask.png"
    Image.fromarray(np.array([[0, 1, 5]], np.uint8), "L").save(path)
    mask = SegmentationMask(path, ((0, None), (5, "cat")))
    with pytest.raises(SampleError) as raised:
        read_class_mask(mask, CLASS_IDS)
    assert "pixel values [1]" in raised.value.message


def test_unknown_colour_is_listed_in_hex(tmp_path: Path) -> None:
    path = tmp_path / "mask.png"
    rgb = _rgb(INDICES)
    rgb[0, 0] = (0x12, 0x34, 0x56)
    rgb[2, 3] = (0xFF, 0xFF, 0xFF)
    Image.fromarray(rgb, "RGB").save(path)
    with pytest.raises(SampleError) as raised:
        read_class_mask(_mask(path, colors=True), CLASS_IDS)
    assert raised.value.code == "unknown_mask_color"
    assert "#123456, #ffffff" in raised.value.message


def test_colour_mask_without_a_colour_map_fails(tmp_path: Path) -> None:
    path = tmp_path / "mask.png"
    Image.fromarray(_rgb(INDICES), "RGB").save(path)
    with pytest.raises(SampleError) as raised:
        read_class_mask(_mask(path, colors=False), CLASS_IDS)
    assert raised.value.code == "unknown_mask_color"


@pytest.mark.parametrize("content", [b"", b"not a png", b"\x89PNG\r\n\x1a\n\x00\x00"])
def test_unreadable_mask(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "mask.png"
    path.write_bytes(content)
    with pytest.raises(SampleError) as raised:
        read_class_mask(_mask(path), CLASS_IDS)
    assert raised.value.code == "corrupt_mask"
    assert "cannot be read" in raised.value.message


def test_truncated_mask(tmp_path: Path) -> None:
    path = tmp_path / "mask.png"
    pixels = np.random.default_rng(0).integers(0, 3, size=(64, 64), dtype=np.uint8)
    Image.fromarray(pixels, "L").save(path)
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(SampleError) as raised:
        read_class_mask(_mask(path), CLASS_IDS)
    assert raised.value.code == "corrupt_mask"


def test_missing_mask_file(tmp_path: Path) -> None:
    with pytest.raises(SampleError) as raised:
        read_class_mask(_mask(tmp_path / "absent.png"), CLASS_IDS)
    assert raised.value.code == "corrupt_mask"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    indices=hnp.arrays(
        np.uint8, hnp.array_shapes(min_dims=2, max_dims=2, max_side=16), elements=st.sampled_from([0, 1, 2])
    )
)
def test_mapped_mask_round_trips_through_png(tmp_path: Path, indices: npt.NDArray[np.uint8]) -> None:
    path = tmp_path / "mask.png"
    Image.fromarray(indices, "L").save(path)
    ids = read_class_mask(_mask(path), CLASS_IDS)
    decoded = cv2.imdecode(np.frombuffer(encode_png(ids), np.uint8), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(decoded, np.array([0, 2, 1], np.uint8)[indices])

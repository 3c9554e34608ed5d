"""Label Studio brush masks: its run-length format decoded, and the mask re-encoded as COCO RLE.

Label Studio stores a brush region as `value.rle`, a list of byte values holding the
region's RGBA canvas (rows top to bottom, pixels left to right, 4 channels each) packed
by a port of thi-ng's rle-pack. The bytes are one bit stream, most significant bit
first:

- header: a 32-bit count of words, a 5-bit word size (stored minus 1), and four 4-bit
  run-length field sizes (each stored minus 1);
- then chunks until that many words are out: 1 flag bit, a 2-bit index choosing one of
  the four field sizes, the chunk length in that many bits (stored minus 1); flag 1 is
  one word repeated that many times, flag 0 is that many literal words.

The decoder is our own, written from that description and checked against upstream's
test vector (tests/sources/test_labelstudio_brush.py). A region's pixels are those of
its alpha channel: Label Studio writes alpha 0 or 255; like a mask folder's alpha
channel, alpha is opacity and a pixel at least half opaque (alpha >= 128) belongs to
the region.

The stream is untrusted: its header may announce four billion words from a few bytes of
repeated runs. The decoder is told how many words the canvas has and refuses a header
that announces more before allocating anything, so a brush costs at most the memory of
its canvas (itself bounded by the image size limit of `converter.core.images`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from pycocotools import mask as coco_mask

from converter.core.sample import RleMask
from converter.errors import SampleError

CHANNELS = 4  # RGBA
ALPHA_CHANNEL = 3
OPAQUE_FROM = 128  # alpha at least half opaque is foreground
_HEADER_COUNT_BITS = 32
_HEADER_WORD_SIZE_BITS = 5
_HEADER_RUN_SIZE_BITS = 4
_RUN_SIZE_FIELDS = 4
_MAX_WORD_BITS = 8  # words are RGBA channel bytes; wider words cannot be a brush canvas


class _BitReader:
    """Reads unsigned big-endian fields of up to 32 bits from a byte string, MSB first.

    A field is sliced out of the few bytes it spans rather than shifted out of one big
    integer of the whole stream: shifting a megabyte-long integer costs a megabyte per read.
    """

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._total_bits = len(data) * 8
        self.position = 0  # in bits

    def read(self, bits: int) -> int:
        end = self.position + bits
        if end > self._total_bits:
            raise ValueError(f"brush RLE is truncated: it ends after {self._total_bits} bits, a field needs {end}")
        first_byte, last_byte = self.position // 8, (end + 7) // 8
        chunk = int.from_bytes(self._data[first_byte:last_byte], "big")
        value = (chunk >> (last_byte * 8 - end)) & ((1 << bits) - 1)
        self.position = end
        return value


def decode_brush_rle(rle: Sequence[int], max_words: int | None = None) -> npt.NDArray[np.uint8]:
    """The words a Label Studio brush RLE holds, in order.

    Example: upstream's test vector `[0, 0, 0, 18, 57, 27, 252, 96, 32, 1, 0, 6, 0, 40,
    0, 192, 3, 128, 17, 56, 32]` decodes to `[1, 1, 1, 1, 2, 3, 5, 6, 7, 8, 4, 4, 4, 4,
    4, 4, 4, 4]`. Raises ValueError when the stream is not a valid encoding, or when its
    header announces more than `max_words` words (checked before the words are allocated).
    """
    if any(isinstance(byte, bool) or not isinstance(byte, int) or not 0 <= byte <= 255 for byte in rle):
        raise ValueError("brush RLE must be a list of byte values 0-255")
    reader = _BitReader(bytes(rle))
    word_count = reader.read(_HEADER_COUNT_BITS)
    if max_words is not None and word_count > max_words:
        raise ValueError(f"brush RLE announces {word_count} values, more than the {max_words} expected")
    word_bits = reader.read(_HEADER_WORD_SIZE_BITS) + 1
    if word_bits > _MAX_WORD_BITS:
        raise ValueError(f"brush RLE has {word_bits}-bit words; an RGBA canvas has 8-bit words")
    run_bits = [reader.read(_HEADER_RUN_SIZE_BITS) + 1 for _ in range(_RUN_SIZE_FIELDS)]
    words = np.empty(word_count, dtype=np.uint8)
    written = 0
    while written < word_count:
        repeated = reader.read(1) == 1
        length = reader.read(run_bits[reader.read(2)]) + 1
        if written + length > word_count:
            raise ValueError(f"brush RLE holds more words than its header's {word_count}")
        if repeated:
            words[written : written + length] = reader.read(word_bits)
        else:
            for offset in range(length):
                words[written + offset] = reader.read(word_bits)
        written += length
    return words


def brush_to_rle_mask(rle: Sequence[int], width: int, height: int) -> RleMask:
    """A brush region at `width` x `height` as a COCO compressed RLE (`SampleError` if malformed)."""
    expected = width * height * CHANNELS
    try:
        words = decode_brush_rle(rle, max_words=expected)
    except ValueError as error:
        raise SampleError("malformed_annotation", f"brush mask cannot be decoded: {error}") from None
    if words.size != expected:
        raise SampleError(
            "malformed_annotation",
            f"brush mask holds {words.size} values, but a {width}x{height} RGBA canvas has {expected}",
        )
    alpha = words.reshape(height, width, CHANNELS)[:, :, ALPHA_CHANNEL]
    covered = np.asfortranarray(alpha >= OPAQUE_FROM, dtype=np.uint8)  # pycocotools encodes column-major
    encoded = coco_mask.encode(covered)
    return RleMask(height, width, encoded["counts"].decode("ascii"))

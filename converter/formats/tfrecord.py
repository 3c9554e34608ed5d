"""The TFRecord container and the `tf.train.Example` protobuf, written without TensorFlow.

Why not `tf.io.TFRecordWriter`: importing TensorFlow costs about 4 s and 500 MB per
process, and the writer needs none of it. Both formats are small and frozen:

* TFRecord framing, per record: `uint64 length`, `uint32 masked_crc32c(length)`,
  `data`, `uint32 masked_crc32c(data)`, all little-endian. The mask is
  `((crc >> 15) | (crc << 17)) + 0xa282ead8` modulo 2**32.
* `Example { Features features = 1 }`, `Features { map<string, Feature> feature = 1 }`,
  `Feature { oneof { BytesList bytes_list = 1; FloatList float_list = 2; Int64List int64_list = 3 } }`,
  float and int64 values packed. Float values are stored as float32.

Features are written in sorted key order, so equal inputs give byte-identical records.
TensorFlow remains the reference reader: the tests parse every record with it.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping, Sequence
from typing import BinaryIO

import google_crc32c

FeatureValue = Sequence[bytes] | Sequence[float] | Sequence[int]

_WIRE_LENGTH_DELIMITED = 2
_MASK_DELTA = 0xA282EAD8
_UINT32 = 0xFFFFFFFF
_UINT64 = 0xFFFFFFFFFFFFFFFF
RECORD_OVERHEAD_BYTES = 16  # 8 length + 4 length CRC + 4 data CRC


class BytesFeature(tuple[bytes, ...]):
    """A BytesList value."""


class FloatFeature(tuple[float, ...]):
    """A FloatList value (stored as float32)."""


class Int64Feature(tuple[int, ...]):
    """An Int64List value."""


Feature = BytesFeature | FloatFeature | Int64Feature


_ONE_BYTE_VARINTS = tuple(bytes([value]) for value in range(0x80))  # tags, short lengths, small class ids


def _varint(value: int) -> bytes:
    if 0 <= value < 0x80:
        return _ONE_BYTE_VARINTS[value]
    value &= _UINT64  # negative int64 values are encoded as their 64-bit two's complement
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_FEATURE_KINDS = {BytesFeature: 1, FloatFeature: 2, Int64Feature: 3}  # Feature's oneof field numbers
_LIST_VALUES = 1  # field number of the values in BytesList, FloatList and Int64List
_FEATURES_ENTRY = 1  # Features.feature (a map entry) and Example.features are both field 1
_ENTRY_KEY, _ENTRY_VALUE = 1, 2


def _length_delimited_header(field_number: int, size: int) -> bytes:
    return _varint((field_number << 3) | _WIRE_LENGTH_DELIMITED) + _varint(size)


def _feature_pieces(feature: Feature) -> list[bytes]:
    """A `Feature` message as pieces whose concatenation is its bytes.

    Values stay separate pieces instead of being concatenated at every nesting level, so
    an image's bytes are copied once, into the finished record, not once per level.
    """
    kind = _FEATURE_KINDS.get(type(feature))
    if kind is None:
        raise TypeError(f"expected BytesFeature, FloatFeature or Int64Feature, got {type(feature).__name__}")
    values: list[bytes] = []
    if isinstance(feature, BytesFeature):
        for value in feature:
            values += [_length_delimited_header(_LIST_VALUES, len(value)), value]
    elif feature:
        packed = (
            struct.pack(f"<{len(feature)}f", *feature)
            if isinstance(feature, FloatFeature)
            else b"".join(_varint(value) for value in feature)
        )
        values += [_length_delimited_header(_LIST_VALUES, len(packed)), packed]
    return [_length_delimited_header(kind, sum(map(len, values))), *values]


def _example_pieces(features: Mapping[str, Feature]) -> list[bytes]:
    entries: list[bytes] = []
    for key in sorted(features):
        name = key.encode()
        value = _feature_pieces(features[key])
        body = [_length_delimited_header(_ENTRY_KEY, len(name)), name]
        body += [_length_delimited_header(_ENTRY_VALUE, sum(map(len, value))), *value]
        entries += [_length_delimited_header(_FEATURES_ENTRY, sum(map(len, body))), *body]
    return [_length_delimited_header(_FEATURES_ENTRY, sum(map(len, entries))), *entries]


def encode_example(features: Mapping[str, Feature]) -> bytes:
    """Serialize a `tf.train.Example` with the given features, keys in sorted order."""
    return b"".join(_example_pieces(features))


def _mask(crc: int) -> int:
    return ((((crc >> 15) | (crc << 17)) & _UINT32) + _MASK_DELTA) & _UINT32


def masked_crc32c(data: bytes) -> int:
    return _mask(int(google_crc32c.value(data)))


def frame_record(data: bytes) -> bytes:
    """One record in TFRecord framing."""
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc32c(length)) + data + struct.pack("<I", masked_crc32c(data))


def encode_record(features: Mapping[str, Feature]) -> bytes:
    """`frame_record(encode_example(features))`, copying the feature values only once."""
    pieces = _example_pieces(features)
    crc = 0
    for piece in pieces:
        crc = google_crc32c.extend(crc, piece)
    length = struct.pack("<Q", sum(map(len, pieces)))
    return b"".join([length, struct.pack("<I", masked_crc32c(length)), *pieces, struct.pack("<I", _mask(int(crc)))])


class CorruptRecordError(ValueError):
    """A TFRecord file's framing or checksums are wrong."""


def read_records(stream: BinaryIO) -> Iterator[bytes]:
    """Yield the payload of each record, checking both checksums."""
    index = 0
    while header := stream.read(12):
        if len(header) < 12:
            raise CorruptRecordError(f"record {index}: truncated header ({len(header)} of 12 bytes)")
        (length,) = struct.unpack("<Q", header[:8])
        (length_crc,) = struct.unpack("<I", header[8:])
        if masked_crc32c(header[:8]) != length_crc:
            raise CorruptRecordError(f"record {index}: length checksum mismatch")
        data = stream.read(length)
        footer = stream.read(4)
        if len(data) < length or len(footer) < 4:
            raise CorruptRecordError(f"record {index}: truncated data ({len(data)} of {length} bytes)")
        if masked_crc32c(data) != struct.unpack("<I", footer)[0]:
            raise CorruptRecordError(f"record {index}: data checksum mismatch")
        yield data
        index += 1

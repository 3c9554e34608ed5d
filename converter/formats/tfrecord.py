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


# Tags of length-delimited fields 1, 2 and 3: `(field_number << 3) | 2`.
_FIELD_1, _FIELD_2, _FIELD_3 = b"\x0a", b"\x12", b"\x1a"
_KIND_TAGS = {BytesFeature: _FIELD_1, FloatFeature: _FIELD_2, Int64Feature: _FIELD_3}  # Feature's oneof
_SEPARATE_VALUE_BYTES = 4096  # values at least this long stay separate pieces, copied once into the record
_key_fields: dict[str, bytes] = {}  # a map entry's key field, per feature name: the same few names every record


def _values(feature: Feature) -> list[bytes]:
    """The BytesList, FloatList or Int64List body of a feature, as pieces."""
    if isinstance(feature, BytesFeature):
        pieces: list[bytes] = []
        small = b""
        for value in feature:
            header = _FIELD_1 + _varint(len(value))
            if len(value) < _SEPARATE_VALUE_BYTES:
                small += header + value
            else:
                pieces += [small + header, value]
                small = b""
        return [*pieces, small] if small or not pieces else pieces
    if not feature:
        return [b""]
    packed = (
        struct.pack(f"<{len(feature)}f", *feature)
        if isinstance(feature, FloatFeature)
        else b"".join(map(_varint, feature))
    )
    return [_FIELD_1 + _varint(len(packed)) + packed]


def _entry_pieces(key: str, feature: Feature) -> list[bytes]:
    """One `Features.feature` map entry (key, Feature) with its own tag and length, as pieces.

    Small parts are concatenated (cheap); a large value (an image) stays a separate piece,
    so an image's bytes are copied once, into the finished record, not once per nesting level.
    """
    kind_tag = _KIND_TAGS.get(type(feature))
    if kind_tag is None:
        raise TypeError(f"expected BytesFeature, FloatFeature or Int64Feature, got {type(feature).__name__}")
    key_field = _key_fields.get(key)
    if key_field is None:
        name = key.encode()
        key_field = _key_fields.setdefault(key, _FIELD_1 + _varint(len(name)) + name)
    values = _values(feature)
    values_size = sum(map(len, values))
    feature_header = kind_tag + _varint(values_size)
    value_field = _FIELD_2 + _varint(len(feature_header) + values_size)
    entry_size = len(key_field) + len(value_field) + len(feature_header) + values_size
    head = _FIELD_1 + _varint(entry_size) + key_field + value_field + feature_header + values[0]
    return [head, *values[1:]]


def _example_pieces(features: Mapping[str, Feature]) -> list[bytes]:
    entries: list[bytes] = []
    for key in sorted(features):
        entries += _entry_pieces(key, features[key])
    return [_FIELD_1 + _varint(sum(map(len, entries))), *entries]


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

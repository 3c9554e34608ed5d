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

_WIRE_VARINT = 0
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


def _varint(value: int) -> bytes:
    value &= _UINT64  # negative int64 values are encoded as their 64-bit two's complement
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _tag(field_number: int, wire_type: int) -> bytes:
    return _varint((field_number << 3) | wire_type)


def _length_delimited(field_number: int, payload: bytes) -> bytes:
    return _tag(field_number, _WIRE_LENGTH_DELIMITED) + _varint(len(payload)) + payload


def _encode_feature(feature: Feature) -> bytes:
    if isinstance(feature, BytesFeature):
        payload = b"".join(_length_delimited(1, value) for value in feature)
        return _length_delimited(1, payload)
    if isinstance(feature, FloatFeature):
        packed = struct.pack(f"<{len(feature)}f", *feature)
        return _length_delimited(2, _length_delimited(1, packed) if feature else b"")
    if isinstance(feature, Int64Feature):
        packed = b"".join(_varint(value) for value in feature)
        return _length_delimited(3, _length_delimited(1, packed) if feature else b"")
    raise TypeError(f"expected BytesFeature, FloatFeature or Int64Feature, got {type(feature).__name__}")


def encode_example(features: Mapping[str, Feature]) -> bytes:
    """Serialize a `tf.train.Example` with the given features, keys in sorted order."""
    entries = []
    for key in sorted(features):
        entry = _length_delimited(1, key.encode()) + _length_delimited(2, _encode_feature(features[key]))
        entries.append(_length_delimited(1, entry))
    return _length_delimited(1, b"".join(entries))


def masked_crc32c(data: bytes) -> int:
    crc = int(google_crc32c.value(data))
    return ((((crc >> 15) | (crc << 17)) & _UINT32) + _MASK_DELTA) & _UINT32


def frame_record(data: bytes) -> bytes:
    """One record in TFRecord framing."""
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc32c(length)) + data + struct.pack("<I", masked_crc32c(data))


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

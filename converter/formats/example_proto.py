"""Decoding `tf.train.Example` without TensorFlow, strictly: the reader of `converter.formats.tfrecord`'s writer.

Why: `verify` must check every record where TensorFlow is not installed (the small
container image has none), and TensorFlow's parser is 1.3 GB for a dozen lines of schema:

    Example   { Features features = 1; }
    Features  { map<string, Feature> feature = 1; }   (each entry: string key = 1; Feature value = 2)
    Feature   { oneof kind { BytesList bytes_list = 1; FloatList float_list = 2; Int64List int64_list = 3; } }
    BytesList { repeated bytes value = 1; }
    FloatList { repeated float value = 1 [packed = true]; }
    Int64List { repeated int64 value = 1 [packed = true]; }

Everything protobuf accepts for repeated values is accepted: float and int64 values packed
(one length-delimited field, as the writer and TensorFlow write them) or unpacked (one
fixed32 or varint field per value), several chunks concatenated, missing map keys and
values read as their defaults (`""` and a Feature of no kind).

Stricter than protobuf, on purpose, because verify checks records that other readers
(TensorFlow's C++ fast parser, tf.data, other languages' protobuf) must all read alike:
a field number the schema does not define, a known field with the wrong wire type, a
field the schema makes singular given twice (a Feature with two kinds, a map entry with
two keys, an Example with two `features`), a feature key given twice, and a key that
is not UTF-8 are problems, where protobuf would keep unknown fields, merge, or let the
last one win. Truncated varints, varints over 10 bytes, lengths past the end of their
message and packed floats that are not a whole number of float32 values are problems
too. Every problem is an `ExampleDecodeError` that says where in the Example it is.

Decoding works on `memoryview`s, so an image's bytes are copied once (into the value
returned) rather than once per nesting level.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator

from converter.errors import quoted
from converter.formats.tfrecord import BytesFeature, Feature, FloatFeature, Int64Feature

_WIRE_VARINT, _WIRE_FIXED64, _WIRE_LENGTH_DELIMITED, _WIRE_FIXED32 = 0, 1, 2, 5
_WIRE_NAMES = {0: "varint", 1: "fixed64", 2: "length-delimited", 3: "start-group", 4: "end-group", 5: "fixed32"}
_MAX_VARINT_BYTES = 10  # 64 bits, 7 per byte
_UINT64 = 0xFFFFFFFFFFFFFFFF
_INT64_SIGN = 1 << 63
_FLOAT32_BYTES = 4
_KIND_NAMES = {1: "bytes_list", 2: "float_list", 3: "int64_list"}  # Feature's oneof, by field number


class ExampleDecodeError(ValueError):
    """Bytes that are not a well-formed `tf.train.Example` under the strict reading above."""


DecodedFeatures = dict[str, Feature | None]
"""Feature key -> values; None for a Feature of no kind (protobuf reads it as an empty list of any kind)."""


def _varint(data: memoryview, position: int, where: str) -> tuple[int, int]:
    """(value, position after it) of the varint at `position`; negative int64 values come back as uint64."""
    value = 0
    for index in range(_MAX_VARINT_BYTES):
        if position + index >= len(data):
            raise ExampleDecodeError(f"{where}: truncated varint")
        byte = data[position + index]
        value |= (byte & 0x7F) << (7 * index)
        if byte < 0x80:
            return value & _UINT64, position + index + 1
    raise ExampleDecodeError(f"{where}: varint longer than {_MAX_VARINT_BYTES} bytes")


def _fields(data: memoryview, where: str) -> Iterator[tuple[int, int, int | memoryview]]:
    """(field number, wire type, value) of each field of a message, in order.

    The value is an int for a varint, the field's bytes for the other wire types. Groups
    (wire types 3 and 4, deprecated and absent from this schema) and wire types 6 and 7
    (undefined) are problems here rather than skipped, since no field of the schema has them.
    """
    position = 0
    while position < len(data):
        tag, position = _varint(data, position, where)
        field, wire_type = tag >> 3, tag & 7
        if field == 0:
            raise ExampleDecodeError(f"{where}: field number 0 (tag {tag})")
        if wire_type == _WIRE_VARINT:
            value, position = _varint(data, position, where)
            yield field, wire_type, value
            continue
        if wire_type == _WIRE_LENGTH_DELIMITED:
            size, position = _varint(data, position, where)
        elif wire_type in (_WIRE_FIXED64, _WIRE_FIXED32):
            size = 8 if wire_type == _WIRE_FIXED64 else 4
        else:
            name = _WIRE_NAMES.get(wire_type, "undefined")
            raise ExampleDecodeError(f"{where}: field {field} has wire type {wire_type} ({name}), which it cannot have")
        if position + size > len(data):
            raise ExampleDecodeError(f"{where}: field {field} needs {size} bytes, only {len(data) - position} are left")
        yield field, wire_type, data[position : position + size]
        position += size


def _unexpected(where: str, field: int, wire_type: int, allowed: str) -> ExampleDecodeError:
    wire_name = _WIRE_NAMES.get(wire_type, "undefined")
    return ExampleDecodeError(f"{where}: field {field} with wire type {wire_name} is not in its schema ({allowed})")


def _bytes_list(data: memoryview, where: str) -> BytesFeature:
    values = []
    for field, wire_type, value in _fields(data, where):
        if field != 1 or not isinstance(value, memoryview) or wire_type != _WIRE_LENGTH_DELIMITED:
            raise _unexpected(where, field, wire_type, "1: bytes, length-delimited")
        values.append(value.tobytes())
    return BytesFeature(values)


def _float_list(data: memoryview, where: str) -> FloatFeature:
    values: list[float] = []
    for field, wire_type, value in _fields(data, where):
        if field != 1 or not isinstance(value, memoryview) or wire_type not in (_WIRE_FIXED32, _WIRE_LENGTH_DELIMITED):
            raise _unexpected(where, field, wire_type, "1: floats, packed or fixed32")
        if len(value) % _FLOAT32_BYTES:
            raise ExampleDecodeError(f"{where}: {len(value)} bytes of packed floats, not a multiple of 4")
        values += struct.unpack(f"<{len(value) // _FLOAT32_BYTES}f", value)
    return FloatFeature(values)


def _int64_list(data: memoryview, where: str) -> Int64Feature:
    unsigned: list[int] = []
    for field, wire_type, value in _fields(data, where):
        if field != 1 or wire_type not in (_WIRE_VARINT, _WIRE_LENGTH_DELIMITED):
            raise _unexpected(where, field, wire_type, "1: int64s, packed or varint")
        if isinstance(value, int):
            unsigned.append(value)
            continue
        position = 0
        while position < len(value):
            number, position = _varint(value, position, f"{where} (packed)")
            unsigned.append(number)
    return Int64Feature([number - (number & _INT64_SIGN) * 2 for number in unsigned])


_KIND_DECODERS: dict[int, Callable[[memoryview, str], Feature]] = {1: _bytes_list, 2: _float_list, 3: _int64_list}


def _feature(data: memoryview, where: str) -> Feature | None:
    feature: Feature | None = None
    kind_seen = 0
    for field, wire_type, value in _fields(data, where):
        decode = _KIND_DECODERS.get(field)
        if decode is None or not isinstance(value, memoryview) or wire_type != _WIRE_LENGTH_DELIMITED:
            raise _unexpected(
                where, field, wire_type, "1: bytes_list, 2: float_list, 3: int64_list, all length-delimited"
            )
        if kind_seen:
            raise ExampleDecodeError(
                f"{where}: more than one value list ({_KIND_NAMES[kind_seen]}, then {_KIND_NAMES[field]})"
            )
        kind_seen = field
        feature = decode(value, f"{where}.{_KIND_NAMES[field]}")
    return feature


def _map_entry(data: memoryview, where: str) -> tuple[str, Feature | None]:
    """A `Features.feature` entry: (key, Feature), defaults for what it lacks, as protobuf reads them."""
    parts: dict[int, memoryview] = {}
    for field, wire_type, content in _fields(data, where):
        if field not in (1, 2) or not isinstance(content, memoryview) or wire_type != _WIRE_LENGTH_DELIMITED:
            raise _unexpected(where, field, wire_type, "1: key, 2: value, both length-delimited")
        if field in parts:
            raise ExampleDecodeError(f"{where}: {'key' if field == 1 else 'value'} given twice")
        parts[field] = content
    key = parts[1].tobytes() if 1 in parts else b""
    try:
        name = key.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ExampleDecodeError(
            f"{where}: key {quoted(key.decode('utf-8', errors='replace'))} is not UTF-8 ({error.reason})"
        ) from None
    return name, _feature(parts[2], f"feature {quoted(name)}") if 2 in parts else None


def _features(data: memoryview) -> DecodedFeatures:
    features: DecodedFeatures = {}
    for index, (field, wire_type, entry) in enumerate(_fields(data, "Features")):
        where = f"Features entry {index}"
        if field != 1 or not isinstance(entry, memoryview) or wire_type != _WIRE_LENGTH_DELIMITED:
            raise _unexpected("Features", field, wire_type, "1: map entries, length-delimited")
        key, feature = _map_entry(entry, where)
        if key in features:
            raise ExampleDecodeError(f"{where}: feature {quoted(key)} given twice")
        features[key] = feature
    return features


def decode_example(data: bytes) -> DecodedFeatures:
    """The features of a serialized `tf.train.Example`; raises `ExampleDecodeError` saying where it is malformed.

    `encode_example` then `decode_example` gives the features back, floats rounded to float32
    as they are stored; a Feature of no kind (which `encode_example` never writes) decodes to None.
    """
    features: DecodedFeatures | None = None
    for field, wire_type, value in _fields(memoryview(data), "Example"):
        if field != 1 or not isinstance(value, memoryview) or wire_type != _WIRE_LENGTH_DELIMITED:
            raise _unexpected("Example", field, wire_type, "1: features, length-delimited")
        if features is not None:
            raise ExampleDecodeError("Example: features given twice")
        features = _features(value)
    return features if features is not None else {}

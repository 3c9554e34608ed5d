"""The TensorFlow-free TFRecord writer, checked against TensorFlow itself (the reference reader and writer)."""

from __future__ import annotations

import io
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from converter.formats.tfrecord import (
    RECORD_OVERHEAD_BYTES,
    BytesFeature,
    CorruptRecordError,
    Feature,
    FloatFeature,
    Int64Feature,
    encode_example,
    encode_record,
    frame_record,
    masked_crc32c,
    read_records,
)

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def with_tensorflow(max_examples: int) -> settings:
    """Settings for properties that use the module-scoped `tf` fixture (it is never reset between examples)."""
    return settings(
        max_examples=max_examples, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )


@pytest.fixture(scope="module")
def tf() -> Any:
    """TensorFlow, imported once for the module (it takes seconds)."""
    return pytest.importorskip("tensorflow")


# --- strategies ------------------------------------------------------------------------------

feature_keys = st.text(st.characters(exclude_categories=["Cs"]), max_size=20)
bytes_features = st.lists(st.binary(max_size=20), max_size=5).map(BytesFeature)
# Every float32 value TensorFlow keeps as it is: negatives, zero of both signs, subnormals, infinities.
float_features = st.lists(st.floats(width=32, allow_nan=False), max_size=8).map(FloatFeature)
int64_features = st.lists(
    st.one_of(st.integers(INT64_MIN, INT64_MAX), st.sampled_from([INT64_MIN, INT64_MAX, -1, 0, 127, 128])),
    max_size=8,
).map(Int64Feature)
feature_values = st.one_of(bytes_features, float_features, int64_features)
feature_maps = st.dictionaries(feature_keys, feature_values, max_size=8)
payloads = st.lists(st.binary(max_size=300), max_size=6)


def tf_example(tf: Any, features: dict[str, Feature]) -> Any:
    """The same features as a `tf.train.Example`, built by TensorFlow's own classes."""
    converted = {}
    for key, value in features.items():
        if isinstance(value, BytesFeature):
            converted[key] = tf.train.Feature(bytes_list=tf.train.BytesList(value=list(value)))
        elif isinstance(value, FloatFeature):
            converted[key] = tf.train.Feature(float_list=tf.train.FloatList(value=list(value)))
        else:
            converted[key] = tf.train.Feature(int64_list=tf.train.Int64List(value=list(value)))
    return tf.train.Example(features=tf.train.Features(feature=converted))


def parsed(tf: Any, serialized: bytes) -> dict[str, tuple[str, list[Any]]]:
    """A serialized Example parsed by TensorFlow into {key: (kind, values)}."""
    example = tf.train.Example.FromString(serialized)
    result = {}
    for key, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        result[key] = (kind, list(getattr(feature, kind).value))
    return result


def expected(features: dict[str, Feature]) -> dict[str, tuple[str, list[Any]]]:
    kinds = {BytesFeature: "bytes_list", FloatFeature: "float_list", Int64Feature: "int64_list"}
    return {key: (kinds[type(value)], list(value)) for key, value in features.items()}


def tf_write(tf: Any, path: Path, records: list[bytes]) -> bytes:
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record)
    return path.read_bytes()


def tf_read(tf: Any, path: Path) -> list[bytes]:
    """Records as `tf.data.TFRecordDataset` reads them: it checks both CRCs of every record."""
    return [raw.numpy() for raw in tf.data.TFRecordDataset([str(path)])]


# --- encode_example --------------------------------------------------------------------------


@with_tensorflow(100)
@given(features=feature_maps)
def test_example_is_read_back_by_tensorflow(tf: Any, features: dict[str, Feature]) -> None:
    assert parsed(tf, encode_example(features)) == expected(features)


def prefix_free(features: dict[str, Feature]) -> dict[str, Feature]:
    """Drop keys that are a proper prefix of another key (see the test below)."""
    return {key: value for key, value in features.items() if not any(o != key and o.startswith(key) for o in features)}


@with_tensorflow(100)
@given(features=feature_maps.map(prefix_free))
def test_example_is_byte_identical_to_tensorflow_deterministic_serialization(
    tf: Any, features: dict[str, Feature]
) -> None:
    # TensorFlow's deterministic serialization sorts map keys; encode_example sorts them by code point.
    # The two orders agree whenever no key is a prefix of another, as with the Object Detection API keys.
    assert encode_example(features) == tf_example(tf, features).SerializeToString(deterministic=True)


def test_object_detection_keys_are_byte_identical(tf: Any) -> None:
    keys = [
        "image/encoded", "image/format", "image/height", "image/width", "image/filename", "image/source_id",
        "image/source_key", "image/key/sha256", "image/object/bbox/xmin", "image/object/bbox/xmax",
        "image/object/bbox/ymin", "image/object/bbox/ymax", "image/object/class/label", "image/object/class/text",
        "image/object/area", "image/object/is_crowd", "image/class/label", "image/class/text",
        "image/segmentation/class/encoded", "image/segmentation/class/format",
    ]  # fmt: skip
    features: dict[str, Feature] = {key: Int64Feature([index]) for index, key in enumerate(keys)}
    assert encode_example(features) == tf_example(tf, features).SerializeToString(deterministic=True)


def test_prefix_keys_differ_in_order_only(tf: Any) -> None:
    # protobuf's upb backend (TensorFlow's Python protobuf) puts "image/encoded" before its prefix "image";
    # encode_example puts "image" first. The orders differ, the Examples are equal.
    features: dict[str, Feature] = {"image": BytesFeature([b"a"]), "image/encoded": BytesFeature([b"b"])}
    ours = encode_example(features)
    theirs = tf_example(tf, features).SerializeToString(deterministic=True)
    assert tf.train.Example.FromString(ours) == tf.train.Example.FromString(theirs)
    assert parsed(tf, ours) == expected(features)


@given(features=feature_maps)
@settings(max_examples=100)
def test_encode_record_frames_the_same_bytes_as_encode_then_frame(features: dict[str, Feature]) -> None:
    """The one-copy record builder the sink uses equals the two plain steps, CRCs included."""
    assert encode_record(features) == frame_record(encode_example(features))


def test_encode_record_with_large_values_is_read_back_by_tensorflow(tf: Any, tmp_path: Path) -> None:
    image = bytes(range(256)) * 4000  # 1 MB: multi-byte lengths at every nesting level
    features: dict[str, Feature] = {
        "image/encoded": BytesFeature([image]),
        "masks": BytesFeature([b"small", image[:5000], b"", image[:4096], b"tail"]),  # small and large mixed
        "x": FloatFeature([0.5] * 300),
    }
    assert encode_record(features) == frame_record(encode_example(features))
    assert encode_example(features) == tf_example(tf, features).SerializeToString(deterministic=True)
    shard = tmp_path / "large.tfrecord"
    shard.write_bytes(encode_record(features) * 2)
    assert [parsed(tf, raw) for raw in tf_read(tf, shard)] == [expected(features)] * 2


@given(features=feature_maps)
@settings(max_examples=50)
def test_example_ignores_the_order_features_are_given_in(features: dict[str, Feature]) -> None:
    assert encode_example(dict(reversed(list(features.items())))) == encode_example(features)


def test_int64_extremes_and_negative_floats(tf: Any) -> None:
    features: dict[str, Feature] = {
        "ints": Int64Feature([INT64_MIN, -1, 0, 1, INT64_MAX]),
        "floats": FloatFeature([-1.5, -0.0, float("-inf"), float("inf"), 3.4028234663852886e38]),
        "empty/bytes": BytesFeature([b""]),
        "empty/list": BytesFeature([]),
        "empty/floats": FloatFeature([]),
        "empty/ints": Int64Feature([]),
    }
    assert parsed(tf, encode_example(features)) == expected(features)


def test_floats_are_stored_as_float32(tf: Any) -> None:
    value = parsed(tf, encode_example({"x": FloatFeature([0.1])}))["x"][1][0]
    assert value == struct.unpack("<f", struct.pack("<f", 0.1))[0]
    assert value != 0.1


def test_parse_single_example_with_a_feature_spec(tf: Any) -> None:
    features: dict[str, Feature] = {
        "image/encoded": BytesFeature([b"\xff\xd8jpeg\xff\xd9"]),
        "image/height": Int64Feature([480]),
        "image/object/bbox/xmin": FloatFeature([0.25, 0.5]),
        "image/object/class/label": Int64Feature([]),
    }
    spec = {
        "image/encoded": tf.io.FixedLenFeature([], tf.string),
        "image/height": tf.io.FixedLenFeature([], tf.int64),
        "image/object/bbox/xmin": tf.io.VarLenFeature(tf.float32),
        "image/object/class/label": tf.io.VarLenFeature(tf.int64),
    }
    result = tf.io.parse_single_example(encode_example(features), spec)
    assert result["image/encoded"].numpy() == b"\xff\xd8jpeg\xff\xd9"
    assert result["image/height"].numpy() == 480
    assert result["image/object/bbox/xmin"].values.numpy().tolist() == [0.25, 0.5]
    assert result["image/object/class/label"].values.numpy().tolist() == []


def test_unknown_feature_type_is_refused() -> None:
    with pytest.raises(TypeError) as raised:
        encode_example({"x": (1, 2)})  # type: ignore[dict-item]
    assert "expected BytesFeature, FloatFeature or Int64Feature, got tuple" in str(raised.value)


# --- framing -----------------------------------------------------------------------------------


@with_tensorflow(40)
@given(records=payloads)
def test_framing_is_identical_to_tensorflow_writer(
    tf: Any, tmp_path_factory: pytest.TempPathFactory, records: list[bytes]
) -> None:
    folder = tmp_path_factory.mktemp("framing")
    ours = b"".join(frame_record(record) for record in records)
    assert ours == tf_write(tf, folder / "tf.tfrecord", records)
    (folder / "ours.tfrecord").write_bytes(ours)
    assert tf_read(tf, folder / "ours.tfrecord") == records
    assert list(read_records(io.BytesIO(ours))) == records


def test_framed_size() -> None:
    assert RECORD_OVERHEAD_BYTES == 16
    assert len(frame_record(b"x" * 100)) == 116
    assert len(frame_record(b"")) == 16


def test_masked_crc32c_known_values(tf: Any, tmp_path: Path) -> None:
    # CRC-32C of "123456789" is 0xe3069283 (the catalogued check value), masked as TFRecord masks it.
    crc = 0xE3069283
    assert masked_crc32c(b"123456789") == ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF
    assert masked_crc32c(b"123456789") == 0xC78AB0E5
    # And against the checksums TensorFlow wrote.
    data = tf_write(tf, tmp_path / "tf.tfrecord", [b"123456789"])
    (length_crc,) = struct.unpack("<I", data[8:12])
    (data_crc,) = struct.unpack("<I", data[-4:])
    assert length_crc == masked_crc32c(struct.pack("<Q", 9))
    assert data_crc == masked_crc32c(b"123456789")


# --- read_records on damaged files -----------------------------------------------------------

RECORDS = [b"first record", b"", b"third" * 20]
FRAMED = b"".join(frame_record(record) for record in RECORDS)
BOUNDARIES = {sum(len(frame_record(record)) for record in RECORDS[:count]) for count in range(len(RECORDS) + 1)}


def _read(data: bytes) -> list[bytes]:
    return list(read_records(io.BytesIO(data)))


def _flip(data: bytes, position: int, mask: int = 0x01) -> bytes:
    damaged = bytearray(data)
    damaged[position] ^= mask
    return bytes(damaged)


def test_intact_file_reads_back() -> None:
    assert _read(FRAMED) == RECORDS
    assert _read(b"") == []


def test_flipped_byte_in_data() -> None:
    first = len(frame_record(RECORDS[0]))
    with pytest.raises(CorruptRecordError) as raised:
        _read(_flip(FRAMED, first + 16 + 12 + 5))  # inside the third record's data
    assert "record 2: data checksum mismatch" in str(raised.value)


def test_flipped_byte_in_length() -> None:
    with pytest.raises(CorruptRecordError) as raised:
        _read(_flip(FRAMED, 0))
    assert "record 0: length checksum mismatch" in str(raised.value)


def test_flipped_byte_in_length_checksum() -> None:
    with pytest.raises(CorruptRecordError) as raised:
        _read(_flip(FRAMED, 9))
    assert "record 0: length checksum mismatch" in str(raised.value)


def test_flipped_byte_in_data_checksum() -> None:
    with pytest.raises(CorruptRecordError) as raised:
        _read(_flip(FRAMED, len(frame_record(RECORDS[0])) - 1))
    assert "record 0: data checksum mismatch" in str(raised.value)


def test_truncated_in_header() -> None:
    with pytest.raises(CorruptRecordError) as raised:
        _read(FRAMED[:5])
    assert "record 0: truncated header (5 of 12 bytes)" in str(raised.value)


def test_truncated_in_data() -> None:
    with pytest.raises(CorruptRecordError) as raised:
        _read(FRAMED[:-10])
    assert "record 2: truncated data" in str(raised.value)


def test_truncated_in_data_checksum() -> None:
    with pytest.raises(CorruptRecordError) as raised:
        _read(FRAMED[:-2])
    assert "record 2: truncated" in str(raised.value)


@settings(max_examples=100)
@given(position=st.integers(0, len(FRAMED) - 1), mask=st.integers(1, 255))
def test_any_flipped_byte_is_detected(position: int, mask: int) -> None:
    with pytest.raises(CorruptRecordError):
        _read(_flip(FRAMED, position, mask))


@settings(max_examples=100)
@given(length=st.integers(0, len(FRAMED)))
def test_truncation_is_detected_unless_at_a_record_boundary(length: int) -> None:
    if length in BOUNDARIES:
        count = sorted(BOUNDARIES).index(length)
        assert _read(FRAMED[:length]) == RECORDS[:count]
    else:
        with pytest.raises(CorruptRecordError):
            _read(FRAMED[:length])


def test_tensorflow_agrees_that_a_flipped_byte_is_corrupt(tf: Any, tmp_path: Path) -> None:
    path = tmp_path / "damaged.tfrecord"
    path.write_bytes(_flip(FRAMED, 20))
    with pytest.raises(tf.errors.DataLossError):
        tf_read(tf, path)

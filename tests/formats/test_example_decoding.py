"""The TensorFlow-free `tf.train.Example` decoder, and `check_record_contents` with either parser.

TensorFlow's protobuf is the reference: whatever the built-in decoder accepts, TensorFlow
must read the same way, on converted datasets and on random and damaged bytes alike. The
built-in decoder is stricter on purpose (see `converter.formats.example_proto`); the
corruption cases below pin each of its refusals to a message.
"""

from __future__ import annotations

import contextlib
import struct
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from builders import convert, detection_export, load_info, person_keypoints_export
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from converter.errors import UsageError
from converter.formats.example_proto import DecodedFeatures, ExampleDecodeError, decode_example
from converter.formats.tfrecord import (
    BytesFeature,
    Feature,
    FloatFeature,
    Int64Feature,
    encode_example,
    frame_record,
    read_records,
)
from converter.sinks.tfrecord import RECORD_PARSER_VARIABLE, RecordCheck, check_record_contents
from converter.sinks.tfrecord_keys import OD_API_KEYS

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
CLASSES = ["cat", "dog"]


@pytest.fixture(scope="module")
def tf() -> Any:
    """TensorFlow, imported once for the module (it takes seconds)."""
    return pytest.importorskip("tensorflow")


def with_tensorflow(max_examples: int) -> settings:
    """Settings for properties that use the module-scoped `tf` fixture (it is never reset between examples)."""
    return settings(
        max_examples=max_examples, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )


def comparable(features: DecodedFeatures) -> dict[str, tuple[str, tuple[Any, ...]] | None]:
    """Features with their kind spelled out and floats as their float32 bytes, so NaN equals NaN
    and a bytes list is never equal to an empty float list."""
    result: dict[str, tuple[str, tuple[Any, ...]] | None] = {}
    for key, feature in features.items():
        if feature is None:
            result[key] = None
        elif isinstance(feature, FloatFeature):
            result[key] = ("float_list", tuple(struct.pack("<f", value) for value in feature))
        else:
            result[key] = (type(feature).__name__, tuple(feature))
    return result


def tf_decoded(tf: Any, payload: bytes) -> DecodedFeatures:
    """A serialized Example parsed by TensorFlow, in the decoder's shape."""
    kinds: dict[str, type[Feature]] = {
        "bytes_list": BytesFeature,
        "float_list": FloatFeature,
        "int64_list": Int64Feature,
    }
    decoded: DecodedFeatures = {}
    for key, feature in tf.train.Example.FromString(payload).features.feature.items():
        kind = feature.WhichOneof("kind")
        decoded[key] = kinds[kind](getattr(feature, kind).value) if kind is not None else None
    return decoded


def tf_accepts(tf: Any, payload: bytes) -> bool:
    try:
        tf.train.Example.FromString(payload)
    except Exception:  # protobuf's DecodeError has no import path every protobuf build shares
        return False
    return True


# --- protobuf wire format, by hand ------------------------------------------------------------


def varint(value: int) -> bytes:
    value &= 2**64 - 1
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    return bytes([*out, value])


def field(number: int, wire_type: int, body: bytes) -> bytes:
    """One field: its tag, then a length for wire type 2, then `body` (a varint's or fixed value's bytes)."""
    tag = varint(number << 3 | wire_type)
    return tag + (varint(len(body)) if wire_type == 2 else b"") + body


def example(*entries: bytes) -> bytes:
    return field(1, 2, b"".join(entries))


def entry(key: bytes, feature: bytes) -> bytes:
    """A `Features.feature` map entry; `feature` is a Feature message's bytes."""
    return field(1, 2, field(1, 2, key) + field(2, 2, feature))


# --- strategies ------------------------------------------------------------------------------

feature_keys = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
bytes_features = st.lists(st.binary(max_size=20), max_size=4).map(BytesFeature)
float_features = st.lists(st.floats(width=32), max_size=6).map(FloatFeature)
int64_features = st.lists(st.integers(INT64_MIN, INT64_MAX), max_size=6).map(Int64Feature)
feature_values = st.one_of(bytes_features, float_features, int64_features)
feature_maps = st.dictionaries(feature_keys, feature_values, max_size=6)


# --- decoding well-formed Examples -----------------------------------------------------------


@given(feature_maps)
def test_decoding_gives_back_what_was_encoded(features: dict[str, Feature]) -> None:
    assert comparable(decode_example(encode_example(features))) == comparable(dict(features))


@with_tensorflow(200)
@given(features=feature_maps)
def test_decoding_what_tensorflow_serialized_agrees_with_tensorflow(tf: Any, features: dict[str, Feature]) -> None:
    """TensorFlow's own serializer may order and size fields unlike our encoder; the decoder must not care."""
    serialized = tf.train.Example(
        features=tf.train.Features(
            feature={
                key: tf.train.Feature(**{_kind_name(value): _proto_list(tf, value)}) for key, value in features.items()
            }
        )
    ).SerializeToString()

    assert comparable(decode_example(serialized)) == comparable(tf_decoded(tf, serialized))


def _kind_name(feature: Feature) -> str:
    return {BytesFeature: "bytes_list", FloatFeature: "float_list", Int64Feature: "int64_list"}[type(feature)]


def _proto_list(tf: Any, feature: Feature) -> Any:
    classes = {BytesFeature: tf.train.BytesList, FloatFeature: tf.train.FloatList, Int64Feature: tf.train.Int64List}
    return classes[type(feature)](value=list(feature))


def floats(*values: float) -> bytes:
    return struct.pack(f"<{len(values)}f", *values)


@pytest.mark.parametrize(
    ("feature", "expected"),
    [
        # Unpacked repeated values, one fixed32 or varint field each, as proto2 writers send them.
        (field(2, 2, field(1, 5, floats(0.5)) + field(1, 5, floats(-2))), FloatFeature([0.5, -2.0])),
        (field(3, 2, field(1, 0, varint(7)) + field(1, 0, varint(-1))), Int64Feature([7, -1])),
        # Packed and unpacked chunks mixed, or several packed ones: protobuf concatenates them in order.
        (field(3, 2, field(1, 2, varint(1) + varint(2)) + field(1, 0, varint(3))), Int64Feature([1, 2, 3])),
        (field(2, 2, field(1, 2, floats(1)) + field(1, 2, floats(2, 3))), FloatFeature([1.0, 2.0, 3.0])),
        (field(3, 2, field(1, 2, varint(INT64_MAX) + varint(INT64_MIN))), Int64Feature([INT64_MAX, INT64_MIN])),
        (field(1, 2, b""), BytesFeature([])),
        (b"", None),  # a Feature of no kind
    ],
)
def test_valid_encodings_our_writer_never_uses_decode_as_tensorflow_reads_them(
    tf: Any, feature: bytes, expected: Feature | None
) -> None:
    payload = example(entry(b"key", feature))

    assert comparable(decode_example(payload)) == comparable({"key": expected})
    assert comparable(tf_decoded(tf, payload)) == comparable({"key": expected})


def test_map_entries_without_key_or_value_read_as_protobuf_defaults(tf: Any) -> None:
    payload = example(field(1, 2, field(2, 2, field(3, 2, b""))), field(1, 2, field(1, 2, b"k")))

    assert comparable(decode_example(payload)) == comparable({"": Int64Feature([]), "k": None})
    assert comparable(tf_decoded(tf, payload)) == comparable(decode_example(payload))


def test_an_empty_example_has_no_features(tf: Any) -> None:
    assert decode_example(b"") == {} == tf_decoded(tf, b"")
    assert decode_example(example()) == {}


# --- malformed Examples: each refusal, with its message --------------------------------------

ONE_INT64 = field(3, 2, field(1, 2, varint(1)))


def feature_of(*fields: bytes) -> bytes:
    """An Example with one feature, `k`, whose Feature message is `fields`."""
    return example(entry(b"k", b"".join(fields)))


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"\x0a", "Example: truncated varint"),
        (b"\x0a\x80", "Example: truncated varint"),
        (b"\x0a" + b"\xff" * 10 + b"\x01", "Example: varint longer than 10 bytes"),
        (b"\x0a\x05abc", "Example: field 1 needs 5 bytes, only 3 are left"),
        (b"\x02\x00", "Example: field number 0"),
        (field(1, 0, varint(1)), "Example: field 1 with wire type varint is not in its schema"),
        (example() + field(2, 0, varint(1)), "Example: field 2 with wire type varint is not in its schema"),
        (field(1, 3, b""), "Example: field 1 has wire type 3 (start-group)"),
        (field(1, 7, b""), "Example: field 1 has wire type 7 (undefined)"),
        (example() + example(), "Example: features given twice"),
        (example(field(2, 2, b"")), "Features: field 2 with wire type length-delimited is not in its schema"),
        (example(field(1, 2, field(3, 2, b""))), "Features entry 0: field 3 with wire type length-delimited"),
        (example(field(1, 2, field(1, 2, b"a") + field(1, 2, b"b"))), "Features entry 0: key given twice"),
        (example(field(1, 2, field(2, 2, b"") + field(2, 2, b""))), "Features entry 0: value given twice"),
        (example(entry(b"\xff", b"")), "Features entry 0: key '\ufffd' is not UTF-8"),
        (example(entry(b"k", ONE_INT64), entry(b"k", ONE_INT64)), "Features entry 1: feature 'k' given twice"),
        (feature_of(field(4, 2, b"")), "feature 'k': field 4 with wire type length-delimited"),
        (feature_of(field(1, 2, b""), field(2, 2, b"")), "feature 'k': more than one value list (bytes_list, then"),
        (feature_of(field(3, 2, b""), field(3, 2, b"")), "feature 'k': more than one value list (int64_list, then"),
        (feature_of(field(1, 0, varint(1))), "feature 'k': field 1 with wire type varint"),
        (feature_of(field(1, 2, field(1, 0, varint(1)))), "feature 'k'.bytes_list: field 1 with wire type varint"),
        (feature_of(field(1, 2, field(2, 2, b"x"))), "feature 'k'.bytes_list: field 2 with wire type length-delim"),
        (feature_of(field(2, 2, field(1, 2, b"\x00" * 7))), "feature 'k'.float_list: 7 bytes of packed floats"),
        (feature_of(field(2, 2, field(1, 1, b"\x00" * 8))), "feature 'k'.float_list: field 1 with wire type fixed64"),
        (feature_of(field(2, 2, field(1, 0, varint(1)))), "feature 'k'.float_list: field 1 with wire type varint"),
        (feature_of(field(3, 2, field(1, 5, b"\x00" * 4))), "feature 'k'.int64_list: field 1 with wire type fixed32"),
        (feature_of(field(3, 2, field(1, 2, b"\x01\x80"))), "feature 'k'.int64_list (packed): truncated varint"),
    ],
)
def test_malformed_examples_are_refused_saying_where(payload: bytes, message: str) -> None:
    with pytest.raises(ExampleDecodeError) as raised:
        decode_example(payload)

    assert message in str(raised.value)


# --- fuzzing ---------------------------------------------------------------------------------


@settings(max_examples=2000)
@given(st.binary(max_size=200))
def test_random_bytes_decode_or_raise_a_decode_error(payload: bytes) -> None:
    with contextlib.suppress(ExampleDecodeError):
        decode_example(payload)


@st.composite
def damaged_examples(draw: st.DrawFn) -> bytes:
    """A well-formed Example with bytes overwritten, inserted or cut, so damage lands on the structure."""
    payload = bytearray(encode_example(draw(feature_maps)))
    for _ in range(draw(st.integers(1, 3))):
        position = draw(st.integers(0, len(payload)))
        action = draw(st.sampled_from(["overwrite", "insert", "cut"]))
        if action == "overwrite" and position < len(payload):
            payload[position] = draw(st.integers(0, 255))
        elif action == "insert":
            payload[position:position] = draw(st.binary(min_size=1, max_size=3))
        else:
            del payload[position : position + draw(st.integers(1, 3))]
    return bytes(payload)


@with_tensorflow(1000)
@given(payload=st.one_of(damaged_examples(), st.binary(max_size=60)))
def test_whatever_the_decoder_accepts_tensorflow_reads_the_same_way(tf: Any, payload: bytes) -> None:
    """Stricter, never different: an accepted Example means the same to TensorFlow, and what
    TensorFlow refuses the decoder refuses too."""
    try:
        decoded = decode_example(payload)
    except ExampleDecodeError:
        return
    assert tf_accepts(tf, payload)
    assert comparable(decoded) == comparable(tf_decoded(tf, payload))


# --- check_record_contents with either parser ------------------------------------------------


def shards_of(output: Path) -> list[Path]:
    info = load_info(output)
    splits = [info[split] for split in ("train", "validation", "test") if split in info]
    return [output / shard["file"] for split in splits for shard in split["shards"]]


def converted(kind: str, root: Path) -> Path:
    """A dataset written by the converter: boxes in either layout, or COCO keypoints."""
    output = root / "out"
    if kind == "keypoints":
        coco, _ = person_keypoints_export(root / "coco")
        result = convert("-a", coco.path, "-i", coco.image_folder, "-o", output, "-s", "0.5")
    else:
        export = detection_export(root / "export", 12)
        export.write()
        layout = ("--layout", "modelpack") if kind == "modelpack" else ()
        result = convert("-a", export.manifest, "-i", export.images, "-o", output, "-s", "0.5", "-p", "0.01", *layout)
    assert result.exit_code == 0, result.stderr
    return output


@pytest.mark.parametrize("kind", ["object-detection-api", "modelpack", "keypoints"])
def test_both_parsers_read_converted_datasets_alike(tf: Any, kind: str, tmp_path: Path) -> None:
    output = converted(kind, tmp_path)
    info = load_info(output)
    shards = shards_of(output)
    layout = info["record_layout"]["layout"]

    builtin = check_record_contents(shards, info["classes"], layout, parser="builtin")
    tensorflow = check_record_contents(shards, info["classes"], layout, parser="tensorflow")

    records = sum(shard["records"] for split in ("train", "validation") for shard in info[split]["shards"])
    assert len(shards) > 2 or kind == "keypoints"
    assert builtin == RecordCheck(records, [], "builtin")
    assert tensorflow == RecordCheck(records, [], "tensorflow")
    for shard in shards:
        with shard.open("rb") as stream:
            for payload in read_records(stream):
                assert comparable(decode_example(payload)) == comparable(tf_decoded(tf, payload))


def reframed(shard: Path, index: int, damage: Callable[[bytes], bytes]) -> None:
    """Rewrite record `index` of `shard` as `damage(payload)`, framed with correct CRCs: only the Example is wrong."""
    with shard.open("rb") as stream:
        payloads = list(read_records(stream))
    payloads[index] = damage(payloads[index])
    shard.write_bytes(b"".join(frame_record(payload) for payload in payloads))


def features_message(payload: bytes) -> bytes:
    """The Features message of an Example that holds nothing else: what follows its tag and length."""
    position = 1
    while payload[position] & 0x80:
        position += 1
    return payload[position + 1 :]


def appended(*entries: bytes) -> Callable[[bytes], bytes]:
    """A damage: map entries added to the record's Features."""
    return lambda payload: example(features_message(payload), *entries)


# Where the converter's records keep two small features (sorted keys; images are 64x48):
# image/height is `entry(key, Feature{int64_list: {packed: [48]}})`, image/key/sha256 64 hex digits.
HEIGHT_FEATURE = b"\x0a\x0cimage/height\x12\x05\x1a\x03"
SHA256_VALUE = b"\x0a\x10image/key/sha256\x12\x44\x0a\x42\x0a\x40"

DAMAGES: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "cut short": (lambda payload: payload[:-5], "Example: field 1 needs"),
    "unknown field": (lambda payload: payload + field(2, 0, varint(1)), "Example: field 2 with wire type varint"),
    # The Feature's int64_list tag (field 3) becomes field 4's, which a Feature does not have.
    "unknown kind": (
        lambda payload: payload.replace(HEIGHT_FEATURE, HEIGHT_FEATURE[:-2] + b"\x22\x03"),
        "feature 'image/height': field 4 with wire type length-delimited",
    ),
    # The bytes value's tag becomes a varint's, which a BytesList does not have (it reads 0x40 as the value).
    "wrong wire type": (
        lambda payload: payload.replace(SHA256_VALUE, SHA256_VALUE[:-2] + b"\x08\x40"),
        "feature 'image/key/sha256'.bytes_list: field 1 with wire type varint",
    ),
    "duplicate key": (appended(entry(b"image/format", field(1, 2, b""))), "feature 'image/format' given twice"),
    "two kinds": (
        appended(entry(b"extra", field(1, 2, b"") + field(3, 2, b""))),
        "feature 'extra': more than one value list (bytes_list, then int64_list)",
    ),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_the_builtin_parser_names_a_damaged_example_as_a_problem_of_its_record(damage: str, tmp_path: Path) -> None:
    output = converted("object-detection-api", tmp_path)
    shard = shards_of(output)[0]
    mutate, message = DAMAGES[damage]
    reframed(shard, 0, mutate)

    result = check_record_contents([shard], CLASSES, "object_detection_api", parser="builtin")

    assert result.parser == "builtin"
    assert len(result.problems) == 1, result.problems
    assert result.problems[0].startswith(f"{shard.name} record 0: not a tf.train.Example (")
    assert message in result.problems[0]


def test_a_damaged_frame_is_a_problem_of_its_shard_with_either_parser(tf: Any, tmp_path: Path) -> None:
    output = converted("object-detection-api", tmp_path)
    shard = shards_of(output)[0]
    shard.write_bytes(shard.read_bytes()[:-3])

    for parser in ("builtin", "tensorflow"):
        result = check_record_contents([shard], CLASSES, "object_detection_api", parser=parser)

        assert result.parser == parser
        assert len(result.problems) == 1, result.problems
        assert result.problems[0].startswith(f"{shard.name}: unreadable after ")


# --- choosing the parser ---------------------------------------------------------------------


def test_the_environment_variable_forces_the_builtin_parser(
    tf: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    output = converted("modelpack", tmp_path)
    shards = shards_of(output)

    assert check_record_contents(shards, CLASSES, "modelpack").parser == "tensorflow"
    monkeypatch.setenv(RECORD_PARSER_VARIABLE, "builtin")
    assert check_record_contents(shards, CLASSES, "modelpack").parser == "builtin"
    assert check_record_contents(shards, CLASSES, "modelpack", parser="tensorflow").parser == "tensorflow"
    monkeypatch.setenv(RECORD_PARSER_VARIABLE, "protobuf")
    with pytest.raises(UsageError, match=f"{RECORD_PARSER_VARIABLE}='protobuf': expected `builtin`, `tensorflow`"):
        check_record_contents(shards, CLASSES, "modelpack")


def test_without_tensorflow_the_builtin_parser_checks_the_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    output = converted("object-detection-api", tmp_path)
    info = load_info(output)
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # `import tensorflow` now raises ImportError

    result = check_record_contents(shards_of(output), info["classes"], "object_detection_api")

    assert result == RecordCheck(info["train"]["samples"] + info["validation"]["samples"], [], "builtin")
    with pytest.raises(UsageError, match="TensorFlow cannot be imported"):
        check_record_contents(shards_of(output), info["classes"], "object_detection_api", parser="tensorflow")


# --- the checks never raise, and read both parsers' features alike ---------------------------

od_api_records = st.fixed_dictionaries({key: feature_values for key in OD_API_KEYS}, optional={"extra": feature_values})
sparse_records = st.dictionaries(st.sampled_from(OD_API_KEYS), feature_values)


@with_tensorflow(60)
@given(records=st.lists(st.one_of(od_api_records, sparse_records, st.binary(max_size=30)), min_size=1, max_size=4))
def test_the_checks_never_raise_and_agree_between_parsers(tf: Any, records: list[dict[str, Feature] | bytes]) -> None:
    """Random records (every key of any kind and length, keys missing, bytes that are no Example)."""
    payloads = [record if isinstance(record, bytes) else encode_example(record) for record in records]
    with tempfile.TemporaryDirectory() as folder:
        shard = Path(folder) / "train-00000-of-00001.tfrecord"
        shard.write_bytes(b"".join(frame_record(payload) for payload in payloads))

        builtin = check_record_contents([shard], CLASSES, "object_detection_api", parser="builtin")
        tensorflow = check_record_contents([shard], CLASSES, "object_detection_api", parser="tensorflow")

    assert builtin.records == tensorflow.records == len(payloads)
    decodable = [index for index, payload in enumerate(payloads) if _decodes(payload)]
    for index in decodable:  # where both parse the Example, the same checks say the same things
        prefix = f"{shard.name} record {index}: "
        assert [p for p in builtin.problems if p.startswith(prefix)] == [
            p for p in tensorflow.problems if p.startswith(prefix)
        ]


def _decodes(payload: bytes) -> bool:
    try:
        decode_example(payload)
    except ExampleDecodeError:
        return False
    return True

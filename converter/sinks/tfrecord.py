"""TFRecord shards in one of two record layouts: the TF Object Detection API's or ModelPack's.

Object Detection API / Model Garden (`--layout object-detection-api`, the default): every
record carries every key of `OD_API_KEYS`, with empty lists where a sample has nothing of
that kind, so readers can parse all records with one feature spec; the segmentation,
instance mask and keypoint keys are on every record of a run that has them. Class ids
start at 1 (0 is background); boxes are normalized to [0, 1] and clipped.
`image/source_id` is a decimal integer (`converter.core.image_ids`), because Model Garden
and COCO-style evaluation parse it as one; the sample key is `image/source_key`. Beside
the records this layout writes what the training stacks read: label maps, the COCO ground
truth of each split, configs (`converter.sinks.training_stacks`) and TFDS's metadata.

ModelPack (`--layout modelpack`): the features ModelPack's DeepView validator parses,
`image` (the file's bytes), `image_name`, `width`, `height`, `objects` (0-based indices
into dataset_info.yaml's `classes`) and `bboxes` (four floats per object: normalized
`[x_center, y_center, width, height]`, the validator's default "yolo" box format). Boxes
only: class masks, keypoints and image-level labels have no ModelPack key and are not
written (dataset_info.yaml's record_layout says which were left out), and
`--instance-masks` is refused rather than ignored.

Both tables of feature names live in this module, beside the checks `verify` runs on them.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple, TypeVar

from converter.core.classes import FIRST_CLASS_ID
from converter.core.lossiness import Carried
from converter.core.materialize import EncodedObject, EncodedSample, RecordOptions
from converter.core.protocols import SplitOutput
from converter.core.shard import ShardInfo
from converter.core.split import SplitName
from converter.core.tasks import TASKS, Task
from converter.errors import UsageError, quoted
from converter.formats.example_proto import DecodedFeatures, ExampleDecodeError, decode_example
from converter.formats.tfrecord import (
    BytesFeature,
    CorruptRecordError,
    Feature,
    FloatFeature,
    Int64Feature,
    encode_record,
    read_records,
)
from converter.sinks._files import check_unicode_names
from converter.sinks._sharded_file import ShardedFileWriter
from converter.sinks.coco_ground_truth import COCO_FOLDER, GroundTruthFragment, GroundTruthWriter, sample_fragment
from converter.sinks.tfrecord_keys import (
    BBOX_XMAX,
    BBOX_XMIN,
    BBOX_YMAX,
    BBOX_YMIN,
    IMAGE_CLASS_LABEL,
    IMAGE_CLASS_TEXT,
    IMAGE_ENCODED,
    IMAGE_FILENAME,
    IMAGE_FORMAT,
    IMAGE_HEIGHT,
    IMAGE_SHA256,
    IMAGE_SOURCE_ID,
    IMAGE_SOURCE_KEY,
    IMAGE_WIDTH,
    KEYPOINT_TEXT,
    KEYPOINT_X,
    KEYPOINT_Y,
    LAYOUT_NAMES,
    MODELPACK,
    OBJECT_AREA,
    OBJECT_CLASS_LABEL,
    OBJECT_CLASS_TEXT,
    OBJECT_DETECTION_API,
    OBJECT_IS_CROWD,
    OBJECT_KEYPOINT_KEYS,
    OBJECT_KEYPOINT_NUM,
    OBJECT_KEYPOINT_TEXT,
    OBJECT_KEYPOINT_VISIBILITY,
    OBJECT_KEYPOINT_X,
    OBJECT_KEYPOINT_Y,
    OBJECT_MASK,
    OD_API_KEYS,
    SEGMENTATION_ENCODED,
    SEGMENTATION_FORMAT,
    SHARD_PREFIXES,
    SHARD_SUFFIX,
    SPLIT_FOLDERS,
)
from converter.sinks.training_stacks import (
    LABEL_MAP_PBTXT,
    TRAINING_STACK_ENTRIES,
    SplitFacts,
    split_paths,
    write_training_stack,
)

# The ModelPack keys (the DeepView validator's feature spec), in one place.
MODELPACK_IMAGE = "image"
MODELPACK_IMAGE_NAME = "image_name"
MODELPACK_WIDTH = "width"
MODELPACK_HEIGHT = "height"
MODELPACK_OBJECTS = "objects"
MODELPACK_BBOXES = "bboxes"
_MODELPACK_KEYS = (
    MODELPACK_IMAGE,
    MODELPACK_IMAGE_NAME,
    MODELPACK_WIDTH,
    MODELPACK_HEIGHT,
    MODELPACK_OBJECTS,
    MODELPACK_BBOXES,
)
MODELPACK_VALUES_PER_BOX = 4


def object_detection_features(sample: EncodedSample, options: RecordOptions) -> dict[str, Feature]:
    """The features of one record."""
    objects = sample.objects
    features: dict[str, Feature] = {
        IMAGE_ENCODED: BytesFeature([sample.image_bytes]),
        IMAGE_FORMAT: BytesFeature([sample.image.format.encode()]),
        IMAGE_HEIGHT: Int64Feature([sample.image.height]),
        IMAGE_WIDTH: Int64Feature([sample.image.width]),
        IMAGE_FILENAME: BytesFeature([sample.sample.image_name.encode()]),
        IMAGE_SOURCE_ID: BytesFeature([str(sample.image_id).encode()]),
        IMAGE_SOURCE_KEY: BytesFeature([sample.sample.key.encode()]),
        IMAGE_SHA256: BytesFeature([sample.sha256_hex.encode()]),
        BBOX_XMIN: FloatFeature([obj.bbox_normalized[0] for obj in objects]),
        BBOX_YMIN: FloatFeature([obj.bbox_normalized[1] for obj in objects]),
        BBOX_XMAX: FloatFeature([obj.bbox_normalized[2] for obj in objects]),
        BBOX_YMAX: FloatFeature([obj.bbox_normalized[3] for obj in objects]),
        OBJECT_CLASS_LABEL: Int64Feature([obj.class_id for obj in objects]),
        OBJECT_CLASS_TEXT: BytesFeature([obj.class_name.encode() for obj in objects]),
        OBJECT_AREA: FloatFeature([obj.area_pixels for obj in objects]),
        OBJECT_IS_CROWD: Int64Feature([int(obj.is_crowd) for obj in objects]),
        IMAGE_CLASS_LABEL: Int64Feature(sample.image_class_ids),
        IMAGE_CLASS_TEXT: BytesFeature([name.encode() for name in sample.sample.image_labels]),
    }
    if sample.segmentation_png is not None:
        features[SEGMENTATION_ENCODED] = BytesFeature([sample.segmentation_png])
        features[SEGMENTATION_FORMAT] = BytesFeature([b"png"])
    if options.instance_masks:
        features[OBJECT_MASK] = BytesFeature([obj.mask_png or b"" for obj in objects])
    if sample.keypoints is not None:
        features[KEYPOINT_X] = FloatFeature([point.x_normalized for point in sample.keypoints])
        features[KEYPOINT_Y] = FloatFeature([point.y_normalized for point in sample.keypoints])
        features[KEYPOINT_TEXT] = BytesFeature([point.class_name.encode() for point in sample.keypoints])
    if options.keypoints_per_object:
        features.update(_object_keypoint_features(objects, options.keypoints_per_object))
    return features


def _object_keypoint_features(objects: Sequence[EncodedObject], per_object: int) -> dict[str, Feature]:
    xs: list[float] = []
    ys: list[float] = []
    visibilities: list[int] = []
    names: list[bytes] = []
    for obj in objects:
        padding = per_object - len(obj.keypoints)
        xs += [point.x_normalized for point in obj.keypoints] + [0.0] * padding
        ys += [point.y_normalized for point in obj.keypoints] + [0.0] * padding
        visibilities += [point.visibility for point in obj.keypoints] + [0] * padding
        names += [point.name.encode() for point in obj.keypoints] + [b""] * padding
    return {
        OBJECT_KEYPOINT_X: FloatFeature(xs),
        OBJECT_KEYPOINT_Y: FloatFeature(ys),
        OBJECT_KEYPOINT_VISIBILITY: Int64Feature(visibilities),
        OBJECT_KEYPOINT_NUM: Int64Feature([sum(1 for p in obj.keypoints if p.visibility) for obj in objects]),
        OBJECT_KEYPOINT_TEXT: BytesFeature(names),
    }


def modelpack_features(sample: EncodedSample, options: RecordOptions) -> dict[str, Feature]:
    """The features of one ModelPack record; `options` only to share the OD API function's signature."""
    boxes: list[float] = []
    for obj in sample.objects:
        x_min, y_min, x_max, y_max = obj.bbox_normalized
        boxes += [(x_min + x_max) / 2, (y_min + y_max) / 2, x_max - x_min, y_max - y_min]
    return {
        MODELPACK_IMAGE: BytesFeature([sample.image_bytes]),
        MODELPACK_IMAGE_NAME: BytesFeature([sample.sample.image_name.encode()]),
        MODELPACK_WIDTH: Int64Feature([sample.image.width]),
        MODELPACK_HEIGHT: Int64Feature([sample.image.height]),
        MODELPACK_OBJECTS: Int64Feature([obj.class_id - FIRST_CLASS_ID for obj in sample.objects]),
        MODELPACK_BBOXES: FloatFeature(boxes),
    }


FeatureBuilder = Callable[[EncodedSample, RecordOptions], dict[str, Feature]]
_FEATURES: dict[str, FeatureBuilder] = {OBJECT_DETECTION_API: object_detection_features, MODELPACK: modelpack_features}


@dataclass(frozen=True, slots=True)
class TFRecordPayload:
    """What a worker sends the writer: the framed record, and for the Object Detection API
    layout the sample's COCO ground truth and the sizes the configs need."""

    record: bytes
    ground_truth: GroundTruthFragment | None
    height: int
    width: int
    objects: int
    image_labels: int


@dataclass(frozen=True)
class TFRecordEncoder:
    """Builds one framed record (Example protobuf, length, CRCs) in a worker process, so the
    parent only appends bytes: the image bytes cross between processes once, already framed."""

    options: RecordOptions

    def __call__(self, sample: EncodedSample) -> TFRecordPayload:
        record = encode_record(_FEATURES[self.options.layout](sample, self.options))
        ground_truth = sample_fragment(sample) if self.options.layout == OBJECT_DETECTION_API else None
        return TFRecordPayload(
            record,
            ground_truth,
            sample.image.height,
            sample.image.width,
            len(sample.objects),
            len(sample.image_class_ids),
        )


class _TFRecordSplitWriter:
    def __init__(self, output_dir: Path, split: SplitName, max_shard_bytes: int, extras: bool) -> None:
        self.folder_name = SPLIT_FOLDERS[split]
        self._shards = ShardedFileWriter(
            output_dir / self.folder_name, SHARD_PREFIXES[split], SHARD_SUFFIX, max_shard_bytes, relative_to=output_dir
        )
        names = split_paths(split)
        self.ground_truth = GroundTruthWriter(output_dir, names.coco_file) if extras else None
        self.facts = SplitFacts(names.shard_glob, f"{COCO_FOLDER}/{names.coco_file}" if extras else None)
        self.shards: tuple[ShardInfo, ...] = ()

    def write(self, payload: TFRecordPayload) -> None:
        self._shards.write(payload.record)
        if self.ground_truth is not None and payload.ground_truth is not None:
            self.ground_truth.write(payload.ground_truth)
        self.facts.add(payload.height, payload.width, payload.objects, payload.image_labels)

    def close(self) -> SplitOutput:
        self.shards = self._shards.close()
        if self.ground_truth is not None:
            self.ground_truth.close()
        return SplitOutput(
            annotations=self.folder_name,
            images=self.folder_name,
            samples=sum(shard.records for shard in self.shards),
            entries=(self.folder_name,),
            shards=self.shards,
            label_map=f"{self.folder_name}/{LABEL_MAP_PBTXT}" if self.ground_truth is not None else None,
            statistics=self.facts.statistics() if self.ground_truth is not None else None,
        )


class TFRecordSink:
    """`-f tfrecord`: records in size-capped shards, one folder per split, in the chosen `--layout`.

    With the Object Detection API layout, `finish` also writes what the training stacks
    read beside the records (label maps, COCO ground truth, configs, TFDS metadata), from
    what the split writers saw; so a sink serves one run.
    """

    supported_tasks: frozenset[Task] = frozenset(TASKS)

    def __init__(self, max_shard_bytes: int) -> None:
        self.max_shard_bytes = max_shard_bytes
        self._writers: dict[SplitName, _TFRecordSplitWriter] = {}
        self._options = RecordOptions()

    def record_encoder(self, options: RecordOptions) -> TFRecordEncoder:
        if options.layout not in _FEATURES:
            raise UsageError(f"unknown TFRecord layout {options.layout!r}; known: {', '.join(sorted(_FEATURES))}")
        if options.layout == MODELPACK and options.instance_masks:
            raise UsageError("--instance-masks: ModelPack records have no key for instance masks; drop the flag")
        return TFRecordEncoder(options)

    def open_split(self, output_dir: Path, split: SplitName, options: RecordOptions) -> _TFRecordSplitWriter:
        self._options = options
        writer = _TFRecordSplitWriter(output_dir, split, self.max_shard_bytes, options.layout == OBJECT_DETECTION_API)
        self._writers[split] = writer
        return writer

    def check_class_names(self, class_names: Sequence[str]) -> None:
        """Any Unicode name can be written: records carry names as UTF-8 strings."""
        check_unicode_names(class_names)

    def entry_names(self, splits: Sequence[SplitName], layout: str) -> tuple[str, ...]:
        folders = tuple(SPLIT_FOLDERS[split] for split in splits)
        if layout != OBJECT_DETECTION_API:
            return folders
        return (*folders, *TRAINING_STACK_ENTRIES)

    def carries(self, options: RecordOptions) -> Carried:
        """The Object Detection API keys hold every run option; ModelPack's hold boxes and classes only."""
        if options.layout == MODELPACK:
            return Carried(boxes=True)
        return Carried(
            boxes=True,
            class_masks=options.class_masks,
            instance_masks=options.instance_masks,
            keypoints=True,
            image_labels=True,
        )

    def finish(self, output_dir: Path, class_names: Sequence[str]) -> tuple[str, ...]:
        """The Object Detection API layout's files for the training stacks (see the class); ModelPack has none."""
        if self._options.layout != OBJECT_DETECTION_API:
            return ()
        splits = {
            split: (writer.facts, writer.shards, writer.ground_truth)
            for split, writer in self._writers.items()
            if writer.ground_truth is not None
        }
        return write_training_stack(output_dir, class_names, splits, self._options)

    def describe_layout(self, options: RecordOptions) -> dict[str, Any]:
        if options.layout == MODELPACK:
            return _describe_modelpack()
        return {
            "format": "tfrecord",
            "layout": LAYOUT_NAMES[OBJECT_DETECTION_API],
            "class_id_offset": FIRST_CLASS_ID,
            "boxes": "normalized [0, 1], displayed frame (EXIF orientation applied), clipped",
            "source_id": "decimal integer: the COCO image id, else derived from image/source_key",
            "area": "the export's area (COCO), else the shape's pixels, else the box's",
            "keys": sorted(  # every record of this dataset carries all of them
                [*OD_API_KEYS]
                + ([SEGMENTATION_ENCODED, SEGMENTATION_FORMAT] if options.class_masks else [])
                + ([OBJECT_MASK] if options.instance_masks else [])
                + ([KEYPOINT_X, KEYPOINT_Y, KEYPOINT_TEXT] if options.keypoints else [])
                + (list(OBJECT_KEYPOINT_KEYS) if options.keypoints_per_object else [])
            ),
            **({"keypoints_per_object": options.keypoints_per_object} if options.keypoints_per_object else {}),
        }


def _describe_modelpack() -> dict[str, Any]:
    return {
        "format": "tfrecord",
        "layout": LAYOUT_NAMES[MODELPACK],
        "class_id_offset": 0,
        "boxes": "bboxes: 4 per object, normalized [x_center, y_center, width, height], displayed frame "
        "(EXIF orientation applied), clipped",
        "keys": sorted(_MODELPACK_KEYS),
        "not_carried": "class masks, instance masks, keypoints, image-level labels (no ModelPack key holds them)",
    }


RecordParser = Literal["tensorflow", "builtin"]
RECORD_PARSER_VARIABLE = "DATASET_CONVERTER_RECORD_PARSER"
"""Set to `builtin` or `tensorflow` to choose `check_record_contents`'s parser (tests compare both on one venv)."""


class RecordCheck(NamedTuple):
    """What `check_record_contents` found, and which parser read the records, so verify can say which."""

    records: int
    problems: list[str]
    parser: RecordParser


class _Parser(NamedTuple):
    """One way to read records: framed payloads of a shard, and the features of one payload.

    `framing_errors` are what `payloads` raises on a damaged or unreadable shard (its
    remaining records cannot be found), `decode_errors` what `decode` raises on one bad record.
    """

    payloads: Callable[[Path], Iterator[bytes]]
    decode: Callable[[bytes], DecodedFeatures]
    framing_errors: tuple[type[Exception], ...]
    decode_errors: tuple[type[Exception], ...]


def _builtin_payloads(path: Path) -> Iterator[bytes]:
    with path.open("rb") as stream:
        yield from read_records(stream)


_BUILTIN_PARSER = _Parser(_builtin_payloads, decode_example, (CorruptRecordError, OSError), (ExampleDecodeError,))
_PROTO_KINDS: dict[str, type[Feature]] = {
    "bytes_list": BytesFeature,
    "float_list": FloatFeature,
    "int64_list": Int64Feature,
}


def _tensorflow_parser() -> _Parser | None:
    """TensorFlow's own reader and `tf.train.Example` parser, the reference; None where TensorFlow does not import."""
    # TensorFlow's start-up notices are not our output; oneDNN only changes arithmetic, not parsing.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    try:
        import tensorflow as tf
    except ImportError:
        return None

    def payloads(path: Path) -> Iterator[bytes]:
        for record in tf.data.TFRecordDataset(str(path)):
            yield record.numpy()

    def decode(payload: bytes) -> DecodedFeatures:
        features: DecodedFeatures = {}
        for key, feature in tf.train.Example.FromString(payload).features.feature.items():
            kind = feature.WhichOneof("kind")
            features[key] = _PROTO_KINDS[kind](getattr(feature, kind).value) if kind is not None else None
        return features

    # protobuf's DecodeError has no import path that every protobuf build shares.
    return _Parser(payloads, decode, (tf.errors.OpError,), (Exception,))


def _record_parser(requested: RecordParser | None) -> tuple[RecordParser, _Parser]:
    """`requested`, else $DATASET_CONVERTER_RECORD_PARSER, else TensorFlow where it imports, else the built-in one."""
    choice = requested or os.environ.get(RECORD_PARSER_VARIABLE) or None
    if choice not in (None, "tensorflow", "builtin"):
        raise UsageError(f"{RECORD_PARSER_VARIABLE}={quoted(choice)}: expected `builtin`, `tensorflow` or unset")
    tensorflow = _tensorflow_parser() if choice != "builtin" else None
    if tensorflow is not None:
        return "tensorflow", tensorflow
    if choice == "tensorflow":
        raise UsageError(
            "the TensorFlow record parser was asked for, but TensorFlow cannot be imported: install the "
            "`tensorflow` extra (or use the image's `full` variant), or let verify use its built-in parser"
        )
    return "builtin", _BUILTIN_PARSER


def check_record_contents(
    shard_paths: Sequence[Path], classes: Sequence[str], layout: str, parser: RecordParser | None = None
) -> RecordCheck:
    """Parse every record and check what it holds, with TensorFlow where it imports, else without.

    `layout` is dataset_info.yaml's `record_layout.layout`. Each record must parse as a
    `tf.train.Example` carrying every key of its layout, each of the kind (bytes, float,
    int64 list) the checks read. TensorFlow's reader and parser are the reference; the
    built-in ones (`read_records`, `decode_example`) check the same framing, CRCs and
    Example structure, more strictly (see `converter.formats.example_proto`), so the image
    without TensorFlow still verifies every record. `parser` (else
    $DATASET_CONVERTER_RECORD_PARSER) forces one; asking for TensorFlow where it cannot be
    imported, or for an unknown parser, raises `UsageError`.

    Object Detection API: `image/encoded` must be non-empty and match `image/key/sha256`;
    boxes must lie in [0, 1] with min < max; object and image class ids must lie in
    1..len(classes) and agree with their texts; per-object lists must have equal lengths.

    ModelPack: `image` must be non-empty; `width` and `height` one positive value each;
    `objects` must lie in 0..len(classes)-1 with four `bboxes` values each, every box a
    non-empty normalized `[x_center, y_center, width, height]` inside the image.
    """
    checks: dict[str, tuple[tuple[str, ...], Callable[[DecodedFeatures, Sequence[str]], list[str]]]] = {
        LAYOUT_NAMES[OBJECT_DETECTION_API]: (OD_API_KEYS, _od_api_record_problems),
        LAYOUT_NAMES[MODELPACK]: (_MODELPACK_KEYS, _modelpack_record_problems),
    }
    name, reader = _record_parser(parser)
    if layout not in checks:
        return RecordCheck(0, [f"record layout {layout!r} is not one verify knows ({', '.join(sorted(checks))})"], name)
    keys, record_problems = checks[layout]
    problems: list[str] = []
    parsed = 0
    for path in shard_paths:
        index = 0
        try:
            for payload in reader.payloads(path):
                problems += [
                    f"{path.name} record {index}: {problem}"
                    for problem in _problems(reader, payload, keys, record_problems, classes)
                ]
                index += 1
        except reader.framing_errors as error:
            first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
            problems.append(f"{path.name}: unreadable after {index} records ({quoted(first_line, 200)})")
        parsed += index
    return RecordCheck(parsed, problems, name)


def _problems(
    reader: _Parser,
    payload: bytes,
    keys: tuple[str, ...],
    record_problems: Callable[[DecodedFeatures, Sequence[str]], list[str]],
    classes: Sequence[str],
) -> list[str]:
    """One record's problems: not an Example, missing keys, a key of the wrong kind, or what its layout checks."""
    try:
        features = reader.decode(payload)
    except reader.decode_errors as error:
        return [f"not a tf.train.Example ({error})"]
    missing = sorted(set(keys) - set(features))
    if missing:
        return [f"missing keys {missing}"]
    try:
        return record_problems(features, classes)
    except _WrongKindError as error:
        return [str(error)]


class _WrongKindError(Exception):
    """A feature holds another kind of list than its key's (a bytes_list where floats belong)."""


_KIND_NAMES: dict[type[Feature], str] = {kind: name for name, kind in _PROTO_KINDS.items()}
_Kind = TypeVar("_Kind", BytesFeature, FloatFeature, Int64Feature)


def _values(features: DecodedFeatures, key: str, kind: type[_Kind]) -> _Kind:
    """The values of `key`, which must be of `kind`; a Feature of no kind reads as an empty list, as in protobuf."""
    feature = features[key]
    if feature is None:
        return kind()
    if not isinstance(feature, kind):
        raise _WrongKindError(f"{key} holds a {_KIND_NAMES[type(feature)]}, expected a {_KIND_NAMES[kind]}")
    return feature


def _texts(features: DecodedFeatures, key: str) -> list[str]:
    """A bytes list as text; bytes that are not UTF-8 show as U+FFFD and so never match a class name."""
    return [text.decode("utf-8", errors="replace") for text in _values(features, key, BytesFeature)]


def _od_api_record_problems(features: DecodedFeatures, classes: Sequence[str]) -> list[str]:
    problems = []
    encoded = _values(features, IMAGE_ENCODED, BytesFeature)
    if len(encoded) != 1 or not encoded[0]:
        problems.append("image/encoded is empty")
    elif list(_values(features, IMAGE_SHA256, BytesFeature)) != [hashlib.sha256(encoded[0]).hexdigest().encode()]:
        problems.append("image/key/sha256 does not match image/encoded")
    boxes = [_values(features, key, FloatFeature) for key in (BBOX_XMIN, BBOX_YMIN, BBOX_XMAX, BBOX_YMAX)]
    labels = list(_values(features, OBJECT_CLASS_LABEL, Int64Feature))
    texts = _texts(features, OBJECT_CLASS_TEXT)
    lengths = {len(values) for values in [*boxes, labels, texts]}
    if len(lengths) != 1:
        return [*problems, f"per-object lists have different lengths {sorted(lengths)}"]
    for x_min, y_min, x_max, y_max in zip(*boxes, strict=True):
        if not (0 <= x_min < x_max <= 1 and 0 <= y_min < y_max <= 1):
            problems.append(f"box {(x_min, y_min, x_max, y_max)} is not a normalized, non-empty box")
    image_labels = list(_values(features, IMAGE_CLASS_LABEL, Int64Feature))
    image_texts = _texts(features, IMAGE_CLASS_TEXT)
    if len(image_labels) != len(image_texts):
        return [*problems, f"{len(image_labels)} image class ids but {len(image_texts)} image class texts"]
    for label, text in zip(labels + image_labels, texts + image_texts, strict=True):
        if not 1 <= label <= len(classes):
            problems.append(f"class id {label} outside 1..{len(classes)}")
        elif classes[label - 1] != text:
            problems.append(f"class id {label} is {classes[label - 1]!r} in dataset_info.yaml, record says {text!r}")
    return problems


_FLOAT32_SLACK = 1e-6  # a center +- half a width, stored as float32, may land a hair past an edge


def _modelpack_record_problems(features: DecodedFeatures, classes: Sequence[str]) -> list[str]:
    problems = []
    image = _values(features, MODELPACK_IMAGE, BytesFeature)
    if len(image) != 1 or not image[0]:
        problems.append("image is empty")
    for key in (MODELPACK_WIDTH, MODELPACK_HEIGHT):
        values = list(_values(features, key, Int64Feature))
        if len(values) != 1 or values[0] <= 0:
            problems.append(f"{key} should be one positive number, got {values}")
    objects = list(_values(features, MODELPACK_OBJECTS, Int64Feature))
    bboxes = list(_values(features, MODELPACK_BBOXES, FloatFeature))
    if len(bboxes) != MODELPACK_VALUES_PER_BOX * len(objects):
        return [
            *problems,
            f"{len(objects)} objects need {MODELPACK_VALUES_PER_BOX * len(objects)} bboxes values, got {len(bboxes)}",
        ]
    for index in objects:
        if not 0 <= index < len(classes):
            problems.append(f"class index {index} outside 0..{len(classes) - 1}")
    for start in range(0, len(bboxes), MODELPACK_VALUES_PER_BOX):
        x_center, y_center, width, height = bboxes[start : start + MODELPACK_VALUES_PER_BOX]
        inside = all(
            size > 0 and center - size / 2 >= -_FLOAT32_SLACK and center + size / 2 <= 1 + _FLOAT32_SLACK
            for center, size in ((x_center, width), (y_center, height))
        )
        if not inside:
            problems.append(f"box {(x_center, y_center, width, height)} is not a normalized, non-empty box")
    return problems

"""`--layout modelpack`: TFRecords read as ModelPack's DeepView validator reads them, compared with the inputs.

The feature spec below is the validator's (`image`, `image_name`, `width`, `height` as
fixed-length features, `objects` and `bboxes` as variable-length ones), written out here
rather than imported, so a renamed key in the converter fails these tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from builders import flat, load_info, verify

from converter.formats.tfrecord import BytesFeature, FloatFeature, Int64Feature, encode_example, frame_record
from converter.sinks.tfrecord import check_record_contents

from . import HEIGHT, WIDTH, detection_input, segmentation_input

MODELPACK_KEYS = {"image", "image_name", "width", "height", "objects", "bboxes"}


@pytest.fixture(scope="module")
def tf() -> Any:
    return pytest.importorskip("tensorflow")


def read_modelpack(tf: Any, output: Path) -> dict[str, dict[str, Any]]:
    """Every record of every split, parsed with the validator's feature spec, by image name."""
    spec = {
        "image": tf.io.FixedLenFeature([], tf.string),
        "image_name": tf.io.FixedLenFeature([], tf.string),
        "width": tf.io.FixedLenFeature([], tf.int64),
        "height": tf.io.FixedLenFeature([], tf.int64),
        "objects": tf.io.VarLenFeature(tf.int64),
        "bboxes": tf.io.VarLenFeature(tf.float32),
    }
    info = load_info(output)
    records: dict[str, dict[str, Any]] = {}
    for split in ("train", "validation", "test"):
        if split not in info:
            continue
        shards = [str(output / shard["file"]) for shard in info[split]["shards"]]
        assert all(Path(shard).parent == output / info[split]["annotations"] for shard in shards)
        for raw in tf.data.TFRecordDataset(shards):
            assert set(tf.train.Example.FromString(raw.numpy()).features.feature) == MODELPACK_KEYS
            sample = tf.io.parse_single_example(raw, spec)
            name = sample["image_name"].numpy().decode()
            assert name not in records
            records[name] = {
                "image": sample["image"].numpy(),
                "pixels": tf.io.decode_jpeg(sample["image"]).numpy(),  # how the validator decodes
                "size": (int(sample["width"]), int(sample["height"])),
                "objects": tf.sparse.to_dense(sample["objects"]).numpy().tolist(),
                "bboxes": tf.sparse.to_dense(sample["bboxes"]).numpy().reshape(-1, 4),
            }
    return records


def test_records_carry_modelpack_keys_with_0_based_objects_and_center_boxes(tf: Any, tmp_path: Path) -> None:
    data = detection_input(tmp_path / "export")
    output = tmp_path / "out"

    result = data.convert(output, "--layout", "modelpack", "-s", "0.5", "-p", "0.002")

    assert result.exit_code == 0, result.stderr
    info = load_info(output)
    records = read_modelpack(tf, output)
    assert sorted(records) == sorted(data.expected)
    for name, record in records.items():
        expected = data.expected[name]
        assert record["image"] == expected.image_bytes
        assert record["size"] == (WIDTH, HEIGHT) and record["pixels"].shape == (HEIGHT, WIDTH, 3)
        assert record["objects"] == [info["classes"].index(class_name) for class_name, _ in expected.boxes]
        centers = [
            (
                (x_min + x_max) / 2 / WIDTH,
                (y_min + y_max) / 2 / HEIGHT,
                (x_max - x_min) / WIDTH,
                (y_max - y_min) / HEIGHT,
            )
            for _, (x_min, y_min, x_max, y_max) in expected.boxes
        ]
        np.testing.assert_allclose(record["bboxes"], np.array(centers, dtype=np.float32).reshape(-1, 4), atol=1e-7)
    assert info["record_layout"]["layout"] == "modelpack"
    assert info["record_layout"]["class_id_offset"] == 0
    assert set(info["record_layout"]["keys"]) == MODELPACK_KEYS
    checked = verify(output)
    assert checked.exit_code == 0, checked.stderr
    assert "every record parsed by TensorFlow" in checked.stdout


@pytest.mark.shared_samples
def test_dataset_info_has_the_shape_of_modelpacks_own_dataset_yaml(tmp_path: Path, shared_samples: Path) -> None:
    """ModelPack's sample names `classes`, then `train` and `validation` with annotations, images and samples."""
    reference = yaml.safe_load((shared_samples / "modelpack" / "dataset.yaml").read_text(encoding="utf-8"))
    data = detection_input(tmp_path / "export")
    output = tmp_path / "out"

    assert data.convert(output, "--layout", "modelpack").exit_code == 0

    info = load_info(output)
    assert all(isinstance(name, str) for name in info["classes"])
    for split, folder in (("train", "tfrecord_train"), ("validation", "tfrecord_val")):
        assert set(reference[split]) <= set(info[split])
        assert info[split]["annotations"] == info[split]["images"] == folder  # the validator globs *.tfrecord there
        assert info[split]["samples"] == sum(shard["records"] for shard in info[split]["shards"])


def test_a_segmentation_run_writes_boxes_only_and_says_what_it_left_out(tf: Any, tmp_path: Path) -> None:
    data = segmentation_input(tmp_path / "export")
    output = tmp_path / "out"

    result = data.convert(output, "--layout", "modelpack")

    assert result.exit_code == 0, result.stderr
    assert all(record["objects"] == [] for record in read_modelpack(tf, output).values())
    assert "class masks" in load_info(output)["record_layout"]["not_carried"]


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        (("--layout", "modelpack", "--instance-masks"), "ModelPack records have no key for instance masks"),
        (("-f", "json", "--layout", "modelpack"), "--layout chooses TFRecord feature names; it needs -f tfrecord"),
    ],
)
def test_options_modelpack_cannot_honour_are_usage_errors(
    tmp_path: Path, options: tuple[str, ...], fragment: str
) -> None:
    data = detection_input(tmp_path / "export")

    result = data.convert(tmp_path / "out", *options)

    assert result.exit_code == 2
    assert fragment in flat(result.stderr)


def test_verify_names_each_broken_modelpack_record(tf: Any, tmp_path: Path) -> None:
    shard = tmp_path / "train-00000-of-00001.tfrecord"
    records = [
        {"image": BytesFeature([b""]), "width": Int64Feature([0]), "height": Int64Feature([4])},
        {"objects": Int64Feature([0, 2]), "bboxes": FloatFeature([0.5, 0.5, 0.2, 0.2, 0.9, 0.5, 0.4, 0.2])},
        {"objects": Int64Feature([1]), "bboxes": FloatFeature([0.5, 0.5, 0.2])},
    ]
    good: dict[str, Any] = {
        "image": BytesFeature([b"\xff\xd8"]),
        "image_name": BytesFeature([b"a.jpg"]),
        "width": Int64Feature([4]),
        "height": Int64Feature([4]),
        "objects": Int64Feature([]),
        "bboxes": FloatFeature([]),
    }
    shard.write_bytes(b"".join(frame_record(encode_example(good | record)) for record in records))

    parsed, problems, _ = check_record_contents([shard], ["cat", "dog"], "modelpack")

    assert parsed == 3
    assert problems == [
        f"{shard.name} record 0: image is empty",
        f"{shard.name} record 0: width should be one positive number, got [0]",
        f"{shard.name} record 1: class index 2 outside 0..1",
        f"{shard.name} record 1: box (0.8999999761581421, 0.5, 0.4000000059604645, 0.20000000298023224) is not a "
        "normalized, non-empty box",
        f"{shard.name} record 2: 1 objects need 4 bboxes values, got 3",
    ]


def test_verify_runs_the_modelpack_checks_on_a_written_dataset(tf: Any, tmp_path: Path) -> None:
    output = tmp_path / "out"
    data = detection_input(tmp_path / "export")
    assert data.convert(output, "--layout", "modelpack", "-s", "0").exit_code == 0
    info = load_info(output)
    info["classes"] = info["classes"][:1]  # records now name a class index the list lacks
    (output / "dataset_info.yaml").write_text(yaml.safe_dump(info, sort_keys=False), encoding="utf-8")

    result = verify(output)

    assert result.exit_code == 1
    assert "class index 1 outside 0..0" in result.stderr

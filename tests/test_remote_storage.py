"""Remote inputs and outputs (`s3://`, `gs://`) against a local S3 server, never a real cloud.

moto runs in server mode on 127.0.0.1 (a free port) for the whole module; every test gets
a bucket of its own. The end-to-end runs start the real console entry point in a
subprocess, as a Kubernetes pod would: its environment carries the fake credentials and
the endpoint, and its worker processes (forkserver) read images from the bucket
themselves. Records are read back with TensorFlow.

GCS is not served here (no fake GCS server is installed): for `gs://` the tests check
only that it maps to gcsfs's filesystem, without network.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from builders import (
    BUCKET,
    Export,
    GtBox,
    convert,
    dataset_files,
    detection_export,
    detection_line,
    load_info,
    load_report,
    segmentation_line,
    shard_files,
    write_palette_mask,
)
from labelstudio_tasks import annotation, rectangle, task, write_export, write_stand_in
from readback import class_id, decode_png, read_all, records_by_source_id
from typer.testing import CliRunner

from converter.cli import app
from converter.core import storage
from converter.core.classes import build_class_list
from converter.core.images import RemoteImageResolver
from converter.core.materialize import materialize
from converter.core.sample import Sample
from converter.core.storage import RemotePath, as_location, is_remote, publish_part, safe_reason
from converter.errors import SampleError, SampleLocation, UsageError

moto_server = pytest.importorskip("moto.server", reason="moto[server] is in the dev extra")
s3fs = pytest.importorskip("s3fs", reason="s3fs is in the remote extra")

ACCESS_KEY_ID = "AKIAFAKEREMOTETEST01"
SECRET_ACCESS_KEY = "fake-secret-0123456789-do-not-leak"
SESSION_TOKEN = "fake-session-token-abcdefghij"
CREDENTIALS = (ACCESS_KEY_ID, SECRET_ACCESS_KEY, SESSION_TOKEN)
PROJECT_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    """A moto S3 server on a free local port, for this module."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per request otherwise
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def bucket(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket (`s3://name`), with the fake credentials and the endpoint in the environment."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
    monkeypatch.setenv("AWS_SESSION_TOKEN", SESSION_TOKEN)
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    name = f"test-{uuid.uuid4().hex[:12]}"
    _fs().mkdir(name)
    return f"s3://{name}"


def _fs() -> Any:
    return storage.filesystem("s3")


def _upload_folder(local: Path, url: str) -> None:
    for path in sorted(local.rglob("*")):
        if path.is_file():
            _fs().put_file(str(path), f"{url.removeprefix('s3://')}/{path.relative_to(local).as_posix()}")


def _download_folder(url: str, local: Path) -> list[str]:
    """Every object under `url` copied below `local`; returns their relative paths."""
    relative = storage.list_files(RemotePath(url))
    for name in relative:
        target = local / name
        target.parent.mkdir(parents=True, exist_ok=True)
        _fs().get_file(f"{url.removeprefix('s3://')}/{name}", str(target))
    return relative


def _cli(*arguments: str) -> subprocess.CompletedProcess[str]:
    """The console entry point in a fresh process, with this test's environment (credentials included)."""
    return subprocess.run(
        [sys.executable, "-m", "converter", "convert", *arguments],
        cwd=PROJECT_ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=120,
    )


def _assert_no_credentials(*texts: str) -> None:
    for text in texts:
        for secret in CREDENTIALS:
            assert secret not in text


# --- locations and values ------------------------------------------------------------------


def test_remote_locations_are_recognized_and_normalized() -> None:
    assert is_remote("s3://bucket/x") and is_remote("GS://bucket") and is_remote("gcs://bucket/a/")
    assert not is_remote("/data_in") and not is_remote("export/s3:/x") and not is_remote("https://host/x")
    assert as_location("export/output.manifest") == Path("export/output.manifest")
    path = as_location("s3://bucket/images/")
    assert path == RemotePath("s3://bucket/images") and str(path) == "s3://bucket/images"
    image = RemotePath("s3://bucket/images/sub/a.b.jpg")
    assert (image.protocol, image.path, image.name) == ("s3", "bucket/images/sub/a.b.jpg", "a.b.jpg")
    assert (
        image.parent == RemotePath("s3://bucket/images/sub") and RemotePath("s3://bucket").parent.url == "s3://bucket"
    )
    assert RemotePath("s3://bucket/images") / "sub/a.jpg" == RemotePath("s3://bucket/images/sub/a.jpg")
    with pytest.raises(UsageError, match="credentials"):
        as_location("s3://AKIA:secret@bucket/x")
    with pytest.raises(UsageError, match="no bucket"):
        as_location("s3:///x")


def test_a_remote_path_pickles_as_its_url_alone(bucket: str) -> None:
    image = RemotePath(f"{bucket}/a.jpg")
    _fs().pipe_file(image.path, b"bytes")
    assert image.read_bytes() == b"bytes"  # a filesystem is open in this process now
    copy = pickle.loads(pickle.dumps(image))
    assert copy == image and vars(copy) == {"url": image.url}
    assert copy.read_bytes() == b"bytes"


def test_gs_urls_map_to_gcsfs_without_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """No fake GCS server here: only the mapping is checked (anonymous, so nothing is asked of the network)."""
    gcsfs = pytest.importorskip("gcsfs", reason="gcsfs is in the remote extra")
    import fsspec.config

    monkeypatch.setitem(fsspec.config.conf, "gs", {"token": "anon"})
    for url in ("gs://bucket/images/a.jpg", "gcs://bucket/images/a.jpg"):
        location = as_location(url)
        assert isinstance(location, RemotePath)
        assert isinstance(storage.filesystem(location.protocol), gcsfs.GCSFileSystem)
        assert location.path == "bucket/images/a.jpg"


def test_error_reasons_carry_no_credentials_or_signatures(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
    error = PermissionError(
        f"403 for https://bucket.s3.amazonaws.com/a.jpg?X-Amz-Signature=abc123&X-Amz-Credential={ACCESS_KEY_ID} "
        f"Credential={ACCESS_KEY_ID}/20240101/us-east-1/s3/aws4_request secret {SECRET_ACCESS_KEY}\nsecond line"
    )
    reason = safe_reason(error)
    assert reason.startswith("PermissionError: 403 for https://bucket.s3.amazonaws.com/a.jpg?")
    assert "abc123" not in reason and "second line" not in reason
    _assert_no_credentials(reason)


# --- resolving and reading images in a bucket ----------------------------------------------


def test_remote_images_resolve_by_the_local_rules(bucket: str) -> None:
    for key in ("images/some dir/a.jpg", "images/bucket/b.jpg", "images/c.jpg", "images/x/d.jpg", "images/y/e.jpg"):
        _fs().pipe_file(f"{bucket.removeprefix('s3://')}/{key}", b"x")
    _fs().pipe_file(f"{bucket.removeprefix('s3://')}/images/z/e.jpg", b"x")
    resolver = RemoteImageResolver(RemotePath(f"{bucket}/images"))

    def name_of(reference: str) -> str:
        image = resolver.locate(reference)
        assert image.path == RemotePath(f"{bucket}/images/{image.name}")
        return image.name

    assert name_of("s3://other/some dir/a.jpg") == "some dir/a.jpg"  # the whole key
    assert name_of("s3://other/some%20dir/a.jpg") == "some dir/a.jpg"  # URL-decoded
    assert name_of("s3://bucket/b.jpg") == "bucket/b.jpg"  # the bucket in front
    assert name_of("s3://other/deep/path/c.jpg") == "c.jpg"  # trailing components
    assert name_of("s3://other/elsewhere/d.jpg") == "x/d.jpg"  # the only file of that name
    for reference, code in (
        ("s3://other/e.jpg", "ambiguous_image"),
        ("s3://other/../images/c.jpg", "unsafe_path"),
        ("s3://other/nowhere.jpg", "missing_image"),
    ):
        with pytest.raises(SampleError) as raised:
            resolver.locate(reference)
        assert raised.value.code == code
        assert f"{bucket}/images" in raised.value.message or code == "unsafe_path"


def test_an_image_gone_from_the_bucket_is_a_sample_error_naming_its_url(bucket: str) -> None:
    missing = RemotePath(f"{bucket}/images/gone.jpg")
    sample = Sample(key="s3://b/gone.jpg", location=SampleLocation("m", 1), image_path=missing, image_name="gone.jpg")
    with pytest.raises(SampleError) as raised:
        materialize(sample, build_class_list((), None, False))
    assert raised.value.code == "missing_image"
    assert f"{bucket}/images/gone.jpg" in raised.value.message


# --- the command line ----------------------------------------------------------------------


def _expected_objects(line: dict[str, Any]) -> list[tuple[str, tuple[float, float, float, float]]]:
    """(class name, normalized xmin, ymin, xmax, ymax) of a detection line's boxes."""
    value, metadata = line["bbox"], line["bbox-metadata"]
    width, height = value["image_size"][0]["width"], value["image_size"][0]["height"]
    return [
        (
            metadata["class-map"][str(box["class_id"])],
            (
                box["left"] / width,
                box["top"] / height,
                (box["left"] + box["width"]) / width,
                (box["top"] + box["height"]) / height,
            ),
        )
        for box in value["annotations"]
    ]


def test_s3_export_to_s3_output_reads_back_as_the_input(bucket: str, tmp_path: Path) -> None:
    """40 samples, two worker processes reading the bucket, small shards: the records hold the input's boxes,
    the shards are byte for byte a local run's, and no credential reaches any output."""
    export = detection_export(tmp_path / "export", 40)
    export.write()
    _upload_folder(export.root, f"{bucket}/export")
    arguments = ["--split", "0.8,0.1,0.1", "--partition", "0.02", "--workers", "2"]

    result = _cli(
        "-a", f"{bucket}/export/output.manifest", "-i", f"{bucket}/export/images", "-o", f"{bucket}/out", *arguments
    )
    assert result.returncode == 0, result.stderr
    events = [json.loads(line)["event"] for line in result.stderr.splitlines() if line.startswith("{")]
    assert events[-2:] == ["publishing", "published"]
    output = tmp_path / "downloaded"
    listed = _download_folder(f"{bucket}/out", output)
    assert "dataset_info.yaml" in listed and "report.json" in listed
    assert not [name for name in listed if name.startswith(".")]  # no staging folder, no publishing marker

    info, report = load_info(output), load_report(output)
    assert report["summary"]["converted"] == 40 and report["summary"]["skipped"] == 0
    assert info["input"]["annotations"] == f"{bucket}/export/output.manifest"
    assert info["input"]["images"] == f"{bucket}/export/images"
    records = records_by_source_id(output)
    assert sorted(records) == sorted(export.references())
    for line in export.lines:
        assert isinstance(line, dict)
        record = records[line["source-ref"]]
        expected = _expected_objects(line)
        assert [text.decode() for text in record["image/object/class/text"]] == [name for name, _ in expected]
        assert record["image/object/class/label"] == [class_id(info, name) for name, _ in expected]
        for axis, key in enumerate(("xmin", "ymin", "xmax", "ymax")):
            assert record[f"image/object/bbox/{key}"] == pytest.approx([box[axis] for _, box in expected], abs=1e-6)
        assert record["image/encoded"][0] == export.image_bytes[line["source-ref"]]

    local = tmp_path / "local"
    local_result = convert("-a", export.manifest, "-i", export.images, "-o", local, *arguments)
    assert local_result.exit_code == 0, local_result.stderr
    assert shard_files(output) == shard_files(local) and len(shard_files(local)) > 3

    _assert_no_credentials(
        result.stdout,
        result.stderr,
        (output / "report.json").read_text(encoding="utf-8"),
        (output / "dataset_info.yaml").read_text(encoding="utf-8"),
    )


def test_a_remote_export_folder_is_found_and_a_missing_image_is_reported_by_url(bucket: str, tmp_path: Path) -> None:
    """`-a s3://bucket/export/`: the manifest is found in the folder, images resolve under it by default,
    and only annotation-like files are fetched (the images stay remote)."""
    export = detection_export(tmp_path / "export", 3)
    missing = "s3://labelling/images/never-uploaded.jpg"
    export.add_line(detection_line(missing, [GtBox(0, 1, 1, 5, 5)], {0: "cat"}))
    export.write()
    _upload_folder(export.root, f"{bucket}/export")

    result = _cli("-a", f"{bucket}/export/", "-o", f"{bucket}/out", "--workers", "1")
    assert result.returncode == 0, result.stderr
    report = json.loads(_fs().cat_file(f"{bucket.removeprefix('s3://')}/out/report.json"))
    [skipped] = report["skipped"]
    assert skipped["file"] == f"{bucket}/export/output.manifest" and skipped["line"] == 4
    assert skipped["code"] == "missing_image"
    assert missing in skipped["reason"] and f"{bucket}/export" in skipped["reason"]
    logged = [json.loads(line) for line in result.stderr.splitlines() if '"skipped"' in line]
    assert logged[0]["file"] == f"{bucket}/export/output.manifest"
    _assert_no_credentials(result.stdout, result.stderr, json.dumps(report))


def test_ground_truth_masks_are_read_from_the_bucket(bucket: str, tmp_path: Path) -> None:
    """Semantic segmentation: images and palette masks both resolve under the remote -a folder."""
    export = Export(tmp_path / "export")
    color_map = {0: ("BACKGROUND", "#ffffff"), 1: ("road", "#ff0000"), 2: ("car", "#00ff00")}
    masks = {}
    for index in range(2):
        reference = export.add_image(f"photos/p{index}.png")
        masks[reference] = (np.arange(64 * 48).reshape(48, 64) // (17 + index) % 3).astype(np.uint8)
        write_palette_mask(export.images / f"labels/p{index}.png", masks[reference], [c for _, c in color_map.values()])
        export.add_line(segmentation_line(reference, f"{BUCKET}/labels/p{index}.png", color_map))
    export.write()
    _upload_folder(export.root, f"{bucket}/export")
    output = tmp_path / "out"

    result = convert("-a", f"{bucket}/export/output.manifest", "-i", f"{bucket}/export/images", "-o", output)
    assert result.exit_code == 0, result.stderr
    info = load_info(output)
    assert info["classes"] == ["road", "car"]
    for reference, record in records_by_source_id(output).items():
        np.testing.assert_array_equal(decode_png(record["image/segmentation/class/encoded"][0]), masks[reference])


def test_a_remote_label_studio_export_reads_local_images(bucket: str, tmp_path: Path) -> None:
    """Other sources take a remote annotation file too; their images then come from a local -i."""
    images = tmp_path / "images"
    write_stand_in(images / "a.jpg", (64, 48))
    tasks = write_export(
        tmp_path / "tasks.json",
        [task("s3://labelling/a.jpg", annotation([rectangle(10, 10, 50, 50, ["cat"], (64, 48))]))],
    )
    _fs().put_file(str(tasks), f"{bucket.removeprefix('s3://')}/ls/tasks.json")
    output = tmp_path / "out"

    result = convert("-a", f"{bucket}/ls/tasks.json", "-i", images, "-o", output)
    assert result.exit_code == 0, result.stderr
    assert load_info(output)["input"]["annotations"] == f"{bucket}/ls/tasks.json"
    [record] = records_by_source_id(output).values()
    assert record["image/object/class/text"] == [b"cat"]


def test_a_rerun_to_the_same_remote_output_replaces_what_the_previous_one_owned(bucket: str, tmp_path: Path) -> None:
    """Local input, remote output: the second run (no test split, bigger shards) leaves no stale shard or folder,
    keeps files the dataset never owned, and a failed third run replaces only report.json."""
    export = detection_export(tmp_path / "export", 12)
    export.write()
    out = f"{bucket}/out"
    _fs().pipe_file(f"{out.removeprefix('s3://')}/notes.txt", b"not the converter's")
    first = convert("-a", export.manifest, "-o", out, "--split", "0.5,0.25,0.25", "--partition", "0.004")
    assert first.exit_code == 0, first.stderr
    before = storage.list_files(RemotePath(out))
    assert any(name.startswith("tfrecord_test/") for name in before)
    assert len([name for name in before if name.startswith("tfrecord_train/")]) > 1

    second = convert("-a", export.manifest, "-o", out, "--split", "0.2")
    assert second.exit_code == 0, second.stderr
    after = storage.list_files(RemotePath(out))
    local = tmp_path / "local"
    assert convert("-a", export.manifest, "-o", local, "--split", "0.2").exit_code == 0
    assert after == sorted([*dataset_files(local), "notes.txt"])
    published_info = _fs().cat_file(f"{out.removeprefix('s3://')}/dataset_info.yaml")

    export.add_line(detection_line("s3://b/missing.jpg", [], {}))
    export.write()
    failed = convert("-a", export.manifest, "-o", out, "--split", "0.2", "--max-skipped", "0")
    assert failed.exit_code == 1
    assert f"see {out}/report.json" in failed.stderr
    assert storage.list_files(RemotePath(out)) == after
    assert _fs().cat_file(f"{out.removeprefix('s3://')}/dataset_info.yaml") == published_info
    failed_report = json.loads(_fs().cat_file(f"{out.removeprefix('s3://')}/report.json"))
    assert failed_report["summary"]["failure"] is not None


def test_a_publish_cut_short_is_cleaned_up_by_the_next(bucket: str, tmp_path: Path) -> None:
    """A publish interrupted after removing dataset_info.yaml leaves its marker; the next publish removes
    every entry the marker lists, although no dataset_info.yaml names them any more."""
    export = detection_export(tmp_path / "export", 8)
    export.write()
    out = f"{bucket}/out"
    assert convert("-a", export.manifest, "-o", out, "--split", "0.5,0.25,0.25").exit_code == 0
    root = out.removeprefix("s3://")
    _fs().pipe_file(f"{root}/{storage.PUBLISHING_MARKER}", yaml.safe_dump({"entries": ["tfrecord_test"]}).encode())
    _fs().rm(f"{root}/dataset_info.yaml")
    assert convert("-a", export.manifest, "-o", out, "--split", "0.2").exit_code == 0
    names = storage.list_files(RemotePath(out))
    assert not [name for name in names if name.startswith("tfrecord_test/")]
    assert storage.PUBLISHING_MARKER not in names and "dataset_info.yaml" in names


def test_scaled_out_workers_publish_their_parts_and_finalize_merges_them(bucket: str, tmp_path: Path) -> None:
    """Each worker of a scaled-out run uploads only its part folder; `finalize` on the URL then gives the
    records, in order, of a single local run."""
    export = detection_export(tmp_path / "export", 12)
    export.write()
    out = f"{bucket}/out"
    for index in range(2):
        result = convert("-a", export.manifest, "-o", out, "--num-workers", "2", "--worker-index", str(index))
        assert result.exit_code == 0, result.stderr
    parts = storage.list_files(RemotePath(f"{out}/parts"))
    assert {name.split("/")[0] for name in parts} == {"worker-00000-of-00002", "worker-00001-of-00002"}
    assert "worker-00001-of-00002/part.yaml" in parts
    assert "dataset_info.yaml" not in storage.list_files(RemotePath(out))

    finalized = CliRunner().invoke(app, ["finalize", out])
    assert finalized.exit_code == 0, finalized.stderr
    merged, local = tmp_path / "merged", tmp_path / "local"
    _download_folder(out, merged)
    assert convert("-a", export.manifest, "-o", local).exit_code == 0
    assert read_all(merged) == read_all(local)
    # and the training stacks' files, uploaded beside the records, are those of the local run
    merged_files, local_files = dataset_files(merged), dataset_files(local)
    beside = [path for path in local_files if path.split("/")[0] in ("coco", "configs") or "label_map" in path]
    assert len(beside) >= 7
    assert {path: merged_files.get(path) for path in beside} == {path: local_files[path] for path in beside}


def test_publish_part_replaces_the_remote_part_folder(bucket: str, tmp_path: Path) -> None:
    part = f"{bucket}/out/parts/worker-00001-of-00002"
    root = part.removeprefix("s3://")
    for name in ("stale-00000-of-00001.tfrecord", "part.yaml", "report.json"):
        _fs().pipe_file(f"{root}/{name}", b"old")
    _fs().pipe_file(f"{bucket.removeprefix('s3://')}/out/parts/worker-00000-of-00002/part.yaml", b"other worker")
    local = tmp_path / "worker-00001-of-00002"
    (local / "tfrecord_train").mkdir(parents=True)
    (local / "tfrecord_train" / "train-00000-of-00001.tfrecord").write_bytes(b"new shard")
    (local / "report.json").write_text("{}")
    (local / "part.yaml").write_text("entries: []\n")

    publish_part(local, RemotePath(part))
    assert storage.list_files(RemotePath(part)) == [
        "part.yaml",
        "report.json",
        "tfrecord_train/train-00000-of-00001.tfrecord",
    ]
    assert _fs().cat_file(f"{root}/part.yaml") == b"entries: []\n"
    assert (
        _fs().cat_file(f"{bucket.removeprefix('s3://')}/out/parts/worker-00000-of-00002/part.yaml") == b"other worker"
    )


@pytest.mark.parametrize(
    ("make_arguments", "fragment"),
    [
        (lambda b, manifest, tasks, out: ["-a", manifest, "-o", f"{b}/out", "--absolute-paths"], "--absolute-paths"),
        (lambda b, manifest, tasks, out: ["-a", manifest, "-o", "s3://no-such-bucket-0/out"], "no-such-bucket-0"),
        (lambda b, manifest, tasks, out: ["-a", f"{b}/nothing.manifest", "-o", out], "does not exist"),
        (lambda b, manifest, tasks, out: ["-a", f"{b}/labelmap", "-o", out], "mask folders cannot be read from"),
        (
            lambda b, manifest, tasks, out: ["-a", tasks, "--source", "labelstudio", "-i", f"{b}/labelmap", "-o", out],
            "labelstudio reads images from a local folder",
        ),
    ],
)
def test_remote_usage_errors_exit_2(bucket: str, tmp_path: Path, make_arguments: Any, fragment: str) -> None:
    labelmap = f"{bucket.removeprefix('s3://')}/labelmap"
    _fs().pipe_file(f"{labelmap}/labels.yaml", b"1: cat\n")
    _fs().pipe_file(f"{labelmap}/images/a.png", b"x")
    export = detection_export(tmp_path / "export", 1)
    export.write()
    (tmp_path / "tasks.json").write_text("[]")
    arguments = make_arguments(bucket, str(export.manifest), str(tmp_path / "tasks.json"), str(tmp_path / "out"))
    result = convert(*arguments)
    assert result.exit_code == 2, result.stderr
    assert fragment in result.stderr
    _assert_no_credentials(result.stdout, result.stderr)
    assert not (tmp_path / "out").exists()

"""The Docker image converts exactly as the installed package does: offline, from a read-only /data_in.

The image is built once per session (or taken from $DATASET_CONVERTER_IMAGE). Real Ground
Truth exports are converted inside it with `--network none` and /data_in mounted read-only,
and in-process with the same options; the two outputs must agree byte for byte, apart from
the input paths they record. Without a reachable Docker engine these tests skip, saying why;
DATASET_CONVERTER_REQUIRE_DOCKER=1 (set by CI) turns that skip into a failure.

The image under test is the default, small one: no TensorFlow, at most 500 MB, and its
`verify` still checks every record with the converter's own Example decoder. The `full`
target (or $DATASET_CONVERTER_FULL_IMAGE) is built too, once, for the tests that show its
`verify` parses with TensorFlow; both variants must refuse a damaged record.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pytest
import yaml
from builders import STATE_FOLDER, convert, dataset_files, detection_export, image_pixels, write_image
from labelstudio_tasks import write_stand_in
from typer.testing import CliRunner

from converter.cli import app
from converter.formats.tfrecord import frame_record, read_records

pytestmark = pytest.mark.container

PROJECT_ROOT = Path(__file__).resolve().parent.parent
TEST_IMAGE = "dataset-converter:test"
TEST_FULL_IMAGE = "dataset-converter:test-full"
SMALL_IMAGE_MAX_BYTES = 500 * 10**6  # MB as Docker counts them
DATASET_INFO = "dataset_info.yaml"
REPORT = "report.json"
RUN_TIMEOUT_S = 300
BUILD_OUTPUT_SHOWN = 30_000  # characters of `docker build` output a failure shows (its end)
# Where the pcb_semseg manifest's `s3://pcbtest22/...` references resolve under /data_in.
PCB_IMAGE_KEY = "label/s10.png"
PCB_MASK_KEY = "label/S10-label3/annotations/consolidated-annotation/output/0_2022-09-09T17:25:31.918770.png"


def _unavailable(reason: str) -> NoReturn:
    """Skip for a developer without Docker; fail in CI, where the image must be tested."""
    if os.environ.get("DATASET_CONVERTER_REQUIRE_DOCKER", "") not in ("", "0", "false", "no"):
        pytest.fail(f"{reason}, and DATASET_CONVERTER_REQUIRE_DOCKER is set", pytrace=False)
    pytest.skip(f"{reason} (DATASET_CONVERTER_REQUIRE_DOCKER=1 makes this a failure)")


def _docker(*arguments: str, timeout: float | None = RUN_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *arguments], capture_output=True, text=True, timeout=timeout, check=False)


def _succeeded(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    """`result`, after asserting it exited 0; the message carries the command and its output."""
    assert result.returncode == 0, (
        f"`{' '.join(result.args)}` exited {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )
    return result


@pytest.fixture(scope="session")
def docker_engine() -> None:
    """A Docker engine answers `docker info` (DOCKER_HOST is honoured, as by every docker command)."""
    if shutil.which("docker") is None:
        _unavailable("no `docker` command on PATH")
    try:
        info = _docker("info", timeout=60)
    except subprocess.TimeoutExpired:
        _unavailable("`docker info` did not answer within 60 s")
    if info.returncode != 0:
        where = os.environ.get("DOCKER_HOST", "the default socket")
        _unavailable(f"no Docker engine reachable at {where}: `docker info` said {info.stderr.strip()[-500:]!r}")


def _built_image(preset_variable: str, tag: str, *build_options: str) -> str:
    """The image named by $`preset_variable` if set, else `docker build [build_options]` of the working tree as `tag`.

    `--network host` because engines without a bridge network (CI's) have no other network
    to give the build, whose pip needs PyPI. The build's output is shown if it fails.
    """
    preset = os.environ.get(preset_variable)
    if preset:
        inspected = _docker("image", "inspect", preset)
        if inspected.returncode != 0:
            pytest.fail(f"{preset_variable}={preset} is not an image of this engine: {inspected.stderr}", pytrace=False)
        return preset
    build = subprocess.run(
        ["docker", "build", "--network", "host", *build_options, "-t", tag, str(PROJECT_ROOT)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
    )
    if build.returncode != 0:
        pytest.fail(
            f"`docker build` exited {build.returncode}; the end of its output:\n{build.stdout[-BUILD_OUTPUT_SHOWN:]}",
            pytrace=False,
        )
    return tag


@pytest.fixture(scope="session")
def image(docker_engine: None) -> str:
    """The image under test, the default (small) one: $DATASET_CONVERTER_IMAGE if set, else built."""
    return _built_image("DATASET_CONVERTER_IMAGE", TEST_IMAGE)


@pytest.fixture(scope="session")
def full_image(docker_engine: None) -> str:
    """The `full` target, with TensorFlow: $DATASET_CONVERTER_FULL_IMAGE if set, else built."""
    return _built_image("DATASET_CONVERTER_FULL_IMAGE", TEST_FULL_IMAGE, "--target", "full")


def _run_container(
    image: str,
    arguments: Sequence[str],
    *,
    data_out: Path,
    data_in: Path | None = None,
    read_only_output: bool = False,
    as_caller: bool = True,
    entrypoint: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """`docker run` as the README documents it: no network, /data_in read-only, /data_out bind-mounted.

    `as_caller` passes `--user` with the caller's uid and gid, the documented way to make
    the output the caller's and writable whoever owns the mounted folder; without it the
    image's own non-root user runs. `--mount` rather than `-v`: a missing source is an
    error instead of an empty folder Docker creates.
    """
    command = ["run", "--rm", "--network", "none"]
    if as_caller:
        command += ["--user", f"{os.getuid()}:{os.getgid()}"]
    if data_in is not None:
        command += ["--mount", f"type=bind,source={data_in},target=/data_in,readonly"]
    command += ["--mount", f"type=bind,source={data_out},target=/data_out" + (",readonly" if read_only_output else "")]
    if entrypoint is not None:
        command += ["--entrypoint", entrypoint]
    return _docker(*command, image, *arguments)


@dataclass(frozen=True)
class Export:
    """A Ground Truth export laid out as a user mounts it at /data_in, and how to convert it."""

    folder: Path
    options: tuple[str, ...]
    samples: int
    annotation_file: str  # relative to `folder`: the file the format recognition must find


def _cat_bbox(shared_samples: Path, tmp_path_factory: pytest.TempPathFactory) -> Export:
    """Bounding boxes, one negative image; a 0.25 MB partition cuts each split into several shards."""
    return Export(
        shared_samples / "sagemaker_gt" / "cat_bbox", ("-s", "0.5", "-p", "0.25", "--seed", "7"), 4, "output.manifest"
    )


def _pcb_semseg(shared_samples: Path, tmp_path_factory: pytest.TempPathFactory) -> Export:
    """Semantic segmentation, laid out like its bucket keys; its one 3.6 MB record outgrows the 1 MB partition."""
    sample = shared_samples / "sagemaker_gt" / "pcb_semseg"
    folder = tmp_path_factory.mktemp("pcb_semseg")
    shutil.copyfile(sample / "output.manifest", folder / "output.manifest")
    for key, source in ((PCB_IMAGE_KEY, sample / "s10.png"), (PCB_MASK_KEY, sample / "mask.png")):
        (folder / key).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, folder / key)
    return Export(folder, ("-s", "0.8,0.1,0.1", "-p", "1"), 1, "output.manifest")


def _labelstudio_polygons(shared_samples: Path, tmp_path_factory: pytest.TempPathFactory) -> Export:
    """Label Studio's polygon export with stand-in images where its tasks point; masks and instance masks."""
    folder = tmp_path_factory.mktemp("labelstudio")
    export = shared_samples / "label_studio" / "polygons_export.json"
    shutil.copyfile(export, folder / "export.json")
    tasks = json.loads(export.read_text(encoding="utf-8"))
    for seed, task in enumerate(tasks, start=1):
        first = task["annotations"][0]["result"][0]
        write_stand_in(
            folder / task["data"]["image"].lstrip("/"), (first["original_width"], first["original_height"]), seed
        )
    return Export(folder, ("-s", "0.5", "--instance-masks"), len(tasks), "export.json")


def _coco_datumaro(shared_samples: Path, tmp_path_factory: pytest.TempPathFactory) -> Export:
    """Datumaro's COCO sample (polygon, uncompressed crowd RLE): one annotation file, its images beside it."""
    folder = tmp_path_factory.mktemp("coco")
    sample = shared_samples / "coco" / "datumaro"
    shutil.copyfile(sample / "annotations" / "instances_val.json", folder / "instances_val.json")
    shutil.copytree(sample / "images", folder / "images")
    return Export(folder, ("-s", "0", "--overlap", "combine"), 1, "instances_val.json")


def _geojson(shared_samples: Path, tmp_path_factory: pytest.TempPathFactory) -> Export:
    """A generated GeoJSON collection: a polygon with a hole, a multipolygon, two images."""
    folder = tmp_path_factory.mktemp("geojson")
    for seed, name in enumerate(("a.jpg", "b.jpg"), start=1):
        write_image(folder / "images" / name, image_pixels(64, 48, seed))
    square = [[4, 4], [40, 4], [40, 40], [4, 40], [4, 4]]
    hole = [[10, 10], [20, 10], [20, 20], [10, 20], [10, 10]]
    triangle = [[1, 1], [9, 1], [9, 9], [1, 1]]
    features = [
        {
            "type": "Feature",
            "properties": {"image_filename": "a.jpg", "class_id": 1, "class_name": "field"},
            "geometry": {"type": "Polygon", "coordinates": [square, hole]},
        },
        {
            "type": "Feature",
            "properties": {"image_filename": "b.jpg", "class_id": 2, "class_name": "road"},
            "geometry": {"type": "MultiPolygon", "coordinates": [[triangle], [square]]},
        },
    ]
    (folder / "labels.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return Export(folder, ("-s", "0.5"), 2, "labels.geojson")


def _mask_folder(shared_samples: Path, tmp_path_factory: pytest.TempPathFactory) -> Export:
    """A generated mask folder: RGB masks and a ClearML colour map."""
    folder = tmp_path_factory.mktemp("mask_folder")
    (folder / "labels.yaml").write_text(
        yaml.safe_dump(
            {"mask_labels": {"(0, 0, 0)": ["background"], "(255, 0, 0)": ["person"], "(0, 0, 255)": ["car"]}}
        )
    )
    for seed in range(1, 4):
        write_image(folder / "images" / f"{seed}.jpg", image_pixels(32, 24, seed))
        mask = np.zeros((24, 32, 3), dtype=np.uint8)
        mask[2 : 2 + 4 * seed, 3:20] = (255, 0, 0)
        mask[15:22, 10 : 10 + 5 * seed] = (0, 0, 255)
        write_image(folder / "masks" / f"{seed}.png", mask)
    return Export(folder, ("-s", "0.5"), 3, "labels.yaml")


EXPORTS: dict[str, Callable[[Path, pytest.TempPathFactory], Export]] = {
    "cat_bbox": _cat_bbox,
    "pcb_semseg": _pcb_semseg,
    "labelstudio_polygons": _labelstudio_polygons,
    "coco_datumaro": _coco_datumaro,
    "geojson": _geojson,
    "mask_folder": _mask_folder,
}


# Every output format, on exports its task fits: the container must write each as the package does.
OUTPUT_FORMATS: dict[str, tuple[str, tuple[str, ...]]] = {
    "cat_bbox-masterful": ("cat_bbox", ("-f", "masterful")),
    "cat_bbox-json": ("cat_bbox", ("-f", "json")),
    "cat_bbox-modelpack": ("cat_bbox", ("--layout", "modelpack")),
    "labelstudio_polygons-json": ("labelstudio_polygons", ("-f", "json")),  # polygons and instance masks
    "mask_folder-masks": ("mask_folder", ("-f", "masks")),
    "pcb_semseg-masterful": ("pcb_semseg", ("-f", "masterful")),
}


@pytest.fixture(scope="module", params=sorted(EXPORTS) + sorted(OUTPUT_FORMATS))
def export(request: pytest.FixtureRequest, shared_samples: Path, tmp_path_factory: pytest.TempPathFactory) -> Export:
    """An export with its options; the OUTPUT_FORMATS ids add a format's options to an export's own."""
    name, format_options = OUTPUT_FORMATS.get(request.param, (request.param, ()))
    built = EXPORTS[name](shared_samples, tmp_path_factory)
    return dataclasses.replace(built, options=built.options + format_options)


@dataclass(frozen=True)
class Conversion:
    export: Export
    inside: Path  # written by the container
    outside: Path  # written in-process by the installed package


@pytest.fixture(scope="module")
def conversion(export: Export, image: str, tmp_path_factory: pytest.TempPathFactory) -> Conversion:
    """One export converted both ways with the same options.

    The container gets the options alone, without the `convert` word, as the README shows
    (`docker run ... dataset-converter -s 0.1`), and its default /data_in and /data_out.
    """
    inside = tmp_path_factory.mktemp("inside")
    # pytest makes its folders private (0o700); an output folder is usually readable by all, and
    # `verify` reads this one as the image's own user, as the README's verify command runs.
    inside.chmod(0o755)
    outside = tmp_path_factory.mktemp("outside")
    _succeeded(_run_container(image, export.options, data_in=export.folder, data_out=inside))
    result = CliRunner().invoke(app, ["convert", "-a", str(export.folder), "-o", str(outside), *export.options])
    assert result.exit_code == 0, result.output
    return Conversion(export, inside, outside)


STATS_PAGE = "stats/index.html"  # spelled out: the layout is documented


def _file_digests(folder: Path) -> dict[str, str]:
    """Every file of the dataset in `folder` as a user sees it, by relative path, with its sha256."""
    return {name: hashlib.sha256(data).hexdigest() for name, data in dataset_files(folder).items()}


def _without_file_fields(value: Any) -> Any:
    """A report with its `file` fields (the manifest's path, which differs in and out) removed."""
    if isinstance(value, dict):
        return {key: _without_file_fields(item) for key, item in value.items() if key != "file"}
    if isinstance(value, list):
        return [_without_file_fields(item) for item in value]
    return value


def test_container_output_equals_the_package_output(conversion: Conversion) -> None:
    inside, outside = _file_digests(conversion.inside), _file_digests(conversion.outside)
    assert sorted(inside) == sorted(outside)
    # dataset_info.yaml, the report and the page (its skipped table) name the export where it was read
    named_paths = (DATASET_INFO, REPORT, STATS_PAGE)
    shards_inside = {name: digest for name, digest in inside.items() if name not in named_paths}
    shards_outside = {name: digest for name, digest in outside.items() if name not in named_paths}
    assert shards_inside, "the conversion wrote no shard or file"
    assert shards_inside == shards_outside
    page_inside = (conversion.inside / STATS_PAGE).read_text(encoding="utf-8")
    page_outside = (conversion.outside / STATS_PAGE).read_text(encoding="utf-8")
    assert page_inside == page_outside.replace(str(conversion.export.folder), "/data_in")

    info_inside = yaml.safe_load((conversion.inside / DATASET_INFO).read_text(encoding="utf-8"))
    info_outside = yaml.safe_load((conversion.outside / DATASET_INFO).read_text(encoding="utf-8"))
    for key in ("annotations", "images", "masks"):  # the same files, seen from inside and outside the container
        if key not in info_inside["input"]:
            continue
        path_inside, path_outside = info_inside["input"].pop(key), info_outside["input"].pop(key)
        assert Path(path_inside).relative_to("/data_in") == Path(path_outside).relative_to(conversion.export.folder)
        if key == "annotations":
            assert Path(path_inside) == Path("/data_in") / conversion.export.annotation_file
    assert info_inside == info_outside
    assert info_inside["input"]["converted"] == conversion.export.samples

    report_inside = json.loads((conversion.inside / REPORT).read_text(encoding="utf-8"))
    report_outside = json.loads((conversion.outside / REPORT).read_text(encoding="utf-8"))
    assert _without_file_fields(report_inside) == _without_file_fields(report_outside)
    assert report_inside["summary"]["status"] == "ok"


def test_verify_in_the_container_accepts_its_output(conversion: Conversion, image: str) -> None:
    """Run as the image's own non-root user, on a read-only mount: reading needs no write access.

    The image has no TensorFlow: `verify` parses every record with the converter's own decoder,
    and says nothing on stderr.
    """
    result = _succeeded(
        _run_container(
            image, ["verify", "/data_out"], data_out=conversion.inside, read_only_output=True, as_caller=False
        )
    )
    assert f"OK: {conversion.export.samples} records" in result.stdout
    assert not result.stderr


def test_container_without_arguments_converts_the_mounted_export(
    image: str, shared_samples: Path, tmp_path: Path
) -> None:
    """The headline use: `docker run --rm --network none -v export:/data_in:ro -v out:/data_out image`."""
    export = shared_samples / "sagemaker_gt" / "cat_bbox"
    result = _succeeded(_run_container(image, [], data_in=export, data_out=tmp_path))

    info = yaml.safe_load((tmp_path / DATASET_INFO).read_text(encoding="utf-8"))
    assert info["input"]["annotations"] == "/data_in/output.manifest"
    assert info["input"]["converted"] == 4
    assert info["split"] == {"train": 0.8, "validation": 0.2}
    assert json.loads((tmp_path / REPORT).read_text(encoding="utf-8"))["summary"]["status"] == "ok"
    events = [json.loads(line)["event"] for line in result.stderr.splitlines()]  # JSON lines, nothing else
    # Ground Truth's confidences are not in TFRecords: said (a "lossy" event) before the run starts
    assert events[:4] == ["reading", "plan", "lossy", "started"] and events[-1] == "finished"
    owners = {path.stat().st_uid for path in tmp_path.rglob("*")}
    assert owners == {os.getuid()}, "--user should make the output the caller's"


def test_image_runs_as_a_numeric_non_root_user(image: str) -> None:
    """Numeric, so Kubernetes' runAsNonRoot can check it without reading the image's /etc/passwd."""
    user = _succeeded(_docker("image", "inspect", "--format", "{{.Config.User}}", image)).stdout.strip()
    uid = user.split(":")[0]
    assert uid.isdigit() and uid != "0", f"the image's USER is {user!r}"


# --- the two variants --------------------------------------------------------------------------


def _image_environment(image: str) -> dict[str, str]:
    listed = json.loads(_succeeded(_docker("image", "inspect", "--format", "{{json .Config.Env}}", image)).stdout)
    return dict(entry.split("=", 1) for entry in listed)


def test_the_small_image_fits_in_500_mb(image: str) -> None:
    size = int(_succeeded(_docker("image", "inspect", "--format", "{{.Size}}", image)).stdout)
    assert size <= SMALL_IMAGE_MAX_BYTES, f"the default image is {size / 1e6:.0f} MB"


@pytest.mark.parametrize(("variant", "tensorflow"), [("small", False), ("full", True)])
def test_each_variant_says_what_it_is_and_has_tensorflow_or_not(
    variant: str, tensorflow: bool, image: str, request: pytest.FixtureRequest
) -> None:
    under_test = image if variant == "small" else request.getfixturevalue("full_image")
    environment = _image_environment(under_test)
    assert environment["DATASET_CONVERTER_IMAGE_VARIANT"] == variant
    # The contract of both: the CLI reads these to know it runs inside the image.
    assert environment["DATASET_CONVERTER_ANNOTATIONS"] == "/data_in"
    assert environment["DATASET_CONVERTER_OUTPUT"] == "/data_out"
    found = _docker(
        "run", "--rm", "--network", "none", "--entrypoint", "python", under_test,
        "-c", "import importlib.util; print(importlib.util.find_spec('tensorflow') is not None)",
    )  # fmt: skip
    assert _succeeded(found).stdout.strip() == str(tensorflow)


PARSER_NAMES = {"builtin": "the built-in Example parser", "tensorflow": "TensorFlow"}  # as verify names them


@pytest.fixture(scope="module")
def converted_in_process(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A TFRecord dataset written by the installed package, several shards per split."""
    export = detection_export(tmp_path_factory.mktemp("export"), 12)
    export.write()
    output = tmp_path_factory.mktemp("converted") / "out"
    result = convert("-a", export.manifest, "-i", export.images, "-o", output, "-s", "0.5", "-p", "0.01")
    assert result.exit_code == 0, result.stderr
    return output


def _with_a_damaged_example(dataset: Path, copy: Path) -> Path:
    """A copy of `dataset` whose first record's Example is cut short, framed with sound CRCs and listed in
    dataset_info.yaml with its new size and sha256: only parsing the record can find the damage."""
    shutil.copytree(dataset, copy, ignore=shutil.ignore_patterns(STATE_FOLDER))  # links followed: plain folders
    info = yaml.safe_load((copy / DATASET_INFO).read_text(encoding="utf-8"))
    listed = info["train"]["shards"][0]
    shard = copy / listed["file"]
    with shard.open("rb") as stream:
        payloads = list(read_records(stream))
    payloads[0] = payloads[0][:-5]
    shard.write_bytes(b"".join(frame_record(payload) for payload in payloads))
    listed["bytes"] = shard.stat().st_size
    listed["sha256"] = hashlib.sha256(shard.read_bytes()).hexdigest()
    (copy / DATASET_INFO).write_text(yaml.safe_dump(info, sort_keys=False), encoding="utf-8")
    return copy


@pytest.mark.parametrize(("variant", "parser"), [("small", "builtin"), ("full", "tensorflow")])
def test_verify_in_each_variant_parses_every_record_and_refuses_a_damaged_one(
    variant: str, parser: str, image: str, converted_in_process: Path, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    under_test = image if variant == "small" else request.getfixturevalue("full_image")
    info = yaml.safe_load((converted_in_process / DATASET_INFO).read_text(encoding="utf-8"))
    records = info["train"]["samples"] + info["validation"]["samples"]

    good = _succeeded(_run_container(under_test, ["verify", "/data_out"], data_out=converted_in_process))
    assert f"OK: {records} records" in good.stdout
    assert f"every record parsed by {PARSER_NAMES[parser]}" in good.stdout
    assert not good.stderr, "TensorFlow's start-up notices should be silenced (TF_ENABLE_ONEDNN_OPTS=0)"

    damaged = _with_a_damaged_example(converted_in_process, tmp_path / "damaged")
    shard = Path(info["train"]["shards"][0]["file"]).name
    refused = _run_container(under_test, ["verify", "/data_out"], data_out=damaged, read_only_output=True)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert f"{shard} record 0: not a tf.train.Example" in refused.stderr

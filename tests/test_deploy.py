"""The deploy examples work, as far as that can be shown without a cluster or an AWS account.

deploy/k8s/ (an Indexed Job of workers, then a finalize Job) and scripts/sagemaker_processing.py
(a Processing job on N instances, then one finalizing) are checked in layers:

- Always: every manifest parses and is consistent with the converter's scale-out contract
  (Indexed mode, DATASET_CONVERTER_NUM_WORKERS == completions, --workers == the CPU request, the
  paths in the arguments lie on the mounts, finalize works on the workers' -o, the image's uid),
  and the script's job definitions say what the contract needs.
- In the deploy tools' own venv (`.deploy-venv/`, created on first use, about two minutes):
  the manifests are validated strictly against Kubernetes' OpenAPI schemas (kubernetes-validate,
  for 1.29, the oldest version with backoffLimitPerIndex, and the newest it knows), and the script's
  --dry-run is run with the real SageMaker SDK, which builds both CreateProcessingJob requests for
  botocore to validate against the API model, with no credentials and no network. Without that
  venv these tests skip, saying why, unless DATASET_CONVERTER_REQUIRE_DEPLOY_TOOLS=1.
- With Docker (marker `container`, gated like tests/test_container.py, whose fixtures build the
  image): the Indexed Job is replayed with `docker run`, one container per index with exactly the
  YAML's arguments, environment, user, read-only root, tmpfs and mounts, plus JOB_COMPLETION_INDEX
  (which Kubernetes injects), then the finalize Job from its YAML; a retried index and a finalize
  applied too early are replayed too. The SageMaker jobs are replayed the same way: one container
  per host with its own /opt/ml/config/resourceconfig.json, the manifest copied in as SageMaker
  copies a FullyReplicated input, each host's output folder uploaded to one prefix afterwards.
  Each result is read back with TensorFlow and compared with a single-process conversion.

Why not SageMaker's own local mode (`instance_type="local"`): tried with SDK 2.257.7, it cannot
run this. Its Processor uploads every non-S3 input to S3 and downloads S3 inputs, so it needs
AWS; and with instance_count > 1 it runs `docker-compose up --abort-on-container-exit`, which
stops the other hosts' containers as soon as the first one exits (with exit code 0 too), and still
reports the job complete: the slower workers' parts would be cut short. So S3 is stood in for by a
folder, mounted at /s3 with `s3://` in the arguments replaced by `/s3/`; the converter's own S3
access is tested elsewhere (tests/test_remote_storage.py).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

import pytest
import yaml
from builders import BUCKET, convert, dataset_files, detection_export, load_info, load_report, verify
from readback import Record, read_all
from test_container import _docker, _succeeded, docker_engine, image

__all__ = ["docker_engine", "image"]  # the image fixtures of tests/test_container.py, used here too

PROJECT_ROOT = Path(__file__).resolve().parent.parent
K8S = PROJECT_ROOT / "deploy" / "k8s"
WORKER_JOB = K8S / "worker-job.yaml"
FINALIZE_JOB = K8S / "finalize-job.yaml"
S3_WORKER_JOB = K8S / "s3" / "worker-job.yaml"
S3_FINALIZE_JOB = K8S / "s3" / "finalize-job.yaml"
PVC = K8S / "pvc.yaml"
KUSTOMIZATION = K8S / "kustomization.yaml"
MANIFESTS = (WORKER_JOB, FINALIZE_JOB, S3_WORKER_JOB, S3_FINALIZE_JOB, PVC)
SAGEMAKER_SCRIPT = PROJECT_ROOT / "scripts" / "sagemaker_processing.py"
SAGEMAKER_REQUIREMENTS = PROJECT_ROOT / "scripts" / "requirements-sagemaker.txt"

NUM_WORKERS_VARIABLE = "DATASET_CONVERTER_NUM_WORKERS"
SCALE_OUT_VARIABLES = (NUM_WORKERS_VARIABLE, "DATASET_CONVERTER_WORKER_INDEX", "JOB_COMPLETION_INDEX")
# Options that say where to read and write, or how many processes: everything else shapes the dataset.
PLACE_OPTIONS = {"-a": 1, "--annotations": 1, "-i": 1, "--images": 1, "-o": 1, "--output": 1, "--workers": 1}
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
SHARD_NAME = re.compile(r"^(train|val|test)-\d{5}-of-\d{5}\.tfrecord$")

DEPLOY_VENV = PROJECT_ROOT / ".deploy-venv"
KUBERNETES_VALIDATE_REQUIREMENT = "kubernetes-validate>=1.29,<2"  # 1.37.0 was tested
KUBERNETES_VERSIONS = ("1.29.0", None)  # None: the newest schemas kubernetes-validate bundles
INSTALL_TIMEOUT_S = 1200
SAGEMAKER_INSTANCES = 2
S3_MOUNT = "/s3"  # where the folder standing in for S3 is mounted in the simulated SageMaker containers


# ---------------------------------------------------------------------------
# Reading the manifests


def _documents(path: Path) -> list[dict[str, Any]]:
    return [document for document in yaml.safe_load_all(path.read_text(encoding="utf-8")) if document]


def _job(path: Path) -> dict[str, Any]:
    (job,) = _documents(path)
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job"), path
    return job


def _pod(job: Mapping[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = job["spec"]["template"]["spec"]
    return pod


def _container(job: Mapping[str, Any]) -> dict[str, Any]:
    (container,) = _pod(job)["containers"]
    return container


def _env(container: Mapping[str, Any]) -> dict[str, str]:
    return {entry["name"]: entry["value"] for entry in container.get("env", []) if "value" in entry}


def _option(arguments: Sequence[str], *names: str) -> str | None:
    """The value of the last of `names` in `arguments`, written `-o value` or `--output=value`."""
    found = None
    for position, argument in enumerate(arguments):
        if argument in names:
            found = arguments[position + 1]
        elif "=" in argument and argument.split("=", 1)[0] in names:
            found = argument.split("=", 1)[1]
    return found


def _dataset_options(arguments: Sequence[str]) -> list[str]:
    """The convert arguments less the command word and the place and process options: what shapes the dataset."""
    kept: list[str] = []
    skip = 0
    for argument in arguments[1:]:
        if skip:
            skip -= 1
        elif argument in PLACE_OPTIONS:
            skip = PLACE_OPTIONS[argument]
        elif argument.split("=", 1)[0] not in PLACE_OPTIONS:
            kept.append(argument)
    return kept


def _mounts(job: Mapping[str, Any]) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """Mount path -> (the volumeMount, its volume)."""
    volumes = {volume["name"]: volume for volume in _pod(job).get("volumes", [])}
    return {mount["mountPath"]: (mount, volumes[mount["name"]]) for mount in _container(job).get("volumeMounts", [])}


def _mount_of(job: Mapping[str, Any], path: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """The mount `path` lies on: (its mount path, the volumeMount, the volume); fails if none."""
    for mount_path, (mount, volume) in sorted(_mounts(job).items(), key=lambda item: -len(item[0])):
        if path == mount_path or path.startswith(mount_path.rstrip("/") + "/"):
            return mount_path, mount, volume
    raise AssertionError(f"{path} lies on no volume mount of job/{job['metadata']['name']}")


def _read_only(mount: Mapping[str, Any], volume: Mapping[str, Any]) -> bool:
    return bool(mount.get("readOnly")) or bool(volume.get("persistentVolumeClaim", {}).get("readOnly"))


def _image_user() -> tuple[int, int]:
    """The Dockerfile's last USER, as numbers: the uid and gid the manifests must run as."""
    users = re.findall(r"^USER\s+(\d+):(\d+)\s*$", (PROJECT_ROOT / "Dockerfile").read_text(), flags=re.MULTILINE)
    assert users, "the Dockerfile's USER should be numeric uid:gid"
    uid, gid = users[-1]
    return int(uid), int(gid)


# ---------------------------------------------------------------------------
# Static checks: always run


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda path: path.relative_to(K8S).as_posix())
def test_every_manifest_has_the_fields_kubernetes_requires(path: Path) -> None:
    """What the API server would refuse (or what a typo would silently turn off) for Jobs and claims."""
    for document in _documents(path):
        assert {"apiVersion", "kind", "metadata", "spec"} <= document.keys()
        assert DNS_LABEL.match(document["metadata"]["name"]) and len(document["metadata"]["name"]) <= 63
        if document["kind"] == "PersistentVolumeClaim":
            assert document["spec"]["accessModes"] and document["spec"]["resources"]["requests"]["storage"]
            continue
        spec, pod = document["spec"], _pod(document)
        assert pod["restartPolicy"] in ("Never", "OnFailure"), "a Job's Pods may not restart Always"
        if "backoffLimitPerIndex" in spec or "podFailurePolicy" in spec:
            assert pod["restartPolicy"] == "Never"
        if "backoffLimitPerIndex" in spec:
            assert spec["completionMode"] == "Indexed"
        container_names = {container["name"] for container in pod["containers"]}
        for rule in spec.get("podFailurePolicy", {}).get("rules", []):
            assert rule["action"] in ("FailJob", "FailIndex", "Ignore", "Count")
            if rule["action"] == "FailIndex":
                assert "backoffLimitPerIndex" in spec
            if "onExitCodes" in rule:
                assert rule["onExitCodes"]["containerName"] in container_names
            for condition in rule.get("onPodConditions", []):
                assert condition["status"] in ("True", "False", "Unknown")  # required before 1.31
        volume_names = {volume["name"] for volume in pod.get("volumes", [])}
        for container in pod["containers"]:
            assert container["image"]
            assert all(isinstance(entry.get("value", ""), str) for entry in container.get("env", [])), (
                "env values must be strings (quote numbers)"
            )
            assert all(isinstance(argument, str) for argument in container.get("args", [])), "quote numeric args"
            mount_paths = [mount["mountPath"] for mount in container.get("volumeMounts", [])]
            assert len(mount_paths) == len(set(mount_paths))
            assert {mount["name"] for mount in container.get("volumeMounts", [])} <= volume_names


@pytest.mark.parametrize(
    ("worker_path", "finalize_path"), [(WORKER_JOB, FINALIZE_JOB), (S3_WORKER_JOB, S3_FINALIZE_JOB)], ids=["pvc", "s3"]
)
def test_the_worker_job_follows_the_scale_out_contract(worker_path: Path, finalize_path: Path) -> None:
    worker, finalize = _job(worker_path), _job(finalize_path)
    spec, container = worker["spec"], _container(worker)
    arguments = container["args"]
    assert spec["completionMode"] == "Indexed", "JOB_COMPLETION_INDEX (the worker index) exists only in Indexed Jobs"
    assert 1 <= spec["parallelism"] <= spec["completions"]
    # Kubernetes injects the index but not the count: the count must be the completion count.
    assert int(_env(container)[NUM_WORKERS_VARIABLE]) == spec["completions"]
    assert arguments[0] == "convert"
    assert _option(arguments, "--num-workers") is None and _option(arguments, "--worker-index") is None, (
        "the same arguments go to every index: the index must come from JOB_COMPLETION_INDEX"
    )
    assert _option(arguments, "-f", "--format") in (None, "tfrecord"), "only tfrecord scales out"
    workers = _option(arguments, "--workers")
    assert workers is not None and int(workers) == int(container["resources"]["requests"]["cpu"]), (
        "--workers processes should match the CPU request"
    )
    # finalize merges what the workers wrote, where they wrote it, with the same image.
    assert _container(finalize)["args"] == ["finalize", _option(arguments, "-o", "--output")]
    assert _container(finalize)["image"] == container["image"]
    assert finalize["spec"].get("completions", 1) == 1 and finalize["spec"].get("completionMode") != "Indexed"


@pytest.mark.parametrize("path", [WORKER_JOB, FINALIZE_JOB, S3_WORKER_JOB, S3_FINALIZE_JOB], ids=lambda p: p.name)
def test_pods_run_as_the_images_non_root_user_with_nothing_to_spare(path: Path) -> None:
    job = _job(path)
    pod_security, container = _pod(job)["securityContext"], _container(job)
    assert pod_security["runAsNonRoot"] is True
    assert (pod_security["runAsUser"], pod_security["runAsGroup"]) == _image_user()
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"]["drop"] == ["ALL"]
    assert "/tmp" in _mounts(job), "a read-only root filesystem needs a writable /tmp"
    assert container["resources"]["limits"]["memory"]


def test_pvc_jobs_read_the_input_read_only_and_share_the_output_claim() -> None:
    worker, finalize = _job(WORKER_JOB), _job(FINALIZE_JOB)
    arguments = _container(worker)["args"]
    annotations, images, output = (
        _option(arguments, "-a", "--annotations"),
        _option(arguments, "-i", "--images"),
        _option(arguments, "-o", "--output"),
    )
    assert annotations and images and output
    input_path, input_mount, input_volume = _mount_of(worker, annotations)
    assert _mount_of(worker, images)[0] == input_path
    assert _read_only(input_mount, input_volume), "the export should be mounted read-only"
    output_path, output_mount, output_volume = _mount_of(worker, output)
    assert output_path == output and not _read_only(output_mount, output_volume)
    final_path, final_mount, final_volume = _mount_of(finalize, output)
    assert final_path == output_path and not _read_only(final_mount, final_volume)
    claim = output_volume["persistentVolumeClaim"]["claimName"]
    assert final_volume["persistentVolumeClaim"]["claimName"] == claim
    assert _pod(worker)["securityContext"]["fsGroup"] == _image_user()[1], "the output volume must be writable"

    claims = {document["metadata"]["name"]: document for document in _documents(PVC)}
    assert claims.keys() == {input_volume["persistentVolumeClaim"]["claimName"], claim}
    assert "ReadWriteMany" in claims[claim]["spec"]["accessModes"], "workers on several nodes write at once"


def test_s3_jobs_use_no_volume_but_tmp_and_take_credentials_from_the_environment() -> None:
    worker, finalize = _job(S3_WORKER_JOB), _job(S3_FINALIZE_JOB)
    arguments = _container(worker)["args"]
    for names in (("-a", "--annotations"), ("-i", "--images"), ("-o", "--output")):
        assert (_option(arguments, *names) or "").startswith("s3://")
    for job in (worker, finalize):
        assert [volume.get("emptyDir") for volume in _pod(job)["volumes"]] == [{}]
        (source,) = _container(job)["envFrom"]
        assert source["secretRef"]["optional"] is True, "IRSA users have no Secret"


def test_the_kustomization_names_the_jobs_and_their_image() -> None:
    (kustomization,) = _documents(KUSTOMIZATION)
    assert [K8S / resource for resource in kustomization["resources"]] == [WORKER_JOB, FINALIZE_JOB]
    images = {entry["name"] for entry in kustomization["images"]}
    for path in (WORKER_JOB, FINALIZE_JOB):
        assert _container(_job(path))["image"].split(":")[0] in images


def test_the_readme_documents_both_ways() -> None:
    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    for text in (
        "kubectl apply -f deploy/k8s/worker-job.yaml",
        "kubectl wait --for=condition=complete",
        "kubectl apply -f deploy/k8s/finalize-job.yaml",
        "scripts/sagemaker_processing.py",
    ):
        assert text in readme
    assert (K8S / "README.md").is_file()


# ---------------------------------------------------------------------------
# The SageMaker script's own definitions: no SDK needed


def _sagemaker_script() -> ModuleType:
    """scripts/sagemaker_processing.py as a module (scripts/ is no package); it imports the SDK only when run."""
    spec = importlib.util.spec_from_file_location("sagemaker_processing", SAGEMAKER_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module


SCRIPT_ARGUMENTS = (
    "--image-uri", "123456789012.dkr.ecr.us-east-1.amazonaws.com/dataset-converter:0.1.0",
    "--role", "arn:aws:iam::123456789012:role/SageMakerProcessingRole",
    "--manifest", "s3://my-bucket/exports/run-1/output.manifest",
    "--images", "s3://my-bucket/exports/run-1/images/",
    "--output", "s3://my-bucket/datasets/run-1",
)  # fmt: skip
SCRIPT_CONVERT_OPTIONS = ("-s", "0.8,0.1,0.1", "--seed", "7")


def _definitions(module: ModuleType, *extra: str) -> dict[str, Any]:
    own, convert_options = module._split_argv([*SCRIPT_ARGUMENTS, *extra, "--", *SCRIPT_CONVERT_OPTIONS])
    definitions: dict[str, Any] = module.job_definitions(module._parser().parse_args(own), convert_options)
    return definitions


@pytest.mark.parametrize("output_mode", ["s3", "processing-output"])
def test_sagemaker_job_definitions_follow_the_scale_out_contract(output_mode: str) -> None:
    module = _sagemaker_script()
    jobs = _definitions(module, "--output-mode", output_mode)
    convert_job, finalize_job = jobs["convert"], jobs["finalize"]
    assert convert_job.instance_count == 4 and finalize_job.instance_count == 1
    arguments = list(convert_job.arguments)
    assert arguments[0] == "convert" and convert_job.entrypoint == ("dataset-converter",)
    assert _option(arguments, "--num-workers") is None and _option(arguments, "--worker-index") is None, (
        "every instance gets the same arguments: N and I come from /opt/ml/config/resourceconfig.json"
    )
    assert not set(SCALE_OUT_VARIABLES) & convert_job.environment.keys()
    assert _option(arguments, "-f", "--format") == "tfrecord"
    assert arguments[-len(SCRIPT_CONVERT_OPTIONS) :] == list(SCRIPT_CONVERT_OPTIONS)
    # The manifest is copied to every instance; the images are read from S3 by each for its own slice.
    (manifest,) = convert_job.inputs
    assert manifest.s3_uri == "s3://my-bucket/exports/run-1/output.manifest"
    assert _option(arguments, "-a") == f"{manifest.local_path}/output.manifest"
    assert manifest.local_path.startswith("/opt/ml/processing/")
    assert _option(arguments, "-i") == "s3://my-bucket/exports/run-1/images"
    if output_mode == "s3":
        assert _option(arguments, "-o") == "s3://my-bucket/datasets/run-1" and not convert_job.outputs
    else:
        (output,) = convert_job.outputs
        assert _option(arguments, "-o") == output.local_path and output.local_path.startswith("/opt/ml/processing/")
        assert output.s3_uri == "s3://my-bucket/datasets/run-1"
    assert finalize_job.arguments == ("finalize", "s3://my-bucket/datasets/run-1")
    assert not finalize_job.inputs and not finalize_job.outputs


@pytest.mark.parametrize(
    ("extra", "convert_options", "message"),
    [
        ((), ("-o", "/elsewhere"), "-o is set by this script"),
        ((), ("--num-workers=3",), "--num-workers is set by this script"),
        (("--manifest", "/local/output.manifest"), (), "--manifest must be an s3://"),
        (("--output", "s3://"), (), "--output must be an s3://"),
        (("--manifest", "s3://my-bucket/"), (), "--manifest must name the manifest object"),
        (("--instance-count", "0"), (), "--instance-count must be at least 1"),
    ],
)
def test_sagemaker_script_refuses_what_would_break_the_layout(
    extra: tuple[str, ...], convert_options: tuple[str, ...], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Usage errors exit 2 before anything is imported from the SDK or sent to AWS."""
    module = _sagemaker_script()
    with pytest.raises(SystemExit) as exited:
        module.main([*SCRIPT_ARGUMENTS, *extra, "--dry-run", "--", *convert_options])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


# ---------------------------------------------------------------------------
# The deploy tools' venv: kubernetes-validate and the SageMaker SDK


def _tools_unavailable(reason: str) -> NoReturn:
    """Skip for a developer who cannot install the tools; fail where DATASET_CONVERTER_REQUIRE_DEPLOY_TOOLS is set."""
    if os.environ.get("DATASET_CONVERTER_REQUIRE_DEPLOY_TOOLS", "") not in ("", "0", "false", "no"):
        pytest.fail(f"{reason}, and DATASET_CONVERTER_REQUIRE_DEPLOY_TOOLS is set", pytrace=False)
    pytest.skip(f"{reason} (DATASET_CONVERTER_REQUIRE_DEPLOY_TOOLS=1 makes this a failure)")


@pytest.fixture(scope="session")
def deploy_tools() -> Path:
    """The bin/ of `.deploy-venv/`: the SageMaker SDK (scripts/requirements-sagemaker.txt), kubernetes-validate.

    A venv of their own because neither is the converter's dependency, and the SDK pins versions
    (protobuf among them) that the project's TensorFlow need not agree with.
    """
    wanted = SAGEMAKER_REQUIREMENTS.read_text(encoding="utf-8") + KUBERNETES_VALIDATE_REQUIREMENT + "\n"
    marker, bin_folder = DEPLOY_VENV / "installed-requirements.txt", DEPLOY_VENV / "bin"
    if marker.exists() and marker.read_text(encoding="utf-8") == wanted:
        return bin_folder
    shutil.rmtree(DEPLOY_VENV, ignore_errors=True)  # partial or outdated
    try:
        subprocess.run([sys.executable, "-m", "venv", str(DEPLOY_VENV)], check=True, capture_output=True, timeout=120)
        pip = [str(bin_folder / "pip"), "install", "--quiet", "-r", str(SAGEMAKER_REQUIREMENTS)]
        install = subprocess.run(
            [*pip, KUBERNETES_VALIDATE_REQUIREMENT],
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as error:
        _tools_unavailable(f"cannot create {DEPLOY_VENV}: {error}")
    if install.returncode != 0:
        _tools_unavailable(f"cannot install the deploy tools into {DEPLOY_VENV}: {install.stderr[-3000:]}")
    marker.write_text(wanted, encoding="utf-8")
    return bin_folder


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS, ids=lambda version: version or "newest")
@pytest.mark.parametrize("path", MANIFESTS, ids=lambda path: path.relative_to(K8S).as_posix())
def test_manifests_validate_strictly_against_the_kubernetes_schema(
    deploy_tools: Path, path: Path, version: str | None
) -> None:
    """--strict refuses unknown fields too: a misspelt field would otherwise be dropped without a word."""
    command = [str(deploy_tools / "kubernetes-validate"), "--strict", "--no-warn", str(path)]
    if version:
        command[1:1] = ["-k", version]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "passed" in result.stdout


def _offline_environment(home: Path) -> dict[str, str]:
    """The environment less every AWS credential and configuration, so nothing could sign a request."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    missing = str(home / "absent")
    environment.update(HOME=str(home), AWS_CONFIG_FILE=missing, AWS_SHARED_CREDENTIALS_FILE=missing)
    environment.pop("SAGEMAKER_USER_CONFIG_OVERRIDE", None)
    return environment


def _without_network(command: list[str]) -> list[str]:
    """`command` in a network namespace of its own (loopback only) where `unshare` allows it, else as is."""
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "-n", "true"], capture_output=True, check=False).returncode == 0:
        return [unshare, "-n", *command]
    return command


@pytest.mark.parametrize("output_mode", ["s3", "processing-output"])
def test_sagemaker_dry_run_builds_valid_requests_with_the_sdk(
    deploy_tools: Path, output_mode: str, tmp_path: Path
) -> None:
    """The SDK's own Processor builds both requests; botocore validates them; nothing is sent."""
    script = [str(deploy_tools / "python"), str(SAGEMAKER_SCRIPT), *SCRIPT_ARGUMENTS, "--output-mode", output_mode]
    result = subprocess.run(
        _without_network([*script, "--dry-run", "--", *SCRIPT_CONVERT_OPTIONS]),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=_offline_environment(tmp_path),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    requests = json.loads(result.stdout)
    jobs = _definitions(_sagemaker_script(), "--output-mode", output_mode)
    assert requests.keys() == jobs.keys()
    for step, request in requests.items():
        job = jobs[step]
        application = request["AppSpecification"]
        assert application["ImageUri"] == SCRIPT_ARGUMENTS[1]
        assert application["ContainerEntrypoint"] == list(job.entrypoint)
        assert application["ContainerArguments"] == list(job.arguments)
        assert request["RoleArn"] == SCRIPT_ARGUMENTS[3]
        assert request["ProcessingResources"]["ClusterConfig"]["InstanceCount"] == job.instance_count
        assert request["ProcessingJobName"].startswith(job.base_job_name)
        assert request.get("Environment", {}) == job.environment
        inputs = [
            (item["InputName"], item["S3Input"]["S3Uri"], item["S3Input"]["LocalPath"])
            for item in request.get("ProcessingInputs", [])
        ]
        assert inputs == [(channel.name, channel.s3_uri, channel.local_path) for channel in job.inputs]
        assert {item["S3Input"]["S3DataDistributionType"] for item in request.get("ProcessingInputs", [])} <= {
            "FullyReplicated"
        }
        outputs = [
            (item["OutputName"], item["S3Output"]["LocalPath"], item["S3Output"]["S3Uri"])
            for item in request.get("ProcessingOutputConfig", {}).get("Outputs", [])
        ]
        assert outputs == [(channel.name, channel.local_path, channel.s3_uri) for channel in job.outputs]
    assert requests["convert"]["ProcessingResources"]["ClusterConfig"]["InstanceCount"] == 4


# ---------------------------------------------------------------------------
# Replaying the jobs with Docker


def _file_digests(folder: Path) -> dict[str, str]:
    """What a user sees in `folder`, by relative path, with its sha256 (the converter's lock and state left out)."""
    return {name: hashlib.sha256(data).hexdigest() for name, data in dataset_files(folder).items()}


def _records_by_split(output: Path) -> dict[str, dict[str, Record]]:
    """Every record, by split and then by `image/source_key`."""
    return {
        split: {record["image/source_key"][0].decode(): record for record in records}
        for split, records in read_all(output).items()
    }


def _boxes(record: Record) -> list[tuple[float, ...]]:
    keys = ("xmin", "ymin", "xmax", "ymax")
    columns = [record[f"image/object/bbox/{key}"] for key in keys] + [record["image/object/class/label"]]
    return sorted(zip(*columns, strict=True))


def _assert_same_dataset(merged: Path, single: Path) -> None:
    """The merged scale-out dataset holds what one process wrote: per split, the same samples and boxes."""
    assert not (merged / "parts").exists(), "finalize should remove parts/"
    merged_records, single_records = _records_by_split(merged), _records_by_split(single)
    assert merged_records.keys() == single_records.keys()
    for split, records in merged_records.items():
        assert records.keys() == single_records[split].keys(), f"{split}: different samples"
        for source_id, record in records.items():
            assert _boxes(record) == _boxes(single_records[split][source_id]), source_id
            assert record == single_records[split][source_id], source_id
    merged_info, single_info = load_info(merged), load_info(single)
    assert merged_info["classes"] == single_info["classes"]
    for split in merged_records:
        assert merged_info[split]["samples"] == single_info[split]["samples"]
        for shard in merged_info[split]["shards"]:
            assert SHARD_NAME.match(Path(shard["file"]).name), shard["file"]
    merged_summary, single_summary = load_report(merged)["summary"], load_report(single)["summary"]
    for key in ("status", "input_samples", "converted", "skipped", "converted_by_split"):
        assert merged_summary[key] == single_summary[key], key
    result = verify(merged)
    assert result.exit_code == 0, result.output


def _single_process(
    manifest: Path, images: Path, output: Path, options: Sequence[str], monkeypatch: pytest.MonkeyPatch
) -> Path:
    """The reference: the same dataset options, one machine, one process, in this interpreter."""
    for variable in (*SCALE_OUT_VARIABLES, "DATASET_CONVERTER_RESOURCE_CONFIG"):
        monkeypatch.delenv(variable, raising=False)
    result = convert("-a", manifest, "-i", images, "-o", output, *options, "--workers", "1")
    assert result.exit_code == 0, result.output
    return output


def _as_root(image: str, folder: Path, script: str) -> None:
    """Run `sh -c script` as root in a container with `folder` at /work: for files the test cannot touch itself."""
    command = [
        "run", "--rm", "--network", "none", "--user", "0:0", "--entrypoint", "sh",
        "--mount", f"type=bind,source={folder},target=/work", image, "-c", script,
    ]  # fmt: skip
    _succeeded(_docker(*command))


@pytest.fixture
def shared_folder(image: str, tmp_path: Path) -> Iterator[Path]:
    """A folder containers of other users write into; made removable again for a non-root test run."""
    folder = tmp_path / "shared"
    folder.mkdir()
    yield folder
    if os.getuid() != 0:
        _as_root(image, folder, "chmod -R a+rwX /work")


def _pod_docker_arguments(
    job: Mapping[str, Any], image: str, claims: Mapping[str, Path], extra_env: Mapping[str, str]
) -> list[str]:
    """`docker run` arguments that run `job`'s Pod as the kubelet would, from the YAML alone.

    User, group and fsGroup; read-only root filesystem, no privilege escalation, no capabilities;
    emptyDir as tmpfs, claims as bind mounts of the test folders standing in for their volumes
    (read-only where the mount or the claim says so); the env, the command and the args. The
    YAML's image name is replaced by the image under test. No network: nothing is fetched.
    """
    pod, container = _pod(job), _container(job)
    security, container_security = pod.get("securityContext", {}), container.get("securityContext", {})
    command = ["run", "--rm", "--network", "none"]
    if "runAsUser" in security:
        command += ["--user", f"{security['runAsUser']}:{security.get('runAsGroup', 0)}"]
    if "fsGroup" in security:
        command += ["--group-add", str(security["fsGroup"])]
    if container_security.get("readOnlyRootFilesystem"):
        command.append("--read-only")
    if container_security.get("allowPrivilegeEscalation") is False:
        command += ["--security-opt", "no-new-privileges"]
    for capability in container_security.get("capabilities", {}).get("drop", []):
        command += ["--cap-drop", capability]
    for mount_path, (mount, volume) in _mounts(job).items():
        if "emptyDir" in volume:
            command += ["--tmpfs", mount_path]
        else:
            source = claims[volume["persistentVolumeClaim"]["claimName"]]
            read_only = ",readonly" if _read_only(mount, volume) else ""
            command += ["--mount", f"type=bind,source={source},target={mount_path}{read_only}"]
    for name, value in {**_env(container), **extra_env}.items():
        command += ["--env", f"{name}={value}"]
    entrypoint = container.get("command", [])
    if entrypoint:
        command += ["--entrypoint", entrypoint[0]]
    return [*command, image, *entrypoint[1:], *container.get("args", [])]


def _writable_like_fs_group(folder: Path, group: int) -> None:
    """What the kubelet does to a volume for fsGroup: group-owned, group-writable, setgid; or open to all."""
    try:
        os.chown(folder, -1, group)
        folder.chmod(0o2775)
    except PermissionError:  # not root: let everyone write instead
        folder.chmod(0o777)


@pytest.mark.container
def test_indexed_job_replayed_with_docker_equals_one_process(
    image: str, shared_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker, finalize = _job(WORKER_JOB), _job(FINALIZE_JOB)
    worker_arguments = _container(worker)["args"]
    input_path = _mount_of(worker, _option(worker_arguments, "-a", "--annotations") or "")[0]
    output_path = _option(worker_arguments, "-o", "--output") or ""
    claims = {
        _mount_of(worker, input_path)[2]["persistentVolumeClaim"]["claimName"]: tmp_path / "input",
        _mount_of(worker, output_path)[2]["persistentVolumeClaim"]["claimName"]: shared_folder,
    }
    # The export, laid out where the YAML's -a and -i look on the input volume.
    export = detection_export(tmp_path / "export", 24)
    export.write()
    manifest = Path(_option(worker_arguments, "-a", "--annotations") or "").relative_to(input_path)
    images = Path(_option(worker_arguments, "-i", "--images") or "").relative_to(input_path)
    (tmp_path / "input" / manifest).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(export.manifest, tmp_path / "input" / manifest)
    shutil.copytree(export.images, tmp_path / "input" / images)
    _writable_like_fs_group(shared_folder, _pod(worker)["securityContext"]["fsGroup"])
    completions = worker["spec"]["completions"]

    def run_index(index: int) -> None:
        _succeeded(_docker(*_pod_docker_arguments(worker, image, claims, {"JOB_COMPLETION_INDEX": str(index)})))

    def part(index: int) -> str:
        return f"parts/worker-{index:05d}-of-{completions:05d}"

    for index in range(completions - 1):
        run_index(index)
    # finalize applied before the last index finished: refused, naming the missing part, nothing changed.
    before = _file_digests(shared_folder)
    early = _docker(*_pod_docker_arguments(finalize, image, claims, {}))
    assert early.returncode != 0
    assert part(completions - 1).split("/")[1] in early.stdout + early.stderr
    assert _file_digests(shared_folder) == before

    # A retried index: its first Pod was killed while writing (no part.yaml, a cut shard); the retry
    # rewrites the part exactly as an undisturbed run wrote it.
    written = _file_digests(shared_folder / part(1))
    shard = next(name for name in written if name.endswith(".tfrecord"))
    _as_root(image, shared_folder, f"rm /work/{part(1)}/part.yaml && truncate -s 7 /work/{part(1)}/{shard}")
    run_index(1)
    assert _file_digests(shared_folder / part(1)) == written

    run_index(completions - 1)
    _succeeded(_docker(*_pod_docker_arguments(finalize, image, claims, {})))
    reference = _single_process(
        export.manifest, export.images, tmp_path / "single", _dataset_options(worker_arguments), monkeypatch
    )
    _assert_same_dataset(shared_folder, reference)
    assert load_report(shared_folder)["summary"]["converted"] == 24


def _local_uri(argument: str) -> str:
    """An argument with its s3:// URI pointed at the folder standing in for S3."""
    return S3_MOUNT + "/" + argument.removeprefix("s3://") if argument.startswith("s3://") else argument


def _s3_path(s3_root: Path, uri: str) -> Path:
    return s3_root / uri.removeprefix("s3://")


def _processing_container(
    job: Any, image: str, *, host: int, instance: Path, s3_root: Path, as_root: bool
) -> list[str]:
    """`docker run` arguments for one host of a Processing job, set up as SageMaker sets up an instance.

    /opt/ml/config/resourceconfig.json names this host (`algo-<host>`) among the job's
    `algo-1` ... `algo-<instance_count>`, as SageMaker names them; each input is copied from
    "S3" into the instance (FullyReplicated: every host gets all of it; an S3Prefix object lands
    under its own name) and mounted at its LocalPath; each output LocalPath is an empty folder
    of the instance, created by root as SageMaker does.
    """
    hosts = [f"algo-{number}" for number in range(1, job.instance_count + 1)]
    config = instance / "config"
    config.mkdir(parents=True)
    (config / "resourceconfig.json").write_text(
        json.dumps({"current_host": hosts[host - 1], "hosts": hosts, "network_interface_name": "eth0"})
    )
    command = ["run", "--rm", "--network", "none", "--hostname", hosts[host - 1]]
    command += ["--mount", f"type=bind,source={config},target=/opt/ml/config,readonly"]
    for channel in job.inputs:
        copied = instance / "input" / channel.name
        prefix = _s3_path(s3_root, channel.s3_uri)
        copied.mkdir(parents=True)
        for source in sorted(prefix.parent.rglob("*")):
            if source.is_file() and source.as_posix().startswith(prefix.as_posix()):
                target = copied / source.relative_to(prefix.parent)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target)
        command += ["--mount", f"type=bind,source={copied},target={channel.local_path}"]
    for channel in job.outputs:
        folder = instance / "output" / channel.name
        folder.mkdir(parents=True)
        command += ["--mount", f"type=bind,source={folder},target={channel.local_path}"]
    command += ["--mount", f"type=bind,source={s3_root},target={S3_MOUNT}"]
    if as_root:
        command += ["--user", "0:0"]
    for name, value in job.environment.items():
        command += ["--env", f"{name}={value}"]
    command += ["--entrypoint", job.entrypoint[0], image, *job.entrypoint[1:]]
    return command + [_local_uri(argument) for argument in job.arguments]


def _upload_outputs(job: Any, instances: Sequence[Path], s3_root: Path) -> None:
    """What SageMaker does at the end of the job: every host's output folder into one S3 prefix.

    Files of the same name would overwrite each other there, so a name written by two hosts fails.
    """
    for channel in job.outputs:
        uploaded: dict[str, Path] = {}
        for instance in instances:
            folder = instance / "output" / channel.name
            for source in sorted(path for path in folder.rglob("*") if path.is_file()):
                name = source.relative_to(folder).as_posix()
                assert name not in uploaded, f"{name} is written by two hosts: {uploaded.get(name)} and {instance}"
                uploaded[name] = instance
                target = _s3_path(s3_root, channel.s3_uri) / name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target)
        assert uploaded, f"no host wrote anything to {channel.local_path}"


@pytest.mark.container
@pytest.mark.parametrize("output_mode", ["s3", "processing-output"])
def test_sagemaker_jobs_replayed_with_docker_equal_one_process(
    image: str, shared_folder: Path, tmp_path: Path, output_mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two hosts convert (their worker index and count from resourceconfig.json alone), one finalizes.

    In `processing-output` mode the containers run as root, as that mode's README note requires:
    SageMaker creates the output folder for root.
    """
    module = _sagemaker_script()
    s3_root = shared_folder
    bucket = BUCKET.removeprefix("s3://")
    export = detection_export(s3_root / bucket / "exports" / "run", 16)
    export.write()
    for folder in [s3_root, *(path for path in s3_root.rglob("*") if path.is_dir())]:
        folder.chmod(0o777)  # writable by the image's user, as the bucket is by the role
    options = ("-s", "0.5", "--seed", "3", "-p", "0.005")  # ~5 KB shards: several per worker, renumbered
    jobs = {
        "convert": module.convert_job(
            manifest=f"{BUCKET}/exports/run/output.manifest",
            images=f"{BUCKET}/exports/run/images",
            output=f"{BUCKET}/datasets/run",
            instance_count=SAGEMAKER_INSTANCES,
            instance_type="ml.m5.xlarge",
            convert_options=options,
            output_mode=output_mode,
        ),
        "finalize": module.finalize_job(output=f"{BUCKET}/datasets/run", instance_type="ml.m5.xlarge"),
    }
    as_root = output_mode == "processing-output"
    instances = [tmp_path / "instances" / f"convert-{host}" for host in range(1, SAGEMAKER_INSTANCES + 1)]
    for host, instance in enumerate(instances, start=1):
        _succeeded(
            _docker(
                *_processing_container(
                    jobs["convert"], image, host=host, instance=instance, s3_root=s3_root, as_root=as_root
                )
            )
        )
    _upload_outputs(jobs["convert"], instances, s3_root)
    dataset = _s3_path(s3_root, f"{BUCKET}/datasets/run")
    assert sorted(path.name for path in (dataset / "parts").iterdir()) == [
        f"worker-{index:05d}-of-{SAGEMAKER_INSTANCES:05d}" for index in range(SAGEMAKER_INSTANCES)
    ]
    finalizer = tmp_path / "instances" / "finalize"
    _succeeded(
        _docker(
            *_processing_container(
                jobs["finalize"], image, host=1, instance=finalizer, s3_root=s3_root, as_root=as_root
            )
        )
    )
    reference = _single_process(export.manifest, export.images, tmp_path / "single", options, monkeypatch)
    _assert_same_dataset(dataset, reference)
    assert load_report(dataset)["summary"]["converted"] == 16

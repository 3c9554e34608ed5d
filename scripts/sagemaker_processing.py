"""Convert a Ground Truth export on SageMaker Processing: N instances convert a slice each, one finalizes.

    pip install -r scripts/requirements-sagemaker.txt
    python scripts/sagemaker_processing.py \\
        --image-uri 123456789012.dkr.ecr.us-east-1.amazonaws.com/dataset-converter:0.1.0 \\
        --role arn:aws:iam::123456789012:role/SageMakerProcessingRole \\
        --manifest s3://my-bucket/exports/run-1/output.manifest \\
        --images s3://my-bucket/exports/run-1/images \\
        --output s3://my-bucket/datasets/run-1 \\
        --instance-count 4 -- -s 0.8,0.1,0.1 --seed 7

Options after `--` go to `dataset-converter convert` unchanged, the same for every instance (they
must be: split, seed and partition decide which record goes where).

Job 1 (`--instance-count` instances) runs `dataset-converter convert`. The manifest is a
ProcessingInput replicated to every instance (FullyReplicated: each worker needs all of it to
know its slice), while the images are read straight from S3 with `-i s3://...`, so an instance
fetches only its own slice's images instead of every image. No worker index is passed: the
converter reads SageMaker's /opt/ml/config/resourceconfig.json (its host's position in `hosts`,
out of len(hosts)). Worker I of N writes only `parts/worker-IIIII-of-NNNNN/`, so the instances'
outputs never share a name.

Job 2 (one instance) runs `dataset-converter finalize` on the output prefix: it merges the parts
into one dataset (renumbered shards, one dataset_info.yaml, one report.json) and deletes
`parts/`; it refuses, naming them, if parts are missing.

Where the parts go (`--output-mode`):
- `s3` (default): each worker writes its part to the output prefix itself (`-o s3://...`),
  staging it under the container's TMPDIR first (about 1/N of the dataset).
- `processing-output`: each worker writes to /opt/ml/processing/output and SageMaker uploads it to
  the prefix at the end of the job (a ProcessingOutput). SageMaker creates that folder for root,
  and the image runs as uid 10001, which (users report, aws/sagemaker-python-sdk#4764) cannot
  write there: use this mode with an image that runs as root, e.g. one built from
  `FROM dataset-converter:0.1.0` + `USER 0`.

The role needs s3:GetObject/ListBucket on the export and Get/Put/Delete/List on the output prefix.
`--dry-run` prints both CreateProcessingJob requests exactly as the SDK builds them, checked by
botocore against the API's schema, without credentials and without calling AWS.

The `sagemaker` SDK is needed only here, never by the converter: its v2 (`>=2.200,<3`), because
v3 moved `sagemaker.processing.Processor` to `sagemaker.core.processing` and removed local mode.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sagemaker.processing import Processor
    from sagemaker.session import Session

ENTRYPOINT = ("dataset-converter",)
PROCESSING_ROOT = "/opt/ml/processing"
MANIFEST_DIR = f"{PROCESSING_ROOT}/input/manifest"
OUTPUT_DIR = f"{PROCESSING_ROOT}/output"
OUTPUT_MODES = ("s3", "processing-output")
DEFAULT_REGION = "us-east-1"  # only for --dry-run without a configured region: it shapes nothing in the requests
# Options this script sets itself; passing them after `--` would contradict the job layout.
RESERVED_OPTIONS = (
    "-a", "--annotations", "-i", "--images", "-o", "--output", "-f", "--format", "--num-workers", "--worker-index",
)  # fmt: skip


@dataclass(frozen=True)
class InputChannel:
    """An S3 object or prefix that SageMaker copies to `local_path` on every instance (FullyReplicated)."""

    name: str
    s3_uri: str
    local_path: str


@dataclass(frozen=True)
class OutputChannel:
    """A folder that SageMaker uploads from every instance to one S3 prefix when the job ends."""

    name: str
    local_path: str
    s3_uri: str


@dataclass(frozen=True)
class JobDefinition:
    """One Processing job, independent of the SDK, so that it can be checked and simulated without it."""

    base_job_name: str
    instance_count: int
    instance_type: str
    arguments: tuple[str, ...]
    entrypoint: tuple[str, ...] = ENTRYPOINT
    environment: dict[str, str] = field(default_factory=dict)
    inputs: tuple[InputChannel, ...] = ()
    outputs: tuple[OutputChannel, ...] = ()


class UsageError(Exception):
    """A bad command line: reported on stderr with exit code 2, as argparse does."""


def _s3_uri(value: str, what: str) -> str:
    """`value` without a trailing slash, after checking it is an s3:// URI with a bucket."""
    if not value.startswith("s3://") or len(value) <= len("s3://") or value[len("s3://")] == "/":
        raise UsageError(f"{what} must be an s3://bucket/... URI, not {value!r}")
    return value.rstrip("/")


def _check_convert_options(options: Sequence[str]) -> None:
    """Refuse options this script sets itself, in either spelling (`-o x` or `--output=x`)."""
    for option in options:
        name = option.split("=", 1)[0]
        if name in RESERVED_OPTIONS:
            raise UsageError(
                f"{name} is set by this script (see --manifest, --images, --output); "
                "pass only dataset-shaping options (-s, --seed, -p, --classes, ...) after `--`"
            )


def convert_job(
    *,
    manifest: str,
    images: str,
    output: str,
    instance_count: int,
    instance_type: str,
    convert_options: Sequence[str] = (),
    output_mode: str = "s3",
    base_job_name: str = "dataset-converter-convert",
) -> JobDefinition:
    """The workers' job: `instance_count` instances, each converting the slice its host's position picks."""
    manifest, images, output = (
        _s3_uri(manifest, "--manifest"),
        _s3_uri(images, "--images"),
        _s3_uri(output, "--output"),
    )
    if instance_count < 1:
        raise UsageError(f"--instance-count must be at least 1, not {instance_count}")
    if output_mode not in OUTPUT_MODES:
        raise UsageError(f"--output-mode must be one of {', '.join(OUTPUT_MODES)}, not {output_mode!r}")
    _check_convert_options(convert_options)
    manifest_name = manifest.rsplit("/", 1)[1]
    if not manifest_name or manifest.count("/") < 3:
        raise UsageError(f"--manifest must name the manifest object itself, not a bucket: {manifest!r}")
    manifest_input = InputChannel("manifest", manifest, MANIFEST_DIR)
    if output_mode == "s3":
        written_to, outputs = output, ()
    else:
        written_to, outputs = OUTPUT_DIR, (OutputChannel("parts", OUTPUT_DIR, output),)
    arguments = (
        "convert",
        "-a", f"{MANIFEST_DIR}/{manifest_name}",  # SageMaker copies the object into MANIFEST_DIR under its own name
        "-i", images,
        "-o", written_to,
        "-f", "tfrecord",  # the only format that scales out
        *convert_options,
    )  # fmt: skip
    return JobDefinition(
        base_job_name, instance_count, instance_type, arguments, inputs=(manifest_input,), outputs=outputs
    )


def finalize_job(
    *, output: str, instance_type: str, base_job_name: str = "dataset-converter-finalize"
) -> JobDefinition:
    """The merge: one instance, working on the output prefix in S3 directly (no inputs or outputs to copy)."""
    return JobDefinition(base_job_name, 1, instance_type, ("finalize", _s3_uri(output, "--output")))


def job_definitions(options: argparse.Namespace, convert_options: Sequence[str]) -> dict[str, JobDefinition]:
    """Both jobs of a run, by step name, from the parsed command line."""
    return {
        "convert": convert_job(
            manifest=options.manifest,
            images=options.images,
            output=options.output,
            instance_count=options.instance_count,
            instance_type=options.instance_type,
            convert_options=convert_options,
            output_mode=options.output_mode,
            base_job_name=f"{options.job_name_prefix}-convert",
        ),
        "finalize": finalize_job(
            output=options.output,
            instance_type=options.finalize_instance_type or options.instance_type,
            base_job_name=f"{options.job_name_prefix}-finalize",
        ),
    }


# ---------------------------------------------------------------------------
# The SDK


def _import_sdk() -> None:
    """Fail with the install command, not a traceback, when the SDK is absent or is v3."""
    os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")  # v2 is chosen on purpose (see the docstring)
    try:
        import sagemaker.processing  # noqa: F401
    except ImportError as error:
        raise UsageError(
            f"the SageMaker SDK v2 is needed ({error}): pip install -r scripts/requirements-sagemaker.txt"
        ) from None


def processor(
    job: JobDefinition, *, role: str, image_uri: str, session: Session, options: argparse.Namespace
) -> Processor:
    """The SDK's `Processor` for `job`: the converter's image, its entrypoint, the instances."""
    from sagemaker.processing import Processor

    return Processor(
        role=role,
        image_uri=image_uri,
        instance_count=job.instance_count,
        instance_type=job.instance_type,
        entrypoint=list(job.entrypoint),
        volume_size_in_gb=options.volume_size_gb,
        max_runtime_in_seconds=int(options.max_runtime_hours * 3600),
        base_job_name=job.base_job_name,
        env=dict(job.environment) or None,
        sagemaker_session=session,
    )


def run_job(job: JobDefinition, job_processor: Processor, *, wait: bool) -> str:
    """Start `job` (and wait for it, streaming its logs, when `wait`); returns the job's name."""
    from sagemaker.processing import ProcessingInput, ProcessingOutput

    job_processor.run(
        inputs=[
            ProcessingInput(
                source=channel.s3_uri,
                destination=channel.local_path,
                input_name=channel.name,
                s3_data_distribution_type="FullyReplicated",
            )
            for channel in job.inputs
        ]
        or None,
        outputs=[
            ProcessingOutput(
                source=channel.local_path,
                destination=channel.s3_uri,
                output_name=channel.name,
                s3_upload_mode="EndOfJob",
            )
            for channel in job.outputs
        ]
        or None,
        arguments=list(job.arguments),
        wait=wait,
        logs=wait,
    )
    name: str = job_processor.latest_job.job_name
    return name


def aws_session(region: str | None) -> Session:
    """A SageMaker session on the default credential chain (environment, profile, instance role)."""
    import boto3
    import sagemaker

    return sagemaker.Session(boto_session=boto3.Session(region_name=region))


def dry_run_session(region: str | None, requests: list[dict[str, Any]]) -> Session:
    """A SageMaker session whose client answers CreateProcessingJob itself, appending each request to `requests`.

    botocore's Stubber stands in for AWS after botocore has validated the request against the
    SageMaker API model, so a malformed job fails here as it would against AWS; no credentials
    are read and nothing is sent.
    """
    import boto3
    import sagemaker
    from botocore.stub import Stubber

    boto_session = boto3.Session(region_name=region or os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION)
    client = boto_session.client("sagemaker")

    def record(params: dict[str, Any], **_: Any) -> None:
        requests.append(copy.deepcopy(params))

    client.meta.events.register("provide-client-params.sagemaker.CreateProcessingJob", record)
    stubber = Stubber(client)
    for _ in range(2):  # the convert job and the finalize job
        arn = f"arn:aws:sagemaker:{boto_session.region_name}:000000000000:processing-job/dry-run"
        stubber.add_response("create_processing_job", {"ProcessingJobArn": arn})
    stubber.activate()
    return sagemaker.Session(boto_session=boto_session, sagemaker_client=client)


# ---------------------------------------------------------------------------
# The command line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sagemaker_processing.py",
        description="Run dataset-converter on SageMaker Processing: convert on N instances, then finalize on one.",
        epilog="Options after `--` are passed to `dataset-converter convert` (e.g. -- -s 0.8,0.1,0.1 --seed 7).",
    )
    parser.add_argument("--image-uri", required=True, help="the converter's image in ECR")
    parser.add_argument("--role", required=True, help="the SageMaker execution role's ARN")
    parser.add_argument(
        "--manifest", required=True, help="s3:// URI of the Ground Truth manifest (or other annotation file)"
    )
    parser.add_argument("--images", required=True, help="s3:// prefix the image references resolve under")
    parser.add_argument("--output", required=True, help="s3:// prefix the dataset is written to")
    parser.add_argument("--instance-count", type=int, default=4, help="converting instances (workers); default 4")
    parser.add_argument("--instance-type", default="ml.m5.2xlarge", help="default ml.m5.2xlarge")
    parser.add_argument("--finalize-instance-type", help="the finalize job's instance type; default --instance-type")
    parser.add_argument("--output-mode", choices=OUTPUT_MODES, default="s3", help="how parts reach S3; default s3")
    parser.add_argument("--volume-size-gb", type=int, default=30, help="storage per instance; default 30")
    parser.add_argument("--max-runtime-hours", type=float, default=24.0, help="per job; default 24")
    parser.add_argument(
        "--job-name-prefix", default="dataset-converter", help="jobs are named PREFIX-convert-..., PREFIX-finalize-..."
    )
    parser.add_argument("--region", help="AWS region; default from the AWS configuration")
    parser.add_argument(
        "--step",
        choices=("all", "convert", "finalize"),
        default="all",
        help="run both jobs (default), or one: `finalize` again after fixing what made it fail",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the CreateProcessingJob requests; call nothing")
    return parser


def _split_argv(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """This script's options, and the convert options after the first `--`."""
    arguments = list(argv)
    if "--" in arguments:
        at = arguments.index("--")
        return arguments[:at], arguments[at + 1 :]
    return arguments, []


def main(argv: Sequence[str] | None = None) -> int:
    """Run (or with --dry-run, print) the jobs; 0 when every job started completed."""
    parser = _parser()
    own, convert_options = _split_argv(sys.argv[1:] if argv is None else argv)
    options = parser.parse_args(own)
    try:
        jobs = job_definitions(options, convert_options)
        steps = ["convert", "finalize"] if options.step == "all" else [options.step]
        if options.dry_run:  # the SDK logs which defaults files it read on stdout, which is the JSON's
            logging.getLogger("sagemaker.config").setLevel(logging.WARNING)
        _import_sdk()
    except UsageError as error:
        parser.error(str(error))  # exits 2

    from sagemaker.exceptions import UnexpectedStatusException

    requests: list[dict[str, Any]] = []
    session = dry_run_session(options.region, requests) if options.dry_run else aws_session(options.region)
    for step in steps:
        job = jobs[step]
        job_processor = processor(job, role=options.role, image_uri=options.image_uri, session=session, options=options)
        if not options.dry_run:
            print(f"{step}: starting {job.instance_count} x {job.instance_type}", file=sys.stderr)
        # Waiting is what orders the steps: finalize must not start before every part is written.
        try:
            name = run_job(job, job_processor, wait=not options.dry_run)
        except UnexpectedStatusException as error:  # the job ran and failed: its logs were streamed above
            print(f"ERROR: {step} job failed: {error}", file=sys.stderr)
            return 1
        if not options.dry_run:
            print(f"{step}: {name} completed", file=sys.stderr)
    if options.dry_run:
        print(json.dumps(dict(zip(steps, requests, strict=True)), indent=2, sort_keys=True))
    else:
        print(f"dataset written to {options.output.rstrip('/')}/ (dataset_info.yaml, report.json, tfrecord_*/)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

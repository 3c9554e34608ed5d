"""Remote storage (`s3://`, `gs://`) through fsspec, for runs where nothing is mounted.

In Kubernetes the export and the dataset often live in a bucket, not on a volume. The
converter keeps working on local files and crosses to the bucket at three narrow points:

- annotation files are downloaded into a temporary folder (they are small), and the
  source reads that copy (`download`, `list_files`);
- images are read one by one where they lie (`RemotePath.read_bytes`), so a run never
  holds a copy of the image set; `RemotePath` pickles as its URL alone, so a worker
  process opens its own filesystem on first use;
- the output is converted into a temporary folder and then published (`publish_tree`,
  `publish_part`), `dataset_info.yaml` last, mirroring the local atomic commit.

Credentials come from the environment the cloud SDKs already read (`AWS_ACCESS_KEY_ID`,
`AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_ENDPOINT_URL`, `AWS_PROFILE`, instance
roles; `GOOGLE_APPLICATION_CREDENTIALS`, workload identity). The converter never reads,
logs or writes them: every error message names the URL and a reason scrubbed of
credential values and signed query strings (`safe_reason`).

fsspec is imported on first use, not with this module: `Sample` refers to `RemotePath`,
and a purely local run (or a worker process) should not pay 0.1 s to import it.
"""

from __future__ import annotations

import errno
import io
import os
import posixpath
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import yaml

from converter.core.commit import DATASET_INFO, REPORT, STATE_FOLDER, owned_entries
from converter.core.scaleout import PART_MANIFEST
from converter.core.secret import scrub
from converter.errors import ConverterError, UsageError

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

REMOTE_SCHEMES = ("s3", "gs", "gcs")
IMAGE_VARIANT_VARIABLE = "DATASET_CONVERTER_IMAGE_VARIANT"  # the Dockerfile sets it: small or full
PUBLISHING_MARKER = ".dataset-converter-publishing.yaml"
"""Lists, while a publish runs, every entry it may leave half-written; the next publish removes them."""

CREDENTIAL_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "GOOGLE_OAUTH_ACCESS_TOKEN",
)
_URL_QUERY = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^\s?#'\"]*)\?[^\s'\"]*", re.IGNORECASE)
_SIGNATURE_FIELDS = re.compile(r"\b(Credential|Signature|X-Amz-[A-Za-z-]+|access_token)=[^\s,;&'\"]+")


def is_remote(location: str) -> bool:
    """Whether a command-line location names a bucket (`s3://`, `gs://`, `gcs://`) rather than a local path."""
    scheme, separator, _ = location.partition("://")
    return bool(separator) and scheme.lower() in REMOTE_SCHEMES


@dataclass(frozen=True)
class RemotePath:
    """An object or prefix in a bucket, with the few `Path` members the converter uses on it.

    A frozen value holding only the URL, so it pickles as the URL: a worker process that
    receives one opens the filesystem itself, on first read (fsspec caches one filesystem
    object per process and set of options, and drops that cache in a forked child).
    Deliberately not `os.PathLike`: nothing may open it as a local file by mistake.
    """

    url: str

    def __post_init__(self) -> None:
        scheme, separator, rest = self.url.partition("://")
        if not separator or scheme.lower() not in REMOTE_SCHEMES:
            raise ValueError(f"not a remote URL ({', '.join(s + '://' for s in REMOTE_SCHEMES)}): {self.url!r}")
        bucket = rest.split("/", 1)[0]
        if not bucket:
            raise ValueError(f"{self.url!r} names no bucket")
        if "@" in bucket:
            # credentials in a URL would end up in reports and logs; they belong in the environment
            raise ValueError(f"{scheme}://{bucket.rsplit('@', 1)[-1]}/... carries credentials; use the environment")
        object.__setattr__(self, "url", f"{scheme.lower()}://{rest.rstrip('/')}")

    def __str__(self) -> str:
        return self.url

    def __truediv__(self, relative: str) -> RemotePath:
        return self.joinpath(relative)

    @property
    def protocol(self) -> str:
        return self.url.split("://", 1)[0]

    @property
    def path(self) -> str:
        """The filesystem path, `bucket/key`, as fsspec names objects."""
        return self.url.split("://", 1)[1]

    @property
    def name(self) -> str:
        return PurePosixPath(self.path).name

    @property
    def parent(self) -> RemotePath:
        """The enclosing prefix; a bucket is its own parent."""
        parent = posixpath.dirname(self.path)
        return RemotePath(f"{self.protocol}://{parent}") if parent else self

    def joinpath(self, *parts: str) -> RemotePath:
        return RemotePath("/".join([self.url, *(part.strip("/") for part in parts)]))

    def read_bytes(self) -> bytes:
        with remote_errors(self):
            data: bytes = filesystem(self.protocol).cat_file(self.path)
        return data

    def is_file(self) -> bool:
        """Whether an object has this key; raises `UsageError` when the bucket cannot be asked.

        Asked only while setting a run up, where an unreachable bucket must stop the run
        with its reason, not pass for a missing file as `Path.is_file` would.
        """
        return self._ask("isfile")

    def is_dir(self) -> bool:
        """Whether objects exist under this prefix (buckets have no real folders), or it is a bucket."""
        return self._ask("isdir")

    def _ask(self, question: str) -> bool:
        try:
            with remote_errors(self):
                return bool(getattr(filesystem(self.protocol), question)(self.path))
        except OSError as error:
            raise UsageError(f"cannot reach {describe(error)}") from None


def seekable(location: Path | RemotePath) -> Path | io.BytesIO:
    """A local file as is; an object's bytes in memory, for readers that seek (PIL opens masks so)."""
    return location if isinstance(location, Path) else io.BytesIO(location.read_bytes())


def as_location(text: str) -> Path | RemotePath:
    """A command-line location: a `RemotePath` for a bucket URL, else a local `Path`."""
    if not is_remote(text):
        return Path(text)
    try:
        return RemotePath(text)
    except ValueError as error:
        raise UsageError(str(error)) from None


def filesystem(protocol: str) -> AbstractFileSystem:
    """The fsspec filesystem of `protocol`, configured from the environment.

    fsspec keeps one instance per process and set of options, so this is cheap to call for
    every object; a forked worker gets a fresh instance (an event loop cannot cross a fork).
    """
    import fsspec

    try:
        return fsspec.filesystem(protocol)
    except ImportError:
        if os.environ.get(IMAGE_VARIANT_VARIABLE) == "small":  # set by the Dockerfile's default stage
            raise UsageError(
                f"{protocol}:// needs s3fs and gcsfs, which the small dataset-converter image leaves out: run the "
                "full image (docker build --target full, make docker-build-full), or mount the data"
            ) from None
        raise UsageError(
            f"{protocol}:// needs the `remote` extra: pip install '.[remote]' from a clone (s3fs, gcsfs)"
        ) from None


def safe_reason(error: BaseException) -> str:
    """What went wrong, fit for a report or a log line: no credential values, no signed URLs.

    Backends put URLs (presigned ones carry signatures in their query) and sometimes
    credential scopes into their messages; the values of the credential variables are
    blanked too, in case a backend ever echoes one, and `scrub` removes every registered
    secret and credential-shaped text (user info, `Authorization` headers) last.
    """
    lines = str(error).strip().splitlines()
    text = lines[0] if lines else ""
    text = _SIGNATURE_FIELDS.sub(r"\1=[redacted]", _URL_QUERY.sub(r"\1?[redacted]", text))
    for variable in CREDENTIAL_VARIABLES:
        value = os.environ.get(variable, "")
        if len(value) >= 4:
            text = text.replace(value, "[redacted]")
    name = type(error).__name__
    return f"{name}: {scrub(text)}" if text else name


@contextmanager
def remote_errors(location: RemotePath) -> Iterator[None]:
    """Turn any backend failure into an `OSError` whose `filename` is the URL and `strerror` a safe reason.

    Backends raise their own types (botocore, google-auth, aiohttp errors) besides
    `OSError`, hence the broad catch; callers then handle one kind of error, as for local
    files. A missing object stays a `FileNotFoundError`, a refusal a `PermissionError`.
    """
    try:
        yield
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, "no such object", location.url) from None
    except PermissionError as error:
        raise PermissionError(errno.EACCES, f"access denied ({safe_reason(error)})", location.url) from None
    except UsageError:
        raise
    except Exception as error:
        raise OSError(errno.EIO, safe_reason(error), location.url) from None


def describe(error: OSError) -> str:
    """`url: reason` for an error raised through `remote_errors`."""
    return f"{error.filename}: {error.strerror}"


def list_files(folder: RemotePath, max_depth: int | None = None) -> list[str]:
    """Every object under a prefix, as sorted '/'-separated paths relative to it; one listing."""
    with remote_errors(folder):
        found = filesystem(folder.protocol).find(folder.path, maxdepth=max_depth)
    prefix = folder.path + "/"
    return sorted(path[len(prefix) :] for path in found if path.startswith(prefix))


def download(source: RemotePath, target: Path) -> None:
    """Copy one object to a local file (annotation exports: small, and read several times)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with remote_errors(source):
        filesystem(source.protocol).get_file(source.path, str(target))


def check_bucket(location: RemotePath) -> None:
    """Fail in a second, not after a whole conversion, when the output bucket cannot be reached."""
    bucket = RemotePath(f"{location.protocol}://{location.path.split('/', 1)[0]}")
    if not bucket.is_dir():
        raise UsageError(f"the output bucket {bucket} does not exist or is not visible with these credentials")


def publish_tree(local_dir: Path, url: RemotePath) -> None:
    """Publish a finished local output folder to a remote prefix, as the local commit would.

    With a `dataset_info.yaml` in `local_dir` (a successful run): the previous remote
    `dataset_info.yaml` is removed first, then the entries it owned and the entries the new
    one owns (so a folder entry is replaced whole, never merged with stale shards), then
    every new entry and `report.json` are uploaded, and `dataset_info.yaml` last: a reader
    never sees one pointing at missing or mixed files. A marker lists, while this runs,
    what may be half-written, so a publish cut short is cleaned up by the next one.
    Without one (a failed run): only `report.json` is uploaded, the previous dataset stays.
    Only what `entries` names is uploaded: other local files (a download cache) stay local.
    """
    fs = filesystem(url.protocol)
    info_file = local_dir / DATASET_INFO
    if not info_file.is_file():
        _upload(fs, url, [(local_dir / REPORT, url / REPORT)])
        return
    entries = owned_entries(yaml.safe_load(info_file.read_text(encoding="utf-8")))
    previous = _previous_entries(fs, url)
    touched = sorted({*previous, *entries})
    _upload_text(fs, url / PUBLISHING_MARKER, yaml.safe_dump({"entries": touched}))
    _remove(fs, [url / DATASET_INFO])
    _remove(fs, [url / entry for entry in touched])
    files = [path for entry in entries for path in _files(local_dir, entry)]
    _upload(fs, url, [(path, url / path.relative_to(local_dir).as_posix()) for path in [*files, local_dir / REPORT]])
    _upload(fs, url, [(info_file, url / DATASET_INFO)])
    _remove(fs, [url / PUBLISHING_MARKER])


def publish_part(local_part_dir: Path, url_of_part: RemotePath) -> None:
    """Replace a remote worker part folder with a local one, `part.yaml` last.

    `part.yaml` is what says a part is complete, so the remote one goes first and the new
    one last: a finalizer never takes a part for complete while its shards are changing.
    """
    fs = filesystem(url_of_part.protocol)
    _remove(fs, [url_of_part / PART_MANIFEST])
    _remove(fs, [url_of_part])
    files = sorted(
        path
        for path in local_part_dir.rglob("*")
        if path.is_file() and STATE_FOLDER not in path.relative_to(local_part_dir).parts  # the part's lock
    )
    manifest = local_part_dir / PART_MANIFEST
    pairs = [(path, url_of_part / path.relative_to(local_part_dir).as_posix()) for path in files if path != manifest]
    _upload(fs, url_of_part, pairs)
    if manifest.is_file():
        _upload(fs, url_of_part, [(manifest, url_of_part / PART_MANIFEST)])


def _previous_entries(fs: AbstractFileSystem, url: RemotePath) -> list[str]:
    """Entries the remote dataset_info.yaml owns, and those an interrupted publish left listed."""
    owned: list[str] = []
    for name in (DATASET_INFO, PUBLISHING_MARKER):
        location = url / name
        try:
            with remote_errors(location):
                text = fs.cat_file(location.path).decode("utf-8")
        except FileNotFoundError:
            continue
        except OSError as error:
            raise ConverterError(f"cannot read the previous {describe(error)}") from None
        try:
            owned += owned_entries(yaml.safe_load(text))
        except yaml.YAMLError:
            continue  # unreadable: owns nothing, as locally
    return owned


def _files(local_dir: Path, entry: str) -> list[Path]:
    path = local_dir / entry
    return sorted(found for found in path.rglob("*") if found.is_file()) if path.is_dir() else [path]


def _upload(fs: AbstractFileSystem, destination: RemotePath, pairs: Sequence[tuple[Path, RemotePath]]) -> None:
    """Upload files into `destination` concurrently (fsspec batches a list of puts)."""
    if not pairs:
        return
    try:
        with remote_errors(destination):
            fs.put([str(local) for local, _ in pairs], [remote.path for _, remote in pairs])
    except OSError as error:
        raise ConverterError(f"cannot publish to {describe(error)}") from None


def _upload_text(fs: AbstractFileSystem, location: RemotePath, text: str) -> None:
    try:
        with remote_errors(location):
            fs.pipe_file(location.path, text.encode("utf-8"))
    except OSError as error:
        raise ConverterError(f"cannot publish to {describe(error)}") from None


def _remove(fs: AbstractFileSystem, locations: Sequence[RemotePath]) -> None:
    """Remove objects or whole prefixes; absent ones are fine (a first run, an entry never written)."""
    for location in locations:
        try:
            with remote_errors(location):
                fs.rm(location.path, recursive=True)
        except FileNotFoundError:
            continue
        except OSError as error:
            raise ConverterError(f"cannot remove {describe(error)}") from None

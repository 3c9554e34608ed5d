"""Fetching files behind http(s) URLs into a local cache, with retries, for sources whose images live online.

Rules, and why:

- **The cache key is the URL without its query string** (a hash of `scheme://host/path`).
  Signed links (S3 presigned URLs, Scale AI attachments) carry their signature and expiry
  in the query, so the same file re-signed tomorrow has a new URL but the same key: a
  second run finds it in the cache and sends no request, even after every link expired.
  The file keeps the URL's suffix (`.jpg`), so the cache stays readable by people.
- **A file is complete or absent.** It is written under a temporary name in the cache
  folder and renamed into place, so an interrupted run, or two threads fetching the same
  URL, never leave a truncated file under its final name.
- **Retries** with exponential backoff (`backoff_s * 2**n`: 0.5, 1, 2 s by default) for
  what may pass: connection errors, timeouts, HTTP 5xx, 408 and 429 (both say "later").
  Any other 4xx is final, retrying cannot fix it; in particular **403 is `expired_url`**:
  on a signed link it means the signature expired (or never granted access), which only
  a fresh link can fix, so the caller decides whether it can get one.
- **No URL in a message carries its query string or user info** (`without_query`): a
  signature is a credential for as long as it is valid. Every message also goes through
  `scrub` (an error's text may quote the request), and the server's answer to a failed
  request is never read into one. Nothing is ever sent but a plain GET: no
  Authorization header, so no API key can reach an image host.
"""

from __future__ import annotations

import hashlib
import http.client
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit, urlunsplit

from converter import __version__
from converter.core.secret import scrub
from converter.errors import SampleError, UsageError

EXPIRED_URL = "expired_url"
DOWNLOAD_FAILED = "download_failed"
DEFAULT_CONCURRENCY = 8  # parallel downloads: enough to hide latency, few enough not to be throttled
MAX_ATTEMPTS = 4  # the first try and three retries
BACKOFF_S = 0.5  # the first wait; it doubles with each retry
REQUEST_TIMEOUT_S = 60.0  # per socket operation, not for the whole file
_RETRIED_STATUSES = frozenset({408, 429, *range(500, 600)})
_MAX_SUFFIX_CHARS = 8


def is_http_url(reference: str) -> bool:
    return urlsplit(reference).scheme in ("http", "https")


def without_query(url: str) -> str:
    """The URL as messages may show it: no query string, fragment or user info.

    `https://user:pw@bucket.s3.amazonaws.com/a/b.jpg?X-Amz-Signature=...` -> `https://bucket.s3.amazonaws.com/a/b.jpg`
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


class ImageDownloader:
    """Downloads URLs into a cache folder, once; safe to call from several threads at a time."""

    def __init__(
        self,
        cache_folder: Path,
        *,
        max_attempts: int = MAX_ATTEMPTS,
        backoff_s: float = BACKOFF_S,
        timeout_s: float = REQUEST_TIMEOUT_S,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        try:
            cache_folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UsageError(f"cannot create the image cache folder {cache_folder}: {error.strerror}") from None
        self.cache_folder = cache_folder
        self._max_attempts = max_attempts
        self._backoff_s = backoff_s
        self._timeout_s = timeout_s
        self._sleep = sleep

    def cache_path(self, url: str) -> Path:
        """Where `url` is cached: a hash of it without its query string, plus its suffix."""
        stable = without_query(url)
        suffix = PurePosixPath(urlsplit(url).path).suffix.lower()
        if len(suffix) > _MAX_SUFFIX_CHARS or not suffix[1:].isalnum():
            suffix = ""
        return self.cache_folder / (hashlib.sha256(stable.encode()).hexdigest()[:32] + suffix)

    def fetch(self, url: str) -> Path:
        """The cached file of `url`, downloaded first if absent; raises `SampleError` when it cannot be had."""
        target = self.cache_path(url)
        if target.is_file():
            return target
        shown = without_query(url)
        problem = ""
        for attempt in range(1, self._max_attempts + 1):
            if attempt > 1:
                self._sleep(self._backoff_s * 2 ** (attempt - 2))
            try:
                data = self._get(url)
            except urllib.error.HTTPError as error:
                if error.code == 403:
                    raise SampleError(
                        EXPIRED_URL, scrub(f"{shown} answered HTTP 403 (Forbidden): the signed link has expired")
                    ) from None
                problem = f"HTTP {error.code}"
                if error.code not in _RETRIED_STATUSES:
                    raise SampleError(DOWNLOAD_FAILED, scrub(f"downloading {shown} failed: {problem}")) from None
            except urllib.error.URLError as error:
                problem = _scrubbed(str(error.reason), url)
            except TimeoutError:
                problem = f"no answer within {self._timeout_s:g} s"
            except (OSError, http.client.HTTPException) as error:
                problem = type(error).__name__  # its text may quote the request line, query string included
            else:
                self._store(target, data, shown)
                return target
        raise SampleError(
            DOWNLOAD_FAILED, scrub(f"downloading {shown} failed {self._max_attempts} times; last: {problem}")
        )

    def _get(self, url: str) -> bytes:
        request = urllib.request.Request(url, headers={"User-Agent": f"dataset-converter/{__version__}"})
        with urllib.request.urlopen(request, timeout=self._timeout_s) as response:
            data: bytes = response.read()
        return data

    def _store(self, target: Path, data: bytes, shown: str) -> None:
        partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}.part")
        try:
            partial.write_bytes(data)
            partial.replace(target)
        except OSError as error:
            partial.unlink(missing_ok=True)
            raise SampleError(
                DOWNLOAD_FAILED,
                scrub(f"cannot write {shown} into the image cache {self.cache_folder}: {error.strerror}"),
            ) from None


def _scrubbed(text: str, url: str) -> str:
    """`text` without the URL's query string (whatever its parameters are named), should an error quote it."""
    query = urlsplit(url).query
    return scrub(text.replace(query, "...") if query else text)

"""The part of Label Studio's HTTP API that pulling a project needs: its config and its JSON export.

Two kinds of token, told apart by their shape:

- a personal access token (PAT, the default in current Label Studio) is a JWT: three
  base64url parts joined by dots, the first a JSON header. It is a *refresh* token: it
  is exchanged at `POST /api/token/refresh` (`{"refresh": PAT}` -> `{"access": ...}`) for
  a short-lived access token (about 5 minutes), sent as `Authorization: Bearer <access>`.
  A request answered 401 after the access token was issued refreshes it once and retries.
- a legacy token (40 hex characters, never a JWT) is sent as `Authorization: Token <key>`.

Telling them apart by shape rather than by trying a refresh first means a legacy token
is never posted to the refresh endpoint, and a rejected token gets one clear message.

The token never leaves this module except in the Authorization header and the refresh
body: every `LabelStudioError` message goes through `scrub` (a server may quote the
token, the access token, or their base64; both are `Secret`s, so registered), it is not
logged, and the header is set as "unredirected" so urllib does not forward it to another
host on a redirect. A URL with user info (`https://user:password@host`) is refused: the
Authorization header carries the token, so a password there could not be sent, and the
URL is shown in messages and written into dataset_info.yaml.
Failures raise `LabelStudioError`, a run failure (exit code 1), not a usage error.
"""

from __future__ import annotations

import base64
import binascii
import http.client
import json
import re
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from converter.core.secret import Secret, refuse_url_credentials, scrub
from converter.errors import ConverterError, UsageError

REQUEST_TIMEOUT_S = 300.0  # per socket operation; the export endpoint builds the whole export before answering
REFRESH_PATH = "/api/token/refresh"
_JWT_SHAPE = re.compile(r"^([A-Za-z0-9_-]+)\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")
_MAX_DETAIL_CHARS = 200


class LabelStudioError(ConverterError):
    """The Label Studio server could not be reached, refused the token, or answered something unusable.

    The message is scrubbed here, once, so that no message built below can quote a credential.
    """

    def __init__(self, message: str) -> None:
        super().__init__(scrub(message))


def is_personal_access_token(token: str) -> bool:
    """Whether a token is a JWT (a personal access token) rather than a legacy token."""
    match = _JWT_SHAPE.match(token)
    if match is None:
        return False
    header = match.group(1)
    try:
        decoded = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    except (binascii.Error, ValueError):
        return False
    return isinstance(decoded, dict) and "alg" in decoded


class LabelStudioClient:
    """Authenticated GET requests to one Label Studio server."""

    def __init__(self, base_url: str, token: Secret, timeout_s: float = REQUEST_TIMEOUT_S) -> None:
        refuse_url_credentials(base_url, "--labelstudio-url")
        parsed = urlsplit(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise UsageError(f"--labelstudio-url must be an http:// or https:// URL, got {scrub(repr(base_url))}")
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._timeout_s = timeout_s
        self._personal = is_personal_access_token(token.reveal())
        self._access: Secret | None = None

    @property
    def token_kind(self) -> str:
        return "personal access token" if self._personal else "legacy token"

    def get_json(self, path: str) -> Any:
        """GET `path` (from the server root, e.g. `/api/projects/1`) and parse the JSON answer."""
        if self._personal and self._access is None:
            self._access = self._refresh()
        try:
            return self._request(path)
        except urllib.error.HTTPError as error:
            if not (self._personal and error.code == 401):
                raise self._http_failure(path, error) from None
        self._access = self._refresh()  # the access token expired between requests
        try:
            return self._request(path)
        except urllib.error.HTTPError as error:
            raise self._http_failure(path, error) from None

    def _authorization(self) -> str:
        if self._access is not None:
            return f"Bearer {self._access.reveal()}"
        return f"Token {self._token.reveal()}"

    def _request(self, path: str) -> Any:
        request = urllib.request.Request(self.base_url + path, headers={"Accept": "application/json"})
        request.add_unredirected_header("Authorization", self._authorization())
        return self._send(request, path)

    def _refresh(self) -> Secret:
        """A fresh access token for the personal access token."""
        body = json.dumps({"refresh": self._token.reveal()}).encode()
        request = urllib.request.Request(
            self.base_url + REFRESH_PATH,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        try:
            answer = self._send(request, REFRESH_PATH)
        except urllib.error.HTTPError as error:
            if error.code in (400, 401, 403):
                raise LabelStudioError(
                    f"Label Studio at {self.base_url} rejected the personal access token (HTTP {error.code} from "
                    f"{REFRESH_PATH}{self._detail(error)}): it may be revoked or expired; create a new one under "
                    "Account & Settings > Personal Access Token"
                ) from None
            if error.code == 404:
                raise LabelStudioError(
                    f"Label Studio at {self.base_url} has no {REFRESH_PATH} (HTTP 404), so it cannot take a personal "
                    "access token (an older Label Studio); use a legacy token"
                ) from None
            raise self._http_failure(REFRESH_PATH, error) from None
        access = answer.get("access") if isinstance(answer, dict) else None
        if not isinstance(access, str) or not access:
            raise LabelStudioError(f"Label Studio at {self.base_url} answered {REFRESH_PATH} without an access token")
        return Secret(access)

    def _send(self, request: urllib.request.Request, path: str) -> Any:
        """Send a request; HTTP errors propagate as HTTPError, everything else becomes LabelStudioError."""
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as response:
                payload = response.read()
        except urllib.error.HTTPError:
            raise
        except urllib.error.URLError as error:
            raise LabelStudioError(f"cannot reach Label Studio at {self.base_url}: {error.reason}") from None
        except TimeoutError:
            raise LabelStudioError(
                f"Label Studio at {self.base_url} did not answer {path} within {self._timeout_s:g} s"
            ) from None
        except (OSError, http.client.HTTPException) as error:
            raise LabelStudioError(f"the connection to Label Studio at {self.base_url} failed: {error!r}") from None
        try:
            return json.loads(payload)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise LabelStudioError(
                f"Label Studio at {self.base_url} answered {path} with something that is not JSON "
                f"({len(payload)} bytes starting {payload[:60]!r}); is the URL the server's root?"
            ) from None

    def _http_failure(self, path: str, error: urllib.error.HTTPError) -> LabelStudioError:
        where = f"Label Studio at {self.base_url} answered {path} with HTTP {error.code}{self._detail(error)}"
        if error.code in (401, 403):
            hint = (
                "the access token from the personal access token was refused"
                if self._personal
                else "check the token (Account & Settings > Legacy Token), or use a personal access token"
            )
            return LabelStudioError(f"{where}: the {self.token_kind} was not accepted; {hint}")
        if error.code == 404:
            return LabelStudioError(f"{where}: not found; check --project and --labelstudio-url")
        return LabelStudioError(where)

    def _detail(self, error: urllib.error.HTTPError) -> str:
        """The server's `detail` text, if any, scrubbed of credentials and shortened."""
        try:
            document = json.loads(error.read())
        except (OSError, ValueError):
            return ""
        detail = document.get("detail") if isinstance(document, dict) else None
        if not isinstance(detail, str) or not detail:
            return ""
        return f": {scrub(detail)[:_MAX_DETAIL_CHARS]}"

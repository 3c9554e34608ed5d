"""Credentials that cannot leak by accident into messages, logs, reports or tracebacks.

Two halves:

- `Secret` holds a credential and prints as `Secret('***')`; `reveal()` is called only
  where the value is sent. Making one *registers* its value (and the user name it is
  sent with, if any) for `scrub`, process-wide: whatever wraps a credential in `Secret`
  has also asked for it to be scrubbed, so no call site can forget the second step.
- `scrub(text)` is applied where text leaves the process (the error line, each JSON log
  event, the terminal summary, report.json and dataset_info.yaml). A server may quote
  what it received, so a message can hold a credential in a form the converter never
  wrote itself. `scrub` replaces with `***`:

  1. every registered value, raw, JSON-escaped and URL-encoded (`quote` with and without
     `/` safe, `quote_plus`);
  2. its base64 in either alphabet (standard, urlsafe), padded or not, whatever comes
     before or after it: `value`, `value:` (Scale's key as Basic user), `:value`,
     `user:value` for any user. Base64 encodes 3 bytes as 4 characters, so where the
     value starts inside the encoded bytes (offset 0, 1 or 2 modulo 3) decides its
     characters; the characters determined by the value's bytes alone ("cores") are
     the same whatever surrounds it, and the three cores are registered. A match is
     widened to the whole run of base64 characters around it (the user part, the
     characters shared with neighbouring bytes, `=` padding), so `Basic ***` remains;
     not to the left across a backslash escape, so scrubbed JSON or YAML text stays valid;
  3. **any 8 consecutive characters** of any of the forms above, not only the whole
     form: messages are often shortened (a 300-character detail cut mid-key, an echo
     cut to `Basic bGl2ZV84...`), and such a piece still narrows the secret down.
     8 characters (48 bits of a base64 form, at least 8 characters of a raw value) is
     both the most a shortened echo reveals unscrubbed and long enough that innocent
     text (hashes, paths, words) essentially never matches by chance. A value shorter
     than 8 characters is matched whole only; one shorter than `MIN_SECRET_CHARS` is
     too short to find by content without blanking ordinary text, and is left to the
     rules below;
  4. whatever the value, by shape: URL user info (`scheme://user:pass@host` ->
     `scheme://***@host`), the values of query parameters that carry credentials
     (`CREDENTIAL_PARAMETERS`, any case, in a URL or a bare query string), header values
     of `Authorization` / `Proxy-Authorization` / `X-Api-Key` / `Cookie`, and the token
     after `Basic`, `Bearer` or `Token`.

Scrub strings before they are serialized (`scrub_data` on the document). Scrubbing the
serialized JSON or YAML text instead still removes every registered secret, but YAML
folds long strings at spaces (so a shape like `Authorization: Basic x` may be cut in
two), and a secret holding `"` or `\\` may match the format's own quotes and leave the
file unparsable.

Scrubbing happens in the process that writes the text; worker processes inherit the
registry when forked, and a `Secret` pickled into a spawned one registers itself again.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections.abc import Iterable
from typing import Any, TypeVar
from urllib.parse import quote, quote_plus, urlsplit

from converter.errors import UsageError

REDACTED = "***"
MIN_SECRET_CHARS = 4
"""Values shorter than this are not matched by content (they would blank ordinary text), only by shape."""
FRAGMENT_CHARS = 8
"""Any run of this many characters of a derived form is scrubbed, and widened to the whole run it belongs to."""

CREDENTIAL_PARAMETERS = (
    "token", "access_token", "refresh_token", "id_token", "auth", "api_key", "apikey", "api-key", "key",
    "secret", "client_secret", "password", "passwd", "pwd", "signature", "sig", "awsaccesskeyid",
    "x-amz-signature", "x-amz-credential", "x-amz-security-token",
    "x-goog-signature", "x-goog-credential", "x-goog-security-token",
)  # fmt: skip

_BASE64_RUN = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/-_")
# the scheme's length is bounded so that a long run like `a.a.a.a...` is not rescanned from every boundary
_USERINFO = re.compile(r"\b([a-z][a-z0-9+.-]{0,31}://)[^\s/?#@'\"<>]*(?:@[^\s/?#@'\"<>]*)*@", re.IGNORECASE)
_QUERY_PARAMETER = re.compile(
    r"(?<![\w.-])(" + "|".join(re.escape(name) for name in CREDENTIAL_PARAMETERS) + r")=[^&#\s'\"<>\\]+",
    re.IGNORECASE,
)
_HEADER = re.compile(
    r"\b((?:proxy-)?authorization|x-api-key|cookie)([\"']?\s*[:=]\s*[\"']?)[^\"'\r\n\\]+", re.IGNORECASE
)
# a token after an auth scheme: 8+ token68 characters, one of them (after the first) not a lowercase letter,
# so that English ("basic authentication", "token refreshed") is left alone
_SCHEME_TOKEN = re.compile(
    r"\b((?i:basic|bearer|token)\s+)(?=[A-Za-z0-9._~+/=-]{8})[A-Za-z0-9._~+/-][a-z]*[0-9A-Z._~+/=-][A-Za-z0-9._~+/=-]*"
)

_MAY_HOLD_CREDENTIAL = re.compile(r"[@=]|authorization|x-api-key|cookie|basic|bearer|token", re.IGNORECASE)
"""What one of the shape rules needs to match at all: `@` (user info), `=` (a query), a header or scheme name."""

T = TypeVar("T")


class _Registry:
    """The registered values and what `scrub` looks for: 8-character fragments, and whole short forms."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: set[tuple[str, str | None]] = set()
        self.fragments: dict[str, bool] = {}  # fragment -> whether it belongs only to base64 forms (widen it)
        self.short_forms: dict[str, bool] = {}  # forms shorter than FRAGMENT_CHARS, matched whole

    def add(self, value: str, user: str | None) -> None:
        if len(value) < MIN_SECRET_CHARS:
            return
        with self._lock:
            if (value, user) in self._values:
                return
            self._values.add((value, user))
            fragments, short_forms = dict(self.fragments), dict(self.short_forms)
            for form, encoded in _derived_forms(value, user):
                target = short_forms if len(form) < FRAGMENT_CHARS else fragments
                pieces = [form] if len(form) < FRAGMENT_CHARS else _windows(form)
                for piece in pieces:
                    target[piece] = target.get(piece, True) and encoded
            self.fragments, self.short_forms = fragments, short_forms  # swapped whole: readers take no lock


_REGISTRY = _Registry()


def register(value: str, user: str | None = None) -> None:
    """Have `scrub` remove `value` and its derived forms from now on (`user`: the name it is sent with)."""
    _REGISTRY.add(value, user)


def scrub(text: str) -> str:
    """`text` with every registered secret (in any derived form) and every credential-shaped value as `***`.

    The shape rules run only when one search finds what any of them needs (`@`, `=`, a
    header or scheme name): most text holds none, and a report of a million skipped lines
    is scrubbed entry by entry.
    """
    text = _scrub_registered(text)
    if _MAY_HOLD_CREDENTIAL.search(text) is None:
        return text
    text = _USERINFO.sub(rf"\1{REDACTED}@", text)
    text = _QUERY_PARAMETER.sub(rf"\1={REDACTED}", text)
    text = _HEADER.sub(rf"\1\2{REDACTED}", text)
    return _SCHEME_TOKEN.sub(rf"\1{REDACTED}", text)


def scrub_data(data: T) -> T:
    """`data` (JSON- or YAML-like: dicts, lists, tuples, strings) with every string, keys included, scrubbed."""
    scrubbed: Any
    if isinstance(data, str):
        scrubbed = scrub(data)
    elif isinstance(data, dict):
        scrubbed = {scrub_data(key): scrub_data(value) for key, value in data.items()}
    elif isinstance(data, list | tuple):
        scrubbed = type(data)(scrub_data(item) for item in data)
    else:
        scrubbed = data
    return scrubbed  # type: ignore[no-any-return]


def refuse_url_credentials(url: str, option: str) -> None:
    """Raise `UsageError` if `url` carries user info, after registering its password, which the message omits.

    A service's credentials come from the environment or a file, never from a URL: a URL is
    shown in messages and written into dataset_info.yaml, and the Authorization header is
    taken by the token, so a `user:password@` could be neither sent nor kept out of sight.
    """
    try:
        parts = urlsplit(url)
        user, password = parts.username, parts.password
    except ValueError:  # an unparsable host or port: not ours to judge here, nor to echo
        return
    if user is None and password is None:
        return
    if password:
        register(password, user)
    raise UsageError(
        f"{option} must not carry a user name or password ({scrub(url)}); pass the server's root URL alone, "
        "the credentials come from the environment or a file"
    )


class Secret:
    """Holds an API key or token; prints as `Secret('***')`. Call `reveal()` where it is sent.

    Making one registers the value for `scrub` (with `user`, the name it is sent with in
    HTTP Basic auth, if any): a credential the converter holds is a credential it scrubs.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str, *, user: str | None = None) -> None:
        self._value = value
        register(value, user)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __reduce__(self) -> tuple[type[Secret], tuple[str]]:
        """Unpickling goes through `__init__`, so a spawned worker process registers the value too."""
        return (Secret, (self._value,))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))


def _derived_forms(value: str, user: str | None) -> Iterable[tuple[str, bool]]:
    """`(form, is_base64)` for every form the value may travel or be quoted in."""
    yield value, False
    yield json.dumps(value, ensure_ascii=False)[1:-1], False
    yield json.dumps(value, ensure_ascii=True)[1:-1], False
    for encoded in (quote(value, safe=""), quote(value), quote_plus(value)):
        yield encoded, False
    raw = value.encode()
    combinations = [raw, raw + b":", b":" + raw] + ([f"{user}:".encode() + raw] if user else [])
    for alphabet in (base64.b64encode, base64.urlsafe_b64encode):
        for combination in combinations:
            encoded = alphabet(combination).decode()
            yield encoded, True
            yield encoded.rstrip("="), True
        for offset in range(3):  # the value starting at byte 0, 1 or 2 of a 3-byte group
            encoded = alphabet(b"\0" * offset + raw).decode()
            first = -(-8 * offset // 6)  # characters holding any bit of the bytes before the value
            last = 8 * (offset + len(raw)) // 6  # characters holding only bits of the value and before
            if last - first >= FRAGMENT_CHARS:
                yield encoded[first:last], True


def _windows(form: str) -> list[str]:
    return [form[start : start + FRAGMENT_CHARS] for start in range(len(form) - FRAGMENT_CHARS + 1)]


_ESCAPE_LENGTHS = {"u": 6, "x": 4, "U": 10}  # JSON's \\uXXXX, YAML's \\xXX and \\UXXXXXXXX; others are 2 long


def _whole_escapes(text: str, start: int, end: int) -> tuple[int, int]:
    """The span widened so that it neither begins nor ends inside a backslash escape.

    Serialized JSON or YAML may be scrubbed as text; a secret that looks like hex digits
    may match the digits of an escape (`\\u0010` followed by `0000...`), and removing half
    an escape would leave the file unparsable. Removing the whole escape removes a
    character of the message, never a character of the format.
    """
    for position in (start, end):
        escape = _escape_around(text, position)
        if escape is not None:
            start, end = min(start, escape[0]), max(end, escape[1])
    return start, end


def _escape_around(text: str, position: int) -> tuple[int, int] | None:
    """The escape `text[position]` falls strictly inside, as (first, after last), if any."""
    longest = max(_ESCAPE_LENGTHS.values())
    for backslash in range(position - 1, max(position - longest, 0) - 1, -1):
        if text[backslash] != "\\":
            continue
        first = backslash
        while first > 0 and text[first - 1] == "\\":
            first -= 1
        if (backslash - first) % 2 == 1:  # the second half of an escaped backslash: no escape starts here
            return None
        kind = text[backslash + 1 : backslash + 2]
        after = backslash + _ESCAPE_LENGTHS.get(kind, 2)
        return (backslash, after) if position < after else None
    return None


def _scrub_registered(text: str) -> str:
    """Blank every fragment of a registered form; base64 ones widened to their run of base64 characters."""
    fragments, short_forms = _REGISTRY.fragments, _REGISTRY.short_forms
    if not fragments and not short_forms:
        return text
    spans: list[tuple[int, int, bool]] = []
    for start in range(len(text) - FRAGMENT_CHARS + 1):
        widen = fragments.get(text[start : start + FRAGMENT_CHARS])
        if widen is not None:
            spans.append((start, start + FRAGMENT_CHARS, widen))
    for form, widen in short_forms.items():
        start = text.find(form)
        while start >= 0:
            spans.append((start, start + len(form), widen))
            start = text.find(form, start + 1)
    if not spans:
        return text
    widened: list[tuple[int, int]] = []
    for start, end, widen in spans:
        if widen:
            left = start
            while left > 0 and text[left - 1] in _BASE64_RUN:
                left -= 1
            if left == 0 or text[left - 1] != "\\":  # else the run begins inside an escape (`\n`, `\u00e9`): keep it
                start = left
            while end < len(text) and (text[end] in _BASE64_RUN or text[end] == "="):
                end += 1
        widened.append(_whole_escapes(text, start, end))
    merged: list[list[int]] = []
    for start, end in sorted(widened):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    pieces, position = [], 0
    for start, end in merged:
        pieces.append(text[position:start] + REDACTED)
        position = end
    return "".join(pieces) + text[position:]

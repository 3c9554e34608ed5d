"""Secrets never leave the process, in any form: `scrub` alone, then the real CLI against a server that echoes.

The echo server (`http.server` on 127.0.0.1, a random port) answers every request with
the request itself: its Authorization header first, then the request line, every
header and the body, then the Authorization value and the body cut short (as a server
that shortens what it quotes would). It puts that echo in an error answer's body (401,
403, 400, a JSON `error`/`detail` or plain text) or inside a 200 answer's fields the
converter may quote (a Scale task's `type`). Each test runs `dataset-converter` in a
subprocess, as a user would, and then looks for every derived form of every secret it
gave (raw, base64 of `key`, `key:`, `:key` and `user:key` in both alphabets, padded or
not, percent-encoded, and the first 8 characters of the raw value and of each base64
form) in stdout, stderr and every file under the output folder.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus, urlsplit

import pytest
from builders import image_pixels, write_image
from http_stand_in import serve
from hypothesis import given, settings
from hypothesis import strategies as st
from scale_tasks import box, image_task

from converter.core import secret
from converter.core.secret import (
    CREDENTIAL_PARAMETERS,
    FRAGMENT_CHARS,
    REDACTED,
    Secret,
    refuse_url_credentials,
    register,
    scrub,
    scrub_data,
)
from converter.errors import UsageError

CLI = Path(sys.executable).with_name("dataset-converter")
SCALE_KEY = "live_8c1d5e0f2a3b4c6d7e8f9a0b1c2d3e4f"
LEGACY_TOKEN = "3f9a1c2b4d5e6f708192a3b4c5d6e7f8091a2b3c"
PAT = (  # a JWT-shaped personal access token (header {"alg":"HS256","typ":"JWT"})
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ0b2tlbl90eXBlIjoicmVmcmVzaCIsImV4cCI6NDEwMjQ0NDgwMCwianRpIjoiN2Y"
    "zZTAxIiwidXNlcl9pZCI6MX0.Qm9ndXNTaWduYXR1cmVGb3JUZXN0c09ubHlOb3RSZWFs"
)
ACCESS = "eyJhbGciOiJIUzI1NiJ9.eyJ0b2tlbl90eXBlIjoiYWNjZXNzIiwidXNlcl9pZCI6MX0.QWNjZXNzU2lnbmF0dXJlWHl6MTIz"
PASSWORD = "hunter2-Pa55word!"
SIGNATURE = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
CREDENTIAL = "AKIAIOSFODNN7EXAMPLE%2F20240507%2Fus-east-1%2Fs3%2Faws4_request"
MAX_REQUESTS = 40  # every run here needs a handful; more would mean a retry loop


# ---------------------------------------------------------------------------
# Derived forms, computed here independently of converter.core.secret


def derived_forms(value: str, user: str | None = None) -> list[str]:
    """Every form of `value` that must never appear: whole forms, and 8-character prefixes of those that hide it."""
    raw = value.encode()
    whole = [value, quote(value, safe=""), quote(value), quote_plus(value)]
    hiding = [raw, raw + b":", b":" + raw]  # base64 forms whose first 8 characters are mostly the secret
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        for combination in [*hiding, *([f"{user}:".encode() + raw] if user else [])]:
            encoded = encode(combination).decode()
            whole += [encoded, encoded.rstrip("=")]
        whole += [encode(combination).decode()[:FRAGMENT_CHARS] for combination in hiding]
    return [*dict.fromkeys([*whole, value[:FRAGMENT_CHARS]])]


def basic(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


@contextmanager
def fresh_registry() -> Iterator[None]:
    """An empty registry for the test's duration, so one test's secrets do not blank another's text."""
    saved = secret._REGISTRY
    secret._REGISTRY = secret._Registry()
    try:
        yield
    finally:
        secret._REGISTRY = saved


# ---------------------------------------------------------------------------
# scrub() on its own

ASCII_SECRET = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, blacklist_characters="*"),  # `*` is REDACTED's
    min_size=FRAGMENT_CHARS,
    max_size=64,
)


@settings(max_examples=300, deadline=None)
@given(
    value=ASCII_SECRET,
    user=st.text(alphabet="abcdefghijklmnopqrstuvwxyz._-", min_size=1, max_size=12),
    before=st.text(max_size=20),
    after=st.text(max_size=20),
    cut=st.integers(min_value=FRAGMENT_CHARS, max_value=80),
)
def test_every_derived_form_of_a_registered_secret_is_scrubbed_whole_or_cut(
    value: str, user: str, before: str, after: str, cut: int
) -> None:
    with fresh_registry():
        Secret(value, user=user)
        for form in derived_forms(value, user):
            for shown in (form, form[:cut] + "..."):
                text = scrub(f"{before}{shown}{after}")
                assert form[:FRAGMENT_CHARS] not in text, (form, text)
                document = {"message": f"{before}{shown}{after}"}
                assert form[:FRAGMENT_CHARS] not in json.dumps(scrub_data(document), ensure_ascii=False)
                serialized = scrub(json.dumps(document, ensure_ascii=False))  # scrubbed after serializing
                assert form[:FRAGMENT_CHARS] not in serialized
                if '"' not in value and "\\" not in value:  # else a piece of the secret may match JSON's own quotes
                    json.loads(serialized)  # still valid JSON: no escape cut in half


@settings(max_examples=60, deadline=None)
@given(value=ASCII_SECRET, user=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=30))
def test_basic_auth_with_any_user_is_scrubbed_without_knowing_the_user(value: str, user: str) -> None:
    """The value's base64 depends on where it starts in a 3-byte group, not on who precedes it."""
    with fresh_registry():
        register(value)
        header = basic(user, value)
        assert scrub(f"echo: {header}!") == f"echo: {REDACTED}!"


def test_short_secrets_are_matched_whole_and_tiny_ones_only_by_shape() -> None:
    with fresh_registry():
        register("pw12x")  # 5 characters: matched whole, not by 8-character pieces
        register("ab")  # shorter than MIN_SECRET_CHARS: blanking every "ab" would wreck messages
        assert scrub("the pw12x and about") == f"the {REDACTED} and about"
        assert scrub(f"Basic {basic('u', 'ab')}") == f"Basic {REDACTED}"  # by shape
        assert scrub("https://u:ab@host/x") == f"https://{REDACTED}@host/x"


def test_scrubbing_serialized_json_never_cuts_an_escape_in_half() -> None:
    """A hex-looking secret may match the digits of `\\u0010`; the whole escape goes, so the JSON still parses."""
    with fresh_registry():
        register("00000000c0ffee")
        for message in ("\x1000000000c0ffee!", "\u00e9MDAwMDAwMDBjMGZmZWU=", "a\\00000000c0ffee"):
            serialized = scrub(json.dumps({"m": message}))
            assert "00000000" not in serialized and "MDAwMDAw" not in serialized
            assert json.loads(serialized)["m"].endswith(("***!", "***"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("GET https://bob:s3cret@example.com:8080/a?b=1 now", f"GET https://{REDACTED}@example.com:8080/a?b=1 now"),
        ("see s3://KEY:SECRET@bucket/x and ok", f"see s3://{REDACTED}@bucket/x and ok"),
        ("Authorization: Basic Ym9iOnNlY3JldA==\r\nHost: x", f"Authorization: {REDACTED}\r\nHost: x"),
        ('{"authorization": "Token 12345"}', f'{{"authorization": "{REDACTED}"}}'),
        ("got Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig.", f"got Bearer {REDACTED}"),
        ("refused token AbCdEf123456 here", f"refused token {REDACTED} here"),
        ("the basic authentication failed; token refreshed", "the basic authentication failed; token refreshed"),
        ("Authentication required", "Authentication required"),
    ],
)
def test_credentials_are_scrubbed_by_their_shape(text: str, expected: str) -> None:
    with fresh_registry():
        assert scrub(text) == expected


@pytest.mark.parametrize("name", CREDENTIAL_PARAMETERS)
def test_credential_query_parameters_are_blanked_in_any_case(name: str) -> None:
    with fresh_registry():
        for spelled in (name, name.upper()):
            url = f"https://h/p.jpg?a=1&{spelled}=V4lue%2Fx&z=2"
            assert scrub(f"fetch {url} failed") == f"fetch https://h/p.jpg?a=1&{spelled}={REDACTED}&z=2 failed"
        assert scrub(f"{name}=V4lue") == f"{name}={REDACTED}"  # a bare query string, as a body may echo it
        assert scrub(f"mon{name}=V4lue") == f"mon{name}=V4lue"  # another parameter that ends alike


def test_a_secret_registers_when_made_and_again_when_unpickled() -> None:
    with fresh_registry():
        made = Secret("tok_made_0123456789")
        assert scrub("x tok_made_0123456789") == f"x {REDACTED}"
        assert repr(made) == str(made) == "Secret('***')"
    with fresh_registry():
        restored = pickle.loads(pickle.dumps(made))  # as a spawned worker process receives it
        assert restored == made
        assert scrub("x tok_made_0123456789") == f"x {REDACTED}"


def test_scrub_data_scrubs_every_string_and_keeps_the_shape() -> None:
    with fresh_registry():
        register("k3y-ABCDEFGH-0123")
        data = {"k3y-ABCDEFGH-0123": ["a k3y-ABCDEFGH-0123", ("https://u:p@h", 3)], "n": None}
        assert scrub_data(data) == {REDACTED: [f"a {REDACTED}", (f"https://{REDACTED}@h", 3)], "n": None}


def test_a_url_with_user_info_is_refused_without_echoing_the_password() -> None:
    with fresh_registry():
        with pytest.raises(UsageError) as raised:
            refuse_url_credentials(f"https://someone:{PASSWORD}@ls.example.com", "--labelstudio-url")
        assert PASSWORD not in str(raised.value) and "--labelstudio-url must not carry" in str(raised.value)
        assert scrub(f"later: {PASSWORD}") == f"later: {REDACTED}"  # registered on the way
        refuse_url_credentials("https://ls.example.com:8080/", "--labelstudio-url")  # a plain URL passes


# ---------------------------------------------------------------------------
# The echo server


Answer = Callable[[str], tuple[int, str, bytes]]  # echo -> status, content type, body


@dataclass
class Echo:
    """Routes (path without query -> answer) and every request received, as echoed."""

    answers: dict[str, Answer] = field(default_factory=dict)
    received: list[str] = field(default_factory=list)
    url: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)


def _echo_text(handler: BaseHTTPRequestHandler, body: bytes) -> str:
    """First what a shortened quote keeps (the credential cut, then whole, without its scheme), then everything."""
    authorization = handler.headers.get("Authorization", "")
    credential = authorization.partition(" ")[2]
    text = body.decode("utf-8", "replace")
    return "\n".join(
        [
            f"refused {credential[: FRAGMENT_CHARS + 2]}... ({text[:30]}...) = {credential} ({text})",
            handler.requestline,
            *(f"{name}: {value}" for name, value in handler.headers.items()),
            text,
        ]
    )


def _handler(state: Echo) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            echo = _echo_text(self, body)
            with state.lock:
                state.received.append(echo)
                too_many = len(state.received) > MAX_REQUESTS
            path = urlsplit(self.path).path
            answer = state.answers.get(path) or text_answer(404)
            status, content_type, payload = (429, "text/plain", b"enough") if too_many else answer(echo)
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:
            self._answer()

        def do_POST(self) -> None:
            self._answer()

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the tests read `state.received`."""

    return Handler


@pytest.fixture
def echo() -> Iterator[Echo]:
    state = Echo()
    with serve(_handler(state)) as url:
        state.url = url
        yield state


def json_answer(status: int, make: Callable[[str], Any]) -> Answer:
    return lambda text: (status, "application/json", json.dumps(make(text)).encode())


def text_answer(status: int) -> Answer:
    return lambda text: (status, "text/plain", text.encode())


def png_answer(data: bytes) -> Answer:
    return lambda text: (200, "image/png", data)


# ---------------------------------------------------------------------------
# The real CLI against it


@dataclass(frozen=True)
class Run:
    code: int
    stdout: str
    stderr: str
    output: Path


def dataset_converter(tmp_path: Path, environment: dict[str, str], *arguments: str) -> Run:
    """`dataset-converter convert ...` in a fresh process with only the credentials the test gives."""
    output = tmp_path / "out"
    env = {name: value for name, value in os.environ.items() if name not in ("SCALE_API_KEY", "LABEL_STUDIO_API_KEY")}
    env.update(environment, NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    env["DATASET_CONVERTER_WORKERS"] = "1"
    done = subprocess.run(
        [str(CLI), "convert", *arguments, "-o", str(output)],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        check=False,
    )
    return Run(done.returncode, done.stdout, done.stderr, output)


def assert_no_form_anywhere(run: Run, forms: list[str]) -> None:
    """No form in stdout, stderr, or any file under the output folder (report.json and dataset_info.yaml included)."""
    files = [path for path in run.output.rglob("*") if path.is_file()] if run.output.exists() else []
    for form in forms:
        assert form not in run.stdout, f"{form!r} on stdout"
        assert form not in run.stderr, f"{form!r} on stderr: {run.stderr}"
        for path in files:
            assert form.encode() not in path.read_bytes(), f"{form!r} written into {path}"


def scale_key_forms() -> list[str]:
    return derived_forms(SCALE_KEY)


def _png(tmp_path: Path) -> bytes:
    return write_image(tmp_path / "made" / "ok.png", image_pixels(24, 16, 3))


def _signed(echo: Echo, name: str) -> str:
    return f"{echo.url}/files/{name}?X-Amz-Credential={CREDENTIAL}&X-Amz-Expires=60&X-Amz-Signature={SIGNATURE}"


SIGNED_FORMS = [SIGNATURE, SIGNATURE[:FRAGMENT_CHARS], CREDENTIAL, quote(CREDENTIAL), "AKIAIOSFODNN7EXAMPLE"]


@pytest.mark.parametrize("status", [400, 401])
def test_scale_errors_that_echo_the_basic_header_show_no_form_of_the_key(
    echo: Echo, tmp_path: Path, status: int
) -> None:
    echo.answers["/v1/tasks"] = json_answer(status, lambda text: {"error": text, "status_code": status})

    run = dataset_converter(
        tmp_path, {"SCALE_API_KEY": SCALE_KEY}, "--scale-project", "p", "--scale-api-url", f"{echo.url}/v1",
        "--download-images",
    )  # fmt: skip

    assert run.code == 1, run.stderr
    assert f"HTTP {status}" in run.stderr
    assert f"Authorization: Basic {basic(SCALE_KEY, '')}" in echo.received[0]  # the key was sent, and echoed back
    if status != 401:  # a 401 says "key not accepted" and quotes nothing
        assert f"refused {REDACTED}... (...) = {REDACTED}" in run.stderr
    assert_no_form_anywhere(run, scale_key_forms())


def test_a_scale_pull_whose_answers_and_downloads_echo_the_request_leaks_nothing(echo: Echo, tmp_path: Path) -> None:
    """A 200 page whose task `type` is the echo (quoted in report.json), a signed link answered 404 with the echo."""
    echo.answers["/files/ok.png"] = png_answer(_png(tmp_path))
    echo.answers["/files/gone.png"] = text_answer(404)

    def page(text: str) -> dict[str, Any]:
        good = image_task("t-ok", _signed(echo, "ok.png"), [box("cat", 1, 1, 5, 5)], project="p")
        gone = image_task("t-gone", _signed(echo, "gone.png"), [box("cat", 1, 1, 5, 5)], project="p")
        odd = {**image_task("t-odd", _signed(echo, "ok.png"), [box("cat", 1, 1, 5, 5)], project="p"), "type": text}
        return {"docs": [good, gone, odd], "total": 3, "limit": 100, "offset": 0, "has_more": False, "next_token": None}

    echo.answers["/v1/tasks"] = json_answer(200, page)

    run = dataset_converter(
        tmp_path, {"SCALE_API_KEY": SCALE_KEY}, "--scale-project", "p", "--scale-api-url", f"{echo.url}/v1",
        "--download-images",
    )  # fmt: skip

    assert run.code == 0, run.stderr
    report = (run.output / "report.json").read_text(encoding="utf-8")
    assert "download_failed" in report and "unsupported_task_type" in report
    assert REDACTED in report  # the echoed header was there, and scrubbed
    assert any(SIGNATURE in text for text in echo.received)  # the signature was sent
    assert (run.output / "dataset_info.yaml").is_file()
    assert_no_form_anywhere(run, [*scale_key_forms(), *SIGNED_FORMS])


def test_downloads_from_an_export_never_show_a_signature_or_url_password(echo: Echo, tmp_path: Path) -> None:
    echo.answers["/files/ok.png"] = png_answer(_png(tmp_path))
    echo.answers["/files/expired.png"] = text_answer(403)
    echo.answers["/files/bad.png"] = json_answer(400, lambda text: {"message": text})
    with_user_info = _signed(echo, "pw.png").replace("://", f"://imguser:{PASSWORD}@")
    tasks = [
        image_task(f"t-{name}", link, [box("cat", 1, 1, 5, 5)])
        for name, link in [
            ("ok", _signed(echo, "ok.png")),
            ("expired", _signed(echo, "expired.png")),
            ("bad", _signed(echo, "bad.png")),
            ("missing", _signed(echo, "missing.png")),
            ("pw", with_user_info),
        ]
    ]
    export = tmp_path / "export.json"
    export.write_text(json.dumps(tasks), encoding="utf-8")

    run = dataset_converter(tmp_path, {}, "--source", "scale", "-a", str(export), "--download-images")

    assert run.code == 0, run.stderr
    report = (run.output / "report.json").read_text(encoding="utf-8")
    assert "expired_url" in report and "download_failed" in report
    assert sum(SIGNATURE in text for text in echo.received) >= 4
    assert_no_form_anywhere(run, [*SIGNED_FORMS, *derived_forms(PASSWORD, "imguser")])


def _label_studio(echo: Echo, tmp_path: Path, token: str, *url_user_info: str) -> Run:
    images = tmp_path / "images"
    images.mkdir(exist_ok=True)
    url = echo.url.replace("://", f"://{url_user_info[0]}@") if url_user_info else echo.url
    return dataset_converter(
        tmp_path, {"LABEL_STUDIO_API_KEY": token}, "--labelstudio-url", url, "--project", "1", "-i", str(images)
    )


@pytest.mark.parametrize("answer", [json_answer(401, lambda text: {"detail": text}), text_answer(200)])
def test_a_legacy_token_echoed_in_an_error_or_a_non_json_answer_is_never_shown(
    echo: Echo, tmp_path: Path, answer: Answer
) -> None:
    echo.answers["/api/projects/1"] = answer

    run = _label_studio(echo, tmp_path, LEGACY_TOKEN)

    assert run.code == 1, run.stderr
    assert f"Authorization: Token {LEGACY_TOKEN}" in echo.received[0]
    assert f"refused {REDACTED}... (...) = {REDACTED}" in run.stderr  # echoed, and scrubbed
    assert f"Label Studio at {echo.url}" in run.stderr
    assert_no_form_anywhere(run, derived_forms(LEGACY_TOKEN))


@pytest.mark.parametrize("refused", ["refresh", "project"])
def test_a_personal_access_token_and_its_access_token_echoed_back_are_never_shown(
    echo: Echo, tmp_path: Path, refused: str
) -> None:
    """The refresh body carries the PAT, the Bearer header the access token: whichever answer echoes, neither shows."""
    if refused == "refresh":
        echo.answers["/api/token/refresh"] = json_answer(401, lambda text: {"detail": text})
    else:
        echo.answers["/api/token/refresh"] = json_answer(200, lambda text: {"access": ACCESS})
        echo.answers["/api/projects/1"] = json_answer(403, lambda text: {"detail": text})

    run = _label_studio(echo, tmp_path, PAT)

    assert run.code == 1, run.stderr
    assert PAT in echo.received[0]  # the refresh body
    if refused == "project":
        assert f"Bearer {ACCESS}" in echo.received[-1]
    assert_no_form_anywhere(run, [*derived_forms(PAT), *derived_forms(ACCESS)])


def test_a_label_studio_url_with_a_password_is_refused_without_showing_it(echo: Echo, tmp_path: Path) -> None:
    run = _label_studio(echo, tmp_path, LEGACY_TOKEN, f"someone:{PASSWORD}")

    assert run.code == 2, run.stderr
    assert "--labelstudio-url must not carry a user name or password" in run.stderr
    assert f"http://{REDACTED}@127.0.0.1" in run.stderr
    assert echo.received == []  # refused before any request
    assert_no_form_anywhere(run, [*derived_forms(PASSWORD, "someone"), *derived_forms(LEGACY_TOKEN)])


def test_a_scale_api_url_with_a_password_is_refused_without_showing_it(echo: Echo, tmp_path: Path) -> None:
    url = echo.url.replace("://", f"://someone:{PASSWORD}@") + "/v1"

    run = dataset_converter(
        tmp_path, {"SCALE_API_KEY": SCALE_KEY}, "--scale-project", "p", "--scale-api-url", url, "--download-images"
    )

    assert run.code == 2, run.stderr
    assert "--scale-api-url must not carry a user name or password" in run.stderr
    assert echo.received == []
    assert_no_form_anywhere(run, [*derived_forms(PASSWORD, "someone"), *scale_key_forms()])

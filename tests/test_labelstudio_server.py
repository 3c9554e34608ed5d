"""Pulling a project from a Label Studio server: a local stand-in server, then a real one.

The stand-in (`http.server` on 127.0.0.1, a random port) implements the three endpoints
the converter calls, with Label Studio's two token kinds: a legacy token accepted as
`Token <key>`, and a personal access token (a JWT) that only `POST /api/token/refresh`
accepts, answering an access token that the other endpoints accept as `Bearer <access>`.
Every test checks that no token appears in any output file, log line or message.

The real server is the `label-studio` package from PyPI, installed into its own
virtual environment (`.labelstudio-venv/` in the project root, git-ignored, created on
first use: a few minutes, about 1 GB) and started on 127.0.0.1 with a temporary data
folder. Without it those tests skip, saying why; DATASET_CONVERTER_REQUIRE_LABELSTUDIO=1
(set by CI) turns that skip into a failure.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
from builders import assert_secrets_nowhere, convert, flat, load_info, load_report
from http_stand_in import serve
from labelstudio_tasks import (
    annotation,
    brush,
    choices,
    keypoint,
    mask_to_brush,
    polygon,
    rectangle,
    relation,
    task,
    write_export,
    write_stand_in,
)
from readback import records_by_source_id
from typer.testing import Result

from converter.core.secret import Secret
from converter.sources.labelstudio_api import LabelStudioClient, LabelStudioError, is_personal_access_token

TOKEN_VARIABLE = "LABEL_STUDIO_API_KEY"
LEGACY_TOKEN = "5f3c0a9e1b7d4c2a8e6f0b1d3c5a7e9f1b3d5c7a"


def _jwt(payload: dict[str, Any]) -> str:
    def part(document: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(document).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(payload)}.c2lnbmF0dXJlLW5vdC1jaGVja2Vk"


PERSONAL_TOKEN = _jwt({"token_type": "refresh", "user_id": "1", "jti": "e3b0c44298fc1c14"})
PROJECT_ID = 7
CONFIG = """<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="box" toName="image"><Label value="zebra"/><Label value="apple"/></RectangleLabels>
  <PolygonLabels name="outline" toName="image"><Label value="leaf"/></PolygonLabels>
  <BrushLabels name="paint" toName="image"><Label value="sky"/></BrushLabels>
  <KeyPointLabels name="point" toName="image"><Label value="eye"/></KeyPointLabels>
  <Choices name="scene" toName="image"><Choice value="outdoor"/><Choice value="indoor"/></Choices>
</View>"""
CONFIG_CLASSES = ["zebra", "apple", "leaf", "sky", "eye", "outdoor", "indoor"]
CONTROL_OF_TYPE = {
    "rectanglelabels": "box",
    "polygonlabels": "outline",
    "brushlabels": "paint",
    "keypointlabels": "point",
    "choices": "scene",
}


def _project_tasks(images: Path) -> list[dict[str, Any]]:
    """Tasks with every result type, images written under `images` where the converter looks for them.

    `/data/upload/...` is written without its upload prefix (found by the fallback);
    `missing.png` is not written at all.
    """
    a_size, b_size, c_size = (64, 48), (40, 30), (32, 32)
    write_stand_in(images / "images" / "a.png", a_size, seed=1)
    write_stand_in(images / "upload" / "1" / "b.png", b_size, seed=2)
    write_stand_in(images / "bucket" / "c.png", c_size, seed=3)
    columns, rows = np.meshgrid(np.arange(b_size[0]), np.arange(b_size[1]))
    sky = columns > rows  # the upper-right triangle
    results_a = [
        rectangle(10, 20, 30, 40, ["zebra"], a_size),
        rectangle(50, 10, 25.5, 12.25, ["apple"], a_size, rotation=30),
        keypoint(25, 75, ["eye"], a_size),
        choices(["outdoor"]),
    ]
    results_b = [
        polygon([(10, 10), (90, 15), (50, 80)], ["leaf"], b_size),
        brush(mask_to_brush(sky), ["sky"], b_size),
        relation(),
    ]
    tasks = [
        task("/data/local-files/?d=images/a.png", annotation(results_a)),
        task("/data/upload/1/6e2a3b1c-b.png", annotation(results_b)),
        task("s3://bucket/c.png", annotation([choices(["indoor"])])),
        task("/data/upload/1/missing.png", annotation([])),
        task("s3://bucket/cancelled.png", annotation([], was_cancelled=True)),
    ]
    for entry in tasks:
        for item in entry["annotations"][0]["result"]:
            if item["type"] in CONTROL_OF_TYPE:
                item["from_name"] = CONTROL_OF_TYPE[item["type"]]
    return tasks


# ---------------------------------------------------------------------------
# A stand-in server


@dataclass
class StandIn:
    """A Label Studio stand-in: its state, and every request it received."""

    tasks: list[dict[str, Any]]
    access_uses: int | None = None  # an access token stops working after this many uses (it "expires")
    echo_token: bool = False  # a careless server that quotes the credentials it refused
    personal_tokens: bool = True  # False: a server too old to have /api/token/refresh
    requests: list[tuple[str, str, str]] = field(default_factory=list)  # (method, path, Authorization)
    issued: dict[str, int] = field(default_factory=dict)  # access token -> uses left
    url: str = ""

    def authorized(self, header: str) -> bool:
        if header == f"Token {LEGACY_TOKEN}":
            return True
        access = header.removeprefix("Bearer ")
        if header.startswith("Bearer ") and self.issued.get(access, 0) > 0:
            self.issued[access] -= 1
            return True
        return False

    def refresh(self, body: bytes) -> tuple[int, Any]:
        try:
            refresh = json.loads(body).get("refresh")
        except ValueError:
            refresh = None
        if refresh != PERSONAL_TOKEN:
            detail = f"Token is invalid: {refresh}" if self.echo_token else "Token is invalid"
            return 401, {"detail": detail, "code": "token_not_valid"}
        access = _jwt({"token_type": "access", "jti": f"access-{len(self.issued)}"})
        self.issued[access] = self.access_uses if self.access_uses is not None else 1000
        return 200, {"access": access}

    def get(self, path: str, query: dict[str, list[str]], header: str) -> tuple[int, Any]:
        if not self.authorized(header):
            detail = f"Invalid token: {header}" if self.echo_token else "Invalid token."
            return 401, {"detail": detail}
        if path == f"/api/projects/{PROJECT_ID}":
            return 200, {"id": PROJECT_ID, "title": "stand-in", "label_config": CONFIG}
        if path == f"/api/projects/{PROJECT_ID}/export" and query.get("exportType") == ["JSON"]:
            return 200, self.tasks
        return 404, {"detail": "Not found."}


def _handler(state: StandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self, status: int, document: Any) -> None:
            payload = json.dumps(document).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:
            parsed = urlsplit(self.path)
            header = self.headers.get("Authorization", "")
            state.requests.append(("GET", parsed.path, header))
            self._answer(*state.get(parsed.path, parse_qs(parsed.query), header))

        def do_POST(self) -> None:
            parsed = urlsplit(self.path)
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            state.requests.append(("POST", parsed.path, self.headers.get("Authorization", "")))
            if parsed.path == "/api/token/refresh" and state.personal_tokens:
                self._answer(*state.refresh(body))
            else:
                self._answer(404, {"detail": "Not found."})

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the test reads `state.requests` instead."""

    return Handler


@pytest.fixture
def stand_in(tmp_path: Path) -> Iterator[StandIn]:
    state = StandIn(_project_tasks(tmp_path / "images"))
    with serve(_handler(state)) as url:
        state.url = url
        yield state


def _pull(state: StandIn, tmp_path: Path, *options: str | Path) -> tuple[Result, Path]:
    output = tmp_path / "out"
    result = convert(
        "--labelstudio-url", state.url, "--project", str(PROJECT_ID), "-i", tmp_path / "images", "-o", output, *options
    )
    return result, output


def test_legacy_token_from_the_environment_pulls_the_project(
    stand_in: StandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_VARIABLE, LEGACY_TOKEN)

    result, output = _pull(stand_in, tmp_path)

    assert result.exit_code == 0, result.stderr
    assert [(method, path) for method, path, _ in stand_in.requests] == [
        ("GET", f"/api/projects/{PROJECT_ID}"),
        ("GET", f"/api/projects/{PROJECT_ID}/export"),
    ]
    assert {header for _, _, header in stand_in.requests} == {f"Token {LEGACY_TOKEN}"}
    info = load_info(output)
    assert info["classes"] == CONFIG_CLASSES  # the labelling config's order, not sorted
    assert info["input"]["annotations"] == f"{stand_in.url}/api/projects/{PROJECT_ID}"
    assert info["input"]["labelstudio_token_kind"] == "legacy token"
    assert info["input"]["relations_ignored"] == "1"
    records = records_by_source_id(output)
    assert sorted(records) == [
        "/data/local-files/?d=images/a.png",
        "/data/upload/1/6e2a3b1c-b.png",
        "s3://bucket/c.png",
    ]
    assert records["/data/upload/1/6e2a3b1c-b.png"]["image/filename"] == [b"upload/1/b.png"]
    report = load_report(output)
    skipped = {entry["key"]: entry for entry in report["skipped"]}
    assert {key: entry["code"] for key, entry in skipped.items()} == {
        "task at index 3": "missing_image",
        "task at index 4": "cancelled",
    }
    assert "pass -i <label-studio data folder>/media" in skipped["task at index 3"]["reason"]
    assert_secrets_nowhere([LEGACY_TOKEN], output, result)


def test_personal_access_token_is_exchanged_for_a_bearer_access_token(
    stand_in: StandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TOKEN_VARIABLE, raising=False)
    token_file = tmp_path / "token"
    token_file.write_text(PERSONAL_TOKEN + "\n", encoding="utf-8")

    result, output = _pull(stand_in, tmp_path, "--labelstudio-token-path", token_file)

    assert result.exit_code == 0, result.stderr
    (access,) = stand_in.issued
    assert stand_in.requests == [
        ("POST", "/api/token/refresh", ""),
        ("GET", f"/api/projects/{PROJECT_ID}", f"Bearer {access}"),
        ("GET", f"/api/projects/{PROJECT_ID}/export", f"Bearer {access}"),
    ]
    assert load_info(output)["input"]["labelstudio_token_kind"] == "personal access token"
    assert len(records_by_source_id(output)) == 3
    assert_secrets_nowhere([PERSONAL_TOKEN, access], output, result)


def test_an_expired_access_token_is_refreshed_once(
    stand_in: StandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_VARIABLE, PERSONAL_TOKEN)
    stand_in.access_uses = 1

    result, output = _pull(stand_in, tmp_path)

    assert result.exit_code == 0, result.stderr
    assert [(method, path) for method, path, _ in stand_in.requests] == [
        ("POST", "/api/token/refresh"),
        ("GET", f"/api/projects/{PROJECT_ID}"),
        ("GET", f"/api/projects/{PROJECT_ID}/export"),  # 401: the first access token has expired
        ("POST", "/api/token/refresh"),
        ("GET", f"/api/projects/{PROJECT_ID}/export"),
    ]
    assert_secrets_nowhere([PERSONAL_TOKEN, *stand_in.issued], output, result)


@pytest.mark.parametrize(
    ("token", "fragment"),
    [
        ("0000000000aaaaaaaaaabbbbbbbbbbcccccccccc", "the legacy token was not accepted"),
        (_jwt({"token_type": "refresh", "jti": "revoked"}), "rejected the personal access token (HTTP 401"),
    ],
)
@pytest.mark.parametrize("echo_token", [False, True])
def test_a_wrong_token_fails_clearly_with_exit_code_1_and_is_never_shown(
    stand_in: StandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, token: str, fragment: str, echo_token: bool
) -> None:
    monkeypatch.setenv(TOKEN_VARIABLE, token)
    stand_in.echo_token = echo_token

    result, output = _pull(stand_in, tmp_path)

    assert result.exit_code == 1
    message = flat(result.stderr)
    assert fragment in message
    assert stand_in.url in message
    assert not (output / "dataset_info.yaml").exists()
    if echo_token:
        assert "***" in message  # the server quoted the token; the message does not
    assert_secrets_nowhere([token], output, result)


def test_a_server_without_personal_access_tokens_says_so(
    stand_in: StandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_VARIABLE, PERSONAL_TOKEN)
    stand_in.personal_tokens = False

    result, output = _pull(stand_in, tmp_path)

    assert result.exit_code == 1
    assert "has no /api/token/refresh (HTTP 404), so it cannot take a personal access token" in flat(result.stderr)
    assert_secrets_nowhere([PERSONAL_TOKEN], output, result)


def test_a_legacy_token_is_never_posted_to_the_refresh_endpoint(stand_in: StandIn) -> None:
    client = LabelStudioClient(stand_in.url, Secret(LEGACY_TOKEN))

    client.get_json(f"/api/projects/{PROJECT_ID}")

    assert [(method, path) for method, path, _ in stand_in.requests] == [("GET", f"/api/projects/{PROJECT_ID}")]


def test_error_objects_carry_no_token(stand_in: StandIn) -> None:
    stand_in.echo_token = True
    token = "ffffffffffeeeeeeeeeeddddddddddcccccccccc"

    with pytest.raises(LabelStudioError) as caught:
        LabelStudioClient(stand_in.url, Secret(token)).get_json(f"/api/projects/{PROJECT_ID}")

    assert token not in str(caught.value)
    assert token not in repr(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_an_unknown_project_fails_with_exit_code_1(
    stand_in: StandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_VARIABLE, LEGACY_TOKEN)

    result = convert("--labelstudio-url", stand_in.url, "--project", "99", "-i", tmp_path, "-o", tmp_path / "out")

    assert result.exit_code == 1
    assert "answered /api/projects/99 with HTTP 404: Not found.: not found; check --project" in flat(result.stderr)


def test_an_unreachable_server_fails_with_exit_code_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_VARIABLE, LEGACY_TOKEN)
    with socket.socket() as probe:  # a port nothing listens on once it is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    result = convert(
        "--labelstudio-url", f"http://127.0.0.1:{port}", "--project", "1", "-i", tmp_path, "-o", tmp_path / "o"
    )

    assert result.exit_code == 1
    assert f"cannot reach Label Studio at http://127.0.0.1:{port}" in flat(result.stderr)


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        (["--labelstudio-url", "http://127.0.0.1:9"], "--labelstudio-url needs --project"),
        (["--labelstudio-url", "ftp://host", "--project", "1"], "must be an http:// or https:// URL"),
    ],
)
def test_server_options_are_checked_as_usage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, options: list[str], fragment: str
) -> None:
    monkeypatch.setenv(TOKEN_VARIABLE, LEGACY_TOKEN)

    result = convert(*options, "-i", tmp_path, "-o", tmp_path / "out")

    assert result.exit_code == 2
    assert fragment in flat(result.stderr)


def test_personal_access_tokens_are_told_apart_by_their_jwt_shape() -> None:
    assert is_personal_access_token(PERSONAL_TOKEN)
    assert not is_personal_access_token(LEGACY_TOKEN)
    assert not is_personal_access_token("abc.def.ghi")  # three parts, but no JSON header
    assert not is_personal_access_token(PERSONAL_TOKEN + ".extra")


# ---------------------------------------------------------------------------
# A real Label Studio server

PROJECT_ROOT = Path(__file__).resolve().parent.parent
LABEL_STUDIO_REQUIREMENT = "label-studio>=1.23,<1.24"  # 1.23.2 was tested
VENV = PROJECT_ROOT / ".labelstudio-venv"
INSTALLED_MARKER = VENV / "installed-requirement.txt"
INSTALL_TIMEOUT_S = 1200
START_TIMEOUT_S = 300
STOP_TIMEOUT_S = 30
USERNAME, PASSWORD = "converter-test@example.com", "converter-test-password-1"
LOG_TAIL_CHARS = 4000


class _ServerUnavailableError(Exception):
    """The real server cannot be installed or started here."""


def _unavailable(reason: str) -> NoReturn:
    """Skip for a developer without the server; fail in CI, where it must be tested."""
    if os.environ.get("DATASET_CONVERTER_REQUIRE_LABELSTUDIO", "") not in ("", "0", "false", "no"):
        pytest.fail(f"{reason}, and DATASET_CONVERTER_REQUIRE_LABELSTUDIO is set", pytrace=False)
    pytest.skip(f"{reason} (DATASET_CONVERTER_REQUIRE_LABELSTUDIO=1 makes this a failure)")


def _tail(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")[-LOG_TAIL_CHARS:] if path.exists() else ""


def _install_label_studio() -> Path:
    """The `label-studio` executable of the project's own Label Studio venv, installed if absent."""
    executable = VENV / "bin" / "label-studio"
    if INSTALLED_MARKER.exists() and INSTALLED_MARKER.read_text().strip() == LABEL_STUDIO_REQUIREMENT:
        return executable
    shutil.rmtree(VENV, ignore_errors=True)  # a partial or outdated install
    log = PROJECT_ROOT / ".labelstudio-install.log"
    try:
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, capture_output=True, timeout=120)
        with log.open("w", encoding="utf-8") as stream:
            subprocess.run(
                [str(VENV / "bin" / "pip"), "install", "--quiet", LABEL_STUDIO_REQUIREMENT],
                check=True,
                stdout=stream,
                stderr=subprocess.STDOUT,
                timeout=INSTALL_TIMEOUT_S,
            )
    except (OSError, subprocess.SubprocessError) as error:
        raise _ServerUnavailableError(
            f"cannot install {LABEL_STUDIO_REQUIREMENT} into {VENV}: {error}\n{_tail(log)}"
        ) from None
    INSTALLED_MARKER.write_text(LABEL_STUDIO_REQUIREMENT + "\n", encoding="utf-8")
    log.unlink()
    return executable


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class RealServer:
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    start_s: float = 0.0

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """A request with the legacy token, as the test's own client (not the converter's)."""
        request = urllib.request.Request(
            self.url + path,
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={"Authorization": f"Token {LEGACY_TOKEN}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            raise AssertionError(f"{method} {path}: HTTP {error.code}: {error.read()[:1000]!r}") from None

    def stop(self) -> None:
        """Terminate the server's process group (the server and the workers it started)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(STOP_TIMEOUT_S)


def _start_label_studio(executable: Path, folder: Path) -> RealServer:
    port = _free_port()
    data = folder / "data"
    data.mkdir()
    log = folder / "label-studio.log"
    environment = {**os.environ, "LABEL_STUDIO_BASE_DATA_DIR": str(data)}
    environment.pop(TOKEN_VARIABLE, None)
    command = [
        str(executable),
        "start",
        "--no-browser",
        "--internal-host",
        "127.0.0.1",
        "--port",
        str(port),
        "--data-dir",
        str(data),
        "--username",
        USERNAME,
        "--password",
        PASSWORD,
        "--user-token",
        LEGACY_TOKEN,
        "--enable-legacy-api-token",  # the test's own client creates the personal access token with it
    ]
    started = time.monotonic()
    with log.open("wb") as stream:
        process = subprocess.Popen(
            command, stdout=stream, stderr=subprocess.STDOUT, env=environment, cwd=folder, start_new_session=True
        )
    server = RealServer(f"http://127.0.0.1:{port}", process, log)
    while time.monotonic() - started < START_TIMEOUT_S:
        if process.poll() is not None:
            raise _ServerUnavailableError(
                f"label-studio exited with code {process.returncode} while starting:\n{_tail(log)}"
            )
        try:
            with urllib.request.urlopen(server.url + "/health", timeout=5) as response:
                if response.status == 200:
                    server.start_s = time.monotonic() - started
                    return server
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(1)
    server.stop()
    raise _ServerUnavailableError(f"label-studio did not answer /health within {START_TIMEOUT_S} s:\n{_tail(log)}")


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[RealServer]:
    started = time.monotonic()
    try:
        executable = _install_label_studio()
        install_s = time.monotonic() - started
        server = _start_label_studio(executable, tmp_path_factory.mktemp("label-studio"))
    except _ServerUnavailableError as error:
        _unavailable(str(error))
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():  # otherwise the line lands in the captured output
            reporter.write_line(f"Label Studio {server.url}: install {install_s:.0f} s, start {server.start_s:.0f} s")
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.labelstudio_server
def test_real_server_project_converts_like_its_export_file(
    label_studio: RealServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images = tmp_path / "images"
    tasks = _project_tasks(images)
    personal_token = label_studio.call("POST", "/api/token/", {})["token"]
    assert is_personal_access_token(personal_token)
    project = label_studio.call("POST", "/api/projects", {"title": "converter test", "label_config": CONFIG})
    imported = label_studio.call("POST", f"/api/projects/{project['id']}/import", tasks)
    assert imported["task_count"] == len(tasks)
    classes = tmp_path / "classes.txt"
    classes.write_text("\n".join(CONFIG_CLASSES) + "\n", encoding="utf-8")
    export = write_export(tmp_path / "export.json", tasks)
    from_file = convert("-a", export, "-i", images, "-o", tmp_path / "from-file", "--classes", classes)
    assert from_file.exit_code == 0, from_file.stderr
    expected = records_by_source_id(tmp_path / "from-file")
    assert len(expected) == 3

    for token in (personal_token, LEGACY_TOKEN):
        output = tmp_path / f"live-{token[:6]}"
        monkeypatch.setenv(TOKEN_VARIABLE, token)

        live = convert("--labelstudio-url", label_studio.url, "--project", project["id"], "-i", images, "-o", output)

        assert live.exit_code == 0, live.stderr
        info = load_info(output)
        assert info["classes"] == CONFIG_CLASSES
        kind = "personal access token" if token == personal_token else "legacy token"
        assert info["input"]["labelstudio_token_kind"] == kind
        records = records_by_source_id(output)
        assert sorted(records) == sorted(expected)
        for source_id, record in records.items():
            assert record == expected[source_id], source_id
        report, file_report = load_report(output), load_report(tmp_path / "from-file")
        assert report["summary"]["skipped_by_code"] == file_report["summary"]["skipped_by_code"]
        assert report["summary"]["skipped_by_code"] == {"cancelled": 1, "missing_image": 1}
        assert_secrets_nowhere([token], output, live)

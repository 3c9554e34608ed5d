"""Open a local page in headless Chromium and report what a user's browser would: pixels, errors, requests.

Chromium is driven over the DevTools protocol on `--remote-debugging-pipe` (fd 3 carries
commands in, fd 4 answers and events out, each message JSON ended by a NUL byte): unlike
parsing `--enable-logging` output or a net log, the protocol reports every request the page
makes (data: and file: URLs too), every console message and uncaught exception, and hands
back a screenshot and values evaluated in the page, all in one run and one process.

Where Chromium is missing the test skips saying why; with DATASET_CONVERTER_REQUIRE_BROWSER=1
(CI, which installs the Debian package) it fails instead.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome")
REQUIRE_VARIABLE = "DATASET_CONVERTER_REQUIRE_BROWSER"
TIMEOUT_S = 30.0
_DATA_URL_KEPT = 40  # characters of a data: URL kept in `requests`: enough to see its type, not its megabytes


@dataclass
class PageVisit:
    """What opening a page produced: the full-page screenshot (BGR), errors, requested URLs, evaluated values."""

    screenshot: NDArray[np.uint8]
    console_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    values: list[Any] = field(default_factory=list)


def chromium_or_skip() -> str:
    """The Chromium executable; skips the test without one, or fails it where the environment requires one."""
    for candidate in CHROMIUM_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    message = f"headless Chromium not found (looked for {', '.join(CHROMIUM_CANDIDATES)})"
    if os.environ.get(REQUIRE_VARIABLE, "") not in ("", "0", "false", "no"):
        pytest.fail(f"{message} and {REQUIRE_VARIABLE} is set: install it (apt-get install chromium)")
    pytest.skip(f"{message}; install it (apt-get install chromium) to run the browser checks")


class _DevTools:
    """A minimal DevTools protocol client on the pipe pair of a Chromium started with `--remote-debugging-pipe`."""

    def __init__(self, commands: int, answers: int) -> None:
        self._commands = commands
        self._answers = answers
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        """Send one command and wait for its answer; events arriving meanwhile are kept in `events`."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        while True:
            received = self._receive()
            if received.get("id") == self._next_id:
                if "error" in received:
                    raise RuntimeError(f"{method} failed: {received['error']}")
                result: dict[str, Any] = received.get("result", {})
                return result
            self.events.append(received)

    def wait_for(self, method: str) -> dict[str, Any]:
        """The first event named `method`, from those already received or the next ones."""
        for event in self.events:
            if event.get("method") == method:
                return event
        while True:
            received = self._receive()
            self.events.append(received)
            if received.get("method") == method:
                return received

    def _receive(self) -> dict[str, Any]:
        deadline = time.monotonic() + TIMEOUT_S
        while b"\0" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self._answers], [], [], remaining)[0]:
                raise TimeoutError(f"Chromium did not answer within {TIMEOUT_S:.0f} s")
            chunk = os.read(self._answers, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed its DevTools pipe (it crashed or failed to start)")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        received: dict[str, Any] = json.loads(message)
        return received


@contextlib.contextmanager
def _chromium(executable: str, width: int, height: int) -> Iterator[_DevTools]:
    """A headless Chromium with a fresh profile, its DevTools pipe on fds 3 and 4; killed and reaped on exit.

    `posix_spawn` passes exactly the fds its actions name (Python's own are not inheritable), so
    the browser gets the pipe and /dev/null for output and nothing else of the test process.
    The pipe ends are first moved to fds above 9, so that moving them to 3 and 4 cannot clobber one another.
    """
    commands_read, commands_write = os.pipe()
    answers_read, answers_write = os.pipe()
    child_commands = fcntl.fcntl(commands_read, fcntl.F_DUPFD_CLOEXEC, 10)
    child_answers = fcntl.fcntl(answers_write, fcntl.F_DUPFD_CLOEXEC, 10)
    for descriptor in (commands_read, answers_write):
        os.close(descriptor)
    with tempfile.TemporaryDirectory(prefix="stats-browser-") as profile:
        arguments = [
            executable,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--remote-debugging-pipe",
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            "--force-device-scale-factor=1",
            "--hide-scrollbars",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "about:blank",
        ]
        null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        try:
            pid = os.posix_spawn(
                executable,
                arguments,
                {**os.environ, "HOME": profile},
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, null, 0),
                    (os.POSIX_SPAWN_DUP2, null, 1),
                    (os.POSIX_SPAWN_DUP2, null, 2),
                    (os.POSIX_SPAWN_DUP2, child_commands, 3),
                    (os.POSIX_SPAWN_DUP2, child_answers, 4),
                ],
                setsid=True,  # its own process group: the zygote and renderers go with it on exit
            )
        finally:
            for descriptor in (null, child_commands, child_answers):
                os.close(descriptor)
        try:
            yield _DevTools(commands_write, answers_read)
        finally:
            os.close(commands_write)
            os.close(answers_read)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


def _console_text(event: dict[str, Any]) -> str | None:
    """The text of an error-level console message, uncaught exception or browser log entry; None for others."""
    params = event.get("params", {})
    method = event.get("method")
    if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
        return " ".join(str(argument.get("value", argument.get("description", ""))) for argument in params["args"])
    if method == "Runtime.exceptionThrown":
        details = params.get("exceptionDetails", {})
        return str(details.get("exception", {}).get("description") or details.get("text"))
    if method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
        entry = params["entry"]
        return f"{entry.get('source')}: {entry.get('text')} {entry.get('url', '')}".strip()
    return None


def open_page(path: Path, *, width: int = 1280, height: int = 900, evaluate: Sequence[str] = ()) -> PageVisit:
    """Load `path` in headless Chromium; returns a full-page screenshot and what the page did.

    `requests` lists every URL the page asked for, in order (data: URLs cut to their first
    characters); `console_errors` every console error, uncaught exception and error the browser
    logged (a blocked or failed load among them); `values` the results of `evaluate`'s
    JavaScript expressions (JSON values), evaluated after the load event.
    """
    executable = chromium_or_skip()
    with _chromium(executable, width, height) as browser:
        target = browser.call("Target.createTarget", url="about:blank")["targetId"]
        session = browser.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            browser.call(f"{domain}.enable", session)
        browser.call(
            "Emulation.setDeviceMetricsOverride", session, width=width, height=height, deviceScaleFactor=1, mobile=False
        )
        browser.call("Page.navigate", session, url=path.resolve().as_uri())
        browser.wait_for("Page.loadEventFired")
        values = [
            browser.call("Runtime.evaluate", session, expression=expression, returnByValue=True)["result"].get("value")
            for expression in evaluate
        ]
        size = browser.call("Page.getLayoutMetrics", session)["cssContentSize"]
        shot = browser.call(
            "Page.captureScreenshot",
            session,
            format="png",
            captureBeyondViewport=True,
            clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
        )
        # events that arrived with the last answers are in; ask once more so late log entries are flushed too
        browser.call("Runtime.evaluate", session, expression="0")
        events = [event for event in browser.events if event.get("sessionId") == session]
    screenshot = cv2.imdecode(np.frombuffer(base64.b64decode(shot["data"]), np.uint8), cv2.IMREAD_COLOR)
    requests = [
        event["params"]["request"]["url"] for event in events if event.get("method") == "Network.requestWillBeSent"
    ]
    return PageVisit(
        screenshot=np.asarray(screenshot, np.uint8),
        console_errors=[text for event in events if (text := _console_text(event)) is not None],
        requests=[url[:_DATA_URL_KEPT] if url.startswith("data:") else url for url in requests],
        values=values,
    )

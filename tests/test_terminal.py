"""What a person at a terminal sees, through a real pseudo-terminal.

The installed console script runs with a pty as its stdin, stdout and stderr (so
`isatty()` is true and Ctrl-C reaches it as the terminal's SIGINT), at a fixed window
size. The tests read the screen's bytes back, strip the cursor-control sequences and
check the words: a status line while the export is read, a bar with a labelled ETA, the
skip summary with its diagnosis, the closing line naming the output, and Ctrl-C.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import sys
import termios
import time
from dataclasses import dataclass
from pathlib import Path

from builders import dataset_files, detection_export

PROJECT_ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = PROJECT_ROOT / "examples" / "sagemaker_gt"
SCRIPT = Path(sys.executable).parent / "dataset-converter"
WIDTH = 80
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
TIMEOUT_S = 120
IMAGE_VARIABLES = ("DATASET_CONVERTER_ANNOTATIONS", "DATASET_CONVERTER_OUTPUT", "NO_COLOR")


@dataclass
class Screen:
    raw: str  # what the program wrote, escape sequences included
    exit_code: int

    @property
    def text(self) -> str:
        """The words: escape sequences removed, carriage returns as line breaks."""
        return ANSI.sub("", self.raw).replace("\r\n", "\n").replace("\r", "\n")

    @property
    def lines(self) -> list[str]:
        return [line.rstrip() for line in self.text.split("\n") if line.strip()]

    def final_lines(self) -> list[str]:
        """The lines printed after the bar went away (the bar redraws itself on one line)."""
        lines = self.lines
        last_bar = max((index for index, line in enumerate(lines) if "━" in line), default=-1)
        return lines[last_bar + 1 :]


def run_in_terminal(*arguments: str | Path, interrupt_on: str | None = None, width: int = WIDTH) -> Screen:
    """Run the console script on a pty `width` columns wide; press Ctrl-C once `interrupt_on` appears."""
    pid, master = pty.fork()
    if pid == 0:  # the child: file descriptors 0-2 and its controlling terminal are the pty
        try:
            # as in a login shell: a runner started in the background (`make test &`, nohup) ignores
            # SIGINT, and an ignored signal stays ignored across exec, so ^C would do nothing
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 40, width, 0, 0))
            environment = {key: value for key, value in os.environ.items() if key not in IMAGE_VARIABLES}
            environment.update(COLUMNS=str(width), LINES="40", TERM="xterm-256color")
            os.execve(str(SCRIPT), [str(SCRIPT), *map(str, arguments)], environment)
        finally:
            os._exit(127)  # exec failed: never return into the test runner's copy
    output = b""
    interrupted = False
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.05)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the child closed the terminal (EIO on Linux)
                break
            if not chunk:
                break
            output += chunk
        if interrupt_on is not None and not interrupted and interrupt_on.encode() in output:
            os.write(master, b"\x03")  # the terminal turns ^C into SIGINT for its foreground process group
            interrupted = True
    else:
        os.kill(pid, 9)
    _, status = os.waitpid(pid, 0)
    os.close(master)
    return Screen(output.decode("utf-8", errors="replace"), os.waitstatus_to_exitcode(status))


def test_a_run_shows_a_status_line_a_bar_with_eta_and_a_closing_line(tmp_path: Path) -> None:
    out = tmp_path / "out"
    screen = run_in_terminal("-a", EXAMPLE, "-o", out)
    assert screen.exit_code == 0, screen.text
    assert f"reading {EXAMPLE / 'output.manifest'}" in screen.text
    assert "writing boxes" in screen.text
    assert re.search(r"converting .* 12/12 0 skipped ETA", screen.text), screen.text
    closing = " ".join(line.strip() for line in screen.final_lines())
    assert re.fullmatch(
        rf"converted 12 of 12 samples \(train 8, validation 4\) into {re.escape(str(out))} in [0-9.]+ s "
        rf"\([0-9,.]+ samples/s\); report: {re.escape(str(out))}/report.json",
        closing,
    ), closing
    assert "\x1b[?25h" in screen.raw  # the cursor the bar hid is shown again
    assert all(len(line) <= WIDTH for line in screen.lines)


def test_skips_are_summarized_and_diagnosed_on_the_terminal(tmp_path: Path) -> None:
    detection_export(tmp_path / "export", 7).write()
    (tmp_path / "wrong").mkdir()
    screen = run_in_terminal("-a", tmp_path / "export", "-i", tmp_path / "wrong", "-o", tmp_path / "out")
    assert screen.exit_code == 1, screen.text
    text = " ".join(screen.final_lines())
    assert f"skipped 7 of 7 samples (all in {tmp_path / 'out'}/report.json):" in text
    assert "missing_image: 7" in text
    assert text.count("e.g. ") == 3  # three examples of the one reason
    assert f"diagnosis: all 7 samples missing under {tmp_path / 'wrong'}: is -i/--images right?" in text
    assert "ERROR: none of the 7 input samples could be converted" in text
    assert all(len(line) <= WIDTH for line in screen.lines)


def test_error_lines_wrap_at_the_terminal_width(tmp_path: Path) -> None:
    screen = run_in_terminal("-o", tmp_path / "out", width=50)
    assert screen.exit_code == 2
    assert screen.lines[0].startswith("ERROR: no export given: pass -a/--annotations")
    assert len(screen.lines) >= 3 and all(len(line) <= 50 for line in screen.lines)
    assert all(line.startswith("  ") for line in screen.lines[1:])  # continuation lines are indented
    assert " ".join(line.strip() for line in screen.lines) == (
        "ERROR: no export given: pass -a/--annotations (the default /data_in applies only inside the "
        "dataset-converter image)"
    )


def test_ctrl_c_keeps_the_previous_dataset_and_exits_130(tmp_path: Path) -> None:
    out = tmp_path / "out"
    detection_export(tmp_path / "small", 4).write()
    first = run_in_terminal("-a", tmp_path / "small", "-o", out)
    assert first.exit_code == 0, first.text
    before = dataset_files(out)
    # big enough that one worker is still converting when ^C arrives, a moment after the bar appears
    detection_export(tmp_path / "big", 3000).write()
    screen = run_in_terminal("-a", tmp_path / "big", "-o", out, "--workers", "1", interrupt_on="converting")
    assert screen.exit_code == 130, screen.text
    assert "^C" in screen.text or "interrupted" in screen.text
    assert f"interrupted: {out} still holds the previous dataset, untouched; nothing of this run was kept" in " ".join(
        line.strip() for line in screen.final_lines()
    )
    assert "Traceback" not in screen.text and "KeyboardInterrupt" not in screen.text
    assert "\x1b[?25h" in screen.raw  # the cursor the bar hid is shown again
    assert dataset_files(out) == before


def test_check_shows_a_checking_bar_then_its_findings(tmp_path: Path) -> None:
    screen = run_in_terminal("check", "-a", EXAMPLE)
    assert screen.exit_code == 0, screen.text  # the example's unlabelled image is a notice, not a problem
    assert re.search(r"checking .* 12/12", screen.text), screen.text
    final = screen.final_lines()
    assert final[0].startswith(f"checked {EXAMPLE / 'output.manifest'}: 12 input samples")
    assert "no problems found" in final[-1]
    assert "\x1b[?25h" in screen.raw

"""The progress line of long work (`gateway build`): redrawn in place on a terminal, plain
start and end lines elsewhere; the work's result or exception passed through."""

from __future__ import annotations

import io
import time

import pytest

from gateway.cli.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_when_not_a_terminal() -> None:
    out = io.StringIO()
    assert Progress(out).run("building model m:1", "pip install -r requirements.txt", lambda: 42) == 42
    first, second = out.getvalue().splitlines()
    assert first == "building model m:1: pip install -r requirements.txt"
    assert second.startswith("building model m:1: done in ")
    assert second.endswith(" s")
    assert "\r" not in out.getvalue()


def test_a_spinner_with_the_elapsed_time_on_a_terminal() -> None:
    out = Terminal()

    def work() -> str:
        time.sleep(0.35)
        return "env"

    assert Progress(out).run("building model m:1", "pip install x", work) == "env"
    text = out.getvalue()
    frames = [frame for frame in text.split("\r") if frame.startswith(("|", "/", "-", "\\"))]
    assert len(frames) >= 3  # redrawn every 0.1 s
    assert frames[0].startswith("| building model m:1: pip install x 0.")
    cleared, done = text.rsplit("\r\x1b[K", 1)  # the spinner's line erased, then the end line
    assert cleared.count("\r") >= 3
    assert done.startswith("building model m:1: done in 0.")
    assert done.endswith(" s\n")


@pytest.mark.parametrize("tty", [True, False])
def test_the_works_exception_is_raised_and_no_done_line(tty: bool) -> None:
    out = Terminal() if tty else io.StringIO()

    def work() -> None:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        Progress(out).run("building model m:1", "x", work)
    assert "done in" not in out.getvalue()


def test_the_spinner_line_fits_the_terminal_row() -> None:
    out = Terminal()
    detail = "pip install -r requirements.txt --index-url https://mirror.example/simple " * 3

    def work() -> None:
        time.sleep(0.25)

    Progress(out, columns=60).run("building model m:1", detail, work)
    frames = [frame.removesuffix("\x1b[K") for frame in out.getvalue().split("\r")
              if frame.startswith(("|", "/", "-", "\\"))]
    assert frames
    assert all(len(frame) <= 59 for frame in frames)
    assert frames[0].startswith("| building model m:1: pip install -r")
    assert frames[0].endswith("... 0.0 s")

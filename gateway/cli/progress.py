"""A progress line per long task, with no dependency: on a terminal a spinner and the seconds
elapsed, redrawn in place until the task ends; elsewhere (a log, a CI job) a line when the
task starts and one when it ends, so the output stays readable as plain text.

On Ctrl-C the caller's thread stops at once; the work's thread is a daemon, ended with the
process, but a child process it waits on (pip) is not killed and may finish on its own."""

from __future__ import annotations

import shutil
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, TypeVar

T = TypeVar("T")
SPINNER = "|/-\\"
REDRAW_S = 0.1


class Progress:
    def __init__(self, stream: IO[str] | None = None, tty: bool | None = None, columns: int | None = None) -> None:
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty() if tty is None else tty
        self.columns = columns  # None: the terminal's width when drawn

    def _line(self, spin: str, label: str, detail: str, elapsed: float) -> str:
        """The spinner's line, its detail cut to fit one terminal row (a wrapped line is not redrawn)."""
        width = (self.columns or shutil.get_terminal_size().columns) - 1
        head, tail = f"{spin} {label}: ", f" {elapsed:.1f} s"
        room = width - len(head) - len(tail)
        if len(detail) > room:
            detail = detail[:room - 3] + "..." if room > 3 else ""
        return (head + detail + tail)[:max(1, width)]

    def run(self, label: str, detail: str, work: Callable[[], T]) -> T:
        """`work()` (in a thread, while the line is redrawn), its result or its exception; a
        line `label: done in N s` when it returns."""
        started = time.monotonic()
        if not self.tty:
            print(f"{label}: {detail}", file=self.stream, flush=True)
            result = work()
        else:
            result = self._spin(label, detail, work, started)
        print(f"{label}: done in {time.monotonic() - started:.1f} s", file=self.stream, flush=True)
        return result

    def _spin(self, label: str, detail: str, work: Callable[[], T], started: float) -> T:
        outcome: list[T] = []
        failure: list[BaseException] = []

        def target() -> None:
            try:
                outcome.append(work())
            except BaseException as error:  # noqa: BLE001 (raised again in the caller's thread)
                failure.append(error)

        thread = threading.Thread(target=target, name=f"progress {label}", daemon=True)
        thread.start()
        turn = 0
        try:
            while thread.is_alive():
                elapsed = time.monotonic() - started
                self.stream.write(f"\r{self._line(SPINNER[turn % len(SPINNER)], label, detail, elapsed)}\x1b[K")
                self.stream.flush()
                turn += 1
                thread.join(REDRAW_S)
        finally:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
        if failure:
            raise failure[0]
        return outcome[0]

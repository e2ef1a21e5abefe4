"""`gateway upload [MODEL_DIR]`: pack a model folder (serving.yaml and its payload), send it to a
running gateway as the model's next version, show the build as it runs and say the version's state."""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from gateway.cli.common import (
    ADMIN_EXITS,
    Commands,
    add_admin_flags,
    admin_exit_status,
    admin_token,
    client_url,
    command,
)
from gateway.cli.exits import OK, USAGE
from gateway.client.admin import AdminClient, Event
from gateway.client.errors import describe
from gateway.client.packing import PackedModel, PackingError, pack_model_folder
from gateway.errors import GatewayError

REDRAW_S = 0.1
INTERRUPTED = 130  # as a shell reports a command ended by Ctrl-C
BUILD_TIMEOUT_S = 1800.0  # as the gateway's build.build_timeout_s: a build may print nothing for long
EPILOG = f"""examples:
  cd increment_model && gateway upload
  gateway upload increment_model --url http://127.0.0.1:8000 --token "$ADMIN_TOKEN"

{ADMIN_EXITS};
130 interrupted (Ctrl-C: a build under way stops and leaves no version)"""


def add_parser(commands: Commands) -> None:
    upload = command(commands, "upload", "send a model folder to a running gateway as its next version",
                     "Pack MODEL_DIR (default: the current folder) as Hydrosphere's `hs upload` does: serving.yaml "
                     "and the files its `payload` names (globs and folders; nothing else), checked before anything "
                     "is sent. The gateway stores it as the model's next version (highest + 1), runs its "
                     "install-command (its output shown as it comes) and starts it; a version whose build or start "
                     "fails is not kept. A progress bar shows the sending on a terminal.", EPILOG)
    upload.add_argument("folder", nargs="?", type=Path, default=Path("."), metavar="MODEL_DIR",
                        help="the model folder (default: .)")
    add_admin_flags(upload, timeout_s=BUILD_TIMEOUT_S)
    upload.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        archive = pack_model_folder(args.folder)
    except PackingError as error:
        print(f"gateway upload: {error}", file=sys.stderr)
        return USAGE
    with archive, AdminClient(client_url(args), admin_token(args), args.timeout) as client:
        bar = SendBar(archive.model.name, len(archive.files))
        try:
            model = client.upload(archive, on_sent=bar.update, on_event=Events(archive).show)
        except GatewayError as error:
            bar.close()
            print(f"gateway upload: {describe(error)}", file=sys.stderr)
            return admin_exit_status(error)
        except KeyboardInterrupt:  # the connection closes: a gateway still building stops and keeps nothing
            bar.close()
            print("gateway upload: interrupted (a build under way stops and leaves no version; one the gateway "
                  "had begun to start is finished or reverted by it: see gateway list)", file=sys.stderr)
            return INTERRUPTED
        bar.close()
    print(f"model {describe_model(model)}")
    return OK


class Events:
    """What each streamed event prints (stdout): the new version, the build's lines, the start."""

    def __init__(self, archive: PackedModel, out: IO[str] | None = None) -> None:
        self.archive = archive
        self.out = out or sys.stdout
        self.label = archive.model.name

    def show(self, event: Event) -> None:
        kind = event["event"]
        if kind == "version":
            self.label = f"{event.get('name', self.label)}:{event.get('version')}"
            command = self.archive.model.install_command
            self._say(f"building {self.label}: {command}" if command else f"version {self.label}")
        elif kind == "build":
            self._say(str(event.get("line", "")).rstrip("\n"))
        elif kind == "starting":
            self._say(f"starting {self.label}")

    def _say(self, line: str) -> None:
        print(line, file=self.out, flush=True)


class SendBar:
    """The sending's progress (stderr): on a terminal a bar redrawn in place; elsewhere a line when
    it starts and one when it ends, so a log stays plain text."""

    def __init__(self, label: str, files: int, stream: IO[str] | None = None, tty: bool | None = None,
                 columns: int | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.label, self.files = label, files
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.columns = columns
        self.clock = clock
        self.started: float | None = None
        self.drawn_at = 0.0
        self.drawing = False  # a bar is on the terminal's current line
        self.done = False

    def update(self, sent: int, total: int) -> None:
        """After each chunk: `sent` bytes of `total`."""
        now = self.clock()
        if self.started is None:
            self.started = now
            if not self.tty:
                self._print(f"sending {self.label}: {self.files} file(s), {size_text(total)}")
        if self.tty and (sent >= total or now - self.drawn_at >= REDRAW_S):
            self.drawn_at = now
            self.stream.write(f"\r{self.bar(sent, total)}\x1b[K")
            self.stream.flush()
            self.drawing = True
        if sent >= total and not self.done:
            self.done = True
            self._print(f"sent {size_text(total)} in {now - self.started:.1f} s")

    def close(self) -> None:
        """End a bar left drawn (the gateway answered before everything was sent)."""
        if self.drawing:
            self.stream.write("\n")
            self.stream.flush()
            self.drawing = False

    def bar(self, sent: int, total: int) -> str:
        """`sending NAME [#####.....]  50% 1.2 KiB / 2.4 KiB`, cut to one terminal row."""
        share = 1.0 if total <= 0 else min(1.0, sent / total)
        tail = f" {share:4.0%} {size_text(sent)} / {size_text(total)}"
        head = f"sending {self.label} "
        width = (self.columns or shutil.get_terminal_size().columns) - 1
        cells = max(10, min(40, width - len(head) - len(tail) - 2))
        filled = int(cells * share)
        return f"{head}[{'#' * filled}{'.' * (cells - filled)}]{tail}"[:max(1, width)]

    def _print(self, line: str) -> None:
        if self.drawing:
            self.stream.write("\r\x1b[K")
            self.drawing = False
        print(line, file=self.stream, flush=True)


def size_text(size: int) -> str:
    """`512 B`, `2.4 KiB`, `1.0 MiB`, `3.2 GiB`."""
    value: float = size
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def describe_model(model: dict[str, Any]) -> str:
    """`name:N is state`, the line a successful upload ends with."""
    return f"{model.get('name')}:{model.get('version')} is {model.get('state')}"

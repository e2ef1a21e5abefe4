"""A model folder packed for `POST /gateway/admin/models`: a gzip tar of `serving.yaml` and exactly
the files its `payload` names, as Hydrosphere's `hs upload` packs one.

Each `payload` entry is a glob relative to the folder (`src/`, `requirements.txt`, `*.joblib`,
`weights/**/*.bin`); a folder it matches is packed whole, less `__pycache__`, `.git` and `*.pyc`.
Entries are named relative to the folder, sorted, regular files and folders only; a symlink is
packed as its target's content when the target is inside the folder. Everything is checked before
a byte is sent: an entry that escapes the folder, matches nothing, or names a device is an error.
"""

from __future__ import annotations

import glob
import gzip
import os
import stat
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO

from modelfolder import MODEL_FILE, ConfigError, ModelDefinition, load_model_folder

CHUNK_BYTES = 256 * 1024
SKIPPED_DIRS = frozenset({"__pycache__", ".git"})
SKIPPED_SUFFIXES = (".pyc",)


class PackingError(ValueError):
    """The folder cannot be packed: no or an invalid serving.yaml, a payload entry that escapes the
    folder or matches nothing; the message names the file (and line) at fault."""


@dataclass(slots=True)
class PackedModel:
    """The archive (in an anonymous temporary file, gone once closed) and what it holds."""

    model: ModelDefinition
    files: tuple[str, ...]  # the archive's file entries, in order (serving.yaml first)
    size: int  # bytes of the compressed archive
    file: IO[bytes] = field(repr=False)

    def chunks(self, chunk_bytes: int = CHUNK_BYTES, on_sent: Callable[[int, int], None] | None = None
               ) -> Iterator[bytes]:
        """The archive's bytes from the start, `on_sent(sent, size)` after each chunk."""
        self.file.seek(0)
        sent = 0
        while chunk := self.file.read(chunk_bytes):
            sent += len(chunk)
            yield chunk
            if on_sent is not None:
                on_sent(sent, self.size)

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> PackedModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def pack_model_folder(folder: Path) -> PackedModel:
    """`folder` as a gzip tar in a temporary file, or PackingError before anything is written."""
    model = read_definition(folder)
    entries = payload_entries(folder, model.payload)
    file = tempfile.TemporaryFile(prefix="gateway-upload-")  # noqa: SIM115 (PackedModel closes it)
    try:
        _write(file, entries)
        size = file.tell()
    except OSError as error:  # a file that vanished or cannot be read while packing
        file.close()
        raise PackingError(f"cannot pack {folder}: {error}") from None
    return PackedModel(model, tuple(name for name, source in entries if not source.is_dir()), size, file)


def read_definition(folder: Path) -> ModelDefinition:
    """The folder's serving.yaml, checked as `gateway check` does (file:line: field: why)."""
    if not folder.is_dir():
        raise PackingError(f"{folder} is not a folder")
    if not (folder / MODEL_FILE).is_file():
        raise PackingError(f"{folder / MODEL_FILE}: no such file (a model folder has serving.yaml at its root)")
    try:
        model = load_model_folder(folder)
    except ConfigError as error:
        raise PackingError(str(error)) from None
    if not model.payload:
        raise PackingError(f"{folder / MODEL_FILE}: payload: names no files (list the model's files, "
                           "e.g. [\"src/\", \"requirements.txt\"])")
    return model


def payload_entries(folder: Path, payload: tuple[str, ...]) -> list[tuple[str, Path]]:
    """(archive name, source) for serving.yaml, each folder and each file `payload` names, sorted
    by name (serving.yaml first), each once."""
    root = folder.resolve()
    where = f"{folder / MODEL_FILE}: payload"
    found: dict[str, Path] = {}
    _collect(root, PurePosixPath(MODEL_FILE), folder / MODEL_FILE, found, (root,), f"{folder / MODEL_FILE}")
    for pattern in payload:
        for name in _matches(folder, pattern, where):
            _collect(root, PurePosixPath(name), folder / name, found, (root,), where)
    return sorted(found.items(), key=lambda item: (item[0] != MODEL_FILE, item[0]))


def _matches(folder: Path, pattern: str, where: str) -> list[str]:
    """The folder-relative paths `pattern` matches (`**` spans folders), checked to stay inside."""
    text = pattern.strip().rstrip("/")
    parts = PurePosixPath(text).parts
    if not text or text == ".":
        raise PackingError(f"{where}: {pattern!r} names the whole folder; list its files and folders instead")
    if PurePosixPath(text).is_absolute() or ".." in parts or "\\" in text:
        raise PackingError(f"{where}: {pattern!r} is outside the model folder (entries are relative to it)")
    matches = sorted(glob.glob(text, root_dir=folder, recursive=True))
    if not matches:
        raise PackingError(f"{where}: {pattern!r} matches no file in {folder}")
    if pattern.rstrip().endswith("/"):
        files = [match for match in matches if not (folder / match).is_dir()]
        if files:
            raise PackingError(f"{where}: {pattern!r} names a folder but {files[0]} is not one")
    return [PurePosixPath(Path(match).as_posix()).as_posix() for match in matches]


def _collect(root: Path, name: PurePosixPath, path: Path, found: dict[str, Path], walking: tuple[Path, ...],
             where: str) -> None:
    """`path` (archive name `name`) into `found`: a file, or a folder and what is under it."""
    if any(part in SKIPPED_DIRS for part in name.parts) or name.name.endswith(SKIPPED_SUFFIXES):
        return
    real = path.resolve()
    if real != root and root not in real.parents:
        raise PackingError(f"{where}: {name} is a link to {real}, outside the model folder")
    try:
        mode = real.stat().st_mode
    except OSError as error:  # a dangling link, a file removed meanwhile
        raise PackingError(f"{where}: {name}: {error.strerror or error}") from None
    if stat.S_ISREG(mode):
        found[name.as_posix()] = real
        return
    if not stat.S_ISDIR(mode):
        raise PackingError(f"{where}: {name} is not a regular file or a folder")
    if real in walking:
        raise PackingError(f"{where}: {name} is a link to a folder that contains it ({real})")
    found[name.as_posix()] = real
    for child in sorted(os.listdir(real)):
        _collect(root, name / child, real / child, found, (*walking, real), where)


def _write(file: IO[bytes], entries: list[tuple[str, Path]]) -> None:
    """A reproducible archive: sorted entries, no owners, modes reduced to 0644 / 0755."""
    with gzip.GzipFile(fileobj=file, mode="wb", mtime=0) as compressed, \
            tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, source in entries:
            info = archive.gettarinfo(str(source), arcname=name)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            executable = info.isdir() or info.mode & 0o100
            info.mode = 0o755 if executable else 0o644
            if info.isdir():
                archive.addfile(info)
            else:
                with source.open("rb") as content:
                    archive.addfile(info, content)

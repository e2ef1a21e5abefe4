"""Unpacking an uploaded model folder: a gzip-compressed tar, refused unless it is plain data.

What the archive may hold: regular files and folders, by relative names that stay inside it
(no absolute path, no `..`), `serving.yaml` at its root. Links (symbolic or hard), devices and
FIFOs are refused by name before anything of theirs is written, and what is unpacked goes
through the standard library's `data` filter as a second line of defence. Modes are the
gateway's own, whatever the archive says (files 0644, or 0755 when executable by their owner;
folders 0755), and owners are ignored. Bounded, so a small body cannot fill the disk: at most
`max_members` entries and `max_bytes` of unpacked content (the decompressed stream itself is
cut there too, so a huge header cannot be read into memory either).
"""

from __future__ import annotations

import errno
import gzip
import os
import stat
import tarfile
import zlib
from pathlib import Path, PurePosixPath
from typing import IO, cast

from gateway.errors import BadRequest, PayloadTooLarge
from modelfolder.layout import MODEL_FILE

MAX_MEMBERS = 20_000  # entries in one archive (files and folders)
HEADER_ALLOWANCE = 16 * 1024 * 1024  # decompressed bytes beyond the content: tar headers and padding
GZIP_MAGIC = b"\x1f\x8b"
_DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS)  # the gateway's trouble, not the client's


def unpack_model_archive(archive: Path, destination: Path, max_bytes: int,
                         max_members: int = MAX_MEMBERS) -> None:
    """Unpack the model folder in `archive` into `destination` (made here; it must not exist).
    BadRequest (400) naming the entry for anything but plain files and folders inside it, for a
    body that is not a gzip-compressed tar or is corrupt, and when `serving.yaml` is not at the
    root; PayloadTooLarge (413) beyond `max_bytes` unpacked or `max_members` entries. On an
    error, what was unpacked is left for the caller to remove with `destination`."""
    with open(archive, "rb") as raw:
        if raw.read(2) != GZIP_MAGIC:
            raise BadRequest("the body is not a gzip-compressed tar archive (send the model folder as .tar.gz)")
        raw.seek(0)
        with gzip.GzipFile(fileobj=raw, mode="rb") as inflated:
            stream = _BoundedReader(inflated, max_bytes + HEADER_ALLOWANCE)
            os.mkdir(destination, 0o755)
            _unpack(stream, destination, max_bytes, max_members)
    if not (destination / MODEL_FILE).is_file():
        nested = sorted(str(path.relative_to(destination)) for path in destination.rglob(MODEL_FILE))
        hint = (f" (found {nested[0]}: pack the model folder's contents, not the folder itself)"
                if nested else "")
        raise BadRequest(f"the archive has no {MODEL_FILE} at its root{hint}")
    _sanitise_modes(destination)


def _open_tar(stream: _BoundedReader) -> tarfile.TarFile:
    try:
        return tarfile.open(fileobj=cast(IO[bytes], stream), mode="r|")  # a stream: members read once, in order
    except tarfile.ReadError as error:
        raise BadRequest(f"the body is not a tar archive once decompressed: {error}") from None


def _unpack(stream: _BoundedReader, destination: Path, max_bytes: int, max_members: int) -> None:
    total = members = 0
    with _open_tar(stream) as tar:
        while True:
            try:
                member = tar.next()
            except tarfile.TarError as error:
                raise BadRequest(f"the archive is corrupt after {members} entries: {error}") from None
            if member is None:
                return
            members += 1
            if members > max_members:
                raise PayloadTooLarge(f"the archive holds more than {max_members} entries")
            name = checked_name(member)
            if name is None:
                continue  # the root folder itself
            total += member.size if member.isreg() else 0
            if total > max_bytes:
                raise PayloadTooLarge(f"the archive unpacks to more than {max_bytes} bytes "
                                      f"(at entry {member.name!r})")
            member = member.replace(name=name, mode=_mode(member), deep=False)  # owners: the data filter drops them
            try:
                tar.extract(member, destination, set_attrs=True, filter="data")
            except tarfile.FilterError as error:  # what the checks above let through: refused all the same
                raise BadRequest(f"archive entry {member.name!r} is refused: {error}") from None
            except tarfile.TarError as error:
                raise BadRequest(f"the archive is corrupt at entry {member.name!r}: {error}") from None
            except OSError as error:
                if error.errno in _DISK_ERRORS:
                    raise
                raise BadRequest(f"archive entry {member.name!r} cannot be unpacked: "
                                 f"{error.strerror or error}") from None


def checked_name(member: tarfile.TarInfo) -> str | None:
    """The entry's name relative to the archive's root (None for the root itself); BadRequest
    naming it unless it is a file or folder with a relative name that stays inside."""
    raw = member.name
    kind = _refused_kind(member)
    if kind is not None:
        raise BadRequest(f"archive entry {raw!r} is a {kind}: a model archive may hold only files and folders")
    if raw.startswith("/") or PurePosixPath(raw).is_absolute():
        raise BadRequest(f"archive entry {raw!r} has an absolute path: names must be relative to the model folder")
    parts = [part for part in PurePosixPath(raw).parts if part != "."]
    if ".." in parts:
        raise BadRequest(f"archive entry {raw!r} goes up with '..': names must stay inside the model folder")
    if "\\" in raw or "\x00" in raw:
        raise BadRequest(f"archive entry {raw!r} has a backslash or NUL in its name")
    if not parts:
        if not member.isdir():
            raise BadRequest(f"archive entry {raw!r} has no name")
        return None
    return "/".join(parts)


def _refused_kind(member: tarfile.TarInfo) -> str | None:
    if member.issym():
        return f"symbolic link (to {member.linkname!r})"
    if member.islnk():
        return f"hard link (to {member.linkname!r})"
    if member.ischr() or member.isblk():
        return "device"
    if member.isfifo():
        return "FIFO"
    if not (member.isreg() or member.isdir()):
        return f"special entry (tar type {member.type!r})"
    return None


def _mode(member: tarfile.TarInfo) -> int:
    """The gateway's mode for an entry: folders 0755, files 0755 when their owner may run them, else 0644."""
    if member.isdir() or member.mode & stat.S_IXUSR:
        return 0o755
    return 0o644


def _sanitise_modes(root: Path) -> None:
    """Folders made implicitly (a file's parent with no entry of its own) get 0755 as well."""
    os.chmod(root, 0o755)  # noqa: S103 - a model folder is read by the runtime, written by no one
    for folder, folders, files in os.walk(root):
        for name in folders:
            os.chmod(os.path.join(folder, name), 0o755)  # noqa: S103 - as above
        for name in files:
            path = os.path.join(folder, name)
            mode = os.lstat(path).st_mode
            os.chmod(path, 0o755 if mode & stat.S_IXUSR else 0o644)


class _BoundedReader:
    """The decompressed stream, refused (413) beyond `limit` bytes and translated (400) when the
    gzip data is corrupt or truncated: tarfile reads headers whole, so this bounds memory too."""

    def __init__(self, inner: gzip.GzipFile, limit: int) -> None:
        self.inner = inner
        self.limit = limit
        self.read_bytes = 0

    def read(self, size: int = -1) -> bytes:
        if size < 0 or self.read_bytes + size > self.limit:
            size = self.limit - self.read_bytes + 1
        try:
            data = self.inner.read(size)
        except EOFError:
            raise BadRequest("the archive is truncated (its gzip stream ends early)") from None
        except (zlib.error, gzip.BadGzipFile) as error:
            raise BadRequest(f"the archive's gzip data is corrupt: {error}") from None
        self.read_bytes += len(data)
        if self.read_bytes > self.limit:
            raise PayloadTooLarge(f"the archive decompresses to more than {self.limit} bytes")
        return data

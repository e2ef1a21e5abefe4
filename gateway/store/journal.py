"""Changes to a config directory that a crash never leaves half made.

A change (an upload, an apply, a delete) is a `Transaction`: files and folders to put in place
and paths to take away, no path changed twice nor inside another the change puts or removes
(missing parent folders are made by steps of their own). It is prepared in a folder of its own
under `<config dir>/.gateway-state/pending/` (new content written and fsynced there; a file it
replaces is hard-linked there first, so the change can be undone), then committed by one rename
of that folder into `committed/`, and its steps are replayed, in order, each one a rename (or a
mkdir) that is skipped once done: the files are in place for the reload that stages them. When
that reload swaps, `mark_served()` writes one fsynced file: the atomic switch, from which the
change is kept whatever happens; the folder is then moved to `trash/`. `Committed.revert()`
first marks the change as reverted (one fsynced file), then undoes its steps in reverse order,
each also skipped once undone; from the mark on, a crash ends in the state from before it.

`recover()`, run before the config directory is read (`gateway serve`, `check`, `build`),
finishes a committed change marked served, reverts any other (its reload never swapped, or it
was being undone) and drops an uncommitted one, so a restart reads either the state before a
change or the state after it, never a mix. A process that changes the directory holds a shared
lock (`.gateway-state/lock`) from its first change on; `recover()` needs it exclusively and
leaves the directory alone while another process holds it.

Nothing else in the config directory is touched, so it stays a plain folder of manifests that
can be edited by hand, and a model version folder once in place never moves (its runtime runs
from it).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import itertools
import json
import logging
import os
import shutil
import stat
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from gateway.errors import Conflict as Conflict  # the 409 of a change (re-exported)

log = logging.getLogger("gateway.store")

STATE_DIR = ".gateway-state"  # in the config directory: changes under way, their trash, reservations
TRASH_KEEP_S = 600.0  # a removed model folder outlives the drain of any runtime still running from it
READ_ONLY_ERRNOS = (errno.EROFS, errno.EACCES, errno.EPERM)
REVERTED = "reverted"  # the file in a committed change's folder that marks it as being undone
SERVED = "served"  # the file that marks it served (the point of no return: a restart keeps it)


class PathConflict(Conflict, ValueError):
    """A path of a change that clashes with what is in the config directory (409)."""


def read_only_conflict(config_dir: Path) -> Conflict:
    return Conflict(f"the config directory {config_dir} is read-only (a mounted ConfigMap?): this gateway "
                    "cannot be changed through its admin API; change the manifests where they come from and "
                    "roll them out instead")


def is_read_only(error: BaseException) -> bool:
    """A write refused because the file system (or the folder) is read-only."""
    return isinstance(error, OSError) and error.errno in READ_ONLY_ERRNOS


class _ProcessLocks:
    """The shared `flock` this process holds on each config directory it changes (one open file
    per directory, whatever the number of `ConfigStore` objects), and its exclusive use by
    `recover()`."""

    def __init__(self) -> None:
        self._held: dict[Path, int] = {}
        self._guard = threading.RLock()  # recover() makes changes (which hold the lock) while it has it

    def hold(self, path: Path) -> None:
        with self._guard:
            held = self._held.get(path)
            if held is not None and _same_file(held, path):
                return
            if held is not None:  # the state folder was deleted and made again
                os.close(held)
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            fcntl.flock(descriptor, fcntl.LOCK_SH)  # waits only while another process recovers
            self._held[path] = descriptor

    def release(self, path: Path) -> None:
        with self._guard:
            held = self._held.pop(path, None)
            if held is not None:
                os.close(held)

    def release_all(self) -> None:
        """Let go of every directory (this process changes none from now on)."""
        with self._guard:
            for path in list(self._held):
                self.release(path)

    @contextlib.contextmanager
    def exclusive(self, path: Path) -> Iterator[bool]:
        """The lock taken exclusively, if no other process holds it (then back to shared if this
        process held it, else let go)."""
        with self._guard:
            own = self._held.get(path)
            if own is not None and not _same_file(own, path):
                self.release(path)
                own = None
            descriptor = own if own is not None else os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            self._held[path] = descriptor  # the changes recover() makes take no other lock
            try:
                try:
                    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    yield False
                    return
                yield True
            finally:
                if own is not None:
                    fcntl.flock(descriptor, fcntl.LOCK_SH)
                else:
                    del self._held[path]
                    os.close(descriptor)


def _same_file(descriptor: int, path: Path) -> bool:
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(descriptor)
    return (found.st_dev, found.st_ino) == (held.st_dev, held.st_ino)


_LOCKS = _ProcessLocks()


def release_locks() -> None:
    """This process changes no config directory from now on: another process's `recover()` may
    run (a worker whose parent is gone)."""
    _LOCKS.release_all()


@dataclass(frozen=True, slots=True)
class Operation:
    """One step of a transaction: `put` renames entry `index` of the transaction into `path`
    (over a file there); `remove` renames `path` into the transaction's `removed/index`;
    `mkdir` makes the missing folder `path` (for the puts after it)."""

    kind: str  # "put" | "remove" | "mkdir"
    path: str  # relative to the config directory, POSIX form
    index: int
    backup: bool = False  # put over an existing file: the old one is kept as backup/index

    def to_json(self) -> dict[str, object]:
        return {"kind": self.kind, "path": self.path, "index": self.index, "backup": self.backup}

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Operation:
        return cls(str(data["kind"]), str(data["path"]), int(str(data["index"])), bool(data.get("backup")))


def relative(path: str) -> str:
    """`path` checked to stay inside the config directory (no absolute path, no `..`, not the
    state folder)."""
    pure = PurePosixPath(path)
    if pure.is_absolute() or not pure.parts or ".." in pure.parts or pure.parts[0] == STATE_DIR:
        raise ValueError(f"not a path inside the config directory: {path!r}")
    return pure.as_posix()


class ConfigStore:
    """The config directory as the admin API changes it."""

    def __init__(self, config_dir: Path) -> None:
        self.config_dir = config_dir
        self.state = config_dir / STATE_DIR
        self._ids = itertools.count(1)

    def writable(self) -> bool:
        return os.access(self.config_dir, os.W_OK)

    def check_writable(self) -> None:
        """Conflict (409) when the gateway cannot change the config directory."""
        if not self.writable():
            raise read_only_conflict(self.config_dir)

    def folder(self, kind: str) -> Path:
        """`.gateway-state/<kind>/`, made when missing (and this process holds the lock that
        keeps another's `recover()` away from it)."""
        path = self.state / kind
        try:
            made_state = not self.state.is_dir()
            if made_state:
                self.state.mkdir(exist_ok=True)
                _fsync_dirs({self.config_dir})
            self._hold()  # before the folder is made: another process's recover() would remove it
            if not path.is_dir():
                path.mkdir(exist_ok=True)
                _fsync_dirs({self.state})  # its entry last
        except OSError as error:
            if is_read_only(error):
                raise read_only_conflict(self.config_dir) from None
            raise
        return path

    def _hold(self) -> None:
        _LOCKS.hold(self.state / "lock")

    def close(self) -> None:
        """This process lets go of the directory's lock (another process may recover it from
        now on)."""
        _LOCKS.release(self.state / "lock")

    def begin(self) -> Transaction:
        """A new transaction (Conflict when the directory is read-only)."""
        self.check_writable()
        name = f"{time.time_ns():020d}-{os.getpid()}-{next(self._ids)}-{uuid.uuid4().hex[:8]}"
        root = self.folder("pending") / name
        root.mkdir()
        return Transaction(self, root)

    def recover(self) -> list[str]:
        """Finish (or revert, when marked) the committed changes a crash interrupted (oldest
        first), drop the uncommitted ones and stale reservations and uploads; returns the names
        of the changes finished. A read-only directory (or one the gateway never changed) is left
        alone, and so is one another process is changing (it holds the lock)."""
        if not self.state.is_dir() or not self.writable():
            return []
        with self._exclusive() as locked:
            if not locked:
                log.warning("another gateway process is changing %s: its changes under way are left to it",
                            self.config_dir)
                return []
            finished = []
            committed = self.state / "committed"
            if committed.is_dir():
                for root in sorted(committed.iterdir()):
                    change = Committed(self, root, _read_operations(root))
                    if (root / SERVED).exists() and not (root / REVERTED).exists():
                        change.finish()
                    else:  # never served (the process died staging it) or being undone: the old state
                        change.revert()
                    finished.append(root.name)
                    log.warning("%s the config change %s that an earlier gateway process committed but did "
                                "not complete", "reverted" if change.reverted else "finished", root.name)
            for kind in ("pending", "uploads", "reserved"):
                _remove_tree(self.state / kind)
            self.purge_trash(keep_s=0.0)
            return finished

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[bool]:
        with _LOCKS.exclusive(self.state / "lock") as locked:
            yield locked

    def purge_trash(self, keep_s: float = TRASH_KEEP_S) -> None:
        """Delete what finished changes took away, once older than `keep_s`."""
        trash = self.state / "trash"
        if not trash.is_dir():
            return
        now = time.time()
        for entry in trash.iterdir():
            with contextlib.suppress(OSError):
                if now - entry.stat().st_mtime >= keep_s:
                    _remove_tree(entry)


@dataclass
class Transaction:
    """A change being prepared: nothing in the config directory moves until `commit`."""

    store: ConfigStore
    root: Path
    operations: list[Operation] = field(default_factory=list)
    committed: Committed | None = None  # set at the switch (a commit failing after it is reverted by this)

    @property
    def paths(self) -> set[str]:
        return {operation.path for operation in self.operations}

    def _claim(self, path: str) -> tuple[Path, list[Operation]]:
        """`path` checked against the steps so far and the config directory: where it is in the
        config directory, and the steps making its missing parent folders (added with its own)."""
        path = relative(path)
        for operation in self.operations:
            inside = path.startswith(operation.path + "/") and operation.kind != "mkdir"
            if operation.path == path or inside or operation.path.startswith(path + "/"):
                raise ValueError(f"{path} is changed twice in one transaction (with {operation.path})")
        config_dir = self.store.config_dir
        made = {operation.path for operation in self.operations if operation.kind == "mkdir"}
        parents: list[Operation] = []
        parts = PurePosixPath(path).parts
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            where = config_dir / parent
            if parent in made:
                continue
            if not os.path.lexists(where):
                parents.append(Operation("mkdir", parent, len(self.operations) + len(parents)))
                made.add(parent)
            elif not where.is_dir():
                raise PathConflict(f"{parent} is not a folder, so {path} cannot be put in it")
        nearest = config_dir.joinpath(*parts[:-1])
        while not nearest.exists():
            nearest = nearest.parent
        if nearest.stat().st_dev != self.root.stat().st_dev:  # a rename cannot cross file systems
            raise PathConflict(f"{PurePosixPath(path).parent} is on another file system than {STATE_DIR}/ "
                               "(a mount in the config directory): the gateway cannot change it")
        if not os.access(nearest, os.W_OK):
            raise read_only_conflict(config_dir)
        return config_dir / path, parents

    def _add(self, parents: list[Operation], kind: str, path: str, backup: bool = False) -> None:
        self.operations.extend(parents)
        self.operations.append(Operation(kind, relative(path), len(self.operations), backup))

    def put_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        """Write `data` as file `path` (replacing one there), with `mode`."""
        target, parents = self._claim(path)
        index = len(self.operations) + len(parents)
        backup = target.is_file() and not target.is_symlink()
        if not backup and os.path.lexists(target):
            raise PathConflict(f"{relative(path)} exists and is not a file")
        entry = self.root / "new" / str(index)
        entry.parent.mkdir(exist_ok=True)
        with open(entry, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fchmod(stream.fileno(), mode)
            os.fsync(stream.fileno())
        if backup:
            (self.root / "backup").mkdir(exist_ok=True)
            os.link(target, self.root / "backup" / str(index))
        self._add(parents, "put", path, backup)

    def put_folder(self, path: str, source: Path) -> None:
        """Move the complete folder `source` (on the same file system) to `path`, which must
        not exist; its files are fsynced here."""
        target, parents = self._claim(path)
        if os.path.lexists(target):
            raise PathConflict(f"{relative(path)} exists already")
        _fsync_tree(source)
        entry = self.root / "new" / str(len(self.operations) + len(parents))
        entry.parent.mkdir(exist_ok=True)
        os.rename(source, entry)
        self._add(parents, "put", path)

    def remove(self, path: str) -> None:
        """Take file or folder `path` away (kept in the trash for a while)."""
        target, parents = self._claim(path)
        if parents or not os.path.lexists(target):
            raise PathConflict(f"{relative(path)} does not exist")
        self._add(parents, "remove", path)

    def commit(self) -> Committed:
        """The atomic switch: the change is made from here on (and carried out now). A failure
        after the switch leaves `committed` set, for the caller to revert."""
        _write_synced(self.root / "operations.json",
                      json.dumps([operation.to_json() for operation in self.operations]).encode())
        for folder in ("new", "backup"):  # their files were fsynced as they were written
            if (self.root / folder).is_dir():
                _fsync_dir(self.root / folder)
        _fsync_dir(self.root)
        committed = self.store.folder("committed") / self.root.name
        os.rename(self.root, committed)
        self.committed = Committed(self.store, committed, list(self.operations))  # from here: revert, never discard
        _fsync_dir(committed.parent)
        _fsync_dir(self.root.parent)
        self.committed.replay()
        return self.committed

    def discard(self) -> None:
        """Give the change up (what it prepared is deleted); a committed one is left as it is."""
        if self.committed is None:
            _remove_tree(self.root)


@dataclass
class Committed:
    """A committed change: `replay` carries it out (again, harmlessly), `revert` undoes it,
    `finish` ends it."""

    store: ConfigStore
    root: Path
    operations: list[Operation]
    reverted: bool = False

    def replay(self) -> None:
        config_dir = self.store.config_dir
        parents: set[Path] = set()
        for operation in self.operations:
            target = config_dir / operation.path
            if operation.kind == "mkdir":
                if not os.path.lexists(target):
                    os.mkdir(target)
                source = target
            elif operation.kind == "put":
                source = self.root / "new" / str(operation.index)
                if os.path.lexists(source):
                    os.rename(source, target)
            else:
                source, target = target, self.root / "removed" / str(operation.index)
                if os.path.lexists(source):
                    target.parent.mkdir(exist_ok=True)
                    os.rename(source, target)
            parents.add(source.parent)
            parents.add(target.parent)
        _fsync_dirs(parents)

    def revert(self) -> None:
        """Undo the change: marked first (a crash from then on ends in the state from before
        it), then each step undone in reverse order (skipped once undone), then finished."""
        self.reverted = True
        marker = self.root / REVERTED
        if not marker.exists():
            _write_synced(marker, b"")
            _fsync_dir(self.root)
        config_dir = self.store.config_dir
        parents: set[Path] = set()
        for operation in reversed(self.operations):
            target = config_dir / operation.path
            new = self.root / "new" / str(operation.index)
            if operation.kind == "mkdir":
                with contextlib.suppress(FileNotFoundError, OSError):
                    if target.is_dir() and not target.is_symlink() and not any(target.iterdir()):
                        os.rmdir(target)
                        parents.add(target.parent)
                continue
            if operation.kind == "remove":
                source = self.root / "removed" / str(operation.index)
            elif operation.backup:
                source = self.root / "backup" / str(operation.index)
                if os.path.lexists(new):  # never put in place: nothing to undo
                    continue
            else:
                if os.path.lexists(new) or not os.path.lexists(target):
                    continue
                source, target = target, self.root / "undone" / str(operation.index)
                target.parent.mkdir(exist_ok=True)
            if os.path.lexists(source):
                os.rename(source, target)
                parents.update((source.parent, target.parent))
        _fsync_dirs(parents)
        self._to_trash()

    def mark_served(self) -> None:
        """The new config serves: from here a restart keeps the change (before, it reverts it:
        a change whose reload never swapped, say a runtime that never started, is not kept)."""
        _write_synced(self.root / SERVED, b"")
        _fsync_dir(self.root)

    def finish(self) -> None:
        """Carried out: the change's folder goes to the trash (one rename, so a crash never
        replays half a cleaned-up change)."""
        self.replay()
        self._to_trash()

    def _to_trash(self) -> None:
        trash = self.store.folder("trash")
        os.rename(self.root, trash / self.root.name)
        os.utime(trash / self.root.name)  # kept TRASH_KEEP_S from now (a runtime may still run from it)
        _fsync_dirs({self.root.parent, trash})
        self.store.purge_trash()


def _read_operations(root: Path) -> list[Operation]:
    data = json.loads((root / "operations.json").read_bytes())
    return [Operation.from_json(item) for item in data]


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as stream:
        stream.write(data)
        stream.flush()
        os.fsync(stream.fileno())


def _fsync_dir(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _fsync_dirs(paths: set[Path]) -> None:
    for path in sorted(paths):
        if path.is_dir():
            _fsync_dir(path)


def _fsync_tree(root: Path) -> None:
    """fsync every file and folder under `root` (and `root`)."""
    if not root.is_dir():
        descriptor = os.open(root, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        return
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            if stat.S_ISREG(os.lstat(path).st_mode):
                descriptor = os.open(path, os.O_RDONLY)
                try:
                    os.fsync(descriptor)
                finally:
                    os.close(descriptor)
        _fsync_dir(Path(folder))


def _remove_tree(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()

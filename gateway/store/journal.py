"""Changes to a config directory that a crash never leaves half made.

A change (an upload, an apply, a delete) is a `Transaction`: files and folders to put in place
and paths to take away, each path at most once. It is prepared in a folder of its own under
`<config dir>/.gateway-state/pending/` (new content written and fsynced there; a file it
replaces is hard-linked there first, so the change can be undone), then committed by one
rename of that folder into `committed/`: the atomic switch. From then on the change is made,
whatever happens: its operations are replayed, in order, each one a rename that is skipped once
done, and the folder is moved to `trash/` when they all are. `recover()`, run before the config
directory is read (`gateway serve`, `check`, `build`), finishes a committed change a crash
interrupted and drops an uncommitted one, so a restart reads either the state before a change or
the state after it, never a mix.

Nothing else in the config directory is touched, so it stays a plain folder of manifests that
can be edited by hand, and a model version folder once in place never moves (its runtime runs
from it).
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from gateway.errors import Conflict as Conflict  # the 409 of a change (re-exported)

log = logging.getLogger("gateway.store")

STATE_DIR = ".gateway-state"  # in the config directory: changes under way, their trash, reservations
TRASH_KEEP_S = 600.0  # a removed model folder outlives the drain of any runtime still running from it


def read_only_conflict(config_dir: Path) -> Conflict:
    return Conflict(f"the config directory {config_dir} is read-only (a mounted ConfigMap?): this gateway "
                    "cannot be changed through its admin API; change the manifests where they come from and "
                    "roll them out instead")


@dataclass(frozen=True, slots=True)
class Operation:
    """One step of a transaction: `put` renames entry `index` of the transaction into `path`
    (over a file there); `remove` renames `path` into the transaction's `removed/index`."""

    kind: str  # "put" | "remove"
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
        """`.gateway-state/<kind>/`, made when missing."""
        path = self.state / kind
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            if error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise read_only_conflict(self.config_dir) from None
            raise
        return path

    def begin(self) -> Transaction:
        """A new transaction (Conflict when the directory is read-only)."""
        self.check_writable()
        name = f"{time.time_ns():020d}-{os.getpid()}-{next(self._ids)}-{uuid.uuid4().hex[:8]}"
        root = self.folder("pending") / name
        root.mkdir()
        return Transaction(self, root)

    def recover(self) -> list[str]:
        """Finish the committed changes a crash interrupted (oldest first), drop the uncommitted
        ones and stale reservations and uploads; returns the names of the changes finished. A
        read-only directory (or one the gateway never changed) is left alone."""
        if not self.state.is_dir() or not self.writable():
            return []
        finished = []
        committed = self.state / "committed"
        if committed.is_dir():
            for root in sorted(committed.iterdir()):
                Committed(self, root, _read_operations(root)).finish()
                finished.append(root.name)
                log.warning("finished the config change %s that an earlier gateway process committed but did "
                            "not complete", root.name)
        for kind in ("pending", "uploads", "reserved"):
            _remove_tree(self.state / kind)
        self.purge_trash(keep_s=0.0)
        return finished

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

    @property
    def paths(self) -> set[str]:
        return {operation.path for operation in self.operations}

    def _next(self, path: str) -> tuple[str, int]:
        path = relative(path)
        if path in self.paths:
            raise ValueError(f"{path} is changed twice in one transaction")
        return path, len(self.operations)

    def put_file(self, path: str, data: bytes) -> None:
        """Write `data` as file `path` (replacing one there)."""
        path, index = self._next(path)
        entry = self.root / "new" / str(index)
        entry.parent.mkdir(exist_ok=True)
        with open(entry, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(entry, 0o644)
        target = self.store.config_dir / path
        backup = target.is_file() and not target.is_symlink()
        if backup:
            (self.root / "backup").mkdir(exist_ok=True)
            os.link(target, self.root / "backup" / str(index))
        elif target.exists() or target.is_symlink():
            raise ValueError(f"{path} exists and is not a file")
        self.operations.append(Operation("put", path, index, backup))

    def put_folder(self, path: str, source: Path) -> None:
        """Move the complete folder `source` (on the same filesystem) to `path`, which must not
        exist; its files are fsynced here."""
        path, index = self._next(path)
        if (self.store.config_dir / path).exists():
            raise ValueError(f"{path} exists already")
        _fsync_tree(source)
        entry = self.root / "new" / str(index)
        entry.parent.mkdir(exist_ok=True)
        os.rename(source, entry)
        self.operations.append(Operation("put", path, index))

    def remove(self, path: str) -> None:
        """Take file or folder `path` away (kept in the trash for a while)."""
        path, index = self._next(path)
        if not (self.store.config_dir / path).exists():
            raise ValueError(f"{path} does not exist")
        self.operations.append(Operation("remove", path, index))

    def commit(self) -> Committed:
        """The atomic switch: the change is made from here on (and carried out now)."""
        _write_synced(self.root / "operations.json",
                      json.dumps([operation.to_json() for operation in self.operations]).encode())
        _fsync_tree(self.root)
        committed = self.store.folder("committed") / self.root.name
        os.rename(self.root, committed)
        _fsync_dir(committed.parent)
        _fsync_dir(self.root.parent)
        done = Committed(self.store, committed, list(self.operations))
        done.replay()
        return done

    def discard(self) -> None:
        """Give the change up (what it prepared is deleted)."""
        _remove_tree(self.root)


@dataclass
class Committed:
    """A committed change: `replay` carries it out (again, harmlessly), `revert` undoes it with a
    change of its own, `finish` ends it."""

    store: ConfigStore
    root: Path
    operations: list[Operation]

    def replay(self) -> None:
        config_dir = self.store.config_dir
        parents: set[Path] = set()
        for operation in self.operations:
            target = config_dir / operation.path
            if operation.kind == "put":
                source = self.root / "new" / str(operation.index)
                if source.exists() or source.is_symlink():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.rename(source, target)
            else:
                source, target = target, self.root / "removed" / str(operation.index)
                if source.exists() or source.is_symlink():
                    target.parent.mkdir(exist_ok=True)
                    os.rename(source, target)
            parents.add(source.parent)
            parents.add(target.parent)
        for parent in parents:
            if parent.is_dir():
                _fsync_dir(parent)

    def revert(self) -> None:
        """Undo the change (with a change of its own, as crash-safe as this one was)."""
        undo = self.store.begin()
        for operation in reversed(self.operations):
            if operation.kind == "put" and operation.backup:
                backup = self.root / "backup" / str(operation.index)
                undo.put_file(operation.path, backup.read_bytes())
            elif operation.kind == "put":
                undo.remove(operation.path)
            else:
                removed = self.root / "removed" / str(operation.index)
                if removed.is_dir():
                    undo.put_folder(operation.path, removed)
                else:
                    undo.put_file(operation.path, removed.read_bytes())
        self.finish()  # first: a crash from here on leaves this change made, the undo dropped
        undo.commit().finish()

    def finish(self) -> None:
        """Carried out: the change's folder goes to the trash (one rename, so a crash never
        replays half a cleaned-up change)."""
        self.replay()
        trash = self.store.folder("trash") / self.root.name
        os.rename(self.root, trash)
        _fsync_dir(self.root.parent)
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


def _fsync_tree(root: Path) -> None:
    """fsync every file and folder under `root` (and `root`)."""
    if root.is_file():
        descriptor = os.open(root, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        return
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
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

"""The config store: a change is all or nothing, a revert restores exactly what was there (content,
modes, folders), clashing paths are refused up front, and another process's recovery waits for
a change under way."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.app import create_app
from gateway.manifests import Config, load_config
from gateway.reload import ConfigStager, Reloader, _to_end
from gateway.settings import Settings
from gateway.store.changes import Prepared
from gateway.store.journal import STATE_DIR, ConfigStore, PathConflict, release_locks
from tests.conftest import REPO, serve_app, write_app
from tests.gateway.store.trees import change, old_state, tree


def test_a_change_is_made_and_a_revert_restores_exactly_what_was_there(tmp_path: Path) -> None:
    root = tmp_path / "config"
    old_state(root)
    before = tree(root)
    store = ConfigStore(root)
    transaction = store.begin()
    change(transaction, store.folder("uploads") / "new")
    assert tree(root) == before  # nothing moves before the commit
    committed = transaction.commit()
    after = tree(root)
    assert after["applications/app.yaml"] == ("file", 0o644, b"kind: Application\nname: app\nversion: 2\n")
    assert after["extra/deep/notes.yaml"] == ("file", 0o640, b"new\n")
    assert after["models/new/1/src/func_main.py"][1] == 0o755
    assert "models/old" not in after
    assert "applications/gone.yaml" not in after
    committed.revert()
    assert tree(root) == before  # the 0o600 file, the 0o750 folder; extra/ and models/new/ gone
    assert store.recover() == []


def test_a_finished_change_stays_made_after_a_recovery(tmp_path: Path) -> None:
    root = tmp_path / "config"
    old_state(root)
    store = ConfigStore(root)
    transaction = store.begin()
    change(transaction, store.folder("uploads") / "new")
    transaction.commit().finish()
    after = tree(root)
    store.close()
    assert ConfigStore(root).recover() == []
    assert tree(root) == after
    assert not any((root / STATE_DIR / "trash").iterdir())  # emptied by the recovery


def test_a_discarded_transaction_leaves_nothing(tmp_path: Path) -> None:
    root = tmp_path / "config"
    old_state(root)
    before = tree(root)
    store = ConfigStore(root)
    transaction = store.begin()
    change(transaction, store.folder("uploads") / "new")
    transaction.discard()
    assert tree(root) == before
    assert not (root / STATE_DIR / "pending" / transaction.root.name).exists()


@pytest.mark.parametrize(("steps", "words"), [
    ([("put_file", "applications/app.yaml"), ("put_file", "applications/app.yaml")], "changed twice"),
    ([("remove", "models/old"), ("put_file", "models/old/2/serving.yaml")], "changed twice"),
    ([("put_file", "extra/a.yaml"), ("remove", "extra")], "changed twice"),
    ([("put_file", "models/old/1/src/func_main.py"), ("remove", "models/old")], "changed twice"),
])
def test_a_path_changed_twice_is_refused(tmp_path: Path, steps: list[tuple[str, str]], words: str) -> None:
    root = tmp_path / "config"
    old_state(root)
    transaction = ConfigStore(root).begin()
    *first, last = steps
    for kind, path in first:
        getattr(transaction, kind)(*((path, b"x") if kind == "put_file" else (path,)))
    with pytest.raises(ValueError, match=words):
        getattr(transaction, last[0])(*((last[1], b"x") if last[0] == "put_file" else (last[1],)))


@pytest.mark.parametrize(("kind", "path", "words"), [
    ("put_file", "models/old", "models/old exists and is not a file"),
    ("put_file", "applications/app.yaml/x.yaml", "applications/app.yaml is not a folder"),
    ("put_folder", "models/old/1", "models/old/1 exists already"),
    ("remove", "models/missing", "models/missing does not exist"),
    ("remove", "nowhere/deep/x.yaml", "nowhere/deep/x.yaml does not exist"),
    ("put_file", "nowhere/deep/../x.yaml", "not a path inside"),
])
def test_paths_that_clash_with_the_directory_are_a_409(tmp_path: Path, kind: str, path: str, words: str) -> None:
    root = tmp_path / "config"
    old_state(root)
    store = ConfigStore(root)
    transaction = store.begin()
    arguments: tuple[object, ...] = {"put_file": (path, b"x"), "remove": (path,),
                                     "put_folder": (path, store.folder("uploads"))}[kind]
    with pytest.raises(ValueError, match=words) as raised:
        getattr(transaction, kind)(*arguments)
    assert isinstance(raised.value, PathConflict) == ("not a path" not in words)
    assert getattr(raised.value, "status", 409) == 409
    assert transaction.operations == []  # nothing of a refused step is kept (no folder made for it)


@pytest.mark.parametrize("path", ["/etc/passwd", "../outside", "a/../../b", f"{STATE_DIR}/committed/x", ""])
def test_paths_outside_the_config_directory_are_refused(tmp_path: Path, path: str) -> None:
    root = tmp_path / "config"
    old_state(root)
    with pytest.raises(ValueError, match="not a path inside the config directory"):
        ConfigStore(root).begin().put_file(path, b"x")


_HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from gateway.store.journal import ConfigStore
    transaction = ConfigStore(Path(sys.argv[1])).begin()
    transaction.put_file("applications/late.yaml", b"x")
    print(transaction.root, flush=True)
    sys.stdin.read()  # until told to go on
    transaction.commit().finish()
""")


def test_recovery_waits_while_another_process_has_a_change_under_way(tmp_path: Path) -> None:
    root = tmp_path / "config"
    old_state(root)
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(root)], cwd=REPO, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None
        assert holder.stdin is not None
        pending = Path(holder.stdout.readline().decode().strip())
        assert ConfigStore(root).recover() == []  # left alone: the other process holds the lock
        assert pending.is_dir()
        holder.stdin.close()
        assert holder.wait(timeout=30) == 0
    finally:
        holder.kill()
    assert (root / "applications" / "late.yaml").read_bytes() == b"x"
    assert ConfigStore(root).recover() == []  # the lock is free again: recovery runs (nothing to do)


def test_a_process_holds_one_lock_per_directory_whatever_its_stores(tmp_path: Path) -> None:
    root = tmp_path / "config"
    old_state(root)
    ConfigStore(root).folder("uploads")
    open_files = len(os.listdir("/proc/self/fd"))
    for _ in range(20):  # as one upload request after another does
        ConfigStore(root).folder("uploads")
        ConfigStore(root).begin().discard()
    assert len(os.listdir("/proc/self/fd")) == open_files
    release_locks()
    assert ConfigStore(root).recover() == []  # (nothing held, nothing to do)


# ---------------------------------------------------------------- changes through a reload


@dataclass
class PutManifests:
    """A change writing manifest files (what an apply does, reduced to its writes)."""

    files: dict[str, str]

    def prepare(self, config: Config, store: ConfigStore) -> Prepared:
        transaction = store.begin()
        for path, text in sorted(self.files.items()):
            transaction.put_file(path, text.encode())
        return Prepared(transaction, {"thread": threading.current_thread().name})


def _app_yaml(model: str) -> str:
    return f"kind: Application\nname: other\nsingular:\n  model: {model}\n"


class _SlowStager(ConfigStager):
    """Stages as ConfigStager does, after a pause (to be abandoned meanwhile)."""

    async def stage(self):  # type: ignore[no-untyped-def]
        await asyncio.sleep(30)
        return await super().stage()


@contextlib.asynccontextmanager
async def _reloader(root: Path) -> AsyncIterator[Reloader]:
    """The reloader of a gateway app serving `root` (under a real uvicorn)."""
    app = create_app(Settings(config_dir=root, access_log=False), load_config(root))
    async with serve_app(app):
        yield app.state.reloader


def _remote_config(root: Path) -> None:
    (root / "models").mkdir(parents=True)
    (root / "models" / "r.yaml").write_text("kind: Model\nname: r\nversion: 1\nbackend:\n"
                                          "  protocol: tensorflow-serving\n  target: 127.0.0.1:1\n  model_name: r\n")
    write_app(root, "app", "r:1")


async def test_a_change_is_made_off_the_event_loop_and_served(tmp_path: Path) -> None:
    root = tmp_path / "config"
    _remote_config(root)
    async with _reloader(root) as reloader:
        result = await reloader.change(PutManifests({"applications/other.yaml": _app_yaml("r:1")}))
        assert result.status == 200, result.error
        assert result.applications == ["app", "other"]
        assert result.detail["thread"] != threading.current_thread().name  # the file work ran in a thread
        assert (root / "applications" / "other.yaml").exists()


async def test_a_refused_change_is_reverted(tmp_path: Path) -> None:
    root = tmp_path / "config"
    _remote_config(root)
    before = tree(root)
    async with _reloader(root) as reloader:
        result = await reloader.change(PutManifests({"applications/app.yaml": _app_yaml("nope:1")}))
        assert result.status == 422
        assert "nope" in (result.error or "")
        assert tree(root) == before


async def test_an_abandoned_change_is_reverted_to_the_end(tmp_path: Path) -> None:
    root = tmp_path / "config"
    _remote_config(root)
    before = tree(root)
    async with _reloader(root) as reloader:
        reloader.stager.__class__ = _SlowStager
        asked = asyncio.create_task(reloader.change(PutManifests({"applications/other.yaml": _app_yaml("r:1")})))
        while not (root / "applications" / "other.yaml").exists():  # committed, now staging
            await asyncio.sleep(0.01)
        reloader.abandon()
        reloader.abandon()  # twice, as a stopping gateway may
        assert (await asyncio.wait_for(asked, 10)).shutting_down  # answered at once; the revert goes on
        await asyncio.wait_for(asyncio.gather(*reloader._reloading, return_exceptions=True), 10)
        assert tree(root) == before
        assert not any((root / STATE_DIR / "committed").iterdir())


class _ReadOnly(PutManifests):
    def prepare(self, config: Config, store: ConfigStore) -> Prepared:
        prepared = super().prepare(config, store)
        raise OSError(errno.EROFS, "Read-only file system", str(store.config_dir / "models"))
        return prepared  # pragma: no cover


async def test_a_write_refused_as_read_only_anywhere_in_a_change_is_a_409(tmp_path: Path) -> None:
    root = tmp_path / "config"
    _remote_config(root)
    async with _reloader(root) as reloader:
        result = await reloader.change(_ReadOnly({"applications/other.yaml": _app_yaml("r:1")}))
        assert result.status == 409
        assert "read-only" in (result.error or "")


_READ_ONLY = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from gateway.store.journal import ConfigStore
    root = Path(sys.argv[1])
    seen = {"writable": ConfigStore(root).writable(), "recovered": ConfigStore(root).recover()}
    for name, make in [("begin", lambda: ConfigStore(root).begin()),
                       ("folder", lambda: ConfigStore(root).folder("uploads"))]:
        try:
            make()
        except Exception as error:
            seen[name] = [type(error).__name__, getattr(error, "status", None), str(error)]
    print(json.dumps(seen))
""")


def _in_mount_namespace(script: str, mounts: str, root: Path) -> dict[str, Any]:
    """`script` run with `root` as `mounts` makes it (read-only bind mounts), in a mount
    namespace of its own (the test's file system is left as it is)."""
    if shutil.which("unshare") is None:
        pytest.skip("no unshare(1) to make a read-only mount with")
    shell = f"{mounts} && exec {sys.executable} -c \"$0\" {root}"
    done = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", shell, script], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    if done.returncode != 0 and "mount" in done.stderr and not done.stdout:
        pytest.skip(f"this machine cannot make a read-only mount: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def test_a_read_only_config_directory_is_a_409_and_left_alone(tmp_path: Path) -> None:
    root = tmp_path / "config"
    old_state(root)
    ConfigStore(root).folder("pending")  # there is state, and recovery still leaves it alone
    seen = _in_mount_namespace(_READ_ONLY, f"mount --bind {root} {root} && mount -o remount,bind,ro {root}", root)
    assert seen["writable"] is False
    assert seen["recovered"] == []
    for name in ("begin", "folder"):
        kind, status, message = seen[name]
        assert (kind, status) == ("Conflict", 409)
        assert f"the config directory {root} is read-only" in message


_PART_READ_ONLY = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from gateway.store.journal import ConfigStore
    root = Path(sys.argv[1])
    transaction = ConfigStore(root).begin()  # the directory itself is writable
    seen = {}
    for name, step in [("put", lambda: transaction.put_file("applications/new.yaml", b"x")),
                       ("remove", lambda: transaction.remove("applications/gone.yaml"))]:
        try:
            step()
        except Exception as error:
            seen[name] = [type(error).__name__, getattr(error, "status", None), str(error)]
    print(json.dumps(seen))
""")


def test_a_read_only_folder_inside_the_config_directory_is_a_409(tmp_path: Path) -> None:
    root = tmp_path / "config"
    old_state(root)
    applications = root / "applications"
    seen = _in_mount_namespace(_PART_READ_ONLY, f"mount --bind {applications} {applications} && "
                               f"mount -o remount,bind,ro {applications}", root)
    for name in ("put", "remove"):
        kind, status, message = seen[name]
        assert (kind, status) == ("Conflict", 409)
        assert "read-only" in message


async def test_file_work_cancelled_as_it_ends_runs_to_its_end_and_the_cancellation_is_kept() -> None:
    go, ended = threading.Event(), threading.Event()

    def work() -> str:
        go.wait(5)
        ended.set()
        return "done"

    task = asyncio.create_task(_to_end(work))
    await asyncio.sleep(0.05)  # the task waits for the thread
    go.set()
    assert ended.wait(5)
    time.sleep(0.05)  # the thread has handed its result to the loop, which has not run it yet
    task.cancel()  # as the work ends: the cancellation must not be lost
    with pytest.raises(asyncio.CancelledError):
        await task
    go.clear()
    ended.clear()
    task = asyncio.create_task(_to_end(work))
    await asyncio.sleep(0.05)
    task.cancel()
    task.cancel()  # twice, while the work goes on: it still runs to its end
    await asyncio.sleep(0.05)
    assert not task.done()
    go.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ended.is_set()

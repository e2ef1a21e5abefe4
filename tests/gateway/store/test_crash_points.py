"""A change killed after any one of its file system calls (the process ends on the spot, as with
SIGKILL) is, after `recover()`, exactly the state before it or exactly the state after it: paths,
bytes, modes. A revert killed at any point is the state before. So is a recovery killed midway,
recovered again."""

from __future__ import annotations

import builtins
import functools
import multiprocessing
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.store.journal import REVERTED, STATE_DIR, Committed, ConfigStore
from tests.gateway.store.trees import Tree, change, old_state, tree

DONE = 3  # the child's exit code when it ran to the end without being cut off
CUT = 0  # cut off after the k-th call

_CALLS = ("rename", "replace", "link", "fsync", "mkdir", "rmdir", "unlink", "open", "close", "fchmod", "chmod",
          "utime")


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """A folder in memory when there is one (these tests are about the order of the calls, not
    the disk: hundreds of runs, each with its fsyncs)."""
    memory = Path("/dev/shm")
    folder = Path(tempfile.mkdtemp(prefix="crash-points-", dir=memory if memory.is_dir() else None))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _cut_after(calls: int) -> None:
    """From now on in this (forked) process: end it right after the `calls`-th file system call."""
    count = [0]

    def tick() -> None:
        count[0] += 1
        if count[0] >= calls:
            os._exit(CUT)

    def counted(function: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            result = function(*args, **kwargs)
            tick()
            return result
        return call

    for name in _CALLS:
        setattr(os, name, counted(getattr(os, name)))
    real_open = builtins.open

    class File:
        def __init__(self, stream: Any) -> None:
            self.stream = stream

        def __enter__(self) -> File:
            return self

        def __exit__(self, *exc: object) -> None:
            self.stream.close()
            tick()

        def __getattr__(self, name: str) -> Any:
            attribute = getattr(self.stream, name)
            return counted(attribute) if name in ("write", "flush", "close") else attribute

    def opened(*args: Any, **kwargs: Any) -> File:
        stream = real_open(*args, **kwargs)
        tick()
        return File(stream)

    builtins.open = opened  # type: ignore[assignment]


def _states(tmp_path: Path) -> tuple[Tree, Tree]:
    """The tree before the change and after it."""
    root = tmp_path / "reference"
    old_state(root)
    before = tree(root)
    store = ConfigStore(root)
    transaction = store.begin()
    change(transaction, store.folder("uploads") / "new")
    transaction.commit().finish()
    return before, tree(root)


def _fresh(tmp_path: Path, k: int) -> Path:
    root = tmp_path / f"round-{k}"
    old_state(root)
    return root


def _commit(root: Path) -> None:
    store = ConfigStore(root)
    transaction = store.begin()
    change(transaction, store.folder("uploads") / "new")
    transaction.commit().finish()


def _recovered(root: Path) -> Tree:
    ConfigStore(root).recover()
    state = root / STATE_DIR
    assert not any((state / "committed").iterdir()) if (state / "committed").is_dir() else True
    assert not (state / "pending").exists()
    found = tree(root)
    shutil.rmtree(root)
    return found


def test_a_change_cut_off_after_any_call_is_the_old_or_the_new_state(tmp_path: Path) -> None:
    before, after = _states(tmp_path)
    seen = []
    k = 0
    while True:
        k += 1
        root = _fresh(tmp_path, k)
        code = _in_child(functools.partial(_commit, root), _nothing, k)
        found = _recovered(root)
        assert found in (before, after), f"cut off after call {k}: a mix of the old and the new state"
        seen.append("new" if found == after else "old")
        if code == DONE:
            break
        assert code == CUT
    assert seen[-1] == "new"
    switch = seen.index("new")
    assert seen == ["old"] * switch + ["new"] * (k - switch), "the state changed more than once"
    assert k > 40  # every call of the change was a cut point


_made: list[Committed] = []  # in a child: the change `_committed` made, for `_reverted`


def _committed(root: Path, after: Tree) -> None:
    """The committed change before the revert (run to its end)."""
    store = ConfigStore(root)
    transaction = store.begin()
    change(transaction, store.folder("uploads") / "new")
    _made.append(transaction.commit())
    assert tree(root) == after


def _reverted() -> None:
    """The revert (to cut off) of the change `_committed` made."""
    _made[0].revert()


def _nothing() -> None:
    pass


def _recover(root: Path) -> None:
    ConfigStore(root).recover()


# Each cut point is a child process. Forked from a small process that has imported only this
# module (not from pytest's, whose size makes each fork and its copy-on-write faults slower):
# hundreds of children per test.
_CHILDREN = multiprocessing.get_context("forkserver")
_CHILDREN.set_forkserver_preload([__name__])


def _child(work: Callable[[], None], before: Callable[[], None], cut_after: int) -> None:  # pragma: no cover
    code = 1
    try:
        before()
        _cut_after(cut_after)
        work()
        code = DONE
    finally:
        os._exit(code)


def _in_child(work: Callable[[], None], before: Callable[[], None], cut_after: int) -> int:
    """Run `before`, then `work` cut off after its `cut_after`-th call, in a forked process;
    its exit code (DONE when it ran to the end). `work` and `before` are module functions (or
    partials of them): the child gets them pickled."""
    child = _CHILDREN.Process(target=_child, args=(work, before, cut_after))
    child.start()
    child.join()
    assert child.exitcode is not None
    return child.exitcode


def test_a_revert_cut_off_after_any_call_is_the_old_state(tmp_path: Path) -> None:
    before, after = _states(tmp_path)
    k = 0
    while True:
        k += 1
        root = _fresh(tmp_path, k)
        code = _in_child(_reverted, functools.partial(_committed, root, after), k)
        assert _recovered(root) == before, f"revert cut off after call {k}: not the old state"
        if code == DONE:
            break
        assert code == CUT
    assert k > 10


def _crashed(what: str, root: Path) -> None:
    """A change committed and not carried out; or carried out and served, or reverting."""
    store = ConfigStore(root)
    transaction = store.begin()
    change(transaction, store.folder("uploads") / "new")
    if what == "revert":
        (transaction.commit().root / REVERTED).write_bytes(b"")  # the revert's mark, then the end
        os._exit(CUT)
    if what == "served":
        transaction.commit().mark_served()  # the reload swapped, then the end
        os._exit(CUT)
    real_rename = os.rename

    def stop_after_switch(source: Any, target: Any) -> None:
        real_rename(source, target)
        if Path(target).parent.name == "committed":
            os._exit(CUT)

    os.rename = stop_after_switch  # type: ignore[assignment]
    transaction.commit()


@pytest.mark.parametrize("what", ["commit", "served", "revert"])
def test_a_recovery_cut_off_after_any_call_recovers_again(tmp_path: Path, what: str) -> None:
    before, after = _states(tmp_path)
    expected = after if what == "served" else before  # committed but never served: reverted
    j = 0
    while True:
        j += 1
        root = _fresh(tmp_path, j)

        assert _in_child(_nothing, functools.partial(_crashed, what, root), 10**9) == CUT
        assert any((root / STATE_DIR / "committed").iterdir())  # committed, not carried out yet
        code = _in_child(functools.partial(_recover, root), _nothing, j)
        carried_out = not any((root / STATE_DIR / "committed").iterdir())  # the rest is clean-up
        assert _recovered(root) == expected, f"recovery cut off after call {j}"
        if code == DONE or carried_out:
            break
    assert j > 10

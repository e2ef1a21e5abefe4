"""A config directory as a comparable value, and the multi-step change the store tests make."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from gateway.store.journal import STATE_DIR, Transaction

Tree = dict[str, tuple[str, int, bytes]]  # path -> (kind, mode, content or link target)


def tree(root: Path) -> Tree:
    """Every path under `root` but the store's own state folder: kind, permission bits, bytes."""
    found: Tree = {}
    for folder, folders, files in os.walk(root):
        if Path(folder) == root and STATE_DIR in folders:
            folders.remove(STATE_DIR)
        for name in folders + files:
            path = Path(folder) / name
            info = path.lstat()
            mode = stat.S_IMODE(info.st_mode)
            key = path.relative_to(root).as_posix()
            if stat.S_ISLNK(info.st_mode):
                found[key] = ("link", 0, os.readlink(path).encode())
            elif stat.S_ISDIR(info.st_mode):
                found[key] = ("dir", mode, b"")
            else:
                found[key] = ("file", mode, path.read_bytes())
    return found


def old_state(root: Path) -> None:
    """The config directory before the change."""
    (root / "applications").mkdir(parents=True)
    (root / "applications" / "app.yaml").write_text("kind: Application\nname: app\n")
    os.chmod(root / "applications" / "app.yaml", 0o600)
    (root / "applications" / "gone.yaml").write_text("kind: Application\nname: gone\n")
    (root / "models" / "old" / "1" / "src").mkdir(parents=True)
    (root / "models" / "old" / "1" / "serving.yaml").write_text("kind: Model\nname: old\n")
    (root / "models" / "old" / "1" / "src" / "func_main.py").write_text("def predict(x):\n    return x\n")
    os.chmod(root / "models" / "old" / "1" / "src", 0o750)


def change(transaction: Transaction, upload: Path) -> None:
    """A put over a file, a put in new sub-folders, a put_folder, a remove of a folder and of a file."""
    transaction.put_file("applications/app.yaml", b"kind: Application\nname: app\nversion: 2\n")
    transaction.put_file("extra/deep/notes.yaml", b"new\n", mode=0o640)
    (upload / "src").mkdir(parents=True)
    (upload / "serving.yaml").write_text("kind: Model\nname: new\n")
    (upload / "src" / "func_main.py").write_text("def predict(x):\n    return x + 1\n")
    os.chmod(upload / "src" / "func_main.py", 0o755)
    transaction.put_folder("models/new/1", upload)
    transaction.remove("models/old")
    transaction.remove("applications/gone.yaml")

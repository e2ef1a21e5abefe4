"""Absolute paths that keep their symlinks.

A model folder, a warmup file or a certificate is named by the path it was found under, made
absolute but not resolved: on Kubernetes a ConfigMap or Secret volume is a tree of symlinks
into a `..<timestamp>` directory that the kubelet replaces, and deletes, at every update. A
path resolved through it would name a directory that is gone after the next update (a runtime
restarted then could not find its folder); the unresolved path always names the current files.
"""

from __future__ import annotations

import os
from pathlib import Path


def absolute(path: Path) -> Path:
    """`path` made absolute and normalised (`..` folded), its symlinks left as they are."""
    return Path(os.path.abspath(path))

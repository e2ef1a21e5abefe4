"""Memory for large payloads: request bodies the HTTP server reads whole, local-wire frames.

`large_buffer(size)` is a writable memoryview of exactly `size` bytes of private anonymous
memory, in huge pages where the kernel has them. Fresh memory costs more than the bytes it
receives: the kernel zeroes every page before its first write, the largest single cost of a
100 MB round trip through the gateway and its runtime. So buffers are kept and reused (`POOL`): a
buffer is free again once nothing refers to it any more (no view, array or message made from it
is alive), which its reference count tells, and it is then simply overwritten by the next read;
whoever takes one fills it in full before anything reads it. Each process keeps at most
KEEP_BYTES of them; every KEEP_FOR_S / 2 seconds it drops the free ones last taken more than
KEEP_FOR_S ago (a gateway that served one large tensor gives that memory back within 90 s).
"""

from __future__ import annotations

import mmap
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

PAGE = 2 << 20  # buffers are sized in whole huge pages
KEEP_BYTES = 512 << 20  # at most this much memory in a pool's kept buffers (in use or free)
KEEP_FOR_S = 60.0  # a free buffer not taken for this long is given back to the kernel
MAPPED_MIN = 1 << 20  # a buffer of at least this many bytes is a large one, below a bytearray
_UNREFERENCED = 2  # sys.getrefcount of a buffer only its pool entry refers to (and the call's argument)


def anonymous_buffer(size: int) -> mmap.mmap:
    """`size` bytes of fresh private anonymous memory, in huge pages where the kernel has them:
    its pages come (zeroed) as they are first written, so a read fills it in one pass (a
    bytearray writes every byte with a zero first) and costs only what was written; in 2 MiB
    pages, 100 MB take 50 page faults instead of 24,000 (4x faster to fill on this machine)."""
    buffer = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE)
    if hasattr(mmap, "MADV_HUGEPAGE"):  # Linux; transparent huge pages "madvise" or "always"
        buffer.madvise(mmap.MADV_HUGEPAGE)
    return buffer


@dataclass
class _Kept:
    buffer: mmap.mmap
    capacity: int
    taken_at: float


class BufferPool:
    """Large buffers for reuse (see the module's docstring); safe across threads."""

    def __init__(self, keep_bytes: int = KEEP_BYTES, keep_for_s: float = KEEP_FOR_S,
                 factory: Callable[[int], mmap.mmap] = anonymous_buffer, keep_count: int | None = None) -> None:
        self.factory = factory  # a fresh buffer of a capacity
        self.keep_count = keep_count  # at most this many kept buffers, when given
        self.keep_bytes = keep_bytes
        self.keep_for_s = keep_for_s
        self._kept: list[_Kept] = []
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None

    def take(self, size: int) -> memoryview:
        """A writable view of `size` bytes: a free kept buffer of at least that size (and at most
        twice), else a fresh one, kept when there is room."""
        capacity = -(-size // PAGE) * PAGE
        with self._lock:
            now = time.monotonic()
            for kept in self._kept:
                if size <= kept.capacity <= 2 * capacity and _free(kept):
                    kept.taken_at = now
                    return memoryview(kept.buffer)[:size]
            buffer = self.factory(capacity)
            if self._make_room(capacity):
                self._kept.append(_Kept(buffer, capacity, now))
                self._arm()
            return memoryview(buffer)[:size]

    @property
    def kept_bytes(self) -> int:
        with self._lock:
            return sum(kept.capacity for kept in self._kept)

    def forget(self, buffer: mmap.mmap) -> None:
        """Never hand `buffer` out again (something outside this process may still read it); it
        is given back once nothing here refers to it."""
        with self._lock:
            self._kept = [kept for kept in self._kept if kept.buffer is not buffer]

    def prune(self) -> None:
        """Give back the free buffers not taken for `keep_for_s`."""
        with self._lock:
            self._timer = None
            cutoff = time.monotonic() - self.keep_for_s
            self._kept = [kept for kept in self._kept if kept.taken_at > cutoff or not _free(kept)]
            self._arm()

    def _make_room(self, capacity: int) -> bool:
        """Drop free buffers, the least recently taken first, until `capacity` more fits."""
        if capacity > self.keep_bytes:
            return False
        total = sum(kept.capacity for kept in self._kept)
        most = self.keep_count if self.keep_count is not None else len(self._kept) + 1
        for kept in sorted(self._kept, key=lambda kept: kept.taken_at):
            if total + capacity <= self.keep_bytes and len(self._kept) < most:
                break
            if _free(kept):
                self._kept.remove(kept)
                total -= kept.capacity
        return total + capacity <= self.keep_bytes and len(self._kept) < most

    def _arm(self) -> None:
        if self._kept and self._timer is None:
            self._timer = threading.Timer(self.keep_for_s / 2, self.prune)
            self._timer.daemon = True
            self._timer.start()


def _free(kept: _Kept) -> bool:
    """Whether nothing but its pool entry refers to the buffer (no view of it is alive)."""
    return sys.getrefcount(kept.buffer) == _UNREFERENCED


POOL = BufferPool()
if hasattr(os, "register_at_fork"):  # a forked child (a model that forks) starts with a pool of its own
    os.register_at_fork(after_in_child=lambda: globals().__setitem__("POOL", BufferPool()))


def large_buffer(size: int) -> memoryview:
    """A writable view of `size` bytes from this process's pool (see the module's docstring)."""
    return POOL.take(size)


def frame_buffer(size: int) -> bytearray | memoryview:
    """A writable buffer of `size` bytes for a read to fill: from MAPPED_MIN bytes one of the
    process's large buffers, else a bytearray."""
    return large_buffer(size) if size >= MAPPED_MIN else bytearray(size)

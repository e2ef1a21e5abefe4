"""The bounded queue and writer thread behind every sink: requests only append (a lock-free
deque and a byte count under a short lock, no thread wake-up per call); the thread takes what
is queued every `interval_s` and hands it to the sink's `deliver`. Full by count or by bytes:
the new item is dropped and counted, never waited for."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")
log = logging.getLogger("gateway.requestlog")


class BackgroundWriter(Generic[T]):
    """Queue of at most `capacity` items and `max_bytes` bytes, emptied by one daemon thread
    that calls `deliver(item)` for each, in order; `finish()` runs in that thread once it was
    closed and emptied (a file sink closes its file there). `on_drop(n)` counts what is
    dropped: offered to a full queue, or still queued when `close`'s time ran out."""

    def __init__(self, name: str, deliver: Callable[[T], None], *, capacity: int, max_bytes: int,
                 on_drop: Callable[[int], None], finish: Callable[[], None] | None = None,
                 interval_s: float = 0.05) -> None:
        self.name = name
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.interval_s = interval_s
        self._deliver = deliver
        self._on_drop = on_drop
        self._finish = finish
        self._items: deque[tuple[T, int]] = deque()
        self._bytes = 0
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._deadline = float("inf")  # time.monotonic() by which a closing writer gives up
        self._thread = threading.Thread(target=self._run, name=f"request-log {name}", daemon=True)
        self._thread.start()

    @property
    def queued(self) -> int:
        return len(self._items)

    def offer(self, item: T, nbytes: int) -> bool:
        """Queue `item` (charged `nbytes`); False, counted, when the queue is full or closing."""
        with self._lock:
            if (self._closing.is_set() or len(self._items) >= self.capacity
                    or (self._items and self._bytes + nbytes > self.max_bytes)):
                full = True
            else:
                full = False
                self._bytes += nbytes
                self._items.append((item, nbytes))
        if full:
            self._on_drop(1)
            return False
        return True

    def _run(self) -> None:
        items = self._items
        while True:
            closing = self._closing.wait(self.interval_s)
            while items:
                if time.monotonic() >= self._deadline:  # set by close, even in the middle of a batch
                    self._drop_rest()
                    break
                item, nbytes = items.popleft()
                with self._lock:
                    self._bytes -= nbytes
                try:
                    self._deliver(item)
                except Exception:  # the sink counts its own failures; this one is a fault
                    log.exception("request log %s: a record could not be written", self.name)
            if closing:
                with self._lock:  # an offer that saw the writer open has appended by now
                    if not items:
                        break
        if self._finish is not None:
            try:
                self._finish()
            except Exception:
                log.exception("request log %s: closing failed", self.name)

    def _drop_rest(self) -> None:
        with self._lock:
            dropped = len(self._items)
            self._items.clear()
            self._bytes = 0
        if dropped:
            self._on_drop(dropped)
            log.warning("request log %s: %d records still queued at shutdown were dropped", self.name, dropped)

    def close(self, timeout: float) -> None:
        """Stop taking items, deliver what is queued within `timeout` seconds (the rest is
        dropped, counted), run `finish`, and wait for the thread (blocks: call it in a thread)."""
        self._deadline = time.monotonic() + timeout
        self._closing.set()
        self._thread.join(timeout + 5.0)

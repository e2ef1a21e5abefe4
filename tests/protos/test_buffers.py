"""Large buffers (protos.buffers): reused once nothing refers to them, never while anything does."""

from __future__ import annotations

import threading
import time

import numpy as np

from protos.buffers import PAGE, BufferPool


def test_a_buffer_is_reused_once_no_view_or_array_of_it_is_left() -> None:
    pool = BufferPool(keep_bytes=64 * PAGE, keep_for_s=60)
    first = pool.take(3_000_000)
    first[:] = b"a" * len(first)
    array = np.frombuffer(first[:1000], np.uint8)  # a view of a slice keeps the buffer taken
    del first
    second = pool.take(3_000_000)
    second[:] = b"b" * len(second)
    assert array.tobytes() == b"a" * 1000  # not handed out again while the array is alive
    assert pool.kept_bytes == 2 * 2 * PAGE
    del array
    third = pool.take(2_500_000)  # the first buffer again: exact size, old bytes to be overwritten
    assert len(third) == 2_500_000
    assert bytes(third[:4]) == b"aaaa"
    assert pool.kept_bytes == 2 * 2 * PAGE
    assert len(second) == 3_000_000


def test_sizes_far_apart_do_not_share_a_buffer_and_the_pool_keeps_its_bound() -> None:
    pool = BufferPool(keep_bytes=8 * PAGE, keep_for_s=60)
    small = pool.take(PAGE)
    del small
    big = pool.take(3 * PAGE)  # the free 1-page buffer is too small
    assert len(big) == 3 * PAGE
    del big
    huge = pool.take(4 * PAGE + 1)  # more than twice the free 3-page one, and 5 pages: room made
    assert pool.kept_bytes <= 8 * PAGE
    assert len(huge) == 4 * PAGE + 1
    beyond = pool.take(9 * PAGE)  # larger than the whole pool: fresh, not kept
    assert len(beyond) == 9 * PAGE
    assert pool.kept_bytes <= 8 * PAGE


def test_free_buffers_not_taken_for_a_while_are_given_back() -> None:
    pool = BufferPool(keep_bytes=16 * PAGE, keep_for_s=0.2)
    taken = pool.take(PAGE)
    freed = pool.take(PAGE)
    del freed
    deadline = time.monotonic() + 5
    while pool.kept_bytes > PAGE and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pool.kept_bytes == PAGE  # the one still taken stays
    del taken
    while pool.kept_bytes and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pool.kept_bytes == 0


def test_threads_taking_at_once_never_share_a_buffer() -> None:
    pool = BufferPool(keep_bytes=64 * PAGE, keep_for_s=60)
    problems: list[str] = []

    def work(mark: int) -> None:
        for _ in range(50):
            view = pool.take(PAGE + mark)
            view[:] = bytes([mark]) * len(view)
            time.sleep(0)
            if bytes(view) != bytes([mark]) * len(view):
                problems.append(f"thread {mark} saw another's bytes")
            del view

    threads = [threading.Thread(target=work, args=(mark,)) for mark in range(1, 5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert problems == []
    assert pool.kept_bytes <= 4 * 2 * PAGE

"""The sinks' bounded writer: a sink that does not keep up makes offers fail at once (dropped,
counted), never wait."""

from __future__ import annotations

import threading
import time

from gateway.requestlog.queue import BackgroundWriter
from tests.waiting import wait_until


def test_a_blocked_sink_drops_new_items_at_once_and_counts_them() -> None:
    release = threading.Event()
    delivered: list[int] = []
    dropped: list[int] = []

    def deliver(item: int) -> None:
        release.wait()
        delivered.append(item)

    writer: BackgroundWriter[int] = BackgroundWriter("blocked", deliver, capacity=5, max_bytes=1 << 20,
                                                     on_drop=dropped.append, interval_s=0.01)
    assert writer.offer(0, 10)
    wait_until(lambda: writer.queued == 0, what="the first item taken by the blocked writer")
    slowest = 0.0
    answers = []
    for item in range(1, 101):
        started = time.perf_counter()
        answers.append(writer.offer(item, 10))
        slowest = max(slowest, time.perf_counter() - started)
    assert answers == [True] * 5 + [False] * 95  # 5 queued behind the blocked one, the rest dropped
    assert sum(dropped) == 95
    assert slowest < 0.05  # never waits for the writer (microseconds; generous for a loaded machine)
    release.set()
    writer.close(5.0)
    assert delivered == [0, 1, 2, 3, 4, 5]


def test_the_queue_is_bounded_by_bytes_too_and_close_drops_what_it_cannot_deliver_in_time() -> None:
    release = threading.Event()
    dropped: list[int] = []
    def deliver(item: int) -> None:
        release.wait()

    writer: BackgroundWriter[int] = BackgroundWriter("bytes", deliver, capacity=1000, max_bytes=100,
                                                     on_drop=dropped.append, interval_s=0.01)
    assert writer.offer(0, 1)
    wait_until(lambda: writer.queued == 0, what="the first item taken")
    assert [writer.offer(item, 40) for item in range(1, 5)] == [True, True, False, False]
    started = time.monotonic()
    closer = threading.Thread(target=writer.close, args=(0.2,))
    closer.start()
    time.sleep(0.3)
    release.set()  # the writer's deadline passed while it was blocked: the rest is dropped
    closer.join(10)
    assert not closer.is_alive()
    assert time.monotonic() - started < 5
    assert sum(dropped) == 2 + 2  # two refused, two still queued when the close deadline passed

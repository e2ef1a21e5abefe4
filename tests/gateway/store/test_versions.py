"""The version an upload gets: above every known one, distinct for concurrent uploads, in one
process or several."""

from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path

from gateway.manifests import load_config
from gateway.store.journal import ConfigStore
from gateway.store.versions import reserve_version
from tests.conftest import write_model

INCREMENT = "def predict(x):\n    return x + 1\n"


def test_the_next_version_is_above_the_config_the_folders_and_the_reservations(tmp_path: Path) -> None:
    root = tmp_path / "config"
    write_model(root, "m/1", "m", INCREMENT)
    write_model(root, "flat", "other", INCREMENT)  # version 1 of another name
    config = load_config(root)
    store = ConfigStore(root)
    first = reserve_version(store, config, "m")
    assert (first.name, first.version, first.folder) == ("m", 2, "models/m/2")
    (root / "models" / "m" / "5").mkdir()  # a folder made by hand, not reloaded yet
    second = reserve_version(store, config, "m")
    assert second.version == 6
    assert reserve_version(store, config, "other").version == 2
    assert reserve_version(store, config, "new").version == 1
    first.release()
    second.release()
    assert reserve_version(store, config, "m").version == 6  # the folder still counts
    (root / "models" / "m" / "5").rmdir()
    assert reserve_version(store, config, "m").version == 7  # ... and reservations under way
    assert ConfigStore(root).recover() == []  # a restart clears what uploads left reserved
    assert reserve_version(store, config, "m").version == 2


def test_concurrent_reservations_in_threads_are_distinct(tmp_path: Path) -> None:
    root = tmp_path / "config"
    write_model(root, "m/1", "m", INCREMENT)
    config, store = load_config(root), ConfigStore(root)
    got: list[int] = []
    lock = threading.Lock()

    def reserve() -> None:
        for _ in range(20):
            version = reserve_version(store, config, "m").version
            with lock:
                got.append(version)

    threads = [threading.Thread(target=reserve) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(got) == list(range(2, 82))


def _reserve_many(root: str, count: int, start: multiprocessing.synchronize.Event,
                  results: multiprocessing.Queue[list[int]]) -> None:
    config, store = load_config(Path(root)), ConfigStore(Path(root))
    start.wait()
    results.put([reserve_version(store, config, "m").version for _ in range(count)])


def test_concurrent_reservations_in_two_processes_are_distinct(tmp_path: Path) -> None:
    root = tmp_path / "config"
    write_model(root, "m/1", "m", INCREMENT)
    context = multiprocessing.get_context("fork")
    start, results = context.Event(), context.Queue()
    processes = [context.Process(target=_reserve_many, args=(str(root), 30, start, results)) for _ in range(2)]
    for process in processes:
        process.start()
    start.set()
    got = results.get(timeout=30) + results.get(timeout=30)
    for process in processes:
        process.join(timeout=30)
        assert process.exitcode == 0
    assert sorted(got) == list(range(2, 62))

"""The file sink: TFRecord files of PredictionLogs read back by an independent reader, their
index, rotation, `max_files`, `.partial` while open, records over the limit skipped, and a
directory that cannot be written reported in health while the sink keeps trying."""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from gateway.held_bytes import OBJECT_SAMPLE
from gateway.manifests.types import FileSinkSpec
from gateway.observability import Metrics
from gateway.requestlog import LoggedCall
from gateway.requestlog.file_sink import FileSink, _OpenFile, least_record_bytes
from gateway.requestlog.logs import RequestLogs
from tensorcodecs.tensor_proto import decode_tensor
from tests.gateway.requestlog.tfrecords import closed_files, index_of, read_index, read_tfrecord
from tests.waiting import wait_until

NAME = re.compile(r"requests-\d{8}T\d{6}\.\d{6}Z-p\d+-\d{6}\.tfrecord")


def _call(number: int, size: int = 4, *, failed: bool = False) -> LoggedCall:
    inputs = {"x": np.arange(size, dtype=np.int32) + number}
    outputs = None if failed else {"y": inputs["x"] + 1}
    return LoggedCall(f"req-{number}", 1_780_000_000.0 + number, 0.002, "toy", 3, "serving_default", inputs, outputs,
                      503 if failed else 200, "backend_unavailable: down" if failed else None,
                      output_filter=("y",))


def _sink(directory: Path, metrics: Metrics, **limits: int) -> FileSink:
    return FileSink(FileSinkSpec(directory, **limits), metrics=metrics, capacity=10_000, max_bytes=1 << 30)


def _count(metrics: Metrics, sink: FileSink, outcome: str) -> float:
    value = metrics.registry.get_sample_value("gateway_request_log_records_total",
                                              {"sink": sink.name, "outcome": outcome})
    return value or 0.0


def test_records_read_back_by_an_independent_reader_with_their_index(tmp_path: Path) -> None:
    metrics = Metrics()
    sink = _sink(tmp_path, metrics)
    for number in range(5):
        assert sink.offer(_call(number, failed=number == 4))
    sink.close(5.0)
    [records_file] = closed_files(tmp_path)
    assert NAME.fullmatch(records_file.name)
    assert not list(tmp_path.glob("*.partial"))
    records = read_tfrecord(records_file)
    index = read_index(index_of(records_file))
    assert len(records) == len(index) == 5
    for number, ((offset, length, record), line) in enumerate(zip(records, index, strict=True)):
        assert (line["offset"], line["length"]) == (offset, length)
        assert line["request_id"] == f"req-{number}"
        request = record.predict_log.request
        assert (request.model_spec.name, request.model_spec.version.value,
                request.model_spec.signature_name) == ("toy", 3, "serving_default")
        assert record.log_metadata.model_spec == request.model_spec
        assert list(request.output_filter) == ["y"]
        np.testing.assert_array_equal(decode_tensor(request.inputs["x"]), np.arange(4, dtype=np.int32) + number)
        if number < 4:
            assert line["status"] == 200
            assert line["error"] is None
            np.testing.assert_array_equal(decode_tensor(record.predict_log.response.outputs["y"]),
                                          np.arange(4, dtype=np.int32) + number + 1)
        else:  # failed: no response, the index says why
            assert not record.predict_log.HasField("response")
            assert (line["status"], line["error"]) == (503, "backend_unavailable: down")
    assert list(index[0]) == ["offset", "length", "request_id", "time", "duration_ms", "status", "error",
                              "application", "stage", "variant", "model", "version"]
    assert _count(metrics, sink, "written") == 5
    assert metrics.registry.get_sample_value("gateway_request_log_bytes_total", {"sink": sink.name}) == \
        records_file.stat().st_size


def test_the_open_file_is_partial_and_readers_see_whole_records_soon(tmp_path: Path) -> None:
    sink = _sink(tmp_path, Metrics())
    sink.offer(_call(1))
    # The writer's thread opens the records' file, then the index's: both awaited (on a loaded
    # machine the index may come a moment after the records' file).
    wait_until(lambda: len(list(tmp_path.glob("*.tfrecord.partial"))) == 1
               and bool(list(tmp_path.glob("*.index.jsonl.partial"))), what="the open files")
    [partial] = tmp_path.glob("*.tfrecord.partial")
    assert list(tmp_path.glob("*.index.jsonl.partial"))
    wait_until(lambda: partial.stat().st_size > 0, what="the flushed record")
    assert [r[2].predict_log.request.inputs["x"].tensor_shape.dim[0].size for r in read_tfrecord(partial)] == [4]
    assert closed_files(tmp_path) == []
    sink.close(5.0)
    assert [p.name for p in closed_files(tmp_path)] == [partial.name.removesuffix(".partial")]


def test_files_rotate_at_max_bytes_and_only_max_files_closed_ones_are_kept(tmp_path: Path) -> None:
    metrics = Metrics()
    one = len(bytes(read_record_bytes(tmp_path / "probe", _call(0))))
    # Three records a file; 10 records: files of 3, 3, 3, 1; the first two deleted (max_files 2).
    sink = _sink(tmp_path / "logs", metrics, max_bytes=3 * one, max_files=2, max_record_bytes=one)
    for number in range(10):
        sink.offer(_call(number))
        wait_until(lambda: sink.health().queued == 0, what="the record written")
    sink.close(5.0)
    files = closed_files(tmp_path / "logs")
    assert [len(read_tfrecord(f)) for f in files] == [3, 1]
    assert [line["request_id"] for f in files for line in read_index(index_of(f))] == \
        [f"req-{n}" for n in (6, 7, 8, 9)]
    assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == sorted(
        [f.name for f in files] + [index_of(f).name for f in files])
    assert all(f.stat().st_size <= 3 * one for f in files)
    assert _count(metrics, sink, "written") == 10


def read_record_bytes(directory: Path, call: LoggedCall) -> bytes:
    """The framed bytes one call's record takes (written by a sink of its own)."""
    sink = _sink(directory, Metrics())
    sink.offer(call)
    sink.close(5.0)
    [file] = closed_files(directory)
    return file.read_bytes()


def test_a_record_over_max_record_bytes_is_skipped_and_counted(tmp_path: Path) -> None:
    metrics = Metrics()
    sink = _sink(tmp_path, metrics, max_record_bytes=1000)
    assert not sink.offer(_call(1, size=1000))  # 8000 array bytes: refused on the request path
    assert sink.offer(_call(2, size=120))  # 960 bytes of arrays: known too large only once made
    assert sink.offer(_call(3, size=4))
    sink.close(5.0)
    [file] = closed_files(tmp_path)
    assert [r[2].predict_log.request.inputs["x"].tensor_shape.dim[0].size for r in read_tfrecord(file)] == [4]
    assert (_count(metrics, sink, "skipped"), _count(metrics, sink, "written")) == (2, 1)


def test_a_directory_that_cannot_be_written_is_reported_and_the_sink_recovers(tmp_path: Path) -> None:
    metrics = Metrics()
    directory = tmp_path / "logs"
    sink = FileSink(FileSinkSpec(directory), metrics=metrics, capacity=100, max_bytes=1 << 20, retry_s=(1.0, 2.0))
    sink.offer(_call(1))
    wait_until(lambda: _count(metrics, sink, "written") == 1, what="the first record")
    shutil.rmtree(directory)
    directory.write_text("not a directory")  # as root too: no permission bit stops it
    sink.offer(_call(2))
    wait_until(lambda: not sink.health().ok, what="the failure in health")
    failed_at = time.monotonic()
    assert _count(metrics, sink, "failed") == 1  # the one record, once
    error = sink.health().error
    assert error is not None
    assert ("NotADirectory" in error or "FileExists" in error or "FileNotFound" in error)
    directory.unlink()
    sink.offer(_call(3))  # within the back-off: counted failed, the disk not touched
    wait_until(lambda: _count(metrics, sink, "failed") == 2, what="the record in the back-off")
    assert time.monotonic() - failed_at < 1.0, "the machine was too slow to offer within the back-off"
    assert not directory.exists()
    time.sleep(max(0.0, failed_at + 1.1 - time.monotonic()))
    sink.offer(_call(4))
    wait_until(lambda: sink.health().ok, what="the sink writing again")
    sink.close(5.0)
    [file] = closed_files(directory)
    assert [line["request_id"] for line in read_index(index_of(file))] == ["req-4"]
    assert (_count(metrics, sink, "written"), _count(metrics, sink, "failed")) == (2, 2)


def test_max_files_counts_every_process_files_in_the_directory(tmp_path: Path) -> None:
    older = ["requests-20200101T000000.000000Z-p1-000001", "requests-20200101T000001.000000Z-p2-000001"]
    for stem in older:
        (tmp_path / f"{stem}.tfrecord").write_bytes(b"")
        (tmp_path / f"{stem}.index.jsonl").write_bytes(b"")
        os.utime(tmp_path / f"{stem}.tfrecord", (1_577_836_800 + len(stem), 1_577_836_800 + len(stem)))
    (tmp_path / "requests-20200101T000002.000000Z-p3-000001.tfrecord.partial").write_bytes(b"")  # a dead process's
    sink = _sink(tmp_path, Metrics(), max_files=2)
    sink.offer(_call(1))
    sink.close(5.0)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert f"{older[0]}.tfrecord" not in names
    assert f"{older[0]}.index.jsonl" not in names
    assert f"{older[1]}.tfrecord" in names
    assert "requests-20200101T000002.000000Z-p3-000001.tfrecord.partial" in names  # left as it was
    assert len(closed_files(tmp_path)) == 2


def _string_call(number: int, strings: int, size: int) -> LoggedCall:
    inputs = {"text": np.array([bytes([65 + i % 26]) * size for i in range(strings)], dtype=object)}
    return LoggedCall(f"req-{number}", 1_780_000_000.0, 0.001, "toy", 1, "serving_default", inputs, None)


def test_a_small_tensor_of_a_large_body_is_charged_the_body_it_keeps_alive() -> None:
    body = memoryview(bytearray(8 << 20))  # a request body read whole (or a local-wire frame)
    inputs = {"x": np.frombuffer(body[:64], dtype=np.float32), "y": np.frombuffer(body[64:128], dtype=np.int32)}
    call = LoggedCall("r", 0.0, 0.0, "toy", 1, "s", inputs, {"z": np.zeros(4, dtype=np.int8)})
    assert call.nbytes == (8 << 20) + 4  # the body once, for both of its tensors


def test_string_calls_are_charged_their_bytes_and_fill_the_queue_bound(tmp_path: Path) -> None:
    call = _string_call(0, 4, 250_000)
    assert call.nbytes >= 1_000_000  # the strings, not 8 bytes of pointers each
    unicode = LoggedCall("u", 0.0, 0.0, "toy", 1, "s", {"t": np.array(["ab", "c"])}, {"t": np.array([b"xyz"])})
    assert unicode.nbytes == np.array(["ab", "c"]).nbytes + np.array([b"xyz"]).nbytes  # fixed-width: what is held
    assert least_record_bytes(unicode) == 16 + (2 * 2 + 3) + (2 * 1 + 3)  # UTF-8 at least, not 4 bytes a char
    assert least_record_bytes(call) > 1_000_000
    metrics = Metrics()
    blocked = FileSink(FileSinkSpec(tmp_path / "a", max_record_bytes=4 << 20), metrics=metrics, capacity=1000,
                       max_bytes=3_500_000)
    # Twenty 1 MB calls at once (far faster than the writer takes them): at most 3.5 MB queued.
    answers = [blocked.offer(_string_call(n, 4, 250_000)) for n in range(20)]
    assert answers.count(False) >= 10
    assert _count(metrics, blocked, "dropped") == answers.count(False)
    blocked.close(5.0)
    # A record over max_record_bytes is refused on the request path: its strings counted.
    small = FileSink(FileSinkSpec(tmp_path / "b", max_record_bytes=100_000), metrics=metrics, capacity=10,
                     max_bytes=1 << 30)
    assert not small.offer(_string_call(9, 4, 250_000))
    assert _count(metrics, small, "skipped") == 1
    small.close(5.0)


class _Counted(str):
    """A string that counts how often the request path's thread measures it."""

    measured_on: ClassVar[dict[int, int]] = {}

    def __len__(self) -> int:
        thread = threading.get_ident()
        self.measured_on[thread] = self.measured_on.get(thread, 0) + 1
        return super().__len__()


def test_a_call_of_a_million_strings_is_charged_by_a_sample_once_for_every_sink(tmp_path: Path) -> None:
    strings = np.empty(1_000_000, dtype=object)
    strings[:] = [_Counted("abcd")] * strings.size
    call = LoggedCall("big", 1_780_000_000.0, 0.001, "toy", 1, "serving_default", {"text": strings},
                      {"text": strings})
    assert abs(call.nbytes - 2 * (strings.nbytes + 4 * strings.size)) < 1000  # 4 bytes a string, estimated
    metrics = Metrics()
    logs = RequestLogs(metrics, capacity=10, max_bytes=1 << 30)
    sinks = [FileSink(FileSinkSpec(tmp_path / name, max_record_bytes=1 << 30), metrics=metrics, capacity=10,
                      max_bytes=1 << 30) for name in ("a", "b")]
    _Counted.measured_on.clear()
    logs.record(call, sinks)
    # Two arrays of a million: the charge and each sink's size check measure a sample of each.
    assert _Counted.measured_on.get(threading.get_ident(), 0) <= 3 * 2 * OBJECT_SAMPLE
    for sink in sinks:
        sink.close(30.0)
        assert _count(metrics, sink, "written") == 1  # queued, then written whole by the writer


def test_under_sustained_load_records_are_flushed_counted_and_health_recovers(tmp_path: Path,
                                                                               monkeypatch: Any) -> None:
    import errno
    metrics = Metrics()
    real_flush = _OpenFile.flush
    failing = threading.Event()

    def flush(self: _OpenFile) -> None:
        if failing.is_set():
            failing.clear()
            raise OSError(errno.ENOSPC, "No space left on device")
        real_flush(self)

    monkeypatch.setattr(_OpenFile, "flush", flush)
    sink = FileSink(FileSinkSpec(tmp_path), metrics=metrics, capacity=1000, max_bytes=1 << 30, retry_s=(0.05, 0.1))
    stop = threading.Event()
    offered = [0]

    def feed() -> None:  # faster than the writer: once full, the queue never empties
        while not stop.is_set():
            sink.offer(_call(offered[0]))
            offered[0] += 1

    feeder = threading.Thread(target=feed)
    feeder.start()
    try:
        wait_until(lambda: _count(metrics, sink, "dropped") > 0, what="the queue full")
        failing.set()  # the next flush, under load, fails once
        wait_until(lambda: not sink.health().ok, what="the failure")
        written = _count(metrics, sink, "written")
        wait_until(lambda: _count(metrics, sink, "written") > written and sink.health().ok,
                   what="records flushed and counted while the queue stays full")
    finally:
        stop.set()
        feeder.join()
    sink.close(10.0)
    total = sum(_count(metrics, sink, outcome) for outcome in ("written", "dropped", "failed"))
    assert total == offered[0]
    assert _count(metrics, sink, "written") == sum(len(read_tfrecord(f)) for f in closed_files(tmp_path))


def test_a_recurring_failure_backs_off_and_abandoned_files_keep_only_whole_flushed_records(
        tmp_path: Path, monkeypatch: Any) -> None:
    import errno
    metrics = Metrics()
    real_flush = _OpenFile.flush
    full = threading.Event()

    def flush(self: _OpenFile) -> None:
        if full.is_set():
            raise OSError(errno.ENOSPC, "No space left on device")
        real_flush(self)

    monkeypatch.setattr(_OpenFile, "flush", flush)
    old = "requests-20200101T000000.000000Z-p1-000001"
    for suffix in (".tfrecord", ".index.jsonl"):
        (tmp_path / f"{old}{suffix}").write_bytes(b"")
        os.utime(tmp_path / f"{old}{suffix}", (1_577_836_800, 1_577_836_800))
    sink = FileSink(FileSinkSpec(tmp_path, max_files=1), metrics=metrics, capacity=1000, max_bytes=1 << 30,
                    retry_s=(0.5, 1.0))
    sink.offer(_call(1))
    wait_until(lambda: _count(metrics, sink, "written") == 1, what="the first record")
    full.set()
    sink.offer(_call(2))  # in the buffer, its flush fails: the file is cut back to record 1 and closed
    wait_until(lambda: _count(metrics, sink, "failed") == 1, what="the failure")
    failed_at = time.monotonic()
    for number in range(3, 23):
        sink.offer(_call(number))  # within the back-off: failed without touching the disk
    wait_until(lambda: _count(metrics, sink, "failed") == 21, what="the records in the back-off")
    assert time.monotonic() - failed_at < 0.5, "the machine was too slow to offer within the back-off"
    [kept] = closed_files(tmp_path)  # the abandoned file closed, and counted by max_files
    assert [int(decode_tensor(r[2].predict_log.request.inputs["x"])[0]) for r in read_tfrecord(kept)] == [1]
    assert [line["request_id"] for line in read_index(index_of(kept))] == ["req-1"]
    assert not list(tmp_path.glob("*.partial"))
    time.sleep(max(0.0, failed_at + 0.6 - time.monotonic()))
    sink.offer(_call(23))  # a new file, whose flush fails too: nothing flushed, both deleted
    wait_until(lambda: _count(metrics, sink, "failed") == 22, what="the second failure")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([kept.name, index_of(kept).name])
    full.clear()
    time.sleep(1.1)  # the back-off doubled
    sink.offer(_call(24))
    wait_until(lambda: sink.health().ok, what="the sink writing again")
    sink.close(5.0)
    assert [line["request_id"] for f in closed_files(tmp_path) for line in read_index(index_of(f))] == ["req-24"]
    assert _count(metrics, sink, "written") == 2


def test_the_index_is_renamed_before_its_records_and_both_are_fsynced(tmp_path: Path, monkeypatch: Any) -> None:
    events: list[tuple[str, str]] = []
    real_rename, real_fsync = os.rename, os.fsync

    def rename(source: Any, target: Any) -> None:
        events.append(("rename", Path(source).name))
        real_rename(source, target)

    def fsync(fd: int) -> None:
        events.append(("fsync", Path(os.readlink(f"/proc/self/fd/{fd}")).name))
        real_fsync(fd)

    monkeypatch.setattr(os, "rename", rename)
    monkeypatch.setattr(os, "fsync", fsync)
    sink = _sink(tmp_path, Metrics())
    sink.offer(_call(1))
    sink.close(5.0)
    [records] = closed_files(tmp_path)
    index = index_of(records)
    mine = [event for event in events if event[1].startswith(records.name.removesuffix(".tfrecord"))]
    assert mine == [("fsync", index.name + ".partial"), ("fsync", records.name + ".partial"),
                    ("rename", index.name + ".partial"), ("rename", records.name + ".partial")]


def test_two_sinks_sharing_a_directory_prune_the_first_closed_files_not_a_quiet_ones_newest(
        tmp_path: Path) -> None:
    one = len(read_record_bytes(tmp_path / "probe", _call(0)))
    directory = tmp_path / "logs"
    quiet = _sink(directory, Metrics(), max_bytes=one, max_files=2, max_record_bytes=one)
    busy = _sink(directory, Metrics(), max_bytes=one, max_files=2, max_record_bytes=one)
    quiet.offer(_call(1))  # opened first: the oldest name in the directory
    wait_until(lambda: quiet.health().queued == 0 and any(directory.glob("*.partial")), what="the quiet file")
    for number in (2, 3, 4):  # each record its own file: two closed by rotation
        busy.offer(_call(number))
        wait_until(lambda: busy.health().queued == 0, what="the busy record")
        time.sleep(0.01)
    quiet.close(5.0)  # closed last: kept, and the busy sink's first closed file goes
    busy.close(5.0)
    assert sorted(line["request_id"] for f in closed_files(directory) for line in read_index(index_of(f))) == \
        ["req-1", "req-4"]


def test_an_index_line_that_cannot_be_made_leaves_no_record_and_later_offsets_right(tmp_path: Path) -> None:
    metrics = Metrics()
    sink = _sink(tmp_path, metrics)
    broken = LoggedCall("req-1", 1_780_000_000.0, 0.001, "toy", 3, "serving_default", {"x": np.arange(3)}, None,
                        500, "internal: \ud800")  # a lone surrogate: not JSON
    assert sink.offer(_call(0))
    assert sink.offer(broken)
    assert sink.offer(_call(2))
    sink.close(5.0)
    [file] = closed_files(tmp_path)
    records, index = read_tfrecord(file), read_index(index_of(file))
    assert [line["request_id"] for line in index] == ["req-0", "req-2"]
    assert [(line["offset"], line["length"]) for line in index] == [(offset, length) for offset, length, _ in records]
    assert (_count(metrics, sink, "written"), _count(metrics, sink, "failed")) == (2, 1)

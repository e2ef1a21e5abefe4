"""Rotating TFRecord files of PredictionLogs, each with its JSON-lines index.

In the sink's directory every file series is named by when it was opened, the process and a
sequence number, so names sort in time order across the processes sharing a directory:

    requests-20261201T162030.123456Z-p4242-000001.tfrecord       closed: every record whole
    requests-20261201T162030.123456Z-p4242-000001.index.jsonl    its index, one line per record
    requests-...-000002.tfrecord.partial                         being written (and its
    requests-...-000002.index.jsonl.partial                      .index.jsonl.partial)

A file is closed (its `.partial` dropped: the index first, so a reader that sees a closed
.tfrecord finds its closed index) when the next record would take it past `max_bytes`, when a
reload stops naming the directory and at shutdown (fsynced first); then the first closed files
beyond `max_files` (any process's, by close time) are deleted. A file let go after a failure is
cut back to the records flushed whole and closed, or deleted when it holds none. What a process
that died was writing stays `.partial`. Everything here runs in the writer thread except `offer`.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import time
from pathlib import Path
from typing import BinaryIO

import orjson

from gateway.held_bytes import least_string_bytes
from gateway.manifests.types import FileSinkSpec
from gateway.observability import Metrics
from gateway.requestlog.call import LoggedCall
from gateway.requestlog.queue import BackgroundWriter
from gateway.requestlog.records import index_entry, prediction_log
from gateway.requestlog.sink import SinkHealth, sink_counters, sink_name
from tensorcodecs.tfrecord import OVERHEAD_BYTES, encode_record

log = logging.getLogger("gateway.requestlog")

PREFIX = "requests-"
RECORDS = ".tfrecord"
INDEX = ".index.jsonl"
PARTIAL = ".partial"
_SEQUENCE = itertools.count(1)  # per process: two sinks of one process never pick one name


def file_stem(now: float, pid: int, sequence: int) -> str:
    """`requests-<UTC yyyymmddTHHMMSS.ffffffZ>-p<pid>-<sequence, 6 digits>`."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f".{int(now % 1 * 1_000_000):06d}Z"
    return f"{PREFIX}{stamp}-p{pid}-{sequence:06d}"


def least_record_bytes(call: LoggedCall) -> int:
    """A lower bound of the bytes `call`'s record takes (numeric arrays travel as their raw
    bytes; each string as its bytes after a tag and a length byte, only a sample's bytes
    measured): cheap, for the request path; the writer checks the record's exact size."""
    least = OVERHEAD_BYTES
    for arrays in (call.inputs, call.outputs or {}):
        for array in arrays.values():
            least += 2 * array.size + least_string_bytes(array) if array.dtype.kind in "OSU" else array.nbytes
    return least


class _OpenFile:
    """The file series being written: records and index, both `.partial`."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        while True:
            self.stem = directory / file_stem(time.time(), os.getpid(), next(_SEQUENCE))
            try:
                self.records: BinaryIO = open(self.partial(RECORDS), "xb")  # noqa: SIM115 - kept open
            except FileExistsError:
                continue
            break
        try:
            self.index: BinaryIO = open(self.partial(INDEX), "xb")  # noqa: SIM115 - kept open
        except BaseException:
            self.records.close()
            raise
        self.size = 0
        self.flushed = (0, 0)  # the bytes of records and of index known whole in the files

    def partial(self, suffix: str) -> Path:
        return self.stem.with_name(self.stem.name + suffix + PARTIAL)

    def closed(self, suffix: str) -> Path:
        return self.stem.with_name(self.stem.name + suffix)

    def flush(self) -> None:
        self.records.flush()
        self.index.flush()
        self.flushed = (self.records.tell(), self.index.tell())

    def close(self) -> None:
        """Flush, fsync, close and drop `.partial`: the index first (a closed .tfrecord has a
        closed index). Its modification time is then the close time (what pruning sorts by)."""
        try:
            self.flush()
            for stream in (self.index, self.records):
                os.fsync(stream.fileno())  # a closed file survives a power loss whole
                os.utime(stream.fileno())
        finally:
            self.records.close()
            self.index.close()
        self._rename()

    def _rename(self) -> None:
        os.rename(self.partial(INDEX), self.closed(INDEX))
        os.rename(self.partial(RECORDS), self.closed(RECORDS))

    def abandon(self) -> None:
        """After a failure: cut both files back to what was flushed whole and close them as
        closed files (pruned as any other), or delete them when nothing was flushed."""
        for stream in (self.records, self.index):
            with contextlib.suppress(OSError):
                stream.close()  # may push out part of the buffer: cut off below
        records, index = self.flushed
        try:
            if not records:
                for suffix in (INDEX, RECORDS):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.partial(suffix))
                return
            for suffix, size in ((INDEX, index), (RECORDS, records)):
                with open(self.partial(suffix), "r+b") as stream:
                    stream.truncate(size)
                    os.fsync(stream.fileno())
            self._rename()
        except FileNotFoundError:
            pass  # its directory was deleted: nothing to keep
        except OSError as error:
            log.warning("request log file %s left as it is: %s", self.partial(RECORDS), error)


class FileSink:
    """A request log written to rotating TFRecord files in `spec.dir` by a writer thread.

    The open file is flushed once the queue is empty, or after `FLUSH_RECORDS` records,
    `FLUSH_BYTES` bytes or `FLUSH_INTERVAL_S` seconds (sustained load empties the queue never).
    After a failure it waits `retry_s[0]` seconds (doubling up to `retry_s[1]`) before opening
    a new file; the records meanwhile are counted failed without touching the disk."""

    FLUSH_RECORDS = 256
    FLUSH_BYTES = 1 << 20
    FLUSH_INTERVAL_S = 0.25

    def __init__(self, spec: FileSinkSpec, *, metrics: Metrics, capacity: int, max_bytes: int,
                 retry_s: tuple[float, float] = (1.0, 30.0)) -> None:
        self.spec = spec
        self._name = sink_name(spec)
        self._written, self._dropped, self._skipped, self._failed, self._bytes = sink_counters(metrics, self._name)
        self._file: _OpenFile | None = None
        self._unflushed = 0  # records written to the open file's buffer since its last flush
        self._unflushed_bytes = 0
        self._flushed_at = time.monotonic()
        self._error: str | None = None
        self._retry_s = retry_s
        self._backoff = 0.0  # the last wait after a failure; 0 once a flush succeeded
        self._retry_at = 0.0  # time.monotonic() before which no file is opened
        self._writer: BackgroundWriter[LoggedCall] = BackgroundWriter(
            self._name, self._deliver, capacity=capacity, max_bytes=max_bytes,
            on_drop=self._dropped.inc, finish=self._close_file)

    @property
    def name(self) -> str:
        return self._name

    def offer(self, call: LoggedCall, nbytes: int | None = None) -> bool:
        """Queue `call` (charged `nbytes`, by default `call.nbytes`); False when it is clearly
        too large (skipped) or the queue is full (dropped)."""
        if least_record_bytes(call) > self.spec.max_record_bytes:
            self._skipped.inc()
            return False
        return self._writer.offer(call, call.nbytes if nbytes is None else nbytes)

    def health(self) -> SinkHealth:
        error = self._error
        return SinkHealth(error is None, error, self._writer.queued)

    def close(self, timeout: float) -> None:
        """Write what is queued within `timeout` seconds, then close the open file (renamed)."""
        self._writer.close(timeout)

    # ------------------------------------------------------------ the writer thread

    def _deliver(self, call: LoggedCall) -> None:
        try:
            data = prediction_log(call).SerializeToString()
            length = len(data) + OVERHEAD_BYTES
            line = orjson.dumps(index_entry(call, 0, length))  # refused here, before the file is touched
        except Exception:  # a fault, not the caller's: logged and counted, the next record goes on
            log.exception("request log %s: request %s could not be made a record", self._name, call.request_id)
            self._failed.inc()
            return
        if length > self.spec.max_record_bytes:
            self._skipped.inc()
            return
        current = self._file
        if current is not None and current.size + length > self.spec.max_bytes:
            self._close_file()
            current = None
        if current is None and time.monotonic() < self._retry_at:
            self._failed.inc()  # backing off after a failure: the disk is not touched
            return
        try:
            if current is None:
                current = self._file = _OpenFile(self.spec.dir)
            if current.size:  # the line checked above was made for offset 0
                line = orjson.dumps(index_entry(call, current.size, length))
            current.records.write(encode_record(data))
            current.index.write(line + b"\n")
        except Exception as error:  # noqa: BLE001 - any: the file may end in a partial record, let go
            self._write_failed(error, 1)
            return
        current.size += length
        self._unflushed += 1
        self._unflushed_bytes += length
        if (not self._writer.queued or self._unflushed >= self.FLUSH_RECORDS
                or self._unflushed_bytes >= self.FLUSH_BYTES
                or time.monotonic() - self._flushed_at >= self.FLUSH_INTERVAL_S):
            try:
                self._flush()
            except OSError as error:
                self._write_failed(error, 0)

    def _flush(self) -> None:
        current = self._file
        self._flushed_at = time.monotonic()
        if current is None or not self._unflushed:
            return
        os.stat(current.partial(RECORDS))  # a deleted directory or file: writes would go nowhere
        current.flush()
        self._written.inc(self._unflushed)
        self._bytes.inc(self._unflushed_bytes)
        self._unflushed = self._unflushed_bytes = 0
        self._error = None
        self._backoff = 0.0

    def _write_failed(self, error: Exception, records: int) -> None:
        """A write, flush or rename failed: what was not flushed (and `records` more) is counted
        failed, the file is let go (cut back to what was flushed), and no file is opened for a
        while; then the next record starts a new one (and its directory)."""
        lost = self._unflushed + records
        self._unflushed = self._unflushed_bytes = 0
        self._failed.inc(lost)
        self._error = f"{type(error).__name__}: {error}"
        low, high = self._retry_s
        self._backoff = min(high, self._backoff * 2) if self._backoff else low
        self._retry_at = time.monotonic() + self._backoff
        log.error("request log %s: %d records not written (next try in %.1f s): %s",
                  self._name, lost, self._backoff, self._error)
        if self._file is not None:
            self._file.abandon()
            self._file = None
            self._remove_oldest()  # it may have been closed: counted in max_files as any other

    def _close_file(self) -> None:
        """Close the open file (renamed), then keep at most `max_files` closed files."""
        current = self._file
        if current is None:
            return
        try:
            self._flush()
            current.close()
        except OSError as error:
            self._write_failed(error, 0)
            return
        self._file = None
        self._remove_oldest()

    def _remove_oldest(self) -> None:
        """Delete the closed files beyond `max_files` (any process's), the first closed first:
        by modification time, which a close sets (names say when a file was opened)."""
        try:
            names = [p for p in os.listdir(self.spec.dir) if p.startswith(PREFIX) and p.endswith(RECORDS)]
        except OSError as error:
            log.warning("request log %s: cannot list old files: %s", self._name, error)
            return
        closed = []
        for name in names:
            with contextlib.suppress(FileNotFoundError):  # another process deleted it meanwhile
                closed.append((os.stat(self.spec.dir / name).st_mtime_ns, name))
        closed.sort()
        for _, name in closed[:max(0, len(closed) - self.spec.max_files)]:
            records = self.spec.dir / name
            for path in (records, records.with_name(name[:-len(RECORDS)] + INDEX)):
                try:
                    path.unlink()
                except FileNotFoundError:
                    pass  # another process sharing the directory deleted it first
                except OSError as error:
                    log.warning("request log %s: cannot delete %s: %s", self._name, path, error)

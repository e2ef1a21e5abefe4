"""The runtime's end of the local wire (protos.local_wire): Predict and PredictMany over a
Unix socket, beside the gRPC server, for a gateway on the same machine.

One thread per connection reads a request, runs the handler in that thread and writes the
answer (large outputs straight from the model's arrays); the gateway keeps as many connections
as it has calls running, so no call waits behind another and no thread hand-off sits on the
path.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import socket
import stat
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from protos.local_wire import (
    HEADER,
    LOCAL_METHODS,
    SHARED_BUSY,
    SHARED_REFUSED,
    SMALL_FRAME,
    Attachments,
    WireError,
    frame_buffer,
    split_attachment,
)
from protos.services import RUNTIME_PREDICT_MANY, Method
from protos.shared_memory import RegionUnavailable, read_shared
from protos.tensorflow_serving.predict_pb2 import PredictRequest
from runtime.exits import exit_runtime
from runtime.styles import Attached
from tensorcodecs import CodecError
from tensorcodecs.tensor_proto import attached_array

log = logging.getLogger("runtime")

Handler = Callable[[Any, list[Attached]], Any]  # (request, per-request attached tensors) -> response
StatusOf = Callable[[Exception, str], tuple[grpc.StatusCode, str]]  # an error -> (its status, message)
ACCEPT_RETRY_S = 0.1


class LocalListener:
    """Serves `handlers` (method path -> handler) on the Unix socket at `path`, at most
    `max_calls` calls at once (the others wait, as in the gRPC server's thread pool)."""

    def __init__(self, path: str, handlers: Mapping[str, Handler], status_of: StatusOf, max_calls: int) -> None:
        self.path = path
        self._handlers: dict[int, tuple[Method[Any, Any], Handler]] = {
            number: (method, handlers[method.path]) for number, method in LOCAL_METHODS.items()
            if method.path in handlers
        }
        self._status_of = status_of
        self._slots = threading.BoundedSemaphore(max_calls)
        self._socket: socket.socket | None = None
        self._connections: set[socket.socket] = set()
        self._busy = 0  # calls between "request read" and "answer sent"
        self._idle = threading.Condition()
        self._stopping = False

    def start(self) -> None:
        """Bind (replacing a socket left by an earlier run) and accept in a thread."""
        with contextlib.suppress(FileNotFoundError):
            if not stat.S_ISSOCK(os.stat(self.path).st_mode):
                raise OSError(f"cannot listen on {self.path}: it exists and is not a socket")
            os.unlink(self.path)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(self.path)
            listener.listen(socket.SOMAXCONN)
        except OSError:
            listener.close()
            raise
        self._socket = listener
        threading.Thread(target=self._accept, name="local-accept", daemon=True).start()

    def stop(self) -> None:
        """Stop accepting; idle connections close now, busy ones after their call. A request
        read from now on is answered UNAVAILABLE."""
        with self._idle:
            self._stopping = True
            connections = list(self._connections)
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.shutdown(socket.SHUT_RDWR)
            self._socket.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RD)  # a thread waiting for a request sees the end

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no call is running or sending its answer (after `stop`); False if
        `timeout` passed first."""
        with self._idle:
            return self._idle.wait_for(lambda: self._busy == 0, timeout)

    def _accept(self) -> None:
        assert self._socket is not None
        while True:
            try:
                connection, _ = self._socket.accept()
            except OSError as error:
                if self._stopping:
                    return  # closed by stop()
                log.warning("local wire: accept failed (%s); trying again", error)  # e.g. out of descriptors
                time.sleep(ACCEPT_RETRY_S)
                continue
            with self._idle:
                if self._stopping:
                    connection.close()
                    return
                self._connections.add(connection)
            try:
                threading.Thread(target=self._serve, args=(connection,), name="local-call", daemon=True).start()
            except RuntimeError as error:  # no thread to be had: the gateway sees the connection end
                log.warning("local wire: cannot serve a connection: %s", error)
                with self._idle:
                    self._connections.discard(connection)
                connection.close()

    def _serve(self, connection: socket.socket) -> None:
        reader = connection.makefile("rb")
        try:
            while self._serve_one(connection, reader):
                pass
        except OSError:
            pass  # the gateway went away mid-call (its deadline passed, or it stopped)
        except Exception:  # log it; the gateway sees the connection end
            log.exception("local wire: a connection failed")
        finally:
            with self._idle:
                self._connections.discard(connection)
            reader.close()
            connection.close()

    def _serve_one(self, connection: socket.socket, reader: io.BufferedReader) -> bool:
        """Read one request, run it and answer; False when the connection is done."""
        header = reader.read(HEADER.size)
        if len(header) < HEADER.size:
            return False  # the gateway closed the connection (or the runtime is stopping)
        number, table_length, message_length, attachment_length = HEADER.unpack(header)
        table = reader.read(table_length)
        message = reader.read(message_length)
        attachment = frame_buffer(attachment_length)  # the call's own: its arrays are writable
        if (len(table) < table_length or len(message) < message_length
                or reader.readinto(attachment) < attachment_length):
            return False
        with self._idle:
            if self._stopping:
                _send(connection, grpc.StatusCode.UNAVAILABLE, b"the runtime is stopping", Attachments())
                return False
            self._busy += 1
        try:
            with self._slots:
                if not self._stopping and _peer_gone(connection):
                    return False  # the caller stopped waiting while the call was queued: skip it
                code, answer, outputs = self._answer(number, table, message, attachment)
            _send(connection, code, answer, outputs)
        finally:
            with self._idle:
                self._busy -= 1
                self._idle.notify_all()
        return True

    def _answer(self, number: int, table: bytes, message: bytes,
                attachment: bytearray | memoryview) -> tuple[grpc.StatusCode | int, bytes, Attachments]:
        """The status (or SHARED_REFUSED), the answer's message and the outputs that travel
        beside it."""
        entry = self._handlers.get(number)
        if entry is None:
            reason = f"the local wire has no method number {number}"
            return grpc.StatusCode.UNIMPLEMENTED, reason.encode(), Attachments()
        method, handler = entry
        try:
            request = method.request.FromString(message)
            items = list(request.requests) if method is RUNTIME_PREDICT_MANY else [request]
            attached = _attached_inputs(items, table, attachment)
        except (DecodeError, WireError, CodecError) as error:
            reason = f"{method.path}: malformed request: {error}"
            return grpc.StatusCode.INVALID_ARGUMENT, reason.encode(), Attachments()
        except RegionUnavailable as error:  # nothing ran: the gateway sends the tensors inline
            return SHARED_REFUSED if error.lasting else SHARED_BUSY, str(error).encode(), Attachments()
        try:
            response = handler(request, attached)
        except Exception as error:  # noqa: BLE001 - every failure becomes a status, as over gRPC
            code, text = self._status_of(error, method.path)
            return code, text.encode(), Attachments()
        except SystemExit as exit_:  # the model's sys.exit ends the runtime, as over gRPC
            exit_runtime(exit_, method.path)
        answered = [result.code == 0 for result in response.results] if method is RUNTIME_PREDICT_MANY else [True]
        outputs = Attachments([(item, name, array) for item, side in enumerate(attached) if answered[item]
                               for name, array in (side.outputs or {}).items()])
        return grpc.StatusCode.OK, response.SerializeToString(), outputs


def _attached_inputs(items: list[PredictRequest], table: bytes,
                     attachment: bytearray | memoryview) -> list[Attached]:
    """One Attached per request: the inputs whose values came in the attachment, and room for
    the large outputs of its answer."""
    attached = [Attached(outputs={}) for _ in items]
    for item, tensors in split_attachment(table, attachment, read_shared).items():
        if item >= len(items):
            raise WireError(f"the attachment table names request {item} of {len(items)}")
        inputs = items[item].inputs
        missing = [name for name in tensors if name not in inputs]
        if missing:
            raise WireError(f"the attachment table names input {missing[0]!r}, which the request lacks")
        attached[item].inputs = {name: attached_array(inputs[name], data) for name, data in tensors.items()}
    return attached


def _peer_gone(connection: socket.socket) -> bool:
    """Whether the gateway closed the connection (it sends nothing else while a call runs)."""
    try:
        return connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def _send(connection: socket.socket, code: grpc.StatusCode | int, message: bytes, outputs: Attachments) -> None:
    table, buffers = outputs.frame(share=False)
    kind = code if isinstance(code, int) else code.value[0]
    header = HEADER.pack(kind, len(table), len(message), sum(buffer.nbytes for buffer in buffers))
    if len(message) <= SMALL_FRAME:
        connection.sendall(header + table + message)
    else:
        connection.sendall(header + table)
        connection.sendall(message)
    for buffer in buffers:
        connection.sendall(buffer)  # straight from the output array: no copy

"""The runtime's end of the local wire (protos.local_wire): Predict and PredictMany over a
Unix socket, beside the gRPC server, for a gateway on the same machine.

One thread per connection reads a request, runs the handler in that thread and writes the
answer; the gateway keeps as many connections as it has calls running, so no call waits
behind another and no thread hand-off sits on the path.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping
from typing import Any

from google.protobuf.message import DecodeError

from protos.local_wire import HEADER, LOCAL_METHODS, SMALL_FRAME
from protos.services import Method

log = logging.getLogger("runtime")

Handler = Callable[[Any], Any]
StatusOf = Callable[[Exception, str], tuple[int, str]]  # an error -> (gRPC status code, message)
INVALID_ARGUMENT, UNIMPLEMENTED = 3, 12


class LocalListener:
    """Serves `handlers` (method path -> handler) on the Unix socket at `path`."""

    def __init__(self, path: str, handlers: Mapping[str, Handler], status_of: StatusOf) -> None:
        self.path = path
        self._handlers: dict[int, tuple[Method[Any, Any], Handler]] = {
            number: (method, handlers[method.path]) for number, method in LOCAL_METHODS.items()
            if method.path in handlers
        }
        self._status_of = status_of
        self._socket: socket.socket | None = None
        self._connections: set[socket.socket] = set()
        self._busy = 0
        self._idle = threading.Condition()
        self._stopping = False

    def start(self) -> None:
        """Bind (replacing a socket file left by an earlier run) and accept in a thread."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self.path)
        listener.listen(64)
        self._socket = listener
        threading.Thread(target=self._accept, name="local-accept", daemon=True).start()

    def stop(self) -> None:
        """Stop accepting; idle connections close now, busy ones after their call."""
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
        """Wait until no call is running (after `stop`); False if `timeout` passed first."""
        with self._idle:
            return self._idle.wait_for(lambda: self._busy == 0, timeout)

    def _accept(self) -> None:
        assert self._socket is not None
        while True:
            try:
                connection, _ = self._socket.accept()
            except OSError:
                return  # closed by stop()
            with self._idle:
                if self._stopping:
                    connection.close()
                    return
                self._connections.add(connection)
            threading.Thread(target=self._serve, args=(connection,), name="local-call", daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        reader = connection.makefile("rb")
        try:
            while True:
                header = reader.read(HEADER.size)
                if len(header) < HEADER.size:
                    return  # the gateway closed the connection (or the runtime is stopping)
                number, length = HEADER.unpack(header)
                payload = reader.read(length)
                if len(payload) < length:
                    return
                with self._idle:
                    self._busy += 1
                try:
                    code, answer = self._answer(number, payload)
                finally:
                    with self._idle:
                        self._busy -= 1
                        self._idle.notify_all()
                _send(connection, code, answer)
        except OSError:
            pass  # the gateway went away mid-call (its deadline passed, or it stopped)
        finally:
            with self._idle:
                self._connections.discard(connection)
            reader.close()
            connection.close()

    def _answer(self, number: int, payload: bytes) -> tuple[int, bytes]:
        entry = self._handlers.get(number)
        if entry is None:
            return UNIMPLEMENTED, f"the local wire has no method number {number}".encode()
        method, handler = entry
        try:
            request = method.request.FromString(payload)
        except DecodeError as error:
            return INVALID_ARGUMENT, f"{method.path}: cannot parse the request: {error}".encode()
        try:
            response = handler(request)
        except Exception as error:  # noqa: BLE001 - every failure becomes a status, as over gRPC
            code, message = self._status_of(error, method.path)
            return code, message.encode()
        return 0, response.SerializeToString()


def _send(connection: socket.socket, code: int, payload: bytes) -> None:
    header = HEADER.pack(code, len(payload))
    if len(payload) <= SMALL_FRAME:
        connection.sendall(header + payload)
    else:
        connection.sendall(header)
        connection.sendall(payload)

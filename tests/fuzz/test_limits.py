"""Limits under hostile input: bodies over the size limit (declared or chunked), and deadlines
a client sets short enough to expire: a 504 for that request, never a 503 for the next one
(a client's own deadline must not open the backend's circuit)."""

from __future__ import annotations

import socket

from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.harness import REQUEST_TIMEOUT_S, Connection, FuzzGateway, Request
from tests.fuzz.oracle import Expect, check
from tests.fuzz.routes import APPLICATIONS, fuzz_settings

LIMIT = 64 * 1024 * 1024  # Settings().max_body_bytes
VALID = {"increment_app": b'{"number": [1, 2]}', "toy_app": b'{"input_1": [[1, 2]]}'}


def _read_answer(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_bodies_over_the_limit_answer_413_and_keep_the_connection(gateway: FuzzGateway) -> None:
    chunk = b" " * (1024 * 1024)
    for path in ("/gateway/applications/increment_app", "/gateway/models/toy", "/v1/models/toy:predict"):
        for chunked in (False, True):
            with socket.create_connection(("127.0.0.1", gateway.port), timeout=REQUEST_TIMEOUT_S) as sock:
                framing = b"Transfer-Encoding: chunked" if chunked else f"Content-Length: {LIMIT + 1}".encode()
                sock.sendall(b"POST " + path.encode() + b" HTTP/1.1\r\nHost: fuzz\r\n"
                             b"Content-Type: application/json\r\n" + framing + b"\r\n\r\n")
                sent = 0
                while sent <= LIMIT:  # the whole body before reading, as simple clients do
                    sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk[:LIMIT + 1 - sent])
                    sent += len(chunk)
                if chunked:
                    sock.sendall(b"0\r\n\r\n")
                answer = _read_answer(sock)
                assert answer.startswith(b"HTTP/1.1 413 "), (path, chunked, answer[:200])
                sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: fuzz\r\n\r\n")
                follow_up = _read_answer(sock).split(b"HTTP/1.1 ", 2)
                assert any(part.startswith(b"200 ") for part in follow_up), (path, chunked, follow_up)


@fuzz_settings(40)
@given(data=st.data())
def test_short_client_deadlines(gateway: FuzzGateway, connection: Connection, data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(sorted(VALID)), "application")
    millis = data.draw(st.one_of(st.floats(1e-6, 50), st.sampled_from([1e-300, 5e-324, 0.001, 1.0])), "deadline")
    path = f"/gateway/applications/{name}"
    outputs = Expect(keys=(APPLICATIONS[name][1],), binary=True)
    headers = (("Content-Type", b"application/json"), ("x-request-timeout", repr(millis).encode()))
    check(gateway, connection, Request("POST", path, headers, VALID[name]), outputs)
    answer = check(gateway, connection, Request("POST", path, (("Content-Type", b"application/json"),), VALID[name]),
                   outputs)
    assert answer.status == 200, f"a request without a deadline after short ones answered {answer.status}"

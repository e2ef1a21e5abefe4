"""A DNS server the test controls: UDP on 127.0.0.1, in a thread of the test process.

It answers A queries for the names in `records` with the addresses the test puts there (changed
at run time with `set`), and an empty NOERROR answer to every other type for those names (AAAA,
which gRPC asks too; TXT and SRV, which it may), NXDOMAIN for any other name. Handwritten
(RFC 1035's header, question and A record in a few structs) so that the tests need no DNS
library; it reads only the question, and ignores the rest (an EDNS OPT record, say).

gRPC reaches it through the authority of a target: `dns://127.0.0.1:<port>/backends.test:<p>`.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Iterable, Iterator, Sequence

import grpc

from tests.tfserving_server import FakeTFServing

TYPE_A = 1
CLASS_IN = 1
NXDOMAIN = 3
TTL_S = 1


class DNSServer:
    """`records`: name (lower case, no trailing dot) -> IPv4 addresses. `queries` counts the A
    queries answered per name (how a test knows that a client re-resolved)."""

    def __init__(self, records: dict[str, list[str]] | None = None) -> None:
        self._lock = threading.Lock()
        self._records = {name: list(addresses) for name, addresses in (records or {}).items()}
        self.queries: dict[str, int] = {}
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.settimeout(0.05)
        self.port: int = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="dns-server", daemon=True)

    def set(self, name: str, addresses: Iterable[str]) -> None:
        """From now on `name` resolves to `addresses` (none: an empty NOERROR answer)."""
        with self._lock:
            self._records[name] = list(addresses)

    def a_queries(self, name: str) -> int:
        with self._lock:
            return self.queries.get(name, 0)

    def target(self, name: str, port: int) -> str:
        """The gRPC target resolving `name` on this server."""
        return f"dns://127.0.0.1:{self.port}/{name}:{port}"

    def start(self) -> DNSServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                query, client = self._sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            answer = self._answer(query)
            if answer is not None:
                self._sock.sendto(answer, client)

    def _answer(self, query: bytes) -> bytes | None:
        if len(query) < 12:
            return None
        ident, flags, qdcount = struct.unpack("!HHH", query[:6])
        if flags & 0x8000 or qdcount != 1:
            return None  # an answer, or a question we do not read
        labels, offset = [], 12
        while offset < len(query) and query[offset]:
            length = query[offset]
            labels.append(query[offset + 1:offset + 1 + length].decode("ascii", "replace").lower())
            offset += 1 + length
        offset += 1
        if offset + 4 > len(query):
            return None
        qtype, qclass = struct.unpack("!HH", query[offset:offset + 4])
        question = query[12:offset + 4]
        name = ".".join(labels)
        with self._lock:
            known = name in self._records
            addresses = list(self._records.get(name, ())) if qtype == TYPE_A and qclass == CLASS_IN else []
            if known and qtype == TYPE_A:
                self.queries[name] = self.queries.get(name, 0) + 1
        # QR, the query's opcode and RD, RA; NXDOMAIN for a name we do not serve.
        answer_flags = 0x8080 | (flags & 0x7900) | (0 if known else NXDOMAIN)
        records = b"".join(
            struct.pack("!HHHIH", 0xC00C, TYPE_A, CLASS_IN, TTL_S, 4) + socket.inet_aton(address)
            for address in addresses)
        return struct.pack("!HHHHHH", ident, answer_flags, 1, len(addresses), 0, 0) + question + records


@contextlib.contextmanager
def dns_server(records: dict[str, list[str]] | None = None) -> Iterator[DNSServer]:
    """A running `DNSServer` serving `records`, stopped on exit."""
    server = DNSServer(records).start()
    try:
        yield server
    finally:
        server.stop()


async def start_on_one_port(servers: Sequence[FakeTFServing], credentials: grpc.ServerCredentials | None = None,
                            attempts: int = 20) -> int:
    """Start `servers` (each on its own loopback `host`; over TLS with `credentials`) on one
    port, as the pods behind a Service listen on one; returns it. A port another process holds
    on one of the addresses is given up for another."""
    for _ in range(attempts):
        first, *others = servers
        first.port = 0
        port = await first.start(credentials, reuse_port=False)
        started = [first]
        try:
            for server in others:
                server.port = port
                if await server.start(credentials, reuse_port=False) != port:
                    raise RuntimeError(f"{server.host}:{port} is taken")
                started.append(server)
            return port
        except RuntimeError:
            for server in started:
                await server.stop()
    raise RuntimeError(f"no port free on every one of {[server.host for server in servers]}")

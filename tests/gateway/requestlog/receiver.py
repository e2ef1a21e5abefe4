"""An in-test CloudEvents server: Starlette under a real uvicorn on loopback, recording every
POST it receives (the CloudEvents and KServe headers, the body, what it answered)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.conftest import serve_app

# What CloudEvents' HTTP binding and KServe's logger put in the headers, and nothing that httpx adds.
_HEADERS = ("content-type", "ce-specversion", "ce-id", "ce-type", "ce-source", "ce-time",
            "ce-inferenceservicename", "ce-component", "ce-modelversion", "ce-signaturename", "ce-status",
            "ce-application", "ce-stage", "ce-variant")


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    status: int  # what the receiver answered


@dataclass
class Receiver:
    """The event server's behaviour and what it received (every POST, in order)."""

    answers: deque[int] = field(default_factory=deque)  # statuses for the next POSTs; then 200
    delay_s: float = 0.0
    received: list[Received] = field(default_factory=list)
    authorizations: set[str] = field(default_factory=set)
    in_flight: int = 0
    most_in_flight: int = 0

    def app(self) -> Starlette:
        async def events(request: Request) -> Response:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            try:
                body = await request.body()
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
            finally:
                self.in_flight -= 1
            status = self.answers.popleft() if self.answers else 200
            headers = {name: request.headers[name] for name in _HEADERS if name in request.headers}
            self.authorizations.add(request.headers.get("authorization", ""))
            self.received.append(Received(headers, body, status))
            return Response(status_code=status)
        return Starlette(routes=[Route("/events", events, methods=["POST"])])

    def delivered(self) -> list[Received]:
        return [event for event in self.received if event.status == 200]


@contextlib.asynccontextmanager
async def serving(receiver: Receiver, sock: socket.socket | None = None) -> AsyncIterator[str]:
    """The receiver under a real uvicorn listening on `sock` (a new loopback socket by default);
    yields the events URL."""
    async with serve_app(receiver.app(), sock=sock) as url:
        yield f"{url}/events"



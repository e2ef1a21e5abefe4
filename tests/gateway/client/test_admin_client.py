"""`AdminClient.upload` reading what a server answers, from a real uvicorn serving fixed answers:
events passed on as they come, the archive's bytes counted as sent, a 201 body without events,
and answers that are cut short or are not events (errors of the client's tree, never a hang)."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from gateway.client.admin import AdminClient
from gateway.client.errors import ConnectionLost, UnexpectedAnswer
from gateway.client.packing import PackedModel, pack_model_folder
from gateway.errors import GatewayError
from tests.conftest import INCREMENT_MODEL, free_port, serve_app

MODEL = {"name": "increment_model", "version": 3, "state": "serving", "folder": "models/increment_model/3",
         "build": {"command": "pip install -r requirements.txt", "seconds": 0.5}}
ANSWERS: dict[str, list[dict[str, Any]] | str] = {
    "whole": [{"event": "received", "bytes": 1}, {"event": "version", "name": "increment_model", "version": 3},
              {"event": "build", "line": "Collecting numpy"}, {"event": "starting"},
              {"event": "done", "status": 201, "model": MODEL}],
    "failed": [{"event": "version", "name": "increment_model", "version": 3}, {"event": "build", "line": "boom"},
               {"event": "error", "status": 422, "error": {"code": "build_failed", "message": "exit status 1"}}],
    "cut": [{"event": "version", "name": "increment_model", "version": 3}, {"event": "build", "line": "half"}],
    "garbled": "<html>proxy error</html>\n",
}


async def upload_route(request: Request) -> Response:
    body = await request.body()
    request.app.state.received.append((dict(request.headers), body))
    answer = ANSWERS.get(request.headers.get("x-answer", ""))
    if answer is None:
        return JSONResponse(MODEL, status_code=201)
    lines = answer.encode() if isinstance(answer, str) else b"".join(orjson.dumps(e) + b"\n" for e in answer)
    return StreamingResponse(iter([lines]), media_type="application/x-ndjson")


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, Starlette]]:
    app = Starlette(routes=[Route("/gateway/admin/models", upload_route, methods=["POST"])])
    app.state.received = []
    async with serve_app(app) as url:
        yield url, app


@pytest.fixture
def archive() -> Iterator[PackedModel]:
    with pack_model_folder(INCREMENT_MODEL) as packed:
        yield packed


def upload(url: str, archive: PackedModel, answer: str) -> tuple[list[tuple[int, int]], list[dict[str, Any]],
                                                                 dict[str, Any] | GatewayError]:
    sent: list[tuple[int, int]] = []
    events: list[dict[str, Any]] = []
    with AdminClient(url, token="t", timeout=10) as client:
        client._http.headers["x-answer"] = answer  # which fixed answer the server gives
        try:
            outcome: dict[str, Any] | GatewayError = client.upload(archive, lambda n, total: sent.append((n, total)),
                                                                   events.append)
        except GatewayError as error:
            outcome = error
    return sent, events, outcome


async def test_events_come_in_order_and_the_model_is_the_outcome(server: tuple[str, Starlette],
                                                                 archive: PackedModel) -> None:
    url, app = server
    sent, events, outcome = await asyncio.to_thread(upload, url, archive, "whole")
    assert outcome == MODEL
    assert [event["event"] for event in events] == ["received", "version", "build", "starting", "done"]
    assert sent[-1] == (archive.size, archive.size)
    headers, body = app.state.received[0]
    assert headers["content-type"] == "application/gzip"
    assert headers["accept"] == "application/x-ndjson"
    assert headers["authorization"] == "Bearer t"
    assert headers["content-length"] == str(archive.size)  # not chunked: the server can refuse it by its size
    assert gzip.decompress(body)[257:262] == b"ustar"  # the tar as packed


async def test_a_gateway_answering_201_at_once_gives_the_model(server: tuple[str, Starlette],
                                                               archive: PackedModel) -> None:
    _, events, outcome = await asyncio.to_thread(upload, server[0], archive, "json")
    assert (outcome, events) == (MODEL, [])


async def test_an_error_event_is_the_error_of_its_status_and_code(server: tuple[str, Starlette],
                                                                  archive: PackedModel) -> None:
    _, events, outcome = await asyncio.to_thread(upload, server[0], archive, "failed")
    assert isinstance(outcome, GatewayError)
    assert (outcome.status, outcome.code, outcome.message) == (422, "build_failed", "exit status 1")
    assert events[1] == {"event": "build", "line": "boom"}


async def test_an_answer_cut_short_or_not_events_is_an_error(server: tuple[str, Starlette],
                                                             archive: PackedModel) -> None:
    _, events, outcome = await asyncio.to_thread(upload, server[0], archive, "cut")
    assert isinstance(outcome, ConnectionLost)
    assert "ended before the upload's outcome" in outcome.message
    assert len(events) == 2
    _, _, outcome = await asyncio.to_thread(upload, server[0], archive, "garbled")
    assert isinstance(outcome, UnexpectedAnswer)
    assert "not JSON: <html>proxy error</html>" in outcome.message


def test_nothing_listening_is_unreachable(archive: PackedModel) -> None:
    _, _, outcome = upload(f"http://127.0.0.1:{free_port()}", archive, "whole")
    assert isinstance(outcome, GatewayError)
    assert outcome.code == "gateway_unreachable"

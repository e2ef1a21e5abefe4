"""Reading request bodies within the limits: size, content type, gzip, JSON."""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping
from typing import Any

from starlette.requests import Request

from gateway.errors import BadRequest, ClientClosed, InvalidJSON, PayloadTooLarge, UnsupportedMediaType, codec_errors
from gateway.http_protocol import WHOLE_BODY_KEY, WholeBody
from gateway.settings import Settings
from tensorcodecs import CodecError
from tensorcodecs.json_codec import loads

JSON_TYPES = ("application/json", "text/json")
_HEADERS = "gateway.headers"  # where headers_of keeps its dict in the ASGI scope
_INVALID_JSON = codec_errors(InvalidJSON)  # a body that does not parse


def headers_of(request: Request) -> Mapping[str, str]:
    """The request's headers by (lower-case) name, the first of repeated ones, built once per
    request: Starlette's `Headers.get` scans the list and raises a KeyError inside for every
    absent header, several times per request on the predict path."""
    scope = request.scope
    headers: dict[str, str] | None = scope.get(_HEADERS)
    if headers is None:
        headers = scope[_HEADERS] = {name.decode("latin-1"): value.decode("latin-1")
                                     for name, value in reversed(scope["headers"])}
    return headers


def check_json_content_type(request: Request) -> None:
    """415 unless the body is declared JSON (or not declared at all)."""
    content_type = headers_of(request).get("content-type")
    if content_type is None:
        return
    media = content_type.split(";", 1)[0].strip().lower()
    if media not in JSON_TYPES and not media.endswith("+json"):
        raise UnsupportedMediaType(f"content type {media!r} is not supported; send application/json")


async def read_body(request: Request, settings: Settings) -> bytes:
    """The body as bytes (see read_body_buffer)."""
    body = await read_body_buffer(request, settings)
    return body if isinstance(body, bytes) else bytes(body)


async def read_body_buffer(request: Request, settings: Settings) -> bytes | memoryview:
    """The body, refused with 413 as soon as it is known to exceed `max_body_bytes`
    (from Content-Length, before reading; else while reading; the HTTP protocol reads and
    discards what the client still sends); the server's `receive` raises RequestTimeout (408)
    once `body_timeout_s` has passed without the whole body (gateway.http_protocol). gzip
    bodies are inflated up to `max_inflated_bytes`. A large raw tensor the server read into one
    buffer (gateway.http_protocol.WholeBody) comes as a view of that buffer, not copied."""
    limit = settings.max_body_bytes
    headers = headers_of(request)
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body of {declared} bytes exceeds the limit of {limit} bytes")
    start_whole: Callable[[], WholeBody | None] | None = request.scope.get(WHOLE_BODY_KEY)
    whole = start_whole() if start_whole is not None else None
    chunks: list[bytes] = []
    size = 0
    receive = request.receive  # read directly: Starlette's stream() is an async generator per request
    while True:
        message = await receive()  # RequestTimeout from the server past body_timeout_s
        if message["type"] != "http.request":  # http.disconnect: the client went away
            raise ClientClosed(f"the client closed the connection after {size} bytes of the body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    body: bytes | memoryview = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    if whole is not None:  # every byte went there, none through `receive`
        view = whole.view()
        if size or view is None:
            raise RuntimeError("the request body ended before its buffer was full")  # a bug of the server's
        body = view
    encoding = headers.get("content-encoding", "identity").strip().lower()
    if encoding == "gzip":
        return _inflate(body, settings.max_inflated_bytes)
    if encoding != "identity":
        raise UnsupportedMediaType(f"content encoding {encoding!r} is not supported (gzip or identity)")
    return body


def _inflate(body: bytes | memoryview, limit: int) -> bytes:
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        data = inflater.decompress(body, limit)
        if inflater.unconsumed_tail:
            raise PayloadTooLarge(f"gzip request body inflates beyond the limit of {limit} bytes")
        if not inflater.eof:
            raise BadRequest("gzip request body is truncated")
    except zlib.error as error:
        raise BadRequest(f"gzip request body is invalid: {error}") from None
    return data


async def read_json(request: Request, settings: Settings) -> tuple[bytes, Any]:
    """The raw body and its parsed JSON (InvalidJSON for anything that does not parse)."""
    body = await read_json_body(request, settings)
    return body, parse_json(body)


async def read_json_body(request: Request, settings: Settings) -> bytes:
    """The raw body of a JSON request (its content type checked), not parsed yet: a route
    that times its decoding (Server-Timing `decode`) parses it with `parse_json`."""
    check_json_content_type(request)
    return await read_body(request, settings)


def parse_json(body: bytes) -> Any:
    """A body's JSON (InvalidJSON for anything that does not parse)."""
    try:
        return loads(body)
    except CodecError as error:
        raise _INVALID_JSON.translate(error) from None

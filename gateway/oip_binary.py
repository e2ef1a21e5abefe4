"""The Open Inference Protocol's binary tensor extension on HTTP (Triton's `binary_tensor_data`).

A request with `Inference-Header-Content-Length: N` carries N bytes of JSON (the inference
request), then the binary part: the bytes of the inputs whose `parameters.binary_data_size` is
set, one after another in input order. Any content type is accepted with it, as Triton does
(clients send `application/octet-stream` or JSON). An answer with outputs asked binary comes back
the same way: `application/octet-stream`, the header naming the JSON's length, the outputs' bytes
after it.

No copy of the tensors is made here: the binary part is a memoryview of the request body, and
the answer is sent as its parts (the JSON, then each output's buffer, a view of its array) in
one HTTP answer of known length rather than joined into one bytes object first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway.errors import BadRequest
from tensorcodecs.oip_json import Buffer

HEADER_LENGTH = "inference-header-content-length"
BINARY_TYPE = "application/octet-stream"
_MAX_DIGITS = 19  # a longer length is beyond any body


def split_body(headers: Mapping[str, str], body: bytes | memoryview) -> tuple[bytes, memoryview | None]:
    """The request's JSON and its binary part (None without the extension's header); a body
    read into one buffer (gateway.body.read_body_buffer) is cut without copying its tensors."""
    declared = headers.get(HEADER_LENGTH)
    if declared is None:
        return bytes(body), None
    text = declared.strip()
    if not text.isdigit() or not text.isascii() or len(text) > _MAX_DIGITS:
        raise BadRequest(f"Inference-Header-Content-Length must be a number of bytes, got {declared!r}")
    length = int(text)
    if length > len(body):
        raise BadRequest(f"Inference-Header-Content-Length is {length}, but the body has only {len(body)} bytes")
    return bytes(body[:length]), memoryview(body)[length:]


class PartsResponse(Response):
    """An answer sent as its parts in order, its Content-Length their total (no join)."""

    def __init__(self, parts: Sequence[Buffer], headers: Mapping[str, str] | None = None,
                 media_type: str = BINARY_TYPE) -> None:
        self.parts = [part for part in parts if len(part)]
        self.status_code = 200
        self.media_type = media_type
        self.background = None
        self.body = b""
        self.init_headers(headers)
        total = sum(len(part) for part in self.parts)
        self.raw_headers = [(name, value) for name, value in self.raw_headers if name != b"content-length"]
        self.raw_headers.append((b"content-length", str(total).encode("ascii")))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        if scope.get("method") == "HEAD" or not self.parts:
            await send({"type": "http.response.body", "body": b""})
            return
        last = len(self.parts) - 1
        for index, part in enumerate(self.parts):
            await send({"type": "http.response.body", "body": part, "more_body": index < last})


def binary_answer(header: bytes, buffers: Sequence[Buffer], headers: Mapping[str, str] | None = None) -> Response:
    """The answer with a binary part: the JSON `header`, then `buffers`."""
    return PartsResponse([header, *buffers], {**(headers or {}), HEADER_LENGTH: str(len(header))})

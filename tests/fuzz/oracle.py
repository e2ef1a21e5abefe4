"""What every answer to client input must be, whatever the input (README "What it answers",
"TF Serving's REST API"):

- a documented status: 200, or a client error (400, 404, 405, 413, 415); 504 only when the
  client set its own deadline; no 5xx otherwise (the example models never raise, no backend is
  down during the suite, so neither `model_error` 500 nor 502/503 may appear); a path ending in
  a slash names nothing: 404 (405 for a method no route there takes; on /v1 TF Serving's 400
  Malformed request), never a redirect;
- a body of strict JSON (native routes: no NaN/Infinity tokens, a non-finite float is `null`;
  TF Serving's routes write them, as TF Serving does) of the documented shape:
  `{"error": {"code", "message", "field"?}}` natively,
  `{"error": "..."}` on /v1; a raw tensor only on the binary path, its size matching its headers;
- `x-request-id` on every answer, the client's own when it sent a sane one;
- the keep-alive connection answers a following request;
- an answer within the client's timeout (no hang).
"""

from __future__ import annotations

import gzip
import json
import math
import re
from dataclasses import dataclass
from typing import Any, NoReturn
from urllib.parse import unquote

from hypothesis import currently_in_test_context, event

from tests.fuzz.harness import Answer, Connection, FuzzGateway, Request
from tests.fuzz.strategies import deadline_of

SANE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")  # echoed as it is (README: "the client's own")
CLIENT_ERRORS = frozenset({400, 404, 405, 413, 415})
ITEMSIZES = {"int8": 1, "uint8": 1, "bool": 1, "int16": 2, "uint16": 2, "float16": 2, "int32": 4, "uint32": 4,
             "float32": 4, "int64": 8, "uint64": 8, "float64": 8, "complex64": 8, "complex128": 16}


class NonFiniteToken(ValueError):
    pass


def _refuse_constant(token: str) -> Any:
    raise NonFiniteToken(f"bare {token} in a JSON answer")


@dataclass(frozen=True)
class Expect:
    """What a route answers on success: the JSON object's keys, one of these sets (None: any)."""

    keys: tuple[frozenset[str], ...] | None = None
    binary: bool = False  # a raw tensor may come back


def is_tf_route(path: str) -> bool:
    return path == "/v1/models" or path.startswith(("/v1/models/", "/v1/models?"))


def check(gateway: FuzzGateway, connection: Connection, request: Request, expect: Expect = Expect()) -> Answer:
    """Send `request` and hold the answer to the oracle; AssertionError (with the gateway's log
    tail) when it fails."""
    gateway.log.take()
    try:
        answer = connection.exchange(request)
    except TimeoutError:
        _fail(gateway, request, "no answer in time (hang)")
    except OSError as error:
        _fail(gateway, request, f"the connection failed before an answer: {type(error).__name__}: {error}")
    except Exception as error:
        _fail(gateway, request, f"malformed answer: {type(error).__name__}: {error}")
    if currently_in_test_context():  # the status mix, for --hypothesis-show-statistics
        event(f"status {answer.status}")
    problem = _problem(request, answer, expect)
    if problem:
        _fail(gateway, request, problem, answer)
    return answer


def _problem(request: Request, answer: Answer, expect: Expect) -> str:
    tf_route = is_tf_route(request.path)
    status = answer.status
    sent: dict[str, bytes] = {}
    for name, value in request.headers:
        sent.setdefault(name.lower(), value)  # the gateway reads the first of repeated headers
    slash_statuses = (400, 404, 405) if tf_route else (404, 405)  # TF Serving: 400 Malformed request
    if unquote(request.path.split("?", 1)[0]).endswith("/") and status not in slash_statuses:
        return f"status {status} for a path ending in a slash, not one of {slash_statuses}"
    if status != 200 and status not in CLIENT_ERRORS and not (
            status == 504 and deadline_of(sent.get("x-request-timeout")) is not None):
        return f"status {status} is not one a client mistake may cause"
    if not answer.kept_alive:
        return f"the keep-alive connection did not answer a following request: {answer.follow_up}"
    if "x-request-id" not in answer.headers:
        return "no x-request-id on the answer"
    client_id = sent.get("x-request-id", b"")
    if SANE_REQUEST_ID.fullmatch(client_id) and answer.headers["x-request-id"] != client_id.decode():
        return f"the client's x-request-id {client_id!r} did not come back"
    if request.method == "HEAD":
        return ""
    body = answer.body
    if answer.headers.get("content-encoding", "").strip().lower() == "gzip":
        if b"gzip" not in sent.get("accept-encoding", b""):
            return "a gzip answer to a client that did not accept gzip"
        try:
            body = gzip.decompress(body)
        except (OSError, EOFError) as error:
            return f"the gzip answer does not inflate: {error}"
    media = answer.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media == "application/octet-stream":
        return _binary_problem(status, answer, body, expect)
    if media != "application/json":
        return f"content type {media!r}, not JSON"
    try:
        text = body.decode("utf-8")
        document = json.loads(text) if tf_route else json.loads(text, parse_constant=_refuse_constant)
    except NonFiniteToken as error:
        return f"a native answer is not strict JSON: {error}"
    except ValueError as error:
        return f"the answer is not strict JSON: {error}"
    if status >= 400:
        return _error_shape_problem(document, tf_route)
    if not isinstance(document, dict):
        return "the answer is not a JSON object"
    if expect.keys is not None and set(document) not in expect.keys:
        return f"the answer's keys {sorted(document)} are none of {[sorted(keys) for keys in expect.keys]}"
    return ""


def _binary_problem(status: int, answer: Answer, body: bytes, expect: Expect) -> str:
    if status != 200 or not expect.binary:
        return f"a raw tensor answered with {status} where JSON was due"
    dtype, shape = answer.headers.get("x-tensor-dtype", ""), answer.headers.get("x-tensor-shape")
    if dtype not in ITEMSIZES or shape is None:
        return f"a raw tensor without usable x-tensor-dtype/x-tensor-shape ({dtype!r}, {shape!r})"
    sizes = [int(part) for part in shape.split(",") if part]
    if math.prod(sizes) * ITEMSIZES[dtype] != len(body):
        return f"a raw tensor of {len(body)} bytes, not {dtype} [{shape}]"
    return ""


def _error_shape_problem(document: Any, tf_route: bool) -> str:
    if tf_route:
        if not (isinstance(document, dict) and set(document) == {"error"} and isinstance(document["error"], str)):
            return f'a /v1 error is not {{"error": "..."}}: {document!r:.300}'
        return ""
    error = document.get("error") if isinstance(document, dict) else None
    if not (isinstance(document, dict) and set(document) == {"error"} and isinstance(error, dict)
            and {"code", "message"} <= set(error) <= {"code", "message", "field"}
            and all(isinstance(value, str) for value in error.values())):
        return f'an error is not {{"error": {{"code", "message", "field"?}}}}: {document!r:.300}'
    return ""


def _fail(gateway: FuzzGateway, request: Request, problem: str, answer: Answer | None = None) -> NoReturn:
    lines = [problem, request.describe()]
    if answer is not None:
        lines.append(f"answer: {answer.status} {dict(answer.headers)} {answer.body[:600]!r}")
    log = [_shorten(record) for record in gateway.log.take()]
    if log:
        lines.append("gateway log:\n" + "\n".join(log))
    raise AssertionError("\n".join(lines))


def _shorten(record: str) -> str:
    """A log record with its traceback cut to the innermost frames."""
    lines = record.splitlines()
    return "\n".join(lines if len(lines) <= 12 else [lines[0], "  ...", *lines[-10:]])

"""What `schemathesis run` loads through SCHEMATHESIS_HOOKS for tests/e2e/test_openapi_conformance.py
(with tests/e2e/schemathesis.toml):

- `documented_server_errors`: 5xx answers only as the document and the gateway allow.
  schemathesis's own `not_a_server_error` fails on every 5xx, but a model raising, or a backend
  down or late, is answered 5xx by design and documented so; what must never be answered is the
  gateway's own fault (500 `internal`) or a 5xx the operation does not document.
- a JSON reader for answers: TF Serving's routes write NaN and +-Infinity as bare literals, as
  TF Serving does (the schemas' descriptions say so); JSON Schema validators hold no such number
  (schemathesis's would see `null`), so there each is checked as a finite number, 0.0. Every other
  answer must be strict JSON (the native routes write `null`): a bare literal there fails.
- raw-tensor headers kept to raw-tensor bodies: `x-tensor-dtype`/`x-tensor-shape`/`x-tensor-name`
  describe an `application/octet-stream` body, and a JSON body's are never read, so a malformed one
  there is not a request the gateway should refuse (OpenAPI cannot tie a parameter to a media type).
"""

from __future__ import annotations

import json
from typing import Any

import orjson
import schemathesis

from gateway.errors import (
    ApplicationContractMismatch,
    BackendUnavailable,
    DeadlineExceeded,
    ModelError,
    NotReady,
    OutputContractViolation,
    Overloaded,
)

# What a 5xx may say: the model's own error, its backend down, late or answering off-contract,
# the gateway at its limit or not ready for it. Never `internal`.
ALLOWED_CODES = frozenset(error.code for error in (
    ModelError, BackendUnavailable, DeadlineExceeded, Overloaded, NotReady, ApplicationContractMismatch,
    OutputContractViolation))
INTERNAL_MESSAGE = "internal error"  # how `internal` begins, also on /v1 where the body has no code


def _error(content: bytes) -> tuple[str | None, str]:
    """The error's code (None in TF Serving's `{"error": "..."}` shape) and message."""
    try:
        body: Any = orjson.loads(content)
    except orjson.JSONDecodeError:
        return None, content[:200].decode("utf-8", "replace")
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return str(error.get("code")), str(error.get("message"))
    return None, str(error)


RAW_TENSOR_HEADERS = ("x-tensor-dtype", "x-tensor-shape", "x-tensor-name")


def _refuse_constant(literal: str) -> Any:
    raise ValueError(f"a bare {literal} outside TF Serving's routes: not JSON")


@schemathesis.deserializer("application/json")
def json_with_bare_non_finite_numbers(ctx: Any, response: Any) -> Any:
    """JSON; on TF Serving's `/v1` routes also NaN and +-Infinity, read as 0.0."""
    tfserving = ctx.operation.path.startswith("/v1/")
    return json.loads(response.content, parse_constant=(lambda literal: 0.0) if tfserving else _refuse_constant)


@schemathesis.hook
def filter_case(ctx: Any, case: Any) -> bool:
    """No raw-tensor headers beside a JSON body."""
    if case.media_type == "application/octet-stream" or not case.headers:
        return True
    return not any(name.lower() in RAW_TENSOR_HEADERS for name in case.headers)


@schemathesis.check
def documented_server_errors(ctx: Any, response: Any, case: Any) -> bool | None:
    """A 5xx passes when the operation documents its status and the error is one a model or a
    backend causes; 500 `internal` and any other 5xx fail."""
    status = response.status_code
    if status < 500:
        return None
    code, message = _error(response.content)
    if code == "internal" or message.startswith(INTERNAL_MESSAGE):
        raise AssertionError(f"{status} internal: the gateway's own fault ({message})")
    documented = {str(key) for key in case.operation.definition.raw.get("responses", {})}
    if str(status) not in documented and f"{str(status)[0]}XX" not in documented:
        raise AssertionError(f"{status} is not documented for this operation (documented: {sorted(documented)})")
    if code is not None and code not in ALLOWED_CODES:
        raise AssertionError(f"{status} {code}: not an error a model or its backend causes ({message})")
    return None

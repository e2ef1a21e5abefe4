"""What the sync and async clients share: the configuration, the routes a call goes to, and the
pure steps around each HTTP exchange (the headers, an error answer or a transport failure
turned into an exception, the contract read from a listing). The clients only do the I/O."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import orjson

from gateway.client.errors import ConnectionLost, GatewayTimeout, GatewayUnreachable, UnexpectedAnswer, error_for
from gateway.client.retries import Attempts, parse_retry_after
from gateway.client.tensors import Contract, contract_from_json
from gateway.errors import GatewayError

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_RETRIES = 3
TIMEOUT_HEADER = "x-request-timeout"
CONNECT_TIMEOUT_S = 5.0  # an unreachable host that drops packets: retried (nothing sent), not waited out
FLOATING_VERSION = 0  # how the models listing shows a TF Serving model that fronts every version


@dataclass(frozen=True, slots=True)
class Settings:
    """A client's configuration, defaults in one place.

    - `url`: the gateway; default `GATEWAY_URL`, else http://127.0.0.1:8000.
    - `api_key`: sent as `Authorization: Bearer`; default `GATEWAY_API_KEY`, else none.
    - `timeout`: seconds for each attempt, connecting to the answer's last byte (None: forever), and
      without a deadline the longest Retry-After waited.
    - `deadline`: seconds for a whole call, retries and waits included, also sent to the gateway
      as `x-request-timeout` (90 % of what is left; None: only `timeout` and `retries` bound a call).
    - `retries`: how many times a request that did not run is tried again (retries.py says which).
    - `binary_threshold`: a lone numeric array of this many bytes or more is sent raw (None: never).
    """

    url: str
    api_key: str | None
    timeout: float | None
    deadline: float | None
    retries: int
    binary_threshold: int | None

    @classmethod
    def of(cls, url: str | None, api_key: str | None, timeout: float | None, deadline: float | None,
           retries: int, binary_threshold: int | None) -> Settings:
        if retries < 0:
            raise ValueError(f"retries must be 0 or more, got {retries}")
        for name, value in (("timeout", timeout), ("deadline", deadline)):
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {value}")
        url = checked_url(url or os.environ.get("GATEWAY_URL") or DEFAULT_URL).rstrip("/")
        api_key = api_key if api_key is not None else os.environ.get("GATEWAY_API_KEY") or None
        return cls(url, api_key, timeout, deadline, retries, binary_threshold)

    def headers(self) -> dict[str, str]:
        headers = {"accept": "application/json, application/octet-stream"}
        if self.api_key:
            headers["authorization"] = f"Bearer {self.api_key}"
        return headers


def checked_url(url: str) -> str:
    """`url` when it is an http:// or https:// URL with a host, else ValueError (httpx would
    report a URL without a scheme as a broken connection)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"must be an http:// or https:// URL with a host, got {url!r} (e.g. {DEFAULT_URL})")
    return url


@dataclass(frozen=True, slots=True)
class Target:
    """What a prediction calls: an application, or a model (at a version or label)."""

    kind: str  # "applications" or "models"
    name: str
    version: int | None = None
    label: str | None = None

    @property
    def path(self) -> str:
        """The predict route (also, for an application, the route of its plan)."""
        path = f"/gateway/{self.kind}/{quote(self.name, safe='')}"
        if self.version is not None:
            return f"{path}/versions/{self.version}"
        if self.label is not None:
            return f"{path}/labels/{quote(self.label, safe='')}"
        return path

    @property
    def listing(self) -> str:
        """The route that lists this target's contract."""
        return f"/gateway/{self.kind}/{quote(self.name, safe='')}"

    def contract(self, body: Mapping[str, Any]) -> Contract:
        """The contract in the listing's answer: an application's plan, or the model version
        asked for (the version a label names; without either, the highest listed); failing that,
        the entry of a TF Serving model fronting every version (listed as version 0), whose
        contract is its backend's default version's."""
        if self.kind == "applications":
            return contract_from_json(body)
        versions = {int(entry["version"]): entry for entry in body.get("versions") or ()}
        wanted = self.version
        if self.label is not None:
            wanted = next((int(entry["labels"][self.label]) for entry in versions.values()
                           if self.label in (entry.get("labels") or {})), None)
        elif wanted is None and versions:
            wanted = max(versions)
        chosen = versions.get(wanted) if wanted is not None else None
        chosen = chosen or versions.get(FLOATING_VERSION)
        return contract_from_json(chosen) if chosen is not None else Contract(None, None)


def request_headers(settings: Settings, attempts: Attempts, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    headers = {**settings.headers(), **(extra or {})}
    budget = attempts.header()
    if budget is not None:
        headers[TIMEOUT_HEADER] = budget
    return headers


def attempt_timeout(settings: Settings, attempts: Attempts) -> float | None:
    """This attempt's timeout, or raise GatewayTimeout when the deadline has passed."""
    timeout = attempts.timeout_s(settings.timeout)
    if timeout is not None and timeout <= 0:
        raise error_for(None, GatewayTimeout.code,
                        f"the deadline of {settings.deadline:g} s passed after {attempts.made} attempt(s)",
                        kind=GatewayTimeout)
    return timeout


def httpx_timeout(timeout: float | None) -> httpx.Timeout:
    """An attempt's timeouts: `timeout` for each read and write, at most CONNECT_TIMEOUT_S to connect."""
    return httpx.Timeout(timeout, connect=CONNECT_TIMEOUT_S if timeout is None else min(timeout, CONNECT_TIMEOUT_S))


def late(timeout: float) -> GatewayError:
    """The GatewayTimeout of an attempt whose whole exchange, the answer's body included, outlasted
    its time (the timeout, or what was left of the deadline)."""
    return error_for(None, GatewayTimeout.code, f"the gateway's answer did not end within {timeout:g} s",
                     kind=GatewayTimeout)


def transport_error(error: httpx.TransportError, timeout: float | None) -> GatewayError:
    """A failure with no answer: refused, reset or no connection in time (GatewayUnreachable), or
    too slow (GatewayTimeout)."""
    if isinstance(error, httpx.ConnectTimeout):  # nothing was sent: retried as a refused connection is
        return error_for(None, GatewayUnreachable.code, f"cannot reach the gateway: no connection within "
                         f"{CONNECT_TIMEOUT_S if timeout is None else min(timeout, CONNECT_TIMEOUT_S):g} s",
                         kind=GatewayUnreachable)
    if isinstance(error, httpx.TimeoutException):
        waited = f" within {timeout:g} s" if timeout is not None else ""
        return error_for(None, GatewayTimeout.code, f"the gateway did not answer{waited} ({type(error).__name__})",
                         kind=GatewayTimeout)
    detail = str(error) or type(error).__name__
    if isinstance(error, httpx.ConnectError):
        return error_for(None, GatewayUnreachable.code, f"cannot reach the gateway: {detail}", kind=GatewayUnreachable)
    return error_for(None, ConnectionLost.code, f"the connection to the gateway broke: {detail}", kind=ConnectionLost)


def answer_error(response: httpx.Response) -> GatewayError:
    """The exception for an error answer (status >= 400), from its `{"error": {...}}` body."""
    request_id = response.headers.get("x-request-id")
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    try:
        body = orjson.loads(response.content)
        error = body["error"]
        if isinstance(error, str):  # TF Serving's shape (the /v1 routes)
            code, message, field = "", error, None
        else:
            code, message, field = str(error["code"]), str(error["message"]), error.get("field")
    except (orjson.JSONDecodeError, KeyError, TypeError):
        text = " ".join(response.text[:400].split())[:200] or response.reason_phrase  # one line
        return error_for(response.status_code, UnexpectedAnswer.code,
                         f"HTTP {response.status_code} not from the gateway: {text}", request_id=request_id,
                         retry_after_s=retry_after, kind=UnexpectedAnswer)
    return error_for(response.status_code, code, message, field=field, request_id=request_id,
                     retry_after_s=retry_after)


def json_object(response: httpx.Response) -> dict[str, Any]:
    """A listing's JSON object."""
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError as error:
        raise UnexpectedAnswer(f"the answer is not JSON: {error}") from None
    if not isinstance(body, dict):
        raise UnexpectedAnswer(f"the answer is not a JSON object: {str(body)[:100]}")
    return body

"""The admin calls of a running gateway (the routes `gateway upload`, `apply` and `delete` use):

    POST   /gateway/admin/models                          a packed model folder -> its new version
    POST   /gateway/admin/apply[?dry_run=true]            YAML documents -> what was (or would be) applied
    DELETE /gateway/admin/applications/{name}
    DELETE /gateway/admin/models/{name}/versions/{version}

The admin token goes as `Authorization: Bearer` (default `GATEWAY_ADMIN_TOKEN`; without one a
gateway that has no token answers loopback clients only). Failures raise the client's error tree
(gateway.client.errors); nothing is retried, since every call changes the gateway.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import httpx
import orjson

from gateway.client.calls import DEFAULT_URL, answer_error, checked_url, httpx_timeout, json_object, transport_error
from gateway.client.errors import ConnectionLost, UnexpectedAnswer, error_for
from gateway.client.packing import PackedModel
from gateway.errors import GatewayError

DEFAULT_ADMIN_TIMEOUT_S = 180.0  # an apply waits for its reload: new runtimes started and warmed up
NDJSON = "application/x-ndjson"
Event = dict[str, Any]


class AdminClient:
    """Blocking admin calls on httpx. `timeout`: seconds each read or write may wait (None: forever);
    an upload's answer may take as long as its build, but lines come while it builds."""

    def __init__(self, url: str | None = None, token: str | None = None,
                 timeout: float | None = DEFAULT_ADMIN_TIMEOUT_S) -> None:
        self.url = checked_url(url or os.environ.get("GATEWAY_URL") or DEFAULT_URL).rstrip("/")
        self.token = token if token is not None else os.environ.get("GATEWAY_ADMIN_TOKEN") or None
        self.timeout = timeout
        headers = {"accept": "application/json"}
        if self.token:
            headers["authorization"] = f"Bearer {self.token}"
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=httpx_timeout(timeout))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def upload(self, archive: PackedModel, on_sent: Callable[[int, int], None] | None = None,
               on_event: Callable[[Event], None] | None = None) -> dict[str, Any]:
        """Send the packed folder (`on_sent(bytes sent, size)` after each chunk), pass each event the
        gateway streams to `on_event` as it comes, and return the new version (the 201 body:
        name, version, state, folder, build)."""
        headers = {"content-type": "application/gzip", "accept": NDJSON, "content-length": str(archive.size)}
        try:
            with self._http.stream("POST", "/gateway/admin/models", content=archive.chunks(on_sent=on_sent),
                                   headers=headers) as response:
                if response.status_code >= 400:
                    response.read()
                    raise answer_error(response)
                if not response.headers.get("content-type", "").startswith(NDJSON):
                    response.read()
                    return json_object(response)  # a gateway answering the whole outcome at once (201)
                for line in response.iter_lines():
                    if not line.strip():
                        continue
                    event = _event(line)
                    if on_event is not None:
                        on_event(event)
                    if event.get("event") == "done":
                        model = event.get("model")
                        if not isinstance(model, dict):
                            raise UnexpectedAnswer(f"the upload's last event names no model: {line[:200]}")
                        return model
                    if event.get("event") == "error":
                        raise _event_error(event)
        except httpx.TransportError as failure:
            raise transport_error(failure, self.timeout) from None
        raise error_for(None, ConnectionLost.code, "the gateway's answer ended before the upload's outcome "
                        "(the gateway may have stopped)", kind=ConnectionLost)

    def apply(self, file_name: str, text: str, dry_run: bool = False) -> dict[str, Any]:
        """Apply the YAML documents `text` (errors name `file_name`), or with `dry_run` say what would
        change: {applied, dry_run, documents, changes, breaking, plans}."""
        body = orjson.dumps({"file": file_name, "text": text})
        params = {"dry_run": "true"} if dry_run else None
        return self._call("POST", "/gateway/admin/apply", content=body, params=params,
                          headers={"content-type": "application/json"})

    def delete_application(self, name: str) -> dict[str, Any]:
        """Remove application `name`: {deleted: "application", name}."""
        return self._call("DELETE", f"/gateway/admin/applications/{quote(name, safe='')}")

    def delete_model(self, name: str, version: int) -> dict[str, Any]:
        """Remove model version `name:version` (409 while an application uses it)."""
        return self._call("DELETE", f"/gateway/admin/models/{quote(name, safe='')}/versions/{version}")

    def _call(self, method: str, path: str, *, content: bytes | None = None,
              params: Mapping[str, str] | None = None, headers: Mapping[str, str] | None = None) -> dict[str, Any]:
        try:
            response = self._http.request(method, path, content=content, params=params, headers=headers)
        except httpx.TransportError as failure:
            raise transport_error(failure, self.timeout) from None
        if response.status_code >= 400:
            raise answer_error(response)
        return json_object(response)


def _event(line: str) -> Event:
    try:
        event = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise UnexpectedAnswer(f"the upload's answer has a line that is not JSON: {line[:200]}") from None
    if not isinstance(event, dict) or not isinstance(event.get("event"), str):
        raise UnexpectedAnswer(f"the upload's answer has a line that is not an event: {line[:200]}")
    return event


def _event_error(event: Event) -> GatewayError:
    """The exception an `{"event": "error", "status", "error": {code, message}}` line stands for."""
    found = event.get("error")
    error: dict[str, Any] = found if isinstance(found, dict) else {}
    status = event.get("status")
    return error_for(status if isinstance(status, int) else 500, str(error.get("code") or ""),
                     str(error.get("message") or "the upload failed"), field=error.get("field"))

"""`POST /gateway/admin/models`: a model folder, sent as a gzip-compressed tar, becomes the next
version of its model (`gateway upload`, Hydrosphere's `hs upload`).

The route is the HTTP half: the admin check, the archive's type (415) and size (413, from
Content-Length, then counted), the body streamed to a file in the config directory's state
folder within `limits.upload_timeout_s`, and the answer: once done, 201 with the model (or the
error with its status), or, with `Accept: application/x-ndjson`, 200 and one JSON event per
line as things happen. Errors found before the build (401/403, 409 read-only, 413, 415, 400,
422) are plain error answers in both modes. The steps are gateway.store.upload's; the blocking
ones run in threads. A client that goes away during the body or the build leaves nothing behind;
once the config change has begun it is carried out (or reverted) whatever the client does.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from gateway.auth import check_admin
from gateway.body import headers_of
from gateway.build import BuildCancelled
from gateway.errors import ClientClosed, GatewayError, PayloadTooLarge, UnsupportedMediaType
from gateway.http_protocol import allow_body_time
from gateway.manifests import Config
from gateway.reload import Reloads
from gateway.settings import Settings
from gateway.store.journal import ConfigStore
from gateway.store.upload import ModelUpload

log = logging.getLogger("gateway.upload")

ARCHIVE_TYPES = ("application/gzip", "application/x-gzip", "application/x-tar+gzip", "application/octet-stream")
NDJSON = "application/x-ndjson"
T = TypeVar("T")


async def upload_model(request: Request) -> Response:
    check_admin(request)
    settings: Settings = request.app.state.settings
    store = ConfigStore(settings.config_dir)
    store.check_writable()  # 409 before a byte of the body is read
    headers = headers_of(request)
    check_archive_type(headers)
    limit = settings.max_upload_bytes
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the model archive of {declared} bytes exceeds the upload limit of {limit} bytes "
                              "(limits.max_upload_bytes)")
    allow_body_time(request.scope, settings.upload_timeout_s)
    config: Config = request.app.state.reloader.config  # the config serving now (every process has one)
    upload = ModelUpload(store, settings.envs_dir)
    try:
        size = await receive_archive(request.receive, upload.archive.open("wb"), limit)
        await in_thread(upload.unpack, config, limit)
    except BaseException:
        await in_thread(upload.discard)  # off the loop (thousands of files); in_thread shields it
        raise
    reloads: Reloads = getattr(request.app.state, "reload_via", None) or request.app.state.reloader
    return UploadAnswer(upload, size, settings, reloads, streaming=NDJSON in headers.get("accept", ""))


def check_archive_type(headers: Mapping[str, str]) -> None:
    """415 unless the body is declared a gzip-compressed archive, sent as it is."""
    media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media not in ARCHIVE_TYPES:
        raise UnsupportedMediaType(f"content type {media or '(none)'!r} is not a model archive; send the model "
                                   "folder as a gzip-compressed tar with Content-Type: application/gzip")
    encoding = headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity":
        raise UnsupportedMediaType(f"content encoding {encoding!r} is not supported for a model archive "
                                   "(it is compressed already)")


async def receive_archive(receive: Receive, stream: Any, limit: int) -> int:
    """Write the body to `stream` (closed here) as it comes; its size. 413 past `limit`,
    ClientClosed when the client goes away, RequestTimeout (408) from the server past the
    upload's body time."""
    size = 0
    with stream:
        while True:
            message = await receive()
            if message["type"] != "http.request":
                raise ClientClosed(f"the client closed the connection after {size} bytes of the model archive")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"the model archive exceeds the upload limit of {limit} bytes "
                                      "(limits.max_upload_bytes)")
            await in_thread(stream.write, chunk)  # disk I/O off the loop
            if not message.get("more_body", False):
                return size


async def in_thread(function: Callable[..., T], *args: Any) -> T:
    """`function(*args)` in a thread; cancelled, it waits for the thread to end before raising,
    so the caller's clean-up never races what the thread still writes."""
    future = asyncio.get_running_loop().run_in_executor(None, functools.partial(function, *args))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        with contextlib.suppress(BaseException):
            await future
        raise


class UploadAnswer(Response):
    """The answer of an upload whose archive was accepted: it runs the build and the config
    change while answering (one JSON answer at the end, or NDJSON events as they happen)."""

    def __init__(self, upload: ModelUpload, size: int, settings: Settings, reloads: Reloads,
                 streaming: bool) -> None:
        super().__init__(status_code=200 if streaming else 201, media_type=NDJSON if streaming else "application/json")
        self.upload = upload
        self.size = size
        self.settings = settings
        self.reloads = reloads
        self.streaming = streaming
        self.changing = False  # the config change has begun: it is carried out whatever the client does

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        events: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        writer: asyncio.Task[None] | None = None
        if self.streaming:
            headers = [(name, value) for name, value in self.raw_headers if name != b"content-length"]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            writer = asyncio.create_task(self._stream(events, send))
        work = asyncio.create_task(self._run(events.put_nowait if self.streaming else _ignore))
        watch = asyncio.create_task(_client_gone(receive))
        try:
            await asyncio.wait({work, watch}, return_when=asyncio.FIRST_COMPLETED)
            if not work.done() and not self.changing:  # the client went away during the build: stopped
                self._stop(work)
            status, body = await _outcome(work)
            if writer is not None:
                events.put_nowait(_final_event(status, body))
                events.put_nowait(None)
                await writer
            else:
                payload = orjson.dumps(body)
                await send({"type": "http.response.start", "status": status,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(payload)).encode())]})
                await send({"type": "http.response.body", "body": payload})
        finally:
            watch.cancel()
            if writer is not None:
                writer.cancel()
            if not work.done():  # this answer itself is cancelled (the gateway stops)
                if not self.changing:
                    self._stop(work)
                with contextlib.suppress(BaseException):
                    await work

    def _stop(self, work: asyncio.Task[dict[str, Any]]) -> None:
        self.upload.stop.set()
        work.cancel()

    async def _stream(self, events: asyncio.Queue[dict[str, Any] | None], send: Send) -> None:
        while (event := await events.get()) is not None:
            await send({"type": "http.response.body", "body": orjson.dumps(event) + b"\n", "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async def _run(self, emit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """Build, then make the change; the model's answer. Cancelled before the change begins,
        nothing is left of the upload; once it has begun, it is carried out or reverted."""
        upload = self.upload
        manifest = upload.manifest
        assert manifest is not None
        emit({"event": "received", "bytes": self.size})
        emit({"event": "version", "name": manifest.name, "version": manifest.version})
        loop = asyncio.get_running_loop()
        try:
            seconds = await in_thread(upload.build, self.settings.build_timeout_s,
                                      lambda line: loop.call_soon_threadsafe(emit, {"event": "build", "line": line}))
        except BaseException:
            await in_thread(upload.discard)
            raise
        emit({"event": "starting"})
        self.changing = True
        try:
            result = await self.reloads.change(upload.change())
        except asyncio.CancelledError:  # the gateway stops: the change may yet be made, so all is left
            raise  # as it is (the next start's recover() clears the scratch folder and the reservation)
        except BaseException:
            await in_thread(upload.discard)
            raise
        if not result.applied:
            if result.status != 504:  # 504: a worker's parent did not answer in time, and may still apply it
                await in_thread(upload.discard)
            raise _RefusedChange(result.status, result.error or "the change was refused")
        await in_thread(upload.release)
        log.info("model %s:%s uploaded (%d bytes%s) and serving", manifest.name, manifest.version, self.size,
                 f", built in {seconds:.1f} s" if seconds is not None else "")
        detail = result.detail or {"name": manifest.name, "version": manifest.version,
                                   "folder": upload.change().folder}
        return {"name": detail["name"], "version": detail["version"], "state": "serving",
                "folder": detail["folder"],
                "build": {"command": manifest.install_command,
                          "seconds": round(seconds, 3) if seconds is not None else 0.0}}


class _RefusedChange(GatewayError):
    """The reload refused the new version (its runtime did not start, an invalid config)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = {422: "reload_refused", 409: "conflict", 503: "unavailable", 504: "timeout"}.get(status, "internal")


def _ignore(_event: dict[str, Any]) -> None:
    """Events of an upload answered in one piece: not kept."""


async def _client_gone(receive: Receive) -> None:
    """Returns once the client has closed the connection (the body is read in full by now)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def _outcome(work: asyncio.Task[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
    """The upload's status and answer body: the model, or the error."""
    try:
        model = await work
    except asyncio.CancelledError:
        if work.cancelled():  # the client went away; nobody reads this
            return ClientClosed.status, ClientClosed("the client went away during the build").to_dict()
        raise
    except BuildCancelled as error:
        return ClientClosed.status, ClientClosed(str(error)).to_dict()
    except GatewayError as error:
        log.warning("an upload was refused (%d): %s", error.status, error.message)
        return error.status, error.to_dict()
    except Exception as error:  # a fault: answered, logged with its traceback
        log.error("an upload failed on a fault", exc_info=error)
        return 500, {"error": {"code": "internal", "message": f"the upload failed: {type(error).__name__}"}}
    return 201, model


def _final_event(status: int, body: dict[str, Any]) -> dict[str, Any]:
    if status == 201:
        return {"event": "done", "status": 201, "model": body}
    return {"event": "error", "status": status, "error": body["error"]}


routes = [Route("/gateway/admin/models", upload_model, methods=["POST"])]

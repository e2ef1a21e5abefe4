"""`POST /gateway/admin/models` on a real uvicorn with real runtimes: an uploaded folder becomes
the next version, built and started, served after a restart; nothing is left of one that fails."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from gateway.app import create_app
from gateway.build import interpreter_for
from gateway.manifests import load_config
from gateway.settings import AuthSettings, Settings
from gateway.store.journal import STATE_DIR
from gateway.supervisor import Supervisor
from tests.conftest import serve_app, write_app, write_model

INCREMENT = "def predict(x):\n    return x + 1\n"
PLUS_TWO = "def predict(x):\n    return x + 2\n"
SERVING = """kind: Model
name: {name}
{extra}
payload: ["src/"]
contract:
  inputs:
    x: {{shape: [-1], type: int32}}
  outputs:
    y: {{shape: [-1], type: int32}}
"""
ARCHIVE = {"content-type": "application/gzip"}
NDJSON = {**ARCHIVE, "accept": "application/x-ndjson"}


def model_archive(name: str, source: str = PLUS_TWO, install: str | None = None,
                  serving: str | None = None) -> bytes:
    """A model folder packed as `gateway upload` packs it: serving.yaml and src/ at the root."""
    extra = f"install-command: {json.dumps(install)}" if install else ""
    files = {"serving.yaml": serving or SERVING.format(name=name, extra=extra), "src/func_main.py": source}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(path)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@contextlib.asynccontextmanager
async def running_gateway(root: Path, envs: Path, **values: Any) -> AsyncIterator[httpx.AsyncClient]:
    """`gateway serve` of `root` in this process: its runtimes started by a real supervisor."""
    settings = Settings(config_dir=root, envs_dir=envs, access_log=False, drain_timeout_s=0.2, **values)
    config = load_config(root)
    supervisor = Supervisor(config.local_models(), 60, interpreter=functools.partial(interpreter_for, envs))
    targets, failed = await supervisor.start()
    try:
        app = create_app(settings, config.with_targets(targets), failed, supervisor)
        async with (serve_app(app, settings) as url,
                    httpx.AsyncClient(base_url=url, timeout=120) as client):
            yield client
    finally:
        await supervisor.stop()


async def events_of(client: httpx.AsyncClient, body: bytes) -> list[dict[str, Any]]:
    async with client.stream("POST", "/gateway/admin/models", content=body, headers=NDJSON) as answer:
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "application/x-ndjson"
        return [json.loads(line) async for line in answer.aiter_lines() if line]


async def upload_and_leave(client: httpx.AsyncClient, body: bytes, after_line: str) -> None:
    """Upload, then close the connection once the build printed `after_line`."""
    async with client.stream("POST", "/gateway/admin/models", content=body, headers=NDJSON) as answer:
        async for line in answer.aiter_lines():
            if json.loads(line) == {"event": "build", "line": after_line}:
                return


def leftovers(root: Path, envs: Path) -> dict[str, list[str]]:
    state = root / STATE_DIR
    return {kind: sorted(p.name for p in (state / kind).iterdir()) if (state / kind).is_dir() else []
            for kind in ("reserved", "uploads")} | {"envs": sorted(p.name.split("-")[0] for p in envs.iterdir())}


async def test_an_upload_becomes_the_next_version_and_serves_after_a_restart(tmp_path: Path) -> None:
    root, envs = tmp_path / "config", tmp_path / "envs"
    write_model(root, "m/1", "m", INCREMENT)
    write_app(root, "app", "m")
    envs.mkdir()
    async with running_gateway(root, envs) as client:
        body = model_archive("m")
        answer = await client.post("/gateway/admin/models", content=body, headers=ARCHIVE)
        assert answer.status_code == 201, answer.text
        assert answer.json() == {"name": "m", "version": 2, "state": "serving", "folder": "models/m/2",
                                 "build": {"command": None, "seconds": 0.0}}
        assert (await client.post("/gateway/models/m/versions/2", json={"x": [1]})).json() == {"y": [3]}
        assert (await client.post("/gateway/applications/app", json={"x": [1]})).json() == {"y": [3]}  # highest

        # Three at once: one builds and serves, one's install-command fails, one's client leaves mid-build.
        echoing = model_archive("echoer", install="echo first && echo second")
        results = await asyncio.gather(
            events_of(client, echoing),
            client.post("/gateway/admin/models", headers=ARCHIVE,
                        content=model_archive("broken", install="echo resolving numpy==0.0 && exit 3")),
            upload_and_leave(client, model_archive("sleeper", install="echo sleeping && sleep 60"), "sleeping"),
            client.post("/gateway/admin/models", headers=ARCHIVE,  # its runtime does not start: the reload refuses it
                        content=model_archive("crashing", source="raise RuntimeError('no weights')\n")))
        events, broken, crashing = results[0], results[1], results[3]
        seconds = events[-1]["model"]["build"]["seconds"]
        done = {"name": "echoer", "version": 1, "state": "serving", "folder": "models/echoer/1",
                "build": {"command": "echo first && echo second", "seconds": seconds}}
        assert events == [{"event": "received", "bytes": len(echoing)},
                          {"event": "version", "name": "echoer", "version": 1},
                          {"event": "build", "line": "first"}, {"event": "build", "line": "second"},
                          {"event": "starting"}, {"event": "done", "status": 201, "model": done}]
        assert seconds > 0
        assert (await client.post("/gateway/models/echoer/versions/1", json={"x": [1]})).json() == {"y": [3]}
        assert broken.status_code == 422
        assert broken.json()["error"]["code"] == "build_failed"
        assert "install-command 'echo resolving numpy==0.0 && exit 3' failed with exit code 3" in broken.text
        assert "resolving numpy==0.0" in broken.json()["error"]["message"]

        assert crashing.status_code == 422
        assert crashing.json()["error"]["code"] == "reload_refused"
        assert "crashing:1" in crashing.json()["error"]["message"]

        async def only_echoer_is_left() -> bool:
            return leftovers(root, envs) == {"reserved": [], "uploads": [], "envs": ["echoer"]}
        for _ in range(100):  # the sleeper's build is stopped once its client is gone
            if await only_echoer_is_left():
                break
            await asyncio.sleep(0.1)
        assert leftovers(root, envs) == {"reserved": [], "uploads": [], "envs": ["echoer"]}
        versions = {p.relative_to(root).as_posix() for p in (root / "models").glob("*/*")}
        assert versions == {"models/m/1", "models/m/2", "models/echoer/1"}
        assert (await client.get("/gateway/models/broken")).status_code == 404

    async with running_gateway(root, envs) as client:  # a restart serves what was uploaded
        assert (await client.post("/gateway/models/m/versions/2", json={"x": [1]})).json() == {"y": [3]}
        assert (await client.post("/gateway/models/echoer/versions/1", json={"x": [5]})).json() == {"y": [7]}


async def test_what_is_refused_before_the_build_is_a_plain_error(tmp_path: Path) -> None:
    root, envs = tmp_path / "config", tmp_path / "envs"
    (root / "models").mkdir(parents=True)
    envs.mkdir()
    (root / "models" / "remote.yaml").write_text(  # an application whose route reads its body
        "kind: Model\nname: remote\nbackend:\n  protocol: tensorflow-serving\n  target: 127.0.0.1:1\n"
        "  version: 1\ncontract:\n  inputs:\n    x: {shape: [-1], type: int32}\n"
        "  outputs:\n    y: {shape: [-1], type: int32}\n")
    write_app(root, "app", "remote:1")
    token = "s3cret-admin"
    digest = hashlib.sha256(token.encode()).hexdigest()
    auth = AuthSettings(admin_token_sha256=(digest,))
    async with running_gateway(root, envs, max_upload_bytes=64 * 1024, auth=auth, body_timeout_s=0.3,
                               upload_timeout_s=30) as client:
        admin = {"authorization": f"Bearer {token}"}

        async def upload(body: bytes, **headers: str) -> httpx.Response:
            return await client.post("/gateway/admin/models", content=body, headers={**NDJSON, **admin, **headers})

        anonymous = await client.post("/gateway/admin/models", content=model_archive("m"), headers=ARCHIVE)
        assert anonymous.status_code == 401
        wrong = await upload(model_archive("m"), authorization="Bearer nope")
        assert wrong.status_code == 401
        assert wrong.json()["error"]["code"] == "unauthenticated"
        text = await upload(model_archive("m"), **{"content-type": "text/plain"})
        assert text.status_code == 415
        assert "send the model folder as a gzip-compressed tar" in text.json()["error"]["message"]
        big = await upload(b"\0" * (64 * 1024 + 1))
        assert big.status_code == 413
        assert "exceeds the upload limit of 65536 bytes" in big.json()["error"]["message"]

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it comes
            for _ in range(20):
                yield gzip.compress(b"x") + b"\0" * 8192
        streamed = await client.post("/gateway/admin/models", content=chunks(), headers={**NDJSON, **admin})
        assert streamed.status_code == 413
        garbage = await upload(b"\x1f\x8b not really gzip")
        assert garbage.status_code == 400
        assert "gzip" in garbage.json()["error"]["message"]
        bad_type = "kind: Model\nname: m\ncontract:\n  inputs:\n    x: {type: int33}\n"
        invalid = await upload(model_archive("m", serving=bad_type))
        assert invalid.status_code == 422
        error = invalid.json()["error"]
        assert error["code"] == "invalid_manifest"
        assert error["message"].startswith("serving.yaml:5: ")
        assert str(root) not in error["message"]
        versioned = await upload(model_archive("m", serving=SERVING.format(name="m", extra="version: 7")))
        assert versioned.status_code == 422
        assert versioned.json()["error"]["message"].startswith("serving.yaml:3: version: an uploaded model gets")
        assert leftovers(root, envs) == {"reserved": [], "uploads": [], "envs": []}
        assert [p.name for p in (root / "models").iterdir()] == ["remote.yaml"]

        # The upload's body has limits.upload_timeout_s to come; other routes keep body_timeout_s.
        port = client.base_url.port
        assert port is not None
        slow = await slow_post(port, "/gateway/admin/models", f"content-type: application/gzip\r\n"
                               f"authorization: Bearer {token}\r\n", b"\x1f\x8b not really gzip")
        assert slow.startswith(b"HTTP/1.1 400 "), slow
        assert (await slow_post(port, "/gateway/applications/app", "content-type: application/json\r\n",
                                b'{"x": [1]}')).startswith(b"HTTP/1.1 408 ")
        # A client that goes away in the middle of its upload leaves nothing.
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"POST /gateway/admin/models HTTP/1.1\r\nhost: x\r\ncontent-type: application/gzip\r\n"
                     f"authorization: Bearer {token}\r\ncontent-length: 50000\r\n\r\n".encode() + b"\0" * 1000)
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.close()
        for _ in range(50):
            if leftovers(root, envs)["uploads"] == []:
                break
            await asyncio.sleep(0.05)
        assert leftovers(root, envs) == {"reserved": [], "uploads": [], "envs": []}


async def slow_post(port: int, path: str, headers: str, body: bytes) -> bytes:
    """POST `body` in two parts, the second one second after the first (more than the test's
    body_timeout_s); the answer's bytes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"POST {path} HTTP/1.1\r\nhost: x\r\n{headers}content-length: {len(body)}\r\n"
                     f"connection: close\r\n\r\n".encode() + body[:3])
        await writer.drain()
        await asyncio.sleep(1.0)
        writer.write(body[3:])
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


async def test_an_upload_clears_a_stale_environment_and_cleans_up_off_the_loop(tmp_path: Path,
                                                                              monkeypatch: Any) -> None:
    import dataclasses
    import threading

    from gateway.build import ModelEnvironment
    from gateway.manifests import load_model_manifest
    from gateway.store.upload import ModelUpload
    root, envs = tmp_path / "config", tmp_path / "envs"
    write_model(root, "other", "other", INCREMENT)
    write_app(root, "app", "other:1")
    envs.mkdir()
    # An environment left at models/m/1's path (a deleted m:1 built with an install-command).
    template = load_model_manifest(root / "models" / "other")
    stale = ModelEnvironment.of(envs, dataclasses.replace(template, name="m", version=1,
                                                          folder=(root / "models" / "m" / "1").resolve()))
    (stale.path / "bin").mkdir(parents=True)
    (stale.path / "bin" / "python").write_text("")
    (stale.path / ".gateway-built").write_text("\n")
    threads: list[bool] = []
    for name in ("discard", "release"):
        original = getattr(ModelUpload, name)

        def record(self: ModelUpload, original: Any = original) -> None:
            threads.append(threading.current_thread() is threading.main_thread())
            original(self)
        monkeypatch.setattr(ModelUpload, name, record)
    async with running_gateway(root, envs, upload_timeout_s=30) as client:
        bad = await client.post("/gateway/admin/models", content=b"not an archive", headers=ARCHIVE)
        assert bad.status_code in (400, 422)
        answer = await client.post("/gateway/admin/models", content=model_archive("m"), headers=ARCHIVE)
        assert answer.status_code == 201, answer.text
    assert not stale.path.exists()
    assert threads
    assert not any(threads)


async def test_concurrent_uploads_of_one_model_get_distinct_versions(tmp_path: Path) -> None:
    root, envs = tmp_path / "config", tmp_path / "envs"
    write_model(root, "m/1", "m", INCREMENT)
    write_app(root, "app", "m")
    envs.mkdir()
    async with running_gateway(root, envs) as client:
        answers = await asyncio.gather(*(client.post("/gateway/admin/models", content=model_archive("m"),
                                                     headers=ARCHIVE) for _ in range(3)))
        assert [answer.status_code for answer in answers] == [201, 201, 201], [a.text for a in answers]
        assert sorted(answer.json()["version"] for answer in answers) == [2, 3, 4]
        assert {p.relative_to(root).as_posix() for p in (root / "models").glob("m/*")} == {
            "models/m/1", "models/m/2", "models/m/3", "models/m/4"}
        for version in (2, 3, 4):
            answer = await client.post(f"/gateway/models/m/versions/{version}", json={"x": [1]})
            assert answer.json() == {"y": [3]}

"""Hot reload through POST /admin/reload: validate fully, swap at once, old config keeps serving."""

from __future__ import annotations

import asyncio
import multiprocessing
import re
import shutil
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from gateway.app import create_app
from gateway.manifests import Config, load_config
from gateway.reload import ConfigStager
from gateway.serving.worker_reloads import Apply, ParentLink, WorkerReloads, _Link
from gateway.settings import Settings
from tests.conftest import runtimes_for, serve_app, write_app, write_model
from tests.waiting import eventually, wait_until

SLOW_V1 = "import time\n\ndef predict(x):\n    time.sleep(0.5)\n    return x + 1\n"
V2 = "def predict(x):\n    return x + 2\n"


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Path]]:
    root = tmp_path / "config"
    write_model(root, "m/1", "m", SLOW_V1)
    write_model(root, "m/2", "m", V2)
    write_app(root, "app", "m:1")
    settings = Settings(config_dir=root, access_log=False, drain_timeout_s=0.5)
    with runtimes_for(load_config(root)) as config:
        async with (serve_app(create_app(settings, config)) as url,
                    httpx.AsyncClient(base_url=url, timeout=10) as client):
            yield client, root


async def test_reload_swaps_and_in_flight_requests_finish_on_the_old_config(
        setup: tuple[httpx.AsyncClient, Path]) -> None:
    client, root = setup
    in_flight = asyncio.create_task(client.post("/gateway/applications/app", json={"x": [1]}))
    await eventually(lambda: _in_flight_is(client, 1), what="the request in flight")
    write_app(root, "app", "m:2")
    write_app(root, "other", "m:2")
    answer = await client.post("/admin/reload")
    assert answer.status_code == 200
    assert answer.json()["applied"] is True
    assert answer.json()["applications"] == ["app", "other"]
    assert (await in_flight).json() == {"y": [2]}  # started on m:1
    assert (await client.post("/gateway/applications/app", json={"x": [1]})).json() == {"y": [3]}
    assert (await client.post("/gateway/applications/other", json={"x": [1]})).json() == {"y": [3]}


async def test_an_invalid_config_is_refused_and_the_old_one_keeps_serving(
        setup: tuple[httpx.AsyncClient, Path]) -> None:
    client, root = setup
    write_app(root, "app", "nope:1")
    answer = await client.post("/admin/reload")
    assert answer.status_code == 422
    assert answer.json()["applied"] is False
    assert "model nope is not defined" in answer.json()["error"]
    assert (await client.post("/gateway/applications/app", json={"x": [1]})).json() == {"y": [2]}


async def test_removed_applications_disappear(setup: tuple[httpx.AsyncClient, Path]) -> None:
    client, root = setup
    (root / "applications" / "app.yaml").unlink()
    write_app(root, "renamed", "m:2")
    assert (await client.post("/admin/reload")).json()["applications"] == ["renamed"]
    assert (await client.post("/gateway/applications/app", json={"x": [1]})).status_code == 404


async def test_reload_is_for_loopback_or_admins(tmp_path: Path) -> None:
    root = tmp_path / "config"
    shutil.copytree(Path(__file__).parents[2] / "config", root)
    app = create_app(Settings(config_dir=root, access_log=False), load_config(root))
    transport = httpx.ASGITransport(app=app, client=("10.1.2.3", 4000))
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport,
                                                                   base_url="http://gw") as client:
        answer = await client.post("/admin/reload")
    assert answer.status_code == 403


async def test_every_admin_route_is_for_loopback_or_admins(tmp_path: Path) -> None:
    root = tmp_path / "config"
    shutil.copytree(Path(__file__).parents[2] / "config", root)
    before = sorted(str(path.relative_to(root)) for path in root.rglob("*"))
    app = create_app(Settings(config_dir=root, access_log=False), load_config(root))
    transport = httpx.ASGITransport(app=app, client=("10.1.2.3", 4000))
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport,
                                                                   base_url="http://gw") as client:
        answers = [await client.post("/gateway/admin/models", content=b"\x1f\x8b",
                                     headers={"content-type": "application/gzip"}),
                   await client.post("/gateway/admin/apply", json={"file": "a.yaml", "text": "kind: Application\n"}),
                   await client.delete("/gateway/admin/applications/increment_app"),
                   await client.delete("/gateway/admin/models/increment_model/versions/1")]
    assert [answer.status_code for answer in answers] == [403, 403, 403, 403]
    assert sorted(str(path.relative_to(root)) for path in root.rglob("*")) == before  # nothing changed


async def test_a_new_local_model_without_a_supervisor_is_refused_up_front(
        setup: tuple[httpx.AsyncClient, Path]) -> None:
    client, root = setup
    write_model(root, "fresh", "fresh", V2)
    write_app(root, "app", "fresh")
    answer = await client.post("/admin/reload")
    assert answer.status_code == 422
    assert "model fresh:1 is new" in answer.json()["error"]
    assert "restart it to add local models" in answer.json()["error"]
    assert (await client.post("/gateway/applications/app", json={"x": [1]})).json() == {"y": [2]}


async def test_an_empty_application_file_is_refused(setup: tuple[httpx.AsyncClient, Path]) -> None:
    client, root = setup
    manifest = root / "applications" / "app.yaml"
    manifest.write_text("")
    answer = await client.post("/admin/reload")
    assert answer.status_code == 422
    assert answer.json()["error"].startswith(f"{manifest}:1: the file is empty")
    assert (await client.post("/gateway/applications/app", json={"x": [1]})).json() == {"y": [2]}


async def test_a_file_that_is_not_utf8_is_refused_with_its_line(setup: tuple[httpx.AsyncClient, Path]) -> None:
    client, root = setup
    manifest = root / "applications" / "bad.yaml"
    manifest.write_bytes(b"kind: Application\nname: \xff\xfe\n")
    answer = await client.post("/admin/reload")
    assert answer.status_code == 422
    assert answer.json()["error"].startswith(f"{manifest}:2: not UTF-8 text: byte 0xff")
    assert (await client.post("/gateway/applications/app", json={"x": [1]})).json() == {"y": [2]}


async def test_a_manifest_nested_too_deeply_is_refused_with_its_file(setup: tuple[httpx.AsyncClient, Path]) -> None:
    client, root = setup
    deep = root / "applications" / "deep.yaml"
    deep.write_text("kind: Application\nname: " + "[" * 5000 + "]" * 5000 + "\n")
    answer = await client.post("/admin/reload")
    assert answer.status_code == 422
    assert answer.json()["error"] == f"{deep}:1: invalid YAML: nested too deeply to read"
    assert (await client.post("/gateway/applications/app", json={"x": [1]})).json() == {"y": [2]}


def _fail_loading(directory: Path) -> Config:
    raise RuntimeError("the disk went away")


async def test_a_reload_failing_on_a_fault_is_a_500_and_the_old_config_keeps_serving(
        setup: tuple[httpx.AsyncClient, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    client, _ = setup
    monkeypatch.setattr("gateway.reload.load_config", _fail_loading)  # a fault, not a mistake in the config
    answer = await client.post("/admin/reload")
    assert answer.status_code == 500
    assert answer.json()["applied"] is False
    assert "RuntimeError" in answer.json()["error"]
    monkeypatch.undo()
    assert (await client.post("/gateway/applications/app", json={"x": [1]})).json() == {"y": [2]}


REMOTE_ONLY = "kind: Model\nname: toy\nbackend: {protocol: tensorflow-serving, target: 127.0.0.1:1}\n"


def _remote_config(tmp_path: Path) -> tuple[Settings, Path]:
    root = tmp_path / "remote"
    (root / "models").mkdir(parents=True)
    (root / "models" / "toy.yaml").write_text(REMOTE_ONLY)
    write_app(root, "app", "toy")
    return Settings(config_dir=root, access_log=False), root


async def test_a_worker_asking_the_parent_is_answered_even_when_the_reload_fails_on_a_fault(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings, root = _remote_config(tmp_path)
    parent = WorkerReloads(ConfigStager(settings, load_config(root), None), {}, drain_timeout_s=0)
    worker = ParentLink(parent.attach(0), Starlette(), answer_timeout_s=10)
    try:
        monkeypatch.setattr("gateway.reload.load_config", _fail_loading)
        result = await worker.reload()
        assert result.status == 500
        assert "RuntimeError" in (result.error or "")
    finally:
        await parent.close()


async def test_a_worker_answers_504_when_the_parent_does_not_answer_in_time() -> None:
    mine, parents = multiprocessing.Pipe()  # a parent that reads nothing and answers nothing
    worker = ParentLink(mine, Starlette(), answer_timeout_s=0.3)
    result = await worker.reload()
    assert result.status == 504
    assert "did not answer within 0.3s" in (result.error or "")
    worker.link.close()
    parents.close()


async def test_a_reload_abandoned_after_its_swap_answers_that_it_applied(tmp_path: Path) -> None:
    settings, root = _remote_config(tmp_path)
    parent = WorkerReloads(ConfigStager(settings, load_config(root), None), {}, drain_timeout_s=0)
    stuck = parent.attach(0)  # a worker that never confirms the swap
    write_app(root, "other", "toy")
    reloading = asyncio.create_task(parent.reload())

    async def swap_sent() -> bool:  # the parent committed and sent the swap
        return stuck.poll()
    await eventually(swap_sent, what="the swap sent to the worker")
    assert isinstance(stuck.recv(), Apply)
    parent.abandon()  # SIGTERM
    result = await reloading
    assert result.status == 200
    assert result.applications == ["app", "other"]
    await parent.close()
    stuck.close()


async def test_a_link_whose_peer_is_gone_closes_cleanly_and_its_pipe_number_can_serve_again(
        caplog: pytest.LogCaptureFixture) -> None:
    mine, theirs = multiprocessing.Pipe()
    link = _Link(mine, lambda message: None)
    theirs.close()  # the worker died
    link.send("x" * 10)  # the sending thread fails (EPIPE) while the loop watches the pipe
    # The loop busy meanwhile (as when sending to every worker): the thread fails first.
    wait_until(lambda: "could not be sent" in caplog.text, timeout=5, what="the sending thread failing")
    deadline = asyncio.get_running_loop().time() + 5
    while not link.closed:
        assert asyncio.get_running_loop().time() < deadline, "the link never closed"
        await asyncio.sleep(0.01)
    received: list[object] = []
    again, peer = multiprocessing.Pipe()  # likely the same file descriptor numbers
    replacement = _Link(again, received.append)
    peer.send("hello from the new worker")
    while not received:
        assert asyncio.get_running_loop().time() < deadline, "the new link was never read"
        await asyncio.sleep(0.01)
    assert received == ["hello from the new worker"]
    replacement.close()
    peer.close()


async def test_a_worker_that_cannot_apply_a_reload_stops_to_be_replaced_and_never_confirms(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings, root = _remote_config(tmp_path)
    config = load_config(root)
    app = create_app(settings, config)

    async def cannot_apply(*_: object) -> None:
        raise RuntimeError("out of memory")  # a fault in this worker only

    signals: list[int] = []
    monkeypatch.setattr("gateway.reload.Reloader.apply", cannot_apply)
    monkeypatch.setattr("gateway.serving.worker_reloads.os.kill", lambda pid, signum: signals.append(signum))
    async with serve_app(app):
        mine, parents = multiprocessing.Pipe()
        worker = ParentLink(mine, app, answer_timeout_s=5)
        parents.send(Apply(1, config, {}))
        deadline = asyncio.get_running_loop().time() + 5
        while not signals:
            assert asyncio.get_running_loop().time() < deadline, "the worker neither applied nor stopped"
            await asyncio.sleep(0.01)
        assert signals == [signal.SIGTERM]  # it drains and exits; the parent starts its replacement
        assert not parents.poll(0.1)  # and it does not confirm a swap it did not make
        worker.link.close()
        parents.close()


async def _in_flight_is(client: httpx.AsyncClient, count: int) -> bool:
    """The in-flight gauge, less the /metrics request that reads it, is `count`."""
    text = (await client.get("/metrics")).text
    match = re.search(r"^gateway_requests_in_flight (\S+)$", text, re.MULTILINE)
    assert match is not None
    return int(float(match.group(1))) - 1 == count

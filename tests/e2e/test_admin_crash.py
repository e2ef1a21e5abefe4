"""Changes through the admin API on a real `gateway serve`: one asked of a worker is made by the
parent and served by every worker; a gateway SIGKILLed at random points of a multi-document
apply restarts with all of it or none of it, and serves exactly that."""

from __future__ import annotations

import contextlib
import io
import os
import random
import shutil
import signal
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from gateway.manifests import load_config
from gateway.store.journal import STATE_DIR, ConfigStore
from tests.conftest import REPO, write_app, write_model
from tests.e2e.processes import GATEWAY, running_gateway, served_port, spawn_gateway, wait_for

# SIGKILLs during an apply, each of a gateway of its own (a start: a second of imports)
APPLY_ROUNDS = int(os.environ.get("GATEWAY_CRASH_APPLY_ROUNDS", "10"))
UPLOAD_ROUNDS = int(os.environ.get("GATEWAY_CRASH_UPLOAD_ROUNDS", "6"))  # and during an upload
SEED = int(os.environ.get("GATEWAY_CRASH_SEED", "0")) or random.randrange(1 << 30)

_GATEWAY_YAML = ("kind: Gateway\ndefaults: {runtime_start_timeout_s: 10, drain_timeout_s: 0.3, shutdown_grace_s: 0.2}\n"
                 "logging: {access_log: false}\n")


def _apply(url: str, text: str, timeout: float = 30) -> httpx.Response:
    return httpx.post(f"{url}/gateway/admin/apply", json={"file": "change.yaml", "text": text}, timeout=timeout)


_FUNCTION = "def predict(x):\n    return x + 100\n"
_SERVING_YAML = ("kind: Model\nname: {name}\npayload: [src/]\ncontract:\n  inputs:\n"
                 "    x: {{shape: [-1], type: int32}}\n  outputs:\n    y: {{shape: [-1], type: int32}}\n")


def _model_archive(name: str) -> bytes:
    """A model folder as `gateway upload` sends it: serving.yaml and its payload, tar.gz."""
    files = {"serving.yaml": _SERVING_YAML.format(name=name).encode(), "src/func_main.py": _FUNCTION.encode()}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for path, data in files.items():
            entry = tarfile.TarInfo(path)
            entry.size, entry.mode = len(data), 0o644
            archive.addfile(entry, io.BytesIO(data))
    return buffer.getvalue()


def _upload(url: str, name: str, timeout: float = 60) -> httpx.Response:
    return httpx.post(f"{url}/gateway/admin/models", content=_model_archive(name),
                      headers={"content-type": "application/gzip"}, timeout=timeout)


def _application(name: str, model: str) -> str:
    return f"kind: Application\nname: {name}\nsingular:\n  model: {model}\n"


def _per_worker(url: str, app: str, workers: int = 2, each: int = 3, limit_s: float = 20) -> dict[str, set[str]]:
    """What each worker answers for `app` (a new connection per request: the kernel picks the
    worker; a worker is told by its request ids' first 24 hex digits)."""
    answers: dict[str, set[str]] = {}
    counts: dict[str, int] = {}
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        response = httpx.post(f"{url}/gateway/applications/{app}", json={"x": [1]}, timeout=10)
        worker = response.headers["x-request-id"][:24]
        answers.setdefault(worker, set()).add(f"{response.status_code} {response.text}")
        counts[worker] = counts.get(worker, 0) + 1
        if len(counts) == workers and all(count >= each for count in counts.values()):
            return answers
    raise AssertionError(f"in {limit_s:g}s, {len(counts)} of {workers} workers answered")


def test_changes_asked_of_a_worker_are_made_by_the_parent_and_served_by_every_worker(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.mkdir()
    (config / "gateway.yaml").write_text(_GATEWAY_YAML)
    write_model(config, "first", "first", "def predict(x):\n    return x + 1\n")
    write_app(config, "app", "first")
    with running_gateway(config, "--workers", "2") as (_, url):
        assert _per_worker(url, "app") == {worker: {'200 {"y":[2]}'} for worker in _per_worker(url, "app")}
        answer = _apply(url, _application("second", "first") + "---\n" + _application("third", "first"))
        assert answer.status_code == 200, answer.text
        assert [(d["name"], d["action"]) for d in answer.json()["documents"]] == [("second", "created"),
                                                                                   ("third", "created")]
        for app in ("second", "third"):  # every worker swapped before the answer
            served = _per_worker(url, app)
            assert len(served) == 2
            assert all(got == {'200 {"y":[2]}'} for got in served.values()), served
        uploaded = _upload(url, "second")  # a new local model: its runtime started by the parent
        assert uploaded.status_code == 201, uploaded.text
        assert (uploaded.json()["name"], uploaded.json()["version"]) == ("second", 1)
        assert _apply(url, _application("up", "second:1")).status_code == 200
        served = _per_worker(url, "up")
        assert len(served) == 2
        assert all(got == {'200 {"y":[101]}'} for got in served.values()), served
        refused = _apply(url, _application("fourth", "nope:1"))  # refused by the parent, for every worker
        assert refused.status_code == 422, refused.text
        assert "nope" in refused.json()["error"]["message"]
        assert {answer.split(" ")[0] for got in _per_worker(url, "fourth").values() for answer in got} == {"404"}
    assert not (config / "applications" / "fourth.yaml").exists()


# ---------------------------------------------------------------- SIGKILL during an apply


def _crash_config(root: Path) -> None:
    (root / "models").mkdir(parents=True)
    (root / "gateway.yaml").write_text(_GATEWAY_YAML)
    for version in (1, 2):  # remote models: no runtime to start, so a gateway starts in about a second
        (root / "models" / f"r{version}.yaml").write_text(
            f"kind: Model\nname: r\nversion: {version}\nbackend:\n  protocol: tensorflow-serving\n"
            f"  target: 127.0.0.1:1\n  model_name: r\n")
    write_app(root, "app", "r:1")


def _change(round_: int) -> tuple[str, int]:
    """Round `round_`'s apply: an update of `app` (to the other version of r) and two new
    applications; the version `app` then uses."""
    version = 2 if round_ % 2 else 1
    text = "---\n".join([_application("app", f"r:{version}"), _application(f"a{round_}", "r:1"),
                         _application(f"b{round_}", "r:2")])
    return text, version


def _state(applications: dict[str, int], before: dict[str, int], round_: int) -> str:
    """`old` or `new`: each application's version of r is as before round `round_`'s change, or
    as after it; anything else (a mix) fails the test."""
    _, version = _change(round_)
    after = {**before, "app": version, f"a{round_}": 1, f"b{round_}": 2}
    assert applications in (before, after), (f"round {round_} (seed {SEED}): a mix of the old and the new state: "
                                             f"{applications}, before {before}, after {after}")
    return "new" if applications == after else "old"


def _recovered(root: Path, finished: list[str] | None = None) -> dict[str, int]:
    """Each application's version of r once `root` is recovered (the changes it finished, a
    kill between the switch and the end, added to `finished`)."""
    (finished if finished is not None else []).extend(ConfigStore(root).recover())
    assert not (root / STATE_DIR / "pending").exists()
    config = load_config(root)
    return {name: app.stages[0].variants[0].model.selector.version or 0
            for name, app in config.applications.items()}


def _served(url: str) -> dict[str, int]:
    answer = httpx.get(f"{url}/gateway/applications", timeout=10).json()["applications"]
    return {app["name"]: int(app["stages"][0]["variants"][0]["model"].split(":")[1]) for app in answer}


@contextlib.contextmanager
def _gateways(roots: list[Path], log: Path) -> Iterator[list[tuple[subprocess.Popen[bytes], str]]]:
    """A `gateway serve` on each of `roots`, started at once (a start is mostly imports: both
    cores work at them), each with its URL once it is live; all SIGKILLed afterwards."""
    started = [(root, *spawn_gateway(root, log=log.with_name(f"{root.name}.log"))) for root in roots]
    try:
        running = []
        for root, process, offset in started:
            url = f"http://127.0.0.1:{served_port(process, log.with_name(f'{root.name}.log'), offset)}"
            wait_for(f"{url}/health/live", process)
            running.append((process, url))
        yield running
    finally:
        for _, process, _ in started:
            process.send_signal(signal.SIGKILL)
            process.wait()


def _version_folder(root: Path) -> str:
    """`new` when the uploaded version is there whole (and loads), `old` when nothing of it is."""
    folder = root / "models" / "up"
    models = load_config(root).models
    if not folder.exists():
        assert ("up", 1) not in models
        return "old"
    files = {path.relative_to(folder).as_posix(): path.read_bytes() for path in folder.rglob("*") if path.is_file()}
    assert files == {"1/serving.yaml": _SERVING_YAML.format(name="up").encode(),
                     "1/src/func_main.py": _FUNCTION.encode()}, f"seed {SEED}: part of an upload: {sorted(files)}"
    assert ("up", 1) in models
    return "new"


def _killed_during(running: list[tuple[subprocess.Popen[bytes], str]], ask: Callable[[str, int], object],
                   rng: random.Random) -> float:
    """The first gateway asked (`ask(url, 0)`) and timed; each other one asked, then SIGKILLed
    after a delay spread over that time (some before the switch, some inside the commit, some
    after). Returns the time measured."""
    sent = time.monotonic()
    ask(running[0][1], 0)
    took = time.monotonic() - sent
    kills = len(running) - 1
    delays = [took * 1.2 * (i + rng.random()) / kills for i in range(kills)]
    rng.shuffle(delays)
    for round_, ((process, url), delay) in enumerate(zip(running[1:], delays, strict=True), start=1):
        threading.Thread(target=_ignoring_the_kill, args=(ask, url, round_), daemon=True).start()
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait()
    return took


def _ignoring_the_kill(ask: Callable[[str, int], object], url: str, round_: int) -> None:
    with contextlib.suppress(httpx.TransportError):  # the gateway was killed under it
        ask(url, round_)


def _ask_apply(url: str, round_: int) -> None:
    answer = _apply(url, _change(round_)[0], timeout=10)
    assert round_ or answer.status_code == 200, answer.text


def _ask_upload(url: str, round_: int) -> None:
    answer = _upload(url, "up", timeout=30)
    assert round_ or answer.status_code == 201, answer.text


def test_a_gateway_killed_during_a_change_restarts_with_all_of_it_or_none(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    log = tmp_path / "gateway.log"
    roots = [tmp_path / f"config-{index}" for index in range(APPLY_ROUNDS + UPLOAD_ROUNDS + 2)]
    for root in roots:
        _crash_config(root)
    applies = roots[:APPLY_ROUNDS + 1]  # the rest: uploads
    before = {"app": 1}
    seen = {"old": 0, "new": 0}
    finished: list[str] = []  # kills that landed inside the commit: finished by the recovery
    with _gateways(roots, log) as running:  # started side by side: a start is mostly imports
        took = _killed_during(running[:len(applies)], _ask_apply, rng)
        took_upload = _killed_during(running[len(applies):], _ask_upload, rng)
    states: dict[Path, dict[str, int]] = {}
    for index, root in enumerate(roots):
        # Most recovered here; every fourth by a restart (its state worked out on a copy first).
        states[root], upload = _recovered_state(root, finished) if index % 4 else _peek(root, finished)
        if root in applies:
            seen[_state(states[root], before, index)] += 1
        else:
            assert states[root] == before
            seen[upload] += 1
    restarted = [root for index, root in enumerate(roots) if index % 4 == 0]
    with _gateways(restarted, log) as running:
        for root, (_, url) in zip(restarted, running, strict=True):
            served = _served(url)  # a restart serves exactly what was applied: all of it or none
            assert served == states[root], f"{root.name} (seed {SEED}): served {served}, not {states[root]}"
    spread = (f"seed {SEED}, an apply takes {took:.3f}s, an upload {took_upload:.3f}s: {seen}, "
              f"{len(finished)} finished by the recovery")
    assert seen["old"], f"no kill landed before the switch ({spread})"
    # The two timed are new; a kill after the switch (the change marked served, once it swapped) is new too, but
    # that window is the end of a call, which random delays need not hit: test_crash_points cuts at every call.
    assert seen["new"] >= 2, f"the timed changes were not kept ({spread})"


def _recovered_state(root: Path, finished: list[str]) -> tuple[dict[str, int], str]:
    applications = _recovered(root, finished)
    return applications, _version_folder(root)


def _peek(root: Path, finished: list[str]) -> tuple[dict[str, int], str]:
    """The state the next start will serve, worked out on a copy (the directory itself is left
    for that start to recover)."""
    copy = root.parent / "peek"
    subprocess.run(["cp", "-a", str(root), str(copy)], check=True)
    try:
        return _recovered_state(copy, finished)
    finally:
        subprocess.run(["rm", "-rf", str(copy)], check=True)


# ---------------------------------------------------------------- a read-only config directory


def test_a_read_only_config_directory_answers_409_to_every_change(tmp_path: Path) -> None:
    if shutil.which("unshare") is None:
        pytest.skip("no unshare(1) to mount the config directory read-only with")
    root = tmp_path / "config"
    _crash_config(root)
    log = tmp_path / "gateway.log"
    # A read-only bind mount of the directory, as a ConfigMap is mounted, in a mount namespace of
    # the gateway's own (the network is the test's: it listens on loopback as usual).
    mount = f"mount --bind {root} {root} && mount -o remount,bind,ro {root}"
    process = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c",
                                f'{mount} && exec "$0" serve --config {root} --port 0 --log-level info', GATEWAY],
                               cwd=REPO, stdout=subprocess.DEVNULL, stderr=open(log, "ab"))  # noqa: SIM115
    try:
        try:
            url = f"http://127.0.0.1:{served_port(process, log)}"
        except AssertionError:
            if "mount" in log.read_text():
                pytest.skip(f"this machine cannot make a read-only mount: {log.read_text().strip()}")
            raise
        wait_for(f"{url}/health/live", process)
        answers = [_apply(url, _application("other", "r:1")),
                   httpx.delete(f"{url}/gateway/admin/applications/app", timeout=10),
                   httpx.delete(f"{url}/gateway/admin/models/r/versions/2", timeout=10)]
        answers.append(_upload(url, "up"))
        for answer in answers:
            assert answer.status_code == 409, answer.text
            assert answer.json()["error"]["code"] == "conflict"
            assert f"the config directory {root} is read-only" in answer.json()["error"]["message"]
        assert _served(url) == {"app": 1}
    finally:
        process.kill()
        process.wait()
    assert not (root / STATE_DIR).exists()  # nothing was written (the mount is gone with its namespace)

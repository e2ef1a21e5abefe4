"""Request logs of a gateway serving over a real uvicorn with the real embedded runtime: a log
made under load written completely at shutdown and replayed as warmup, a sink that cannot
write reported in /health/ready, reloads, sampling, and a full queue dropping, never waiting."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from gateway.app import GatewayApp, create_app
from gateway.manifests import Config, load_config
from gateway.requestlog import LoggedCall
from gateway.requestlog.file_sink import FileSink
from gateway.settings import Settings
from runtime.server import ModelServer
from runtime.warmup import warm
from tensorcodecs.tensor_proto import decode_tensor
from tests.conftest import runtimes_for, serve_app, write_app, write_model
from tests.gateway.requestlog.tfrecords import closed_files, index_of, read_index, read_tfrecord
from tests.waiting import eventually

INCREMENT = "def predict(x):\n    return x + 1\n"
# Appends the first element of each call's input to `calls` beside src/.
COUNTING = ("from pathlib import Path\n\nCALLS = Path(__file__).parent.parent / 'calls'\n\n"
            "def predict(x):\n    with CALLS.open('a') as file:\n        file.write(f'{int(x[0])}\\n')\n"
            "    return x + 1\n")


def _log(directory: Path, sample_rate: float = 1.0, limits: str = "") -> str:
    return f"request_log:\n  sample_rate: {sample_rate}\n  file: {{dir: {directory}{limits}}}\n"


@contextmanager
def _config(root: Path) -> Iterator[Config]:
    with runtimes_for(load_config(root)) as config:
        yield config


@asynccontextmanager
async def _gateway(root: Path, config: Config, **settings: Any) -> AsyncIterator[tuple[httpx.AsyncClient, GatewayApp]]:
    settings = {"drain_timeout_s": 2.0, **settings}
    app = create_app(Settings(config_dir=root, access_log=False, **settings), config)
    async with serve_app(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        yield client, app


def _written(app: GatewayApp, directory: Path, outcome: str = "written") -> float:
    value = app.metrics.registry.get_sample_value("gateway_request_log_records_total",
                                                  {"sink": f"file:{directory}", "outcome": outcome})
    return value or 0.0


async def test_a_log_made_under_load_is_written_completely_and_replays_as_warmup(tmp_path: Path) -> None:
    root, logs = tmp_path / "config", tmp_path / "logs"
    write_model(root, "m", "m", INCREMENT)
    # Small files: each a valid warmup file (TF Serving takes at most 1,000 records).
    write_app(root, "app", "m:1", _log(logs, limits=", max_bytes: 65536, max_record_bytes: 4096, max_files: 100"))
    requests, concurrency = 1000, 32  # a few files' worth
    with _config(root) as config:
        # A drain long enough for the writer to catch up on a loaded machine (it ends once it has).
        async with _gateway(root, config, drain_timeout_s=30.0) as (client, app):
            queue: asyncio.Queue[int] = asyncio.Queue()
            for number in range(requests):
                queue.put_nowait(number)
            answered: dict[str, int] = {}

            async def send() -> None:
                while not queue.empty():
                    number = queue.get_nowait()
                    answer = await client.post("/gateway/applications/app", json={"x": [number, number * 2]})
                    assert answer.status_code == 200, answer.text
                    assert answer.json() == {"y": [number + 1, number * 2 + 1]}
                    answered[answer.headers["x-request-id"]] = number

            await asyncio.gather(*(send() for _ in range(concurrency)))
        # Shut down: everything queued written, the open file renamed.
        assert not list(logs.glob("*.partial"))
        files = closed_files(logs)
        assert len(files) > 1  # rotated under load
        records = [(line, record) for file in files
                   for line, (offset, length, record) in zip(read_index(index_of(file)), read_tfrecord(file),
                                                             strict=True)
                   if (line["offset"], line["length"]) == (offset, length)]
        assert len(records) == sum(len(read_index(index_of(f))) for f in files) == requests
        assert sorted(line["request_id"] for line, _ in records) == sorted(answered)  # each request once
        assert _written(app, logs) == requests
        for line, record in records:
            number = answered[line["request_id"]]
            assert (line["application"], line["stage"], line["variant"], line["model"], line["version"],
                    line["status"]) == ("app", 1, "m:1", "m", 1, 200)
            assert record.log_metadata.model_spec.name == "m"
            assert record.log_metadata.model_spec.version.value == 1
            np.testing.assert_array_equal(decode_tensor(record.predict_log.request.inputs["x"]), [number, number * 2])
            np.testing.assert_array_equal(decode_tensor(record.predict_log.response.outputs["y"]),
                                          [number + 1, number * 2 + 1])
    # Each closed file (at most 1,000 records: TF Serving's bound) is a warmup file of the model.
    counted = 0
    for number, file in enumerate(files):
        folder = write_model(tmp_path / f"warm{number}", "m", "m", COUNTING, extra=f"warmup: {file}")
        server = ModelServer.for_folder(folder, chdir=False)
        try:
            assert warm(server, 30) == len(read_index(index_of(file)))
        finally:
            server.invoker.close()
        replayed = [int(line) for line in (folder / "calls").read_text().split()]
        assert replayed == [answered[line["request_id"]] for line in read_index(index_of(file))]
        counted += len(replayed)
    assert counted == requests
    print(f"\n{requests} requests logged in {len(files)} files, each replayed as a warmup file")


async def test_a_sink_that_cannot_write_is_reported_in_ready_detail_and_the_gateway_stays_ready(
        tmp_path: Path) -> None:
    root, blocker = tmp_path / "config", tmp_path / "blocker"
    blocker.write_text("a file where the log's parent directory should be")
    write_model(root, "m", "m", INCREMENT)
    write_app(root, "app", "m:1", _log(blocker / "logs"))
    with _config(root) as config:
        async with _gateway(root, config) as (client, app):
            ready = await client.get("/health/ready")
            assert ready.json()["request_logs"] == {f"file:{blocker / 'logs'}": {"ok": True, "error": None,
                                                                                 "queued": 0}}
            assert (await client.post("/gateway/applications/app", json={"x": [1]})).json() == {"y": [2]}

            async def reported() -> bool:
                detail = (await client.get("/health/ready")).json()["request_logs"][f"file:{blocker / 'logs'}"]
                return detail["ok"] is False and "NotADirectoryError" in detail["error"]

            await eventually(reported, what="the sink's failure in /health/ready")
            ready = await client.get("/health/ready")
            assert (ready.status_code, ready.json()["status"]) == (200, "ready")
            assert _written(app, blocker / "logs", "failed") == 1


async def test_a_reload_keeps_an_unchanged_sinks_file_open_and_closes_a_removed_one(tmp_path: Path) -> None:
    root, kept, removed = tmp_path / "config", tmp_path / "kept", tmp_path / "removed"
    write_model(root, "m", "m", INCREMENT)
    write_app(root, "a", "m:1", _log(kept))
    write_app(root, "b", "m:1", _log(removed))
    with _config(root) as config:
        async with _gateway(root, config) as (client, app):
            for name in ("a", "b"):
                assert (await client.post(f"/gateway/applications/{name}", json={"x": [1]})).status_code == 200
            await eventually(lambda: _true(_written(app, kept) == _written(app, removed) == 1), what="both written")
            [open_file] = kept.glob("*.tfrecord.partial")
            write_app(root, "b", "m:1")  # no request_log any more
            assert (await client.post("/admin/reload")).json()["applied"] is True
            await eventually(lambda: _true(len(closed_files(removed)) == 1 and not list(removed.glob("*.partial"))),
                             what="the removed sink's file closed")
            assert (await client.post("/gateway/applications/a", json={"x": [2]})).status_code == 200
            assert (await client.post("/gateway/applications/b", json={"x": [2]})).status_code == 200
            await eventually(lambda: _true(_written(app, kept) == 2), what="the second record")
            assert list(kept.glob("*.tfrecord.partial")) == [open_file]  # the same file, still open
            assert len(read_tfrecord(open_file)) == 2
            assert list((await client.get("/health/ready")).json()["request_logs"]) == [f"file:{kept}"]
        assert len(read_tfrecord(closed_files(removed)[0])) == 1  # b's second request not logged


async def test_sampling_per_request_and_per_call_and_a_call_logged_by_both(tmp_path: Path) -> None:
    root = tmp_path / "config"
    never, app_logs, model_logs = tmp_path / "never", tmp_path / "app", tmp_path / "model"
    write_model(root, "m", "m", INCREMENT, extra=_log(model_logs, 0.5))
    write_model(root, "quiet", "quiet", INCREMENT)
    write_app(root, "silent", "quiet:1", _log(never, 0.0))
    write_app(root, "both", "m:1", _log(app_logs))
    calls = 400
    with _config(root) as config:
        async with _gateway(root, config) as (client, app):
            for _ in range(50):
                assert (await client.post("/gateway/applications/silent", json={"x": [1]})).status_code == 200
            for number in range(calls):
                assert (await client.post("/gateway/models/m", json={"x": [number]})).status_code == 200
            app.state.dataplane.request_logs.draw = lambda: 0.0  # the model's log samples the next call
            answer = await client.post("/gateway/applications/both", json={"x": [7]})
            both_id = answer.headers["x-request-id"]
    assert not never.exists() or not any(never.iterdir())  # sample_rate 0.0: nothing, no file
    model_lines = [line for f in closed_files(model_logs) for line in read_index(index_of(f))]
    route_lines = [line for line in model_lines if line["application"] is None]
    assert 140 <= len(route_lines) <= 260  # binomial(400, 0.5): 6 standard deviations either side
    assert all((line["stage"], line["variant"], line["model"]) == (None, None, "m") for line in route_lines)
    [app_line] = [line for f in closed_files(app_logs) for line in read_index(index_of(f))]
    assert (app_line["request_id"], app_line["application"]) == (both_id, "both")
    # The stage call of a model with its own log goes to that log too when it samples the call.
    assert [line["request_id"] for line in model_lines if line["application"] == "both"] == [both_id]


async def test_failed_calls_are_recorded_without_a_response_and_v1_predictions_as_model_calls(
        tmp_path: Path) -> None:
    root, logs = tmp_path / "config", tmp_path / "logs"
    failing = "def predict(x):\n    if x[0] < 0:\n        raise ValueError('negative')\n    return x + 1\n"
    write_model(root, "m", "m", failing, extra=_log(logs))
    with _config(root) as config:
        async with _gateway(root, config) as (client, _):
            failed = await client.post("/gateway/models/m", json={"x": [-1]})
            assert failed.status_code == 500
            answer = await client.post("/v1/models/m:predict", json={"instances": [3]})
            assert answer.json() == {"predictions": [4]}
    [file] = closed_files(logs)
    (failed_line, v1_line) = read_index(index_of(file))
    (_, _, failed_record), (_, _, v1_record) = read_tfrecord(file)
    assert (failed_line["request_id"], failed_line["status"]) == (failed.headers["x-request-id"], 500)
    assert failed_line["error"].startswith("model_error: ")
    assert "negative" in failed_line["error"]
    assert not failed_record.predict_log.HasField("response")
    np.testing.assert_array_equal(decode_tensor(failed_record.predict_log.request.inputs["x"]), [-1])
    assert (v1_line["status"], v1_line["application"], v1_line["model"], v1_line["version"]) == (200, None, "m", 1)
    np.testing.assert_array_equal(decode_tensor(v1_record.predict_log.response.outputs["y"]), [4])
    assert v1_record.predict_log.request.model_spec.signature_name == "predict"


async def test_a_full_queue_drops_records_and_every_request_is_still_answered(tmp_path: Path,
                                                                            monkeypatch: Any) -> None:
    root, logs = tmp_path / "config", tmp_path / "logs"
    write_model(root, "m", "m", INCREMENT)
    write_app(root, "app", "m:1", _log(logs))
    release, taken = threading.Event(), threading.Event()
    deliver = FileSink._deliver

    def stuck(sink: FileSink, call: LoggedCall) -> None:  # a disk that does not answer
        taken.set()
        release.wait(30)
        deliver(sink, call)

    monkeypatch.setattr(FileSink, "_deliver", stuck)
    requests = 300
    with _config(root) as config:
        async with _gateway(root, config, request_log_queue_size=1) as (client, app):
            try:
                first = await client.post("/gateway/applications/app", json={"x": [0]})
                assert first.status_code == 200
                await eventually(lambda: _true(taken.is_set()), what="the writer stuck on the first record")
                answers = await asyncio.gather(*(client.post("/gateway/applications/app", json={"x": [n]})
                                                 for n in range(1, requests)))
                # Answered while the writer is stuck: a full queue drops, never waits.
                assert [a.status_code for a in answers] == [200] * (requests - 1)
                assert _written(app, logs, "dropped") == requests - 2  # one taken, one queued
            finally:
                release.set()
    written, dropped = _written(app, logs), _written(app, logs, "dropped")
    assert (written, dropped) == (2, requests - 2)
    assert written == sum(len(read_tfrecord(f)) for f in closed_files(logs))


async def _true(value: bool) -> bool:
    return value

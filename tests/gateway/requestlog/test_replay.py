"""`gateway logs replay` against a real gateway: uvicorn on loopback, the example config served
by the real embedded runtime."""

from __future__ import annotations

import asyncio
import hashlib
import re
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from gateway.app import create_app
from gateway.cli import main
from gateway.manifests import Config, load_config
from gateway.requestlog.call import LoggedCall
from gateway.requestlog.reading import LogFileError, read_log
from gateway.requestlog.replay import Tally, calls, compare
from gateway.settings import ApiKey, AuthSettings, Settings
from protos.tensorflow.types_pb2 import DT_FLOAT
from protos.tensorflow_serving.prediction_log_pb2 import PredictionLog
from tensorcodecs.tensor_proto import encode_tensor
from tensorcodecs.tfrecord import encode_record
from tests.conftest import REPO, free_port, serve_app
from tests.gateway.requestlog.log_files import STEM, call, write_log
from tests.tfserving_server import FakeTFServing

KEY = "replay-key"


@pytest.fixture
async def gateway(example_config: Config) -> AsyncIterator[str]:
    async with serve_app(create_app(Settings(access_log=False), example_config)) as url:
        yield url


async def replay(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = await asyncio.to_thread(main, ["logs", "replay", *args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def fahrenheit(request_id: str, values: list[int], **fields: Any) -> LoggedCall:
    """celsius_model:1's call, answered as it answers."""
    inputs = {"fahrenheit": np.array(values, dtype=np.int64)}
    celsius = ((np.array(values) - 32) * 5 / 9).astype(np.float32)
    outputs: dict[str, np.ndarray] = {"celsius": celsius, "readings": np.array(len(values), dtype=np.int64)}
    return call(request_id, model="celsius_model", signature="to_celsius", inputs=inputs, outputs=outputs,
                **fields)


async def test_each_record_goes_to_the_model_version_that_ran(gateway: str, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    near = fahrenheit("req-5", [-40, 32, 212])
    near.outputs["celsius"][2] = 100.0001  # type: ignore[index]  # float noise: still equal
    path = write_log(tmp_path, [
        call("req-1"),
        call("req-2", outputs={"number": np.array([9, 9, 9], dtype=np.int32)}),
        call("req-3", failed=True, status=503, error="unavailable: the runtime restarted"),
        call("req-4", model="missing_model"),
        near,
        fahrenheit("req-6", [50], application="pipeline_app", stage=1, variant="celsius_model:1"),
    ])
    status, out, err = await replay(capsys, str(path), "--url", gateway, "--rate", "200")
    assert (status, err) == (1, "")
    lines = out.splitlines()
    assert lines[0] == "record 2: outputs differ from the log: number: logged [9,9,9], answered [2,3,4]"
    # No metadata for a record naming a signature: TF Serving's REST route, which checks it, says why.
    assert lines[1].startswith('record 4: /v1/models/missing_model/versions/1:predict answered 404: {"error":')
    assert lines[2:] == [
        f"sent 6 request(s) to {gateway}: 5 answered 2xx, 1 failed",
        "  failed: 404 x1",
        "  outputs equal to the logged ones: 3, different: 1, not compared: 1 (no logged outputs)",
    ]
    status, out, _ = await replay(capsys, str(path), "--url", gateway, "--rate", "200", "--limit", "1")
    assert status == 0
    assert out.splitlines()[0] == f"sent 1 request(s) to {gateway}: 1 answered 2xx, 0 failed"


async def test_strings_and_unversioned_records(gateway: str, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    kelvin = np.array([200.0, 300.0, 400.0])
    phase = call("req-1", model="phase_model", version=None, signature="phase", inputs={"kelvin": kelvin},
                 outputs={"phase": np.array([b"ice", b"water", b"steam"], dtype=object)})
    wrong = call("req-2", model="phase_model", version=None, signature="phase", inputs={"kelvin": kelvin},
                 outputs={"phase": np.array([b"ice", b"ice", b"\xff"], dtype=object)})
    status, out, _ = await replay(capsys, str(write_log(tmp_path, [phase, wrong])), "--url", gateway)
    assert status == 0
    assert out.splitlines() == [
        'record 2: outputs differ from the log: phase: logged ["ice","ice",{"b64":"/w=="}], '
        'answered ["ice","water","steam"]',
        f"sent 2 request(s) to {gateway}: 2 answered 2xx, 0 failed",
        "  outputs equal to the logged ones: 1, different: 1, not compared: 0 (no logged outputs)",
    ]


async def test_a_directory_of_logs(gateway: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_log(tmp_path, [call("req-1")], stem="requests-20261201T100000.000000Z-p1-000001")
    write_log(tmp_path, [call("req-2", outputs={"number": np.array([0, 0, 0], dtype=np.int32)})],
              stem="requests-20261201T110000.000000Z-p1-000002", partial=True)
    status, out, _ = await replay(capsys, str(tmp_path), "--url", gateway)
    assert status == 0
    assert out.splitlines()[:2] == [
        "requests-20261201T110000.000000Z-p1-000002.tfrecord.partial record 1: outputs differ from the log: "
        "number: logged [0,0,0], answered [2,3,4]",
        f"sent 2 request(s) to {gateway}: 2 answered 2xx, 0 failed",
    ]


async def test_the_rate_is_a_bound(gateway: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_log(tmp_path, [call(f"req-{n}") for n in range(20)])
    started = time.monotonic()
    status, out, _ = await replay(capsys, str(path), "--url", gateway, "--rate", "50")
    elapsed = time.monotonic() - started
    assert status == 0
    assert "sent 20 request(s)" in out
    assert elapsed >= 19 / 50


def pipeline_request(request_id: str, phases: list[bytes]) -> list[LoggedCall]:
    """The three stage calls of one pipeline_app request, as the application logs them."""
    stage: dict[str, Any] = {"application": "pipeline_app"}
    celsius = np.array([-40.0, 0.0, 100.0], dtype=np.float32)
    kelvin = celsius.astype(np.float64) + 273.15
    return [
        fahrenheit(request_id, [-40, 32, 212], **stage, stage=1, variant="celsius_model:1"),
        call(request_id, model="kelvin_model", signature="to_kelvin", inputs={"celsius": celsius},
             outputs={"kelvin": kelvin}, **stage, stage=2, variant="kelvin_model:1"),
        call(request_id, model="phase_model", signature="phase", inputs={"kelvin": kelvin},
             outputs={"phase": np.array(phases, dtype=object)}, **stage, stage=3, variant="phase_model:1"),
    ]


async def test_an_application_gets_its_stage_one_records(gateway: str, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    path = write_log(tmp_path, [
        *pipeline_request("req-a", [b"ice", b"water", b"steam"]),
        call("req-m"),  # a model route's call
        call("req-i", application="increment_app", stage=1, variant="increment_model:1"),
        *pipeline_request("req-b", [b"steam", b"steam", b"steam"]),
    ])
    status, out, _ = await replay(capsys, str(path), "--url", gateway, "--application", "pipeline_app")
    assert status == 0
    assert out.splitlines() == [
        'record 6: outputs differ from the log: phase: logged ["steam","steam","steam"], '
        'answered ["ice","water","steam"]',
        f"sent 2 request(s) to {gateway} (application pipeline_app): 2 answered 2xx, 0 failed",
        "  outputs equal to the logged ones: 1, different: 1, not compared: 0 (no logged outputs)",
        "  skipped 6 record(s): not stage 1 of pipeline_app",
    ]


async def test_without_an_index_every_record_goes_to_the_application(gateway: str, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    path = write_log(tmp_path, [call("req-1"), call("req-2")], index=False)
    status, out, _ = await replay(capsys, str(path), "--url", gateway, "--application", "increment_app")
    assert status == 0
    assert out.splitlines()[:2] == [
        f"sent 2 request(s) to {gateway} (application increment_app): 2 answered 2xx, 0 failed",
        "  outputs equal to the logged ones: 2, different: 0, not compared: 0 (no logged outputs)",
    ]


async def test_the_api_key_is_sent(example_config: Config, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    auth = AuthSettings(api_keys=(ApiKey("replay", hashlib.sha256(KEY.encode()).hexdigest()),))
    path = write_log(tmp_path, [call("req-1")])
    async with serve_app(create_app(Settings(auth=auth, access_log=False), example_config)) as url:
        status, out, _ = await replay(capsys, str(path), "--url", url)
        assert status == 1
        assert out.splitlines()[0].startswith("record 1: /v1/models/increment_model/versions/1:predict answered 401")
        status, out, _ = await replay(capsys, str(path), "--url", url, "--api-key", KEY)
        assert status == 0
        assert "1 answered 2xx, 0 failed" in out


async def test_an_unreachable_gateway(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    status, out, err = await replay(capsys, str(write_log(tmp_path, [call("req-1"), call("req-2")])), "--url", url)
    assert status == 1
    assert f"sent 1 request(s) to {url}: 0 answered 2xx, 1 failed" in out
    assert err.startswith(f"gateway logs replay: {url} does not answer (")
    assert err.endswith("): stopped\n")


async def test_bad_arguments_and_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = await replay(capsys, str(tmp_path / "missing.tfrecord"), "--url", "http://127.0.0.1:9")
    assert status == 2
    assert "no such file or directory" in err
    with pytest.raises(SystemExit) as exited:
        await replay(capsys, str(tmp_path), "--url", "http://127.0.0.1:9", "--rate", "0")
    assert exited.value.code == 2
    assert "--rate: must be more than 0 and at most 1000 requests per second" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        await replay(capsys, str(tmp_path), "--url", "127.0.0.1:8000")
    assert exited.value.code == 2
    assert "--url: must be an http:// or https:// URL with a host, got '127.0.0.1:8000'" in capsys.readouterr().err


async def test_the_command_as_a_user_runs_it(gateway: str, tmp_path: Path) -> None:
    path = write_log(tmp_path, [call("req-1"), call("req-2", failed=True, status=500, error="internal: boom")])
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "logs", "replay", str(path), "--url", gateway, "--timeout", "5",
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert (process.returncode, err) == (0, b"")
    assert out.decode().splitlines() == [
        f"sent 2 request(s) to {gateway}: 2 answered 2xx, 0 failed",
        "  outputs equal to the logged ones: 1, different: 0, not compared: 1 (no logged outputs)",
    ]


def _toy_version_2(tmp_path: Path, tfs: FakeTFServing) -> Path:
    """A config directory with one remote model, toy version 2, served by `tfs` as Toy."""
    config_dir = tmp_path / "config"
    (config_dir / "models").mkdir(parents=True)
    (config_dir / "models" / "toy.yaml").write_text(
        "kind: Model\nname: toy\nversion: 2\n"
        f"backend: {{protocol: tensorflow-serving, target: '{tfs.target}', model_name: Toy, version: 2}}\n")
    return config_dir


async def test_a_logged_signature_is_the_one_replayed(tfs: FakeTFServing, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    config_dir = _toy_version_2(tmp_path, tfs)
    x = np.array([[1.0, 2.0]], dtype=np.float32)
    scaled = call("req-1", model="toy", version=2, signature="scaled", inputs={"input_1": x},
                  outputs={"scaled": x * 100})
    wrong = call("req-2", model="toy", version=2, signature="scaled", inputs={"input_1": x},
                 outputs={"scaled": x})
    unknown = call("req-3", model="toy", version=2, signature="nowhere", inputs={"input_1": x}, outputs={"y": x})
    path = write_log(tmp_path, [scaled, wrong, unknown])
    async with serve_app(create_app(Settings(access_log=False), load_config(config_dir))) as url:
        status, out, err = await replay(capsys, str(path), "--url", url, "--rate", "200")
    assert (status, err) == (0, "")
    assert out.splitlines() == [
        "record 2: outputs differ from the log: scaled: logged [[1.0,2.0]], answered [[100.0,200.0]]",
        f"sent 2 request(s) to {url}: 2 answered 2xx, 0 failed",
        "  outputs equal to the logged ones: 1, different: 1, not compared: 0 (no logged outputs)",
        "  skipped 1 record(s): a signature the gateway does not describe",
    ]


async def test_a_logged_signature_is_replayed_when_the_metadata_cannot_be_read(
        tfs: FakeTFServing, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config_dir = _toy_version_2(tmp_path, tfs)
    x = np.array([[1.0, 2.0]], dtype=np.float32)
    scaled = call("req-1", model="toy", version=2, signature="scaled", inputs={"input_1": x},
                  outputs={"scaled": x * 100})
    unknown = call("req-2", model="toy", version=2, signature="nowhere", inputs={"input_1": x}, outputs={"y": x})
    path = write_log(tmp_path, [scaled, unknown])
    async with serve_app(create_app(Settings(access_log=False), load_config(config_dir))) as url:
        tfs.metadata_unavailable = True
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"{url}/v1/models/toy/versions/2/metadata")).status_code != 200
        status, out, err = await replay(capsys, str(path), "--url", url, "--rate", "200")
    # Sent with its signature all the same: the default one would answer other outputs.
    assert status == 1
    assert err == ""
    lines = out.splitlines()
    assert lines[0].startswith("record 2: ")
    assert "nowhere" in lines[0]
    assert lines[1:] == [
        f"sent 2 request(s) to {url}: 1 answered 2xx, 1 failed",
        "  failed: 400 x1",
        "  outputs equal to the logged ones: 1, different: 0, not compared: 0 (no logged outputs)",
    ]


def test_an_answer_that_leaves_logged_outputs_out_differs() -> None:
    logged = {"y": encode_tensor(np.array([1.0, 2.0], dtype=np.float32)),
              "z": encode_tensor(np.array([3], dtype=np.int32))}
    assert compare(logged, {}) == ["no output in common with the log (logged: y, z; answered: none)"]
    assert compare(logged, {"other": [1]}) == ["no output in common with the log (logged: y, z; answered: other)"]
    assert compare(logged, {"z": [3]}) == ["y: missing from the answer"]
    assert compare(logged, {"z": [3]}, contract=["z"]) == []  # y is outside the route's contract
    assert compare({"z": logged["z"]}, {"y": [1.0, 2.0], "z": [3]}, output_filter=["z"]) == []
    assert compare(logged, {"y": [1.0, 2.0], "z": [4]}) == ["z: logged [3], answered [4]"]


async def test_an_indexed_file_sends_only_the_records_its_index_names(gateway: str, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    path = write_log(tmp_path, [*pipeline_request("req-a", [b"ice", b"water", b"steam"]),
                                *pipeline_request("req-b", [b"ice", b"water", b"steam"])], partial=True)
    index = tmp_path / f"{STEM}.index.jsonl.partial"
    index.write_text("".join(index.read_text().splitlines(keepends=True)[:3]))  # the index lags its records
    status, out, _ = await replay(capsys, str(path), "--url", gateway, "--application", "pipeline_app")
    assert status == 0
    assert out.splitlines() == [
        f"sent 1 request(s) to {gateway} (application pipeline_app): 1 answered 2xx, 0 failed",
        "  outputs equal to the logged ones: 1, different: 0, not compared: 0 (no logged outputs)",
        "  skipped 3 record(s): no index line (cannot tell its stage)",
        "  skipped 2 record(s): not stage 1 of pipeline_app",
    ]


async def test_a_request_whose_last_stage_was_not_logged_is_not_compared(
        gateway: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_log(tmp_path, [*pipeline_request("req-a", [b"ice", b"water", b"steam"])[:2],
                                *pipeline_request("req-b", [b"ice", b"water", b"steam"])])
    status, out, _ = await replay(capsys, str(path), "--url", gateway, "--application", "pipeline_app")
    assert status == 0
    assert out.splitlines() == [
        f"sent 2 request(s) to {gateway} (application pipeline_app): 2 answered 2xx, 0 failed",
        "  outputs equal to the logged ones: 1, different: 0, not compared: 0 (no logged outputs)",
        "  not compared: 1 request(s) whose last stage was not logged",
        "  skipped 3 record(s): not stage 1 of pipeline_app",
    ]


async def test_ctrl_c_prints_the_summary_so_far(tmp_path: Path) -> None:
    silent = socket.socket()  # accepts connections and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    silent.setblocking(False)
    url = f"http://127.0.0.1:{silent.getsockname()[1]}"
    path = write_log(tmp_path, [call("req-1"), call("req-2")])
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "logs", "replay", str(path), "--url", url, cwd=REPO,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            # Ctrl-C reaches it even when the tests run in a shell's background (SIGINT ignored there).
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        # Interrupted once it waits for the model's metadata (its connection came), however long
        # the interpreter took to start on a loaded machine.
        connection, _ = await asyncio.wait_for(asyncio.get_running_loop().sock_accept(silent), 30)
        process.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(process.communicate(), 30)
        connection.close()
    finally:
        silent.close()
    assert process.returncode == 130
    assert b"Traceback" not in err
    # gRPC's core may log its poller's shutdown (`E1201 ... ev_epoll1_linux.cc ...`) as the
    # interpreter ends: the command's own words are the rest.
    own = [line for line in err.decode().splitlines() if not re.match(r"[EWI]\d{4} \d\d:\d\d:\d\d", line)]
    assert own == ["gateway logs replay: interrupted"]
    assert out.decode().splitlines()[0] == f"sent 0 request(s) to {url}: 0 answered 2xx, 0 failed"


def test_a_record_too_large_to_decode_is_skipped(tmp_path: Path) -> None:
    log = PredictionLog()
    log.predict_log.request.model_spec.name = "toy"
    huge = log.predict_log.request.inputs["input_1"]
    huge.dtype = DT_FLOAT
    huge.tensor_shape.dim.add().size = 10**12
    path = tmp_path / "huge.tfrecord"
    path.write_bytes(encode_record(log.SerializeToString()))
    tally = Tally()

    def fail(error: LogFileError) -> None:
        pytest.fail(str(error))

    assert list(calls(read_log(path, warn=pytest.fail, fail=fail), None, None, tally)) == []
    assert tally.skipped == {"inputs that cannot be decoded": 1}


async def test_tf_default_key_names_a_models_only_signature(gateway: str, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    path = write_log(tmp_path, [call("req-1", signature="serving_default")])  # as warmup files name it
    status, out, _ = await replay(capsys, str(path), "--url", gateway)
    assert status == 0
    assert out.splitlines() == [
        f"sent 1 request(s) to {gateway}: 1 answered 2xx, 0 failed",
        "  outputs equal to the logged ones: 1, different: 0, not compared: 0 (no logged outputs)",
    ]

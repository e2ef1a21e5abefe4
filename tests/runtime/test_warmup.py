"""The runtime warms its model before it listens: every record through the handler its call
reaches, in every style; a failing record, a bad file or the time bound end the runtime."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest

from modelfolder import WarmupError
from protos.tensorflow_serving.classification_pb2 import ClassificationRequest
from protos.tensorflow_serving.prediction_log_pb2 import ClassifyLog, PredictionLog, PredictStreamedLog
from runtime.errors import RuntimeCallError
from runtime.server import ModelServer
from runtime.warmup import EXIT_CODE, warm
from tests.conftest import write_model
from tests.warmup_files import int_logs, predict_log, write_warmup

# Appends each call's input and process id to `calls` beside src/ (one line per call, from any process).
COUNTING = ("import os\nfrom pathlib import Path\n{imports}\nCALLS = Path(__file__).parent.parent / 'calls'\n\n"
            "{define} predict(x):\n{wait}"
            "    with CALLS.open('a') as file:\n        file.write(f'{{int(x[0])}} {{os.getpid()}}\\n')\n"
            "    if int(x[0]) == {fail}:\n        raise ValueError('cannot take {fail}')\n"
            "    if int(x[0]) == {hang}:\n        import time\n        time.sleep(30)\n"
            "    return x\n")


def counting(imports: str = "", define: str = "def", wait: str = "", fail: int = -1, hang: int = -1) -> str:
    return COUNTING.format(imports=imports, define=define, wait=wait, fail=fail, hang=hang)


def calls_by_pid(folder: Path) -> list[tuple[int, int]]:
    """(input, process id) of each call, in order."""
    path = folder / "calls"
    lines = path.read_text().splitlines() if path.exists() else []
    return [(int(value), int(pid)) for value, pid in (line.split() for line in lines)]


def calls(folder: Path) -> list[int]:
    path = folder / "calls"
    return [int(line.split()[0]) for line in path.read_text().splitlines()] if path.exists() else []


def model(tmp_path: Path, source: str, logs: list[PredictionLog], extra: str = "") -> Path:
    folder = write_model(tmp_path, "counter", "counter", source, extra=f"warmup: warmup.tfrecord\n{extra}")
    write_warmup(folder / "warmup.tfrecord", logs)
    return folder


def warmed(folder: Path, timeout_s: float = 30) -> int:
    server = ModelServer.for_folder(folder, chdir=False)
    try:
        return warm(server, timeout_s)
    finally:
        server.invoker.close()


@pytest.mark.parametrize("source", [
    counting(),
    counting(imports="import asyncio", define="async def", wait="    await asyncio.sleep(0)\n"),
], ids=["numpy-sync", "numpy-async"])
def test_every_record_is_answered_by_the_model(tmp_path: Path, source: str) -> None:
    folder = model(tmp_path, source, int_logs(4, 5, 6, model="counter"))
    assert warmed(folder) == 3
    assert calls(folder) == [4, 5, 6]


def test_every_worker_process_answers_every_record(tmp_path: Path) -> None:
    # A quick model and a 2-record file: without a call per worker one process would take them all.
    folder = model(tmp_path, counting(), int_logs(4, 5, model="counter"), "workers: 3")
    assert warmed(folder) == 2
    seen = calls_by_pid(folder)
    pids = {pid for _, pid in seen}
    assert len(pids) == 3
    assert sorted(seen) == sorted((value, pid) for value in (4, 5) for pid in pids)
    assert [value for value, _ in seen] == [4, 4, 4, 5, 5, 5]  # record by record


def test_a_hydrosphere_style_model_warms_as_it_serves(tmp_path: Path) -> None:
    source = ("import hydro_serving_grpc as hs\nfrom pathlib import Path\n\n"
              "def predict(x):\n    with (Path(__file__).parent.parent / 'calls').open('a') as f:\n"
              "        f.write(f'{x.int_val[0]}\\n')\n"
              "    return hs.PredictResponse(outputs={'y': hs.TensorProto(dtype=hs.DT_INT32, int_val=x.int_val,"
              " tensor_shape=x.tensor_shape)})\n")
    folder = model(tmp_path, source, int_logs(7, 8))
    assert warmed(folder) == 2
    assert calls(folder) == [7, 8]


def test_no_warmup_file_no_calls(tmp_path: Path) -> None:
    folder = write_model(tmp_path, "counter", "counter", counting())
    assert warmed(folder) == 0
    assert calls(folder) == []


def test_a_record_the_model_fails_names_the_record_and_stops_there(tmp_path: Path) -> None:
    folder = model(tmp_path, counting(fail=2), int_logs(1, 2, 3))
    with pytest.raises(WarmupError) as caught:
        warmed(folder)
    assert caught.value.record == 2
    assert str(caught.value) == (f"warmup failed at record 2 of {folder / 'warmup.tfrecord'}: "
                                 "INTERNAL: ValueError: cannot take 2")
    assert calls(folder) == [1, 2]


def test_a_record_that_breaks_the_contract_fails_as_its_request_would(tmp_path: Path) -> None:
    folder = model(tmp_path, counting(), [*int_logs(1), predict_log({"z": np.array([1], dtype=np.int32)})])
    with pytest.raises(WarmupError, match=r"at record 2 of .*: INVALID_ARGUMENT: .*'x'"):
        warmed(folder)


def test_a_classify_record_goes_through_classify(tmp_path: Path) -> None:
    record = PredictionLog(classify_log=ClassifyLog(request=ClassificationRequest()))
    folder = model(tmp_path, counting(), [*int_logs(1), record])
    server = ModelServer.for_folder(folder, chdir=False)
    try:
        with pytest.raises(RuntimeCallError) as direct:  # what a Classify call gets
            server._classify(ClassificationRequest())
        with pytest.raises(WarmupError) as caught:
            warm(server, 30)
    finally:
        server.invoker.close()
    assert caught.value.record == 2
    assert str(direct.value) in str(caught.value)


def test_the_time_bound_fails_the_warmup_at_the_record_running(tmp_path: Path) -> None:
    folder = model(tmp_path, counting(hang=2), int_logs(1, 2, 3))
    with pytest.raises(WarmupError, match=r"at record 2 of .*: the warmup did not finish within 0.5s"):
        warmed(folder, timeout_s=0.5)


def _serve(folder: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "runtime", "serve", str(folder), "--port", "0", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_the_runtime_listens_only_once_warmed(tmp_path: Path) -> None:
    folder = model(tmp_path, counting(), int_logs(1, 2, 3, model="counter"))
    process = _serve(folder)
    try:
        assert process.stdout is not None
        event = json.loads(process.stdout.readline())
        assert event["event"] == "listening"
        assert calls(folder) == [1, 2, 3]  # before it said where it listens
        with grpc.insecure_channel(f"127.0.0.1:{event['port']}") as channel:
            grpc.channel_ready_future(channel).result(timeout=10)
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    assert "warmed model counter:1 with 3 records in" in stderr


def test_a_failed_warmup_ends_the_runtime_with_its_own_code(tmp_path: Path) -> None:
    folder = model(tmp_path, counting(fail=2), int_logs(1, 2, 3))
    process = _serve(folder, "--warmup-timeout", "10")
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == EXIT_CODE
    message = f"warmup failed at record 2 of {folder / 'warmup.tfrecord'}: INTERNAL: ValueError: cannot take 2"
    assert f"runtime: {message}" in stderr
    assert json.loads(stdout.splitlines()[-1]) == {"event": "warmup_failed", "error": message}
    assert "listening" not in stdout


def test_a_streamed_predict_record_is_replayed_as_its_one_predict(tmp_path: Path) -> None:
    request = int_logs(9, model="counter")[0].predict_log.request
    streamed = PredictionLog(predict_streamed_log=PredictStreamedLog(request=[request]))
    folder = model(tmp_path, counting(), [*int_logs(8), streamed])
    assert warmed(folder) == 2
    assert calls(folder) == [8, 9]


def test_warmup_calls_leave_the_time_per_request_as_it_was(tmp_path: Path) -> None:
    source = counting(wait="    import time\n    time.sleep(0.05)\n")
    folder = model(tmp_path, source, int_logs(1, 2))
    server = ModelServer.for_folder(folder, chdir=False)
    try:
        assert warm(server, 30) == 2
        assert server.seconds_per_request == 0.0  # what PredictMany reports: cold calls left out
    finally:
        server.invoker.close()


@pytest.mark.parametrize("value", ["inf", "nan", "-1", "0"])
def test_a_warmup_timeout_that_is_no_finite_time_is_refused(tmp_path: Path, value: str) -> None:
    folder = model(tmp_path, counting(), int_logs(1))
    process = _serve(folder, "--warmup-timeout", value)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 2
    assert f"argument --warmup-timeout: '{value}' is not a finite number of seconds greater than 0" in stderr
    assert "Traceback" not in stderr
    assert calls(folder) == []

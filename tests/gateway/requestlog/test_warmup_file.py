"""`gateway logs warmup`: a request log turned into a warmup file that modelfolder.read_warmup
reads and the embedded runtime replays against a real model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gateway.cli import main
from gateway.requestlog.call import LoggedCall
from modelfolder.warmup import read_warmup
from runtime.server import ModelServer
from runtime.warmup import warm
from tensorcodecs.tensor_proto import decode_tensor
from tests.conftest import REPO, write_model
from tests.gateway.requestlog.log_files import call, write_log
from tests.runtime.test_warmup import calls, counting


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(["logs", "warmup", *args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def counter_call(request_id: str, value: int, **fields: Any) -> LoggedCall:
    """A call of the counting model `counter`: x int32 [value], answered y = x."""
    x = np.array([value], dtype=np.int32)
    return call(request_id, model="counter", version=1, signature="serving_default", inputs={"x": x}, outputs={"y": x},
                **fields)


def test_answered_calls_of_the_model_warm_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = write_log(tmp_path, [
        counter_call("req-1", 4),
        counter_call("req-2", 5, failed=True, status=400, error="invalid_argument: wrong input"),
        call("req-3"),  # another model's call
        counter_call("req-4", 6),
    ])
    folder = write_model(tmp_path, "counter", "counter", counting(), extra="warmup: warmup.tfrecord")
    status, out, err = run(capsys, str(log), "--out", str(folder / "warmup.tfrecord"), "--model", "counter:1")
    assert (status, err) == (0, "")
    assert out.splitlines() == [
        "  skipped 1 record(s): calls of other models",
        "  skipped 1 record(s): failed calls",
        f"wrote 2 record(s) of model counter to {folder / 'warmup.tfrecord'}",
    ]
    assert not (folder / "warmup.tfrecord.partial").exists()
    records = read_warmup(folder / "warmup.tfrecord")
    assert [(record.number, record.kind) for record in records] == [(1, "predict_log"), (2, "predict_log")]
    assert all(record.log.predict_log.HasField("response") for record in records)  # kept: TF ignores it
    server = ModelServer.for_folder(folder, chdir=False)
    try:
        assert warm(server, 30) == 2
    finally:
        server.invoker.close()
    assert calls(folder) == [4, 6]


def test_several_models_need_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = write_log(tmp_path, [counter_call("req-1", 4), call("req-2"), call("req-3")])
    out_path = tmp_path / "w.tfrecord"
    status, out, err = run(capsys, str(log), "--out", str(out_path))
    assert (status, out) == (2, "")
    assert err == (f"gateway logs warmup: {log} holds calls of several models (counter x1, increment_model x2): "
                   "say which with --model NAME[:VERSION]\n")
    assert not out_path.exists()
    status, out, err = run(capsys, str(log), "--out", str(out_path), "--model", "counter:2")
    assert status == 1
    assert err == f"gateway logs warmup: {log} has no answered call to write\n"
    assert not out_path.exists()


def test_at_most_limit_records(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = write_log(tmp_path, [counter_call(f"req-{n}", n) for n in range(5)])
    out_path = tmp_path / "w.tfrecord"
    status, out, _ = run(capsys, str(log), "--out", str(out_path), "--limit", "3")
    assert status == 0
    assert out.splitlines()[0] == "  skipped 2 record(s): more than 3"
    assert [int(decode_tensor(record.log.predict_log.request.inputs["x"])[0]) for record in read_warmup(out_path)] == [
        0, 1, 2]
    # Past the limit records are only counted: another model's call there still needs --model.
    (tmp_path / "mixed").mkdir()
    mixed = write_log(tmp_path / "mixed", [*(counter_call(f"req-{n}", n) for n in range(5)), call("req-9")])
    status, out, err = run(capsys, str(mixed), "--out", str(tmp_path / "m.tfrecord"), "--limit", "3")
    assert (status, out) == (2, "")
    assert "(counter x5, increment_model x1)" in err
    with pytest.raises(SystemExit) as exited:
        run(capsys, str(log), "--out", str(out_path), "--limit", "1001")
    assert exited.value.code == 2
    assert "--limit: must be at most 1000 (TF Serving's limit of warmup records)" in capsys.readouterr().err


def test_a_log_without_index_takes_every_record_with_a_warning(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    log = write_log(tmp_path, [counter_call("req-1", 4), counter_call("req-2", 5, failed=True)], index=False)
    out_path = tmp_path / "w.tfrecord"
    status, out, err = run(capsys, str(log), "--out", str(out_path))
    assert status == 0
    assert err == (f"gateway logs warmup: warning: {log} has no index: every record is taken, answered or not "
                   "(a failed call's record fails the warmup as the call failed)\n")
    assert out == f"wrote 2 record(s) of model counter to {out_path}\n"
    assert len(read_warmup(out_path)) == 2


def test_the_command_as_a_user_runs_it(tmp_path: Path) -> None:
    log = write_log(tmp_path, [counter_call("req-1", 4)])
    command = [sys.executable, "-m", "gateway", "logs", "warmup"]
    done = subprocess.run([*command, str(tmp_path / "missing"), "--out", str(tmp_path / "w")], cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "no such file or directory" in done.stderr
    done = subprocess.run([*command, str(log), "--out", str(tmp_path / "no" / "w")], cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert f"cannot write {tmp_path / 'no' / 'w'}: No such file or directory" in done.stderr
    done = subprocess.run([*command, str(log), "--out", str(tmp_path / "w"), "--model", "counter:x"], cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "--model: must be NAME or NAME:VERSION" in done.stderr

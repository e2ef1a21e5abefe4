"""`gateway logs show`: request logs and warmup files printed readably and as JSON lines."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format

from gateway.cli import main
from gateway.requestlog.reading import LogReader
from gateway.requestlog.records import INDEX_FIELDS, prediction_log
from modelfolder.warmup import WarmupError, read_warmup
from protos.tensorflow import types_pb2
from protos.tensorflow_serving import prediction_log_pb2
from tensorcodecs.tensor_proto import encode_tensor
from tensorcodecs.tfrecord import encode_record
from tests.conftest import REPO
from tests.gateway.requestlog.log_files import STEM, call, write_log

BANNER = "request logs".center(100, "*")


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(["logs", "show", *args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines()]


def test_answered_call_shows_header_request_and_outputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_log(tmp_path, [call("req-1")])
    status, out, err = run(capsys, str(path))
    assert (status, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == ("record 1 (offset 0, 195 bytes)  request req-1  2026-12-01T16:20:30.123456Z  status 200  "
                        "model increment_model:1  4.2 ms")
    assert lines[1] == BANNER
    end = lines.index("end".center(100, "*"))
    request = text_format.Parse("\n".join(lines[2:end]), prediction_log_pb2.PredictionLog())
    assert request.predict_log.request == prediction_log(call("req-1")).predict_log.request
    assert lines[end + 1] == "  number (int32, [3]): [1 2 3]"
    assert lines[end + 2] == "outputs".center(100, "*")
    assert 'model_spec {\n  name: "increment_model"\n  version {\n    value: 1\n  }' in out
    assert "  number (int32, [3]): [2 3 4]" in lines


def test_failed_call_shows_its_error_instead_of_outputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    failed = call("req-9", failed=True, status=504, error="deadline_exceeded: stage 1 took too long",
                  application="increment_app", stage=1, variant="increment_model:1")
    status, out, _ = run(capsys, str(write_log(tmp_path, [failed])))
    assert status == 0
    assert "status 504  application increment_app stage 1 variant increment_model:1  4.2 ms" in out.splitlines()[0]
    assert "error".center(100, "*") + "\nstatus 504: deadline_exceeded: stage 1 took too long\n" in out
    assert "outputs".center(100, "*") not in out


def test_strings_bytes_and_scalars(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inputs = {"text": np.array([b"caf\xc3\xa9", b"\xff\x00"], dtype=object), "scale": np.array(2.5, dtype=np.float32)}
    logged = call("req-2", model="phase_model", version=None, signature="phase", inputs=inputs,
                  outputs={"phase": np.array([b"ice"], dtype=object), "rows": np.array(2, dtype=np.int64)})
    path = write_log(tmp_path, [logged])
    status, out, _ = run(capsys, str(path))
    assert status == 0
    assert "model phase_model  4.2 ms" in out.splitlines()[0]
    assert "  scale (float32, scalar): 2.5" in out
    assert "  text (string, [2]): [b'caf\\xc3\\xa9', b'\\xff\\x00']" in out
    assert 'string_val: "\\377\\000"' in out
    assert "  rows (int64, scalar): 2" in out
    status, out, _ = run(capsys, str(path), "--json")
    (line,) = json_lines(out)
    assert line["inputs"] == {"scale": 2.5, "text": ["café", {"b64": "/wA="}]}
    assert line["outputs"] == {"phase": ["ice"], "rows": 2}
    assert line["model_spec"] == {"name": "phase_model", "version": None, "version_label": None,
                                  "signature_name": "phase"}


def test_big_tensors_are_summarised_not_flooded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    big = np.arange(1_000_000, dtype=np.float32)
    typed = prediction_log(call("req-3", inputs={"number": np.arange(1000, dtype=np.int32)}))
    typed.predict_log.request.inputs["number"].CopyFrom(encode_tensor(np.arange(1000, dtype=np.int32), typed=True))
    long_bytes = np.array([b"x" * 10_000], dtype=object)
    path = write_log(tmp_path, [call("req-4", inputs={"number": big}, outputs={"number": big}),
                                call("req-5", inputs={"blob": long_bytes}, outputs={"n": np.array(1, dtype=np.int32)})])
    with path.open("ab") as file:  # a record with typed values (int_val), as TF clients write them
        file.write(encode_record(typed.SerializeToString()))
    status, out, _ = run(capsys, str(path))
    assert status == 0
    assert len(out) < 12_000
    assert "# tensor_content: 4000000 bytes, the first 64 shown" in out
    assert ("  number (float32, [1000000]): "
            "[0.00000e+00 1.00000e+00 2.00000e+00 ... 9.99997e+05 9.99998e+05 9.99999e+05]") in out
    assert "# string_val: 1 value(s) longer than 64 bytes cut" in out
    assert "  blob (string, [1]): [b'" + "x" * 64 + "...']" in out
    assert "# int_val: 1000 values, the first 10 shown" in out
    assert out.count("int_val: ") == 10 + 1
    assert "  number (int32, [1000]): [  0   1   2 ... 997 998 999]" in out


def test_json_lines_carry_the_index_and_native_values(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    calls = [call("req-1"), call("req-2", failed=True, status=404, error="not_found: no model"),
             call("req-3", inputs={"x": np.array([[0.5, np.nan]], dtype=np.float64)},
                  outputs={"y": np.array([True, False])}, application="app", stage=2, variant="m:1")]
    status, out, _ = run(capsys, str(write_log(tmp_path, calls)), "--json")
    assert status == 0
    first, second, third = json_lines(out)
    assert first == {
        "file": str(tmp_path / f"{STEM}.tfrecord"), "record": 1, "offset": 0, "length": 195,
        "request_id": "req-1", "time": "2026-12-01T16:20:30.123456Z", "duration_ms": 4.2, "status": 200,
        "error": None, "application": None, "stage": None, "variant": None, "model": "increment_model",
        "version": 1, "kind": "predict_log",
        "model_spec": {"name": "increment_model", "version": 1, "version_label": None, "signature_name": "increment"},
        "inputs": {"number": [1, 2, 3]}, "output_filter": [], "outputs": {"number": [2, 3, 4]}}
    assert (second["status"], second["error"], second["outputs"]) == (404, "not_found: no model", None)
    assert (third["application"], third["stage"], third["variant"]) == ("app", 2, "m:1")
    assert third["inputs"] == {"x": [[0.5, None]]}
    assert third["outputs"] == {"y": [True, False]}
    status, out, _ = run(capsys, str(tmp_path / f"{STEM}.tfrecord"), "--json", "--limit", "2")
    assert [line["request_id"] for line in json_lines(out)] == ["req-1", "req-2"]


def warmup_file(folder: Path) -> Path:
    """A warmup file as TF Serving's documentation makes one: no index, typed values, and a
    classify request among the predict ones."""
    record = prediction_log_pb2.PredictionLog()
    request = record.predict_log.request
    request.model_spec.name = "toy"
    request.model_spec.signature_name = "serving_default"
    tensor = request.inputs["input_1"]
    tensor.dtype = types_pb2.DT_FLOAT
    tensor.tensor_shape.dim.add(size=2)
    tensor.float_val.extend([1.0, 2.0])
    classify = prediction_log_pb2.PredictionLog()
    classify.classify_log.request.model_spec.name = "toy"
    path = folder / "assets.extra" / "tf_serving_warmup_requests"
    path.parent.mkdir()
    path.write_bytes(encode_record(record.SerializeToString()) + encode_record(classify.SerializeToString()))
    return path


def test_a_warmup_file_without_index(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, str(warmup_file(tmp_path)))
    assert (status, err) == (0, "")
    assert out.splitlines()[0] == "record 1 (offset 0, 75 bytes)  model toy signature serving_default"
    assert "float_val: 1.0\n" in out
    assert "  input_1 (float32, [2]): [1. 2.]" in out
    assert "outputs".center(100, "*") + "\nno response" in out
    assert "record 2 (offset 75, 27 bytes)  model toy\n" + "classify_log".center(100, "*") in out
    status, out, _ = run(capsys, str(tmp_path / "assets.extra" / "tf_serving_warmup_requests"), "--json")
    predict, classify = json_lines(out)
    assert predict["inputs"] == {"input_1": [1.0, 2.0]}
    assert predict["outputs"] is None
    for line in (predict, classify):  # the index's keys on every line, null without an index
        assert {key: line[key] for key in INDEX_FIELDS if key not in ("offset", "length")} == dict.fromkeys(
            ("request_id", "time", "duration_ms", "status", "error", "application", "stage", "variant", "model",
             "version"))
    assert classify["kind"] == "classify_log"
    assert classify["log"] == {"classifyLog": {"request": {"modelSpec": {"name": "toy"}}}}


def test_a_partial_file_stops_quietly_at_a_truncated_last_record(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    path = write_log(tmp_path, [call("req-1"), call("req-2"), call("req-3")], partial=True)
    index = tmp_path / f"{STEM}.index.jsonl.partial"
    for cut in (195 * 2 + 5, 195 * 2 + 100, 195 * 3 - 1):  # mid-header, mid-data, the last CRC byte missing
        path.write_bytes(path.read_bytes()[:cut])
        index.write_text(index.read_text()[:-20])  # the index mid-line too
        status, out, err = run(capsys, str(path), "--json")
        assert (status, err) == (0, "")
        assert [line["request_id"] for line in json_lines(out)] == ["req-1", "req-2"]
        path.write_bytes(write_log(tmp_path, [call("req-1"), call("req-2"), call("req-3")], partial=True).read_bytes())
    closed = write_log(tmp_path, [call("req-1"), call("req-2")], stem="requests-x")
    closed.write_bytes(closed.read_bytes()[:-3])  # a closed file is never truncated: it is corrupt
    status, out, err = run(capsys, str(closed), "--json")
    assert status == 1
    assert len(json_lines(out)) == 1
    assert "record 2 at byte 195 is truncated" in err


def test_a_partial_file_renamed_while_being_read_is_read_closed(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    write_log(tmp_path, [call("req-1")])
    status, out, _ = run(capsys, str(tmp_path / f"{STEM}.tfrecord.partial"), "--json")
    assert status == 0
    assert json_lines(out)[0]["request_id"] == "req-1"


def test_corrupt_and_missing_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_log(tmp_path, [call("req-1"), call("req-2"), call("req-3")])
    data = bytearray(path.read_bytes())
    data[195 + 30] ^= 0xFF  # in record 1's data
    path.write_bytes(bytes(data))
    status, out, err = run(capsys, str(path))
    assert status == 1
    assert "request req-1" in out
    assert "req-2" not in out
    assert err == (f"gateway logs show: {path}: record 2 at byte 195: the data's checksum does not match "
                   "(corrupt)\n")
    (tmp_path / "notes.tfrecord").write_text("not a log at all, just some text")
    status, out, err = run(capsys, str(tmp_path / "notes.tfrecord"))
    assert (status, out) == (2, "")
    assert "notes.tfrecord is not a TFRecord file of PredictionLogs" in err
    (tmp_path / "proto.tfrecord").write_bytes(encode_record(b"\xff\xff\xff"))
    status, out, err = run(capsys, str(tmp_path / "proto.tfrecord"))
    assert status == 2
    assert "record 1 at byte 0 is not a PredictionLog" in err
    status, out, err = run(capsys, str(tmp_path / "missing.tfrecord"))
    assert (status, out, err) == (2, "", f"gateway logs show: {tmp_path / 'missing.tfrecord'}: no such file "
                                         "or directory\n")


def test_an_index_that_disagrees_is_warned_about(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_log(tmp_path, [call("req-1"), call("req-2"), call("req-3")])
    index = tmp_path / f"{STEM}.index.jsonl"
    lines = index.read_text().splitlines(keepends=True)
    entry = json.loads(lines[2])
    entry["offset"] += 7
    index.write_text(lines[0] + json.dumps(entry) + "\n")  # req-2's line lost, req-3's wrong
    status, out, err = run(capsys, str(path), "--json")
    assert status == 0
    assert [line.get("request_id") for line in json_lines(out)] == ["req-1", None, None]
    assert err == (f"gateway logs show: warning: {index}: the index disagrees with {path.name}: 2 record(s) "
                   "have no line in it, 1 of its line(s) match no record; records are shown as the file has them\n")


def test_a_directory_in_the_order_files_were_opened(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_log(tmp_path, [call("a-1"), call("a-2")], stem="requests-20261201T100000.000000Z-p1-000001")
    write_log(tmp_path, [call("c-1")], stem="requests-20261201T120000.000000Z-p1-000003", partial=True)
    write_log(tmp_path, [call("b-1")], stem="requests-20261201T110000.000000Z-p2-000001")
    (tmp_path / "README.txt").write_text("not a log")
    status, out, _ = run(capsys, str(tmp_path), "--json")
    assert status == 0
    assert [line["request_id"] for line in json_lines(out)] == ["a-1", "a-2", "b-1", "c-1"]
    status, out, _ = run(capsys, str(tmp_path), "--json", "--limit", "3")
    assert len(json_lines(out)) == 3
    status, out, _ = run(capsys, str(tmp_path))  # records of several files: each header names its file
    headers = [line for line in out.splitlines() if " (offset " in line]
    assert [line.split("  ")[0] for line in headers] == [
        "requests-20261201T100000.000000Z-p1-000001.tfrecord record 1 (offset 0, 195 bytes)",
        "requests-20261201T100000.000000Z-p1-000001.tfrecord record 2 (offset 195, 195 bytes)",
        "requests-20261201T110000.000000Z-p2-000001.tfrecord record 1 (offset 0, 195 bytes)",
        "requests-20261201T120000.000000Z-p1-000003.tfrecord.partial record 1 (offset 0, 195 bytes)"]
    index = tmp_path / "requests-20261201T120000.000000Z-p1-000003.index.jsonl.partial"
    status, out, _ = run(capsys, str(index), "--json")  # an index names its log
    assert [line["request_id"] for line in json_lines(out)] == ["c-1"]


def test_the_command_as_a_user_runs_it(tmp_path: Path) -> None:
    path = write_log(tmp_path, [call("req-1"), call("req-2")])
    done = subprocess.run([sys.executable, "-m", "gateway", "logs", "show", str(path), "--json", "--limit", "1"],
                          cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert (done.returncode, done.stderr) == (0, "")
    assert [json.loads(line)["request_id"] for line in done.stdout.splitlines()] == ["req-1"]
    path.write_bytes(b"\x00" * 40)
    done = subprocess.run([sys.executable, "-m", "gateway", "logs", "show", str(path)],
                          cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "is not a TFRecord file of PredictionLogs" in done.stderr
    done = subprocess.run([sys.executable, "-m", "gateway", "logs", "show", str(path), "--limit", "0"],
                          cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "--limit: must be a whole number of at least 1" in done.stderr


def test_records_are_numbered_from_1_as_warmup_errors_number_them(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    path = write_log(tmp_path, [call("req-1"), call("req-2")])
    warmup = tmp_path / "w.tfrecord"
    data = path.read_bytes()
    warmup.write_bytes(data + b"\x00" * 20)  # a third record that is not one
    with pytest.raises(WarmupError) as failed:
        read_warmup(warmup)
    assert failed.value.record == 3
    status, out, err = run(capsys, str(warmup), "--json")
    assert status == 1
    assert [line["record"] for line in json_lines(out)] == [1, 2]
    assert "record 3 at byte 390" in err


def test_a_tensor_too_large_to_decode_is_reported_not_allocated(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    log = prediction_log_pb2.PredictionLog()
    request = log.predict_log.request
    request.model_spec.name = "toy"
    huge = request.inputs["input_1"]
    huge.dtype = types_pb2.DT_FLOAT
    huge.tensor_shape.dim.add().size = 10**12  # a hand-made record: no values at all
    path = tmp_path / "huge.tfrecord"
    path.write_bytes(encode_record(log.SerializeToString()))
    status, out, err = run(capsys, str(path))
    assert (status, err) == (0, "")
    assert "  input_1: cannot be decoded: too large to decode (1000000000000 elements)" in out
    status, out, err = run(capsys, str(path), "--json")
    assert (status, err) == (0, "")
    assert json_lines(out)[0]["inputs"] == {"input_1": {"error": "too large to decode (1000000000000 elements)"}}


def test_a_directory_without_logs_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "logs").mkdir()
    (tmp_path / "README.txt").write_text("not a log")
    for folder in (tmp_path / "logs", tmp_path):
        status, out, err = run(capsys, str(folder))
        assert (status, out, err) == (2, "", f"gateway logs show: {folder} has no .tfrecord files\n")


def test_a_partial_index_is_read_again_for_records_written_after_it(tmp_path: Path) -> None:
    path = write_log(tmp_path, [call("req-1"), call("req-2"), call("req-3")], partial=True)
    index = tmp_path / f"{STEM}.index.jsonl.partial"
    lines = index.read_text().splitlines(keepends=True)
    index.write_text(lines[0])  # the index as it was when the reader opened it
    reader = LogReader(path, warn=pytest.fail)
    index.write_text("".join(lines))  # the writer has caught up since
    assert [(record.number, (record.entry or {}).get("request_id")) for record in reader] == [
        (1, "req-1"), (2, "req-2"), (3, "req-3")]

"""Warmup files: where a model's comes from (`warmup:`, a SavedModel's assets.extra file) and
reading one with TF Serving's limits (saved_model_warmup_util.cc), errors naming the record."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from gateway.manifests import load_config
from modelfolder import MAX_RECORDS, ConfigError, WarmupError, load_model_folder, read_warmup
from protos.tensorflow_serving.classification_pb2 import ClassificationRequest
from protos.tensorflow_serving.prediction_log_pb2 import ClassifyLog, PredictionLog, PredictStreamedLog
from tests.conftest import write_model
from tests.warmup_files import frame, int_logs, write_warmup

NUMPY = "def predict(x):\n    return x\n"


def test_warmup_is_relative_to_the_model_folder(tmp_path: Path) -> None:
    folder = write_model(tmp_path, "toy", "toy", NUMPY, extra="warmup: data/requests.tfrecord")
    write_warmup(folder / "data" / "requests.tfrecord", int_logs(1))
    assert load_model_folder(folder).warmup == (folder / "data" / "requests.tfrecord").resolve()


def test_an_absolute_warmup_path_is_taken_as_it_is(tmp_path: Path) -> None:
    file = write_warmup(tmp_path / "elsewhere" / "warmup", int_logs(1))
    folder = write_model(tmp_path, "toy", "toy", NUMPY, extra=f"warmup: {file}")
    assert load_model_folder(folder).warmup == file.resolve()


def test_a_missing_warmup_file_is_an_error_at_its_line(tmp_path: Path) -> None:
    folder = write_model(tmp_path, "toy", "toy", NUMPY, extra="warmup: missing.tfrecord")
    with pytest.raises(ConfigError) as caught:
        load_model_folder(folder)
    assert caught.value.location == f"{folder / 'serving.yaml'}:3"
    assert f"warmup: {(folder / 'missing.tfrecord').resolve()} is not a file" in str(caught.value)


def test_a_saved_models_assets_extra_file_is_picked_up(tmp_path: Path) -> None:
    unversioned = write_model(tmp_path, "plain", "plain", NUMPY)
    versioned = write_model(tmp_path, "toy/2", "toy", NUMPY)
    assert load_model_folder(unversioned).warmup is None
    file = write_warmup(versioned / "assets.extra" / "tf_serving_warmup_requests", int_logs(1))
    assert load_model_folder(versioned).warmup == file.resolve()  # the version's folder
    assert load_model_folder(versioned).version == 2


def test_a_remote_models_warmup_is_relative_to_its_manifest(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    write_warmup(tmp_path / "models" / "warmup" / "toy.tfrecord", int_logs(1))
    (tmp_path / "models" / "toy.yaml").write_text(
        "kind: Model\nname: toy\nwarmup: warmup/toy.tfrecord\n"
        "backend: {protocol: tensorflow-serving, target: 127.0.0.1:1, model_name: Toy, version: 1}\n")
    model = load_config(tmp_path).models[("toy", 1)]
    assert model.warmup == (tmp_path / "models" / "warmup" / "toy.tfrecord").resolve()


def test_records_are_read_in_order_with_1_based_numbers(tmp_path: Path) -> None:
    logs = int_logs(5, 6, 7)
    records = read_warmup(write_warmup(tmp_path / "w", logs))
    assert [r.number for r in records] == [1, 2, 3]
    assert [r.log for r in records] == logs
    assert {r.kind for r in records} == {"predict_log"}


def test_an_empty_file_has_no_records(tmp_path: Path) -> None:
    assert read_warmup(write_warmup(tmp_path / "w", [])) == []


def test_more_than_1000_records_are_refused_as_tf_serving_refuses_them(tmp_path: Path) -> None:
    assert MAX_RECORDS == 1000
    record = int_logs(1)[0]
    assert len(read_warmup(write_warmup(tmp_path / "full", [record] * 1000))) == 1000
    path = write_warmup(tmp_path / "over", [record] * 1001)
    with pytest.raises(WarmupError) as caught:
        read_warmup(path)
    assert str(caught.value) == (f"warmup failed at {path}: the number of warmup records exceeds the "
                                 "maximum (1000), as TF Serving refuses it")


def test_a_corrupt_record_is_named(tmp_path: Path) -> None:
    first, second = (frame(log.SerializeToString()) for log in int_logs(1, 2))
    damaged = bytearray(second)
    damaged[14] ^= 0xFF  # a byte of the second record's data: its checksum no longer matches
    path = tmp_path / "w"
    path.write_bytes(first + bytes(damaged))
    with pytest.raises(WarmupError) as caught:
        read_warmup(path)
    assert caught.value.record == 2
    assert str(caught.value) == (f"warmup failed at record 2 of {path}: at byte {len(first)}: the data's "
                                 "checksum does not match (corrupt)")


def test_a_truncated_record_is_named(tmp_path: Path) -> None:
    records = b"".join(frame(log.SerializeToString()) for log in int_logs(1, 2, 3))
    path = tmp_path / "w"
    path.write_bytes(records[:-3])
    with pytest.raises(WarmupError, match=rf"warmup failed at record 3 of {path}: at byte \d+: is truncated"):
        read_warmup(path)


def test_a_record_that_is_no_prediction_log_is_named(tmp_path: Path) -> None:
    path = write_warmup(tmp_path / "w", [*int_logs(1), b"\xff\xff\xff"])
    with pytest.raises(WarmupError, match=r"at record 2 of .*: the record at byte \d+ is not a PredictionLog"):
        read_warmup(path)


def test_a_session_run_log_is_unsupported_as_in_tf_serving(tmp_path: Path) -> None:
    session_run = struct.pack("<BB", (5 << 3) | 2, 0)  # field 5 (session_run_log), an empty message
    path = write_warmup(tmp_path / "w", [*int_logs(1, 2), session_run, PredictionLog().SerializeToString()])
    with pytest.raises(WarmupError) as caught:
        read_warmup(path)
    assert caught.value.record == 3
    assert "unsupported log type session_run_log for warmup" in str(caught.value)
    path = write_warmup(tmp_path / "empty", [PredictionLog()])
    with pytest.raises(WarmupError, match=r"at record 1 of .*: it has no log type"):
        read_warmup(path)


def test_classify_records_are_read(tmp_path: Path) -> None:
    log = PredictionLog(classify_log=ClassifyLog(request=ClassificationRequest()))
    assert [r.kind for r in read_warmup(write_warmup(tmp_path / "w", [log]))] == ["classify_log"]


def test_a_streamed_predict_record_holds_exactly_one_request_as_in_tfrt(tmp_path: Path) -> None:
    request = int_logs(1)[0].predict_log.request
    one = PredictionLog(predict_streamed_log=PredictStreamedLog(request=[request]))
    records = read_warmup(write_warmup(tmp_path / "one", [one]))
    assert [r.kind for r in records] == ["predict_streamed_log"]
    assert records[0].predict_request == request
    none = write_warmup(tmp_path / "none", [*int_logs(1), PredictionLog(predict_streamed_log=PredictStreamedLog())])
    with pytest.raises(WarmupError) as caught:
        read_warmup(none)
    assert str(caught.value) == (f"warmup failed at record 2 of {none}: "
                                 "predict_streamed_log does not contain any requests.")
    doubled = PredictionLog(predict_streamed_log=PredictStreamedLog(request=[request] * 2))
    two = write_warmup(tmp_path / "two", [doubled])
    with pytest.raises(WarmupError, match=r"at record 1 of .*: predict_streamed_log contains more than one request, "
                                          r"which is not supported by PredictStreamed\.$"):
        read_warmup(two)

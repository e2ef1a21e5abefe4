"""Remote models' warmup through their Backend (gateway.warmup), against the TF-Serving-protocol
test server, and what answers say of a model whose warmup failed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gateway.backends import UnavailableBackend
from gateway.manifests import ModelManifest, load_config
from gateway.warmup import warm_remote, warm_remotes
from modelfolder import WarmupError
from protos.tensorflow_serving.classification_pb2 import ClassificationRequest
from protos.tensorflow_serving.predict_pb2 import PredictRequest
from protos.tensorflow_serving.prediction_log_pb2 import ClassifyLog, PredictionLog
from tests.tfserving_server import FakeTFServing
from tests.warmup_files import predict_log, write_warmup


def remote(tmp_path: Path, tfs: FakeTFServing, logs: list[PredictionLog], served: str = "Toy",
           version: int = 2) -> ModelManifest:
    write_warmup(tmp_path / "models" / "warmup.tfrecord", logs)
    (tmp_path / "models" / "toy.yaml").write_text(
        "kind: Model\nname: toy\nwarmup: warmup.tfrecord\n"
        f"backend: {{protocol: tensorflow-serving, target: '{tfs.target}', model_name: {served}, "
        f"version: {version}}}\n")
    return load_config(tmp_path).models[("toy", version)]


def toy_logs(count: int, signature: str = "serving_default") -> list[PredictionLog]:
    return [predict_log({"input_1": np.array([[i, 1]], dtype=np.float32)}, "whatever", signature)
            for i in range(count)]


def predictions(tfs: FakeTFServing) -> list[PredictRequest]:
    return [r for method, r in tfs.calls if method == "Predict" and isinstance(r, PredictRequest)]


async def test_each_record_is_sent_to_the_manifests_model_and_version(tmp_path: Path, tfs: FakeTFServing) -> None:
    model = remote(tmp_path, tfs, [*toy_logs(2), *toy_logs(1, signature="scaled")])
    assert await warm_remote(model, 10) == 3
    sent = predictions(tfs)
    assert [(r.model_spec.name, r.model_spec.version.value) for r in sent] == [("Toy", 2)] * 3
    assert [r.model_spec.signature_name for r in sent] == ["serving_default", "serving_default", "scaled"]


async def test_a_failing_record_is_named(tmp_path: Path, tfs: FakeTFServing) -> None:
    logs = [predict_log({"code": np.array(code, dtype=np.int32)}) for code in (0, 0, 9)]
    model = remote(tmp_path, tfs, logs, served="Errors", version=1)
    with pytest.raises(WarmupError) as caught:
        await warm_remote(model, 10)
    assert caught.value.record == 3
    assert "the model failed with FAILED_PRECONDITION" in str(caught.value)
    assert await warm_remotes([model], 10) == {("toy", 1): str(caught.value)}


async def test_only_predict_records_warm_a_remote_model(tmp_path: Path, tfs: FakeTFServing) -> None:
    classify = PredictionLog(classify_log=ClassifyLog(request=ClassificationRequest()))
    model = remote(tmp_path, tfs, [*toy_logs(1), classify])
    with pytest.raises(WarmupError, match=r"at record 2 of .*: a remote model is warmed with predict_log"):
        await warm_remote(model, 10)
    assert len(predictions(tfs)) == 1


async def test_the_time_bound_covers_the_calls(tmp_path: Path, tfs: FakeTFServing) -> None:
    tfs.delay_s = 5
    model = remote(tmp_path, tfs, toy_logs(2))
    with pytest.raises(WarmupError) as caught:
        await warm_remote(model, 0.3)
    assert caught.value.record == 1


def test_answers_say_the_warmup_failed_without_the_path(tmp_path: Path) -> None:
    folder = tmp_path / "models" / "counter"
    failure = (f"warmup failed at record 2 of {folder}/warmup.tfrecord: INTERNAL: ValueError: no; "
               f"last output:\n  File \"{folder}/src/func_main.py\", line 3")
    backend = UnavailableBackend.for_model("counter:1", failure, folder)
    assert backend.reason == "model counter:1 is unavailable: its warmup failed at record 2"
    whole = UnavailableBackend.for_model("counter:1", f"warmup failed at {folder}/w: cannot read it", folder)
    assert whole.reason == "model counter:1 is unavailable: its warmup failed"

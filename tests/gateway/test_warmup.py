"""Remote models' warmup through their Backend (gateway.warmup), against the TF-Serving-protocol
test server, and what answers say of a model whose warmup failed."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest

from gateway.backends import UnavailableBackend
from gateway.manifests import ModelManifest, load_config
from gateway.reload import ConfigStager
from gateway.serving import serve
from gateway.settings import Settings
from gateway.supervisor import Supervisor, fingerprint
from gateway.warmup import check_warmups, warm_remote, warm_remotes
from modelfolder import WarmupError
from protos.tensorflow_serving.classification_pb2 import ClassificationRequest
from protos.tensorflow_serving.inference_pb2 import MultiInferenceRequest
from protos.tensorflow_serving.predict_pb2 import PredictRequest
from protos.tensorflow_serving.prediction_log_pb2 import (
    ClassifyLog,
    MultiInferenceLog,
    PredictionLog,
    PredictStreamedLog,
)
from tests.conftest import free_port, write_model
from tests.oip_server import FakeOIPServer
from tests.tfserving_server import FakeTFServing
from tests.warmup_files import int_logs, predict_log, write_warmup

MAX_ELEMENTS = 1 << 20


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
    assert await warm_remote(model, 10, max_elements=MAX_ELEMENTS) == 3
    sent = predictions(tfs)
    assert [(r.model_spec.name, r.model_spec.version.value) for r in sent] == [("Toy", 2)] * 3
    assert [r.model_spec.signature_name for r in sent] == ["serving_default", "serving_default", "scaled"]


async def test_a_failing_record_is_named(tmp_path: Path, tfs: FakeTFServing) -> None:
    logs = [predict_log({"code": np.array(code, dtype=np.int32)}) for code in (0, 0, 9)]
    model = remote(tmp_path, tfs, logs, served="Errors", version=1)
    with pytest.raises(WarmupError) as caught:
        await warm_remote(model, 10, max_elements=MAX_ELEMENTS)
    assert caught.value.record == 3
    assert "the model failed with FAILED_PRECONDITION" in str(caught.value)
    assert await warm_remotes([model], 10, max_elements=MAX_ELEMENTS) == {("toy", 1): str(caught.value)}


async def test_only_predict_records_warm_a_remote_model(tmp_path: Path, tfs: FakeTFServing) -> None:
    classify = PredictionLog(classify_log=ClassifyLog(request=ClassificationRequest()))
    model = remote(tmp_path, tfs, [*toy_logs(1), classify])
    with pytest.raises(WarmupError, match=r"at record 2 of .*: a remote model is warmed with predict_log"):
        await warm_remote(model, 10, max_elements=MAX_ELEMENTS)
    assert len(predictions(tfs)) == 1


async def test_the_time_bound_covers_the_calls(tmp_path: Path, tfs: FakeTFServing) -> None:
    tfs.delay_s = 5
    model = remote(tmp_path, tfs, toy_logs(2))
    with pytest.raises(WarmupError) as caught:
        await warm_remote(model, 0.3, max_elements=MAX_ELEMENTS)
    assert caught.value.record == 1


def test_answers_say_the_warmup_failed_without_the_path(tmp_path: Path) -> None:
    folder = tmp_path / "models" / "counter"
    failure = (f"warmup failed at record 2 of {folder}/warmup.tfrecord: INTERNAL: ValueError: no; "
               f"last output:\n  File \"{folder}/src/func_main.py\", line 3")
    backend = UnavailableBackend.for_model("counter:1", failure, folder)
    assert backend.reason == "model counter:1 is unavailable: its warmup failed at record 2"
    whole = UnavailableBackend.for_model("counter:1", f"warmup failed at {folder}/w: cannot read it", folder)
    assert whole.reason == "model counter:1 is unavailable: its warmup failed"


async def test_at_start_a_server_not_up_yet_is_waited_for(tmp_path: Path) -> None:
    later = FakeTFServing()
    later.port = free_port()
    model = remote(tmp_path, later, toy_logs(2))
    warming = asyncio.create_task(warm_remotes([model], 10, max_elements=MAX_ELEMENTS, wait_for_server=True))
    await asyncio.sleep(0.6)  # the gateway started before its TF Serving
    assert not warming.done()
    await later.start()
    try:
        assert await warming == {}
        assert len(predictions(later)) == 2
    finally:
        await later.stop()


async def test_a_server_still_down_when_the_time_is_up_fails_the_warmup_then(tmp_path: Path) -> None:
    down = FakeTFServing()
    down.port = free_port()
    model = remote(tmp_path, down, toy_logs(1))
    started = time.monotonic()
    failed = await warm_remotes([model], 0.8, max_elements=MAX_ELEMENTS, wait_for_server=True)
    assert 0.6 <= time.monotonic() - started < 5
    assert failed[("toy", 2)].startswith(f"warmup failed at record 1 of {model.warmup}: backend_unavailable: ")
    started = time.monotonic()  # at a reload: refused at once, the reload is not held
    assert ("toy", 2) in await warm_remotes([model], 10, max_elements=MAX_ELEMENTS)
    assert time.monotonic() - started < 5


async def test_a_record_the_server_answers_with_an_error_fails_at_once_even_at_start(
        tmp_path: Path, tfs: FakeTFServing) -> None:
    model = remote(tmp_path, tfs, [predict_log({"code": np.array(9, dtype=np.int32)})], served="Errors", version=1)
    started = time.monotonic()
    failed = await warm_remotes([model], 30, max_elements=MAX_ELEMENTS, wait_for_server=True)
    assert "the model failed with FAILED_PRECONDITION" in failed[("toy", 1)]
    assert time.monotonic() - started < 5
    assert len(predictions(tfs)) == 1


def huge(dims: int) -> PredictionLog:
    record = toy_logs(1)[0]
    proto = record.predict_log.request.inputs["input_1"]
    proto.ClearField("tensor_content")
    proto.tensor_shape.ClearField("dim")
    proto.tensor_shape.dim.add(size=dims)
    return record


async def test_a_tensor_over_max_elements_is_refused_before_decoding(tmp_path: Path, tfs: FakeTFServing) -> None:
    model = remote(tmp_path, tfs, [*toy_logs(1), huge(10**12)])
    with pytest.raises(WarmupError) as caught:
        await warm_remote(model, 10, max_elements=MAX_ELEMENTS)
    assert str(caught.value) == (f"warmup failed at record 2 of {model.warmup}: input input_1 has "
                                 f"1000000000000 elements, more than max_elements ({MAX_ELEMENTS})")
    assert len(predictions(tfs)) == 1


async def test_any_failure_of_a_record_names_the_record(tmp_path: Path, tfs: FakeTFServing) -> None:
    model = remote(tmp_path, tfs, [huge(10**14)])  # 400 TB: more than any address space can map
    with pytest.raises(WarmupError) as caught:  # allowed in, its decoding cannot allocate the tensor
        await warm_remote(model, 10, max_elements=10**15)
    assert caught.value.record == 1
    assert caught.value.reason.startswith("MemoryError: ")


async def test_a_streamed_predict_record_warms_a_remote_model(tmp_path: Path, tfs: FakeTFServing) -> None:
    request = toy_logs(1)[0].predict_log.request
    model = remote(tmp_path, tfs, [PredictionLog(predict_streamed_log=PredictStreamedLog(request=[request]))])
    assert await warm_remote(model, 10, max_elements=MAX_ELEMENTS) == 1
    assert len(predictions(tfs)) == 1


def test_check_refuses_records_the_model_can_never_answer(tmp_path: Path, tfs: FakeTFServing) -> None:
    multi = PredictionLog(multi_inference_log=MultiInferenceLog(request=MultiInferenceRequest()))
    local = write_model(tmp_path, "counter", "counter", "def predict(x):\n    return x\n",
                        extra="warmup: warmup.tfrecord")
    write_warmup(local / "warmup.tfrecord", [*int_logs(1), multi])
    remote(tmp_path, tfs, [*toy_logs(1), multi])
    models = load_config(tmp_path).models
    lines, errors = check_warmups([models[("counter", 1)], models[("toy", 2)]], lambda m: m.name)
    assert errors == [
        f"model counter: warmup failed at record 2 of {local / 'warmup.tfrecord'}: the embedded runtime does "
        "not serve multi_inference_log (MultiInference)",
        f"model toy: warmup failed at record 2 of {models[('toy', 2)].warmup}: a remote model is warmed with "
        "predict_log (and predict_streamed_log) records only, not multi_inference_log",
    ]
    assert len(lines) == 2


async def test_a_reload_warms_a_remote_model_again_when_its_file_changed(tmp_path: Path, tfs: FakeTFServing) -> None:
    model = remote(tmp_path, tfs, toy_logs(1))
    stager = ConfigStager(Settings.load(tmp_path), load_config(tmp_path), None)
    stager.commit(await stager.stage())
    assert predictions(tfs) == []  # warmed at start, unchanged since
    assert model.warmup is not None
    write_warmup(model.warmup, toy_logs(3))  # the same manifest, a new file
    stager.commit(await stager.stage())
    assert len(predictions(tfs)) == 3
    stager.commit(await stager.stage())
    assert len(predictions(tfs)) == 3


def test_a_local_models_warmup_file_outside_its_folder_is_part_of_its_fingerprint(tmp_path: Path) -> None:
    file = write_warmup(tmp_path / "warmups" / "counter.tfrecord", int_logs(1))
    write_model(tmp_path, "counter", "counter", "def predict(x):\n    return x\n", extra=f"warmup: {file}")
    model = load_config(tmp_path).models[("counter", 1)]
    before = fingerprint(model)
    write_warmup(file, int_logs(1, 2))
    assert fingerprint(model) != before


def test_a_version_folder_added_inside_a_version_1_folder_leaves_its_fingerprint(tmp_path: Path) -> None:
    # An upload puts models/<name>/2/ inside models/<name>/ (version 1's folder): version 1 runs on.
    write_model(tmp_path, "counter", "counter", "def predict(x):\n    return x\n")
    before = fingerprint(load_config(tmp_path).models[("counter", 1)])
    write_model(tmp_path, "counter/2", "counter", "def predict(x):\n    return x + 1\n")
    config = load_config(tmp_path)
    assert ("counter", 2) in config.models
    assert fingerprint(config.models[("counter", 1)]) == before
    (tmp_path / "models" / "counter" / "src" / "func_main.py").write_text("def predict(x):\n    return -x\n")
    assert fingerprint(load_config(tmp_path).models[("counter", 1)]) != before


async def test_a_fault_warming_remote_models_at_start_cancels_the_runtimes_start(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_model(tmp_path, "slow", "slow", "import time\ntime.sleep(1.5)\n\ndef predict(x):\n    return x\n")
    config = load_config(tmp_path)
    supervisor = Supervisor(config.local_models(), 20)

    async def broken(*_args: object, **_kwargs: object) -> dict[tuple[str, int], str]:
        await asyncio.sleep(0.3)
        raise RuntimeError("a fault")

    monkeypatch.setattr(serve, "warm_remotes", broken)
    try:
        with pytest.raises(RuntimeError, match="a fault"):
            await serve._start_models(Settings.load(tmp_path), config, supervisor)
        await asyncio.sleep(3)  # long enough for the runtime to have come up, had it been left starting
        assert supervisor.processes == {}
        assert supervisor._starting == set()
    finally:
        await supervisor.stop()


async def test_a_model_whose_server_was_unreachable_at_start_is_warmed_at_every_reload(tmp_path: Path) -> None:
    later = FakeTFServing()
    later.port = free_port()
    remote(tmp_path, later, toy_logs(2))
    config = load_config(tmp_path)
    failed = await warm_remotes(config.models.values(), 0.3, max_elements=MAX_ELEMENTS, wait_for_server=True)
    assert list(failed) == [("toy", 2)]
    stager = ConfigStager(Settings.load(tmp_path), config, None, failed)
    staged = await stager.stage()  # still down: it stays unavailable, the reload goes through
    assert list(staged.failed) == [("toy", 2)]
    stager.commit(staged)
    await later.start()
    try:
        await asyncio.sleep(2.2)  # gRPC's reconnect back-off to the target (at most 2 s) has run out
        staged = await stager.stage()
        assert staged.failed == {}
        assert len(predictions(later)) == 2
    finally:
        await later.stop()


async def test_a_v2_model_is_warmed_with_model_infer_calls(tmp_path: Path) -> None:
    """A PredictLog's tensors become a v2 server's ModelInfer (raw contents, the manifest's model
    and version); a record naming another signature than the model's one fails, named."""
    server = FakeOIPServer()
    await server.start()
    try:
        logs = [predict_log({"x": np.array([i, 2 * i], dtype=np.float32)}, "whatever") for i in range(3)]
        write_warmup(tmp_path / "models" / "warmup.tfrecord", logs)
        (tmp_path / "models" / "adder.yaml").write_text(
            "kind: Model\nname: adder\nwarmup: warmup.tfrecord\n"
            f"backend: {{protocol: v2, target: '{server.target}', model_name: add, version: 2}}\n")
        model = load_config(tmp_path).models[("adder", 2)]
        assert await warm_remote(model, 10, max_elements=MAX_ELEMENTS) == 3
        sent = server.infers()
        assert [(r.model_name, r.model_version, r.id) for r in sent] == [
            ("add", "2", f"warmup-{n}") for n in (1, 2, 3)]
        assert [np.frombuffer(r.raw_input_contents[0], np.float32).tolist() for r in sent] == \
            [[0.0, 0.0], [1.0, 2.0], [2.0, 4.0]]
        write_warmup(tmp_path / "models" / "warmup.tfrecord",
                     [*logs[:1], predict_log({"x": np.array([1], dtype=np.float32)}, "add", "scaled")])
        with pytest.raises(WarmupError, match=r"record 2 .*Serving signature name: \"scaled\" not found"):
            await warm_remote(load_config(tmp_path).models[("adder", 2)], 10, max_elements=MAX_ELEMENTS)
    finally:
        await server.stop()

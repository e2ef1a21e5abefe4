"""A gateway (real uvicorn, the embedded runtime) whose application logs to a `cloudevents:`
sink, an in-test receiver: each stage's call is its two events, with the application, stage and
variant extensions and Open Inference Protocol bodies; the sink is in /health/ready's detail,
named without the credentials its URL carries."""

from __future__ import annotations

from pathlib import Path

import httpx
import orjson

from gateway.app import create_app
from gateway.manifests import load_config
from gateway.settings import Settings
from tests.conftest import runtimes_for, serve_app, write_model
from tests.gateway.requestlog.receiver import Receiver, serving
from tests.waiting import eventually


async def test_each_stage_call_is_sent_as_its_two_events_and_the_sink_is_in_ready_detail(tmp_path: Path) -> None:
    root = tmp_path / "config"
    write_model(root, "add", "add", "def predict(x):\n    return x + 1\n")
    write_model(root, "double", "double", "def predict(y):\n    return y * 2\n",
                inputs="y: {shape: [-1], type: int32}", outputs="z: {shape: [-1], type: int32}")
    receiver = Receiver()
    async with serving(receiver) as events_url:
        url = events_url.replace("http://", "http://collector:s3cret@") + "?token=t0ken"
        shown = f"cloudevents:{events_url}?token=…"
        (root / "applications").mkdir()
        (root / "applications" / "pipeline.yaml").write_text(
            "kind: Application\nname: pipeline\npipeline:\n  - - model: add:1\n  - - model: double:1\n"
            f"request_log:\n  cloudevents: {{url: '{url}', retries: 1}}\n")
        with runtimes_for(load_config(root)) as config:
            app = create_app(Settings(config_dir=root, access_log=False, drain_timeout_s=2.0), config)
            async with serve_app(app) as base, httpx.AsyncClient(base_url=base, timeout=30) as client:
                ready = await client.get("/health/ready")
                assert ready.json()["request_logs"] == {shown: {"ok": True, "error": None, "queued": 0}}
                answer = await client.post("/gateway/applications/pipeline", json={"x": [1, 2]})
                assert answer.json() == {"z": [4, 6]}
                request_id = answer.headers["x-request-id"]
                await eventually(lambda: _true(len(receiver.received) == 4), what="four events")
                ready = await client.get("/health/ready")
                assert (ready.status_code, ready.json()["request_logs"]) == (
                    200, {shown: {"ok": True, "error": None, "queued": 0}})
                exposed = ready.text + (await client.get("/metrics")).text
                assert "s3cret" not in exposed
                assert "t0ken" not in exposed
    assert receiver.authorizations == {"Basic Y29sbGVjdG9yOnMzY3JldA=="}
    by_stage = {(e.headers["ce-stage"], e.headers["ce-type"].rsplit(".", 1)[1]): e for e in receiver.received}
    assert sorted(by_stage) == [("1", "request"), ("1", "response"), ("2", "request"), ("2", "response")]
    for (stage, _), event in by_stage.items():
        model = "add" if stage == "1" else "double"
        assert event.headers["ce-id"] == request_id
        assert event.headers["ce-source"] == f"/gateway/applications/pipeline/stages/{stage}"
        assert (event.headers["ce-application"], event.headers["ce-variant"]) == ("pipeline", f"{model}:1")
        assert (event.headers["ce-inferenceservicename"], event.headers["ce-modelversion"]) == (model, "1")
    tensors = {key: orjson.loads(event.body) for key, event in by_stage.items()}
    assert tensors[("1", "request")] == {"id": request_id, "model_name": "add", "model_version": "1",
                                         "inputs": [{"name": "x", "shape": [2], "datatype": "INT32", "data": [1, 2]}]}
    assert tensors[("1", "response")]["outputs"] == [{"name": "y", "shape": [2], "datatype": "INT32", "data": [2, 3]}]
    assert tensors[("2", "request")]["inputs"] == [{"name": "y", "shape": [2], "datatype": "INT32", "data": [2, 3]}]
    assert tensors[("2", "response")] == {"id": request_id, "model_name": "double", "model_version": "1",
                                          "outputs": [{"name": "z", "shape": [2], "datatype": "INT32",
                                                       "data": [4, 6]}]}
    metrics = app.metrics.registry
    assert metrics.get_sample_value("gateway_request_log_records_total", {"sink": shown, "outcome": "written"}) == 2


async def _true(value: bool) -> bool:
    return value

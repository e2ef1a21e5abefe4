"""The CloudEvents sink against a real HTTP server (Starlette on uvicorn, loopback) that records
every event it receives: KServe's binary-mode events with Open Inference Protocol bodies, retries,
a server that is down, slow, dripping or refusing, senders in parallel, oversized calls, a URL
with credentials shown without them, and a close that drains."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque

import numpy as np
import orjson
import pytest
from prometheus_client import generate_latest

from gateway.manifests.types import CloudEventsSpec
from gateway.observability import Metrics
from gateway.requestlog import cloudevents
from gateway.requestlog.call import LoggedCall
from gateway.requestlog.cloudevents import CloudEventsSink, error_body, event_source, header_value
from gateway.requestlog.sink import SinkHealth
from tests.conftest import loopback_socket
from tests.gateway.requestlog.receiver import Receiver, serving
from tests.waiting import eventually, wait_until


def make_sink(url: str, metrics: Metrics, *, capacity: int = 100, timeout_s: float = 5.0, retries: int = 3,
              max_event_bytes: int = 1 << 20) -> CloudEventsSink:
    spec = CloudEventsSpec(url=url, timeout_s=timeout_s, retries=retries, max_event_bytes=max_event_bytes)
    return CloudEventsSink(spec, metrics=metrics, capacity=capacity, max_bytes=1 << 20)


def count(metrics: Metrics, sink: CloudEventsSink, outcome: str) -> int:
    value = metrics.registry.get_sample_value("gateway_request_log_records_total",
                                              {"sink": sink.name, "outcome": outcome})
    return int(value or 0)


def sent_bytes(metrics: Metrics, sink: CloudEventsSink) -> int:
    return int(metrics.registry.get_sample_value("gateway_request_log_bytes_total", {"sink": sink.name}) or 0)


async def closed(sink: CloudEventsSink, timeout: float = 5.0) -> None:
    await asyncio.to_thread(sink.close, timeout)


def model_call(request_id: str = "r-1", size: int = 3) -> LoggedCall:
    """An answered call of a model route."""
    x = np.arange(size, dtype=np.int32)
    return LoggedCall(request_id=request_id, time=1_764_606_030.123456, duration_s=0.002, model="increment_model",
                      version=1, signature_name="increment", inputs={"number": x}, outputs={"number": x + 1})


STAGE_CALL = LoggedCall(
    request_id="req 7/é", time=1_764_606_030.5, duration_s=0.004, model="kelvin_model", version=2,
    signature_name="", inputs={"celsius": np.array([-40.0, math.nan], dtype=np.float32)},
    outputs={"kelvin": np.array([233.15, math.inf]), "unit": np.array([b"K", b"\xff"], dtype=object)},
    application="pipeline", stage=2, variant="kelvin_model:2")

FAILED_CALL = LoggedCall(
    request_id="r-9", time=1_764_606_031.0, duration_s=0.5, model="m", version=None, signature_name="serving_default",
    inputs={"x": np.array([[1, 2]], dtype=np.int64)}, outputs=None, status=504,
    error="deadline_exceeded: the backend of model m missed the deadline: slow")


async def test_each_call_is_a_request_and_a_response_event_in_binary_mode() -> None:
    receiver = Receiver()
    metrics = Metrics()
    async with serving(receiver) as url:
        sink = make_sink(url, metrics)
        assert sink.name == f"cloudevents:{url}"
        assert sink.offer(STAGE_CALL)
        await eventually(lambda: asyncio.sleep(0, len(receiver.received) == 2), what="the stage call sent")
        assert sink.offer(FAILED_CALL)
        await closed(sink)
    request, response, failed_request, failed_response = receiver.received

    stage_attributes = {
        "content-type": "application/json", "ce-specversion": "1.0", "ce-id": "req%207/%C3%A9",
        "ce-source": "/gateway/applications/pipeline/stages/2", "ce-time": "2025-12-01T16:20:30.500000Z",
        "ce-inferenceservicename": "kelvin_model", "ce-component": "predictor", "ce-modelversion": "2",
        "ce-status": "200", "ce-application": "pipeline", "ce-stage": "2", "ce-variant": "kelvin_model:2"}
    assert request.headers == {**stage_attributes, "ce-type": "org.kubeflow.serving.inference.request"}
    assert response.headers == {**stage_attributes, "ce-type": "org.kubeflow.serving.inference.response"}
    # Open Inference Protocol JSON: NaN and infinities as null, a BYTES tensor that is not UTF-8 as base64.
    assert orjson.loads(request.body) == {"id": "req 7/é", "model_name": "kelvin_model", "model_version": "2",
                                          "inputs": [{"name": "celsius", "shape": [2], "datatype": "FP32",
                                                      "data": [-40.0, None]}]}
    assert orjson.loads(response.body) == {"id": "req 7/é", "model_name": "kelvin_model", "model_version": "2",
                                           "outputs": [
                                               {"name": "kelvin", "shape": [2], "datatype": "FP64",
                                                "data": [233.15, None]},
                                               {"name": "unit", "shape": [2], "datatype": "BYTES",
                                                "data": ["Sw==", "/w=="], "parameters": {"content_type": "base64"}}]}

    model_attributes = {
        "content-type": "application/json", "ce-specversion": "1.0", "ce-id": "r-9", "ce-source": "/gateway/models/m",
        "ce-time": "2025-12-01T16:20:31.000000Z", "ce-inferenceservicename": "m", "ce-component": "predictor",
        "ce-signaturename": "serving_default", "ce-status": "504"}
    assert failed_request.headers == {**model_attributes, "ce-type": "org.kubeflow.serving.inference.request"}
    assert failed_response.headers == {**model_attributes, "ce-type": "org.kubeflow.serving.inference.response"}
    assert orjson.loads(failed_request.body) == {"id": "r-9", "model_name": "m", "inputs": [
        {"name": "x", "shape": [1, 2], "datatype": "INT64", "data": [1, 2]}]}
    assert orjson.loads(failed_response.body) == {
        "error": "deadline_exceeded: the backend of model m missed the deadline: slow"}

    assert count(metrics, sink, "written") == 2
    assert sent_bytes(metrics, sink) == sum(len(event.body) for event in receiver.received)
    assert sink.health() == SinkHealth(ok=True, error=None, queued=0)


async def test_a_503_and_a_429_are_retried_and_the_call_written_once() -> None:
    receiver = Receiver(answers=deque([503, 429]))
    metrics = Metrics()
    async with serving(receiver) as url:
        sink = make_sink(url, metrics, retries=3)
        sink.offer(model_call())
        await closed(sink)
    assert [(event.headers["ce-type"].rsplit(".", 1)[1], event.status) for event in receiver.received] == [
        ("request", 503), ("request", 429), ("request", 200), ("response", 200)]
    assert count(metrics, sink, "written") == 1
    assert count(metrics, sink, "failed") == 0
    assert sent_bytes(metrics, sink) == sum(len(event.body) for event in receiver.delivered())
    assert sink.health().ok


async def test_a_4xx_fails_the_call_at_once_and_the_next_call_is_sent(caplog: pytest.LogCaptureFixture) -> None:
    receiver = Receiver(answers=deque([400, 404, 400]))
    metrics = Metrics()
    async with serving(receiver) as url:
        sink = make_sink(url, metrics, retries=3)
        sink.offer(model_call("r-1"))
        await eventually(lambda: asyncio.sleep(0, count(metrics, sink, "failed") == 1), what="the call failed")
        assert sink.health() == SinkHealth(ok=False, error="the server answered 400 Bad Request", queued=0)
        def done() -> int:
            return count(metrics, sink, "failed") + count(metrics, sink, "written")

        for number in (2, 3, 4):  # one at a time: the senders run in parallel
            sink.offer(model_call(f"r-{number}"))
            await eventually(lambda: asyncio.sleep(0, done() == number), what=f"r-{number} done")  # noqa: B023
        await closed(sink)
    # Neither retried nor followed by its response event.
    assert [(event.headers["ce-id"], event.status) for event in receiver.received] == [
        ("r-1", 400), ("r-2", 404), ("r-3", 400), ("r-4", 200), ("r-4", 200)]
    assert count(metrics, sink, "failed") == 3
    assert count(metrics, sink, "written") == 1
    assert sink.health().ok
    refusals = [record.getMessage() for record in caplog.records if "not retried" in record.getMessage()]
    assert len(refusals) == 2  # once per status
    assert "the server answered 404 Not Found" in refusals[1]


async def test_a_down_server_fails_calls_until_it_is_back() -> None:
    sock = loopback_socket()  # bound, not listening: connections are refused
    receiver = Receiver()
    metrics = Metrics()
    sink = make_sink(f"http://127.0.0.1:{sock.getsockname()[1]}/events", metrics, retries=2, timeout_s=1.0)
    try:
        started = time.monotonic()
        sink.offer(model_call("r-1"))
        # While it is retried, health says so.
        await eventually(lambda: asyncio.sleep(0, (sink.health().error or "").startswith("retrying: ")
                                               or count(metrics, sink, "failed") == 1), what="retrying")
        await eventually(lambda: asyncio.sleep(0, count(metrics, sink, "failed") == 1), what="the call failed")
        assert time.monotonic() - started >= 0.15  # two back-offs: 0.1 s, 0.2 s, each ± 50%
        health = sink.health()
        assert not health.ok
        assert health.error == "ConnectError: [Errno 111] Connection refused"
        async with serving(receiver, sock):
            sink.offer(model_call("r-2"))
            await eventually(lambda: asyncio.sleep(0, count(metrics, sink, "written") == 1), what="written")
            assert sink.health().ok
    finally:
        await closed(sink)
    assert [event.headers["ce-id"] for event in receiver.received] == ["r-2", "r-2"]


async def test_a_slow_server_never_blocks_offer_and_a_full_queue_drops() -> None:
    receiver = Receiver(delay_s=0.4)
    metrics = Metrics()
    async with serving(receiver) as url:
        sink = make_sink(url, metrics, capacity=3, timeout_s=2.0)
        offer_times = []
        accepted = 0
        for number in range(30):
            started = time.perf_counter()
            accepted += sink.offer(model_call(f"r-{number}"))
            offer_times.append(time.perf_counter() - started)
            await asyncio.sleep(0.002)
        # Never the server's 0.4 s, nor a wait for room: at most a GIL switch on a loaded machine.
        assert max(offer_times) < 0.05, offer_times
        in_flight = cloudevents.SENDERS + 1  # one call per sender, one waiting for a sender
        assert accepted <= 3 + in_flight  # the queue's 3, and what was taken from it meanwhile
        assert count(metrics, sink, "dropped") == 30 - accepted
        started = time.monotonic()
        await closed(sink, timeout=0.5)
        # The call being sent at the deadline fails at its next event; the queued ones are dropped.
        assert time.monotonic() - started < 2.0
    outcomes = {outcome: count(metrics, sink, outcome) for outcome in ("written", "failed", "dropped")}
    assert sum(outcomes.values()) == 30, outcomes
    # The server may have taken an event the sink gave up waiting for: never counted written.
    assert outcomes["written"] <= len(receiver.delivered()) // 2
    assert outcomes["dropped"] >= 30 - 3 - in_flight


async def test_an_event_over_max_event_bytes_is_skipped() -> None:
    receiver = Receiver()
    metrics = Metrics()
    async with serving(receiver) as url:
        sink = make_sink(url, metrics, max_event_bytes=200)
        sink.offer(model_call("big", size=100))  # its request body: 290 bytes
        sink.offer(model_call("small"))
        await closed(sink)
    assert [event.headers["ce-id"] for event in receiver.received] == ["small", "small"]
    assert count(metrics, sink, "skipped") == 1
    assert count(metrics, sink, "written") == 1
    assert sink.health().ok


async def test_close_sends_everything_queued() -> None:
    receiver = Receiver()
    metrics = Metrics()
    async with serving(receiver) as url:
        sink = make_sink(url, metrics, capacity=200)
        for number in range(100):
            assert sink.offer(model_call(f"r-{number}"))
        await closed(sink, timeout=10)
        assert not sink.offer(model_call("late"))  # closed: refused and counted
    assert len(receiver.received) == 200
    assert sorted(event.headers["ce-id"] for event in receiver.received) == sorted(2 * [f"r-{n}" for n in range(100)])
    for number in range(100):  # each call's request event before its response event
        types = [event.headers["ce-type"] for event in receiver.received if event.headers["ce-id"] == f"r-{number}"]
        assert types == ["org.kubeflow.serving.inference.request", "org.kubeflow.serving.inference.response"]
    assert count(metrics, sink, "written") == 100
    assert count(metrics, sink, "dropped") == 1


async def test_close_gives_up_retrying_at_its_deadline() -> None:
    sock = loopback_socket()
    metrics = Metrics()
    sink = make_sink(f"http://127.0.0.1:{sock.getsockname()[1]}/events", metrics, retries=10)
    calls = cloudevents.SENDERS + 3
    for number in range(calls):
        sink.offer(model_call(f"r-{number}"))
    await asyncio.sleep(0.2)
    started = time.monotonic()
    await closed(sink, timeout=0.5)
    assert time.monotonic() - started < 1.5
    # Each sender's call fails at the deadline; the calls still queued are dropped.
    assert count(metrics, sink, "failed") == cloudevents.SENDERS
    assert count(metrics, sink, "dropped") == calls - cloudevents.SENDERS
    sock.close()


def test_close_cuts_attempts_under_way_at_its_deadline_and_counts_every_call() -> None:
    sock = loopback_socket()
    sock.listen(64)  # the kernel takes the connections and the POSTs; nothing ever answers
    metrics = Metrics()
    sink = make_sink(f"http://127.0.0.1:{sock.getsockname()[1]}/events", metrics, timeout_s=30.0, retries=0)
    calls = 20
    for number in range(calls):
        assert sink.offer(model_call(f"r-{number}"))
    wait_until(lambda: sink.health().queued < calls - cloudevents.SENDERS)  # every sender has a call
    started = time.monotonic()
    sink.close(1.0)
    assert time.monotonic() - started < 3.0  # the close's 1 s, not the attempts' 30 s
    # The senders' calls fail at the deadline; the one waiting for a sender and the queued ones are dropped.
    assert count(metrics, sink, "failed") == cloudevents.SENDERS
    assert count(metrics, sink, "dropped") == calls - cloudevents.SENDERS
    assert sink.health().error == "the sink closed before the server answered"
    sock.close()


@pytest.mark.parametrize(("text", "value"), [
    ("r-1", "r-1"),
    ("a b", "a%20b"),
    ('say "x" 100%', "say%20%22x%22%20100%25"),
    ("é", "%C3%A9"),
    ("tab\there", "tab%09here"),
    ("name@label:2/x?y=[1]", "name@label:2/x?y=[1]"),
])
def test_header_values_are_percent_encoded_as_the_http_binding_says(text: str, value: str) -> None:
    assert header_value(text) == value


def test_a_failed_call_is_an_open_inference_protocol_error() -> None:
    call = LoggedCall(request_id="r", time=0.0, duration_s=0.0, model="m", version=None, signature_name="",
                      inputs={}, outputs=None, status=500, error="Something: odd")
    assert orjson.loads(error_body(call)) == {"error": "Something: odd"}
    unnamed = LoggedCall(request_id="r", time=0.0, duration_s=0.0, model="m", version=None, signature_name="",
                         inputs={}, outputs=None, status=502)
    assert orjson.loads(error_body(unnamed)) == {"error": "the call failed with status 502"}


def test_sources_name_the_route_or_the_stage() -> None:
    assert event_source(model_call()) == "/gateway/models/increment_model"
    assert event_source(STAGE_CALL) == "/gateway/applications/pipeline/stages/2"


async def test_a_url_with_credentials_is_sent_with_them_and_shown_without(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    receiver = Receiver()
    metrics = Metrics()
    async with serving(receiver) as url:
        secret_url = url.replace("http://", "http://collector:s3cret@") + "?access_token=t0ken"
        sink = make_sink(secret_url, metrics, retries=0)
        assert sink.name == f"cloudevents:{url}?access_token=…"
        sink.offer(model_call())
        await closed(sink)
    assert receiver.authorizations == {"Basic Y29sbGVjdG9yOnMzY3JldA=="}  # collector:s3cret, as httpx sends it
    assert count(metrics, sink, "written") == 1
    exposed = generate_latest(metrics.registry).decode()
    assert "s3cret" not in exposed
    assert "t0ken" not in exposed
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "s3cret" not in logged
    assert "t0ken" not in logged
    assert f'sink="cloudevents:{url}?access_token=…"' in exposed


async def test_an_attempt_is_bounded_in_all_by_timeout_s() -> None:
    """A server that drips its answer a byte every 0.1 s never trips a per-read timeout; the
    attempt still ends at timeout_s."""
    async def drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length"))
        await reader.readexactly(length)
        with contextlib.suppress(ConnectionError):
            for byte in b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n":
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.1)
        writer.close()

    server = await asyncio.start_server(drip, sock=loopback_socket())
    port = server.sockets[0].getsockname()[1]
    metrics = Metrics()
    sink = make_sink(f"http://127.0.0.1:{port}/events", metrics, timeout_s=0.5, retries=0)
    try:
        started = time.monotonic()
        sink.offer(model_call())
        await eventually(lambda: asyncio.sleep(0, count(metrics, sink, "failed") == 1), what="the call failed")
        assert time.monotonic() - started < 2.0  # the answer would take 3.8 s
        assert sink.health().error == "no answer within 0.5 s"
        assert count(metrics, sink, "written") == 0
    finally:
        await closed(sink)
        server.close()


async def test_senders_send_calls_in_parallel_each_request_before_its_response() -> None:
    receiver = Receiver(delay_s=0.3)
    metrics = Metrics()
    async with serving(receiver) as url:
        sink = make_sink(url, metrics)
        started = time.monotonic()
        for number in range(cloudevents.SENDERS):
            sink.offer(model_call(f"r-{number}"))
        await eventually(lambda: asyncio.sleep(0, count(metrics, sink, "written") == cloudevents.SENDERS),
                         what="every call written")
        elapsed = time.monotonic() - started
        await closed(sink)
    assert receiver.most_in_flight == cloudevents.SENDERS
    assert elapsed < 2 * 0.3 * cloudevents.SENDERS  # one at a time would take 2.4 s
    for number in range(cloudevents.SENDERS):
        types = [event.headers["ce-type"] for event in receiver.received if event.headers["ce-id"] == f"r-{number}"]
        assert types == ["org.kubeflow.serving.inference.request", "org.kubeflow.serving.inference.response"]

"""Application plans on a running gateway (a real uvicorn, the TF-Serving-protocol test server):
contracts discovered from backends that do not fit keep an application not ready until a
rediscovery finds them fitting, `GET /gateway/applications[/{name}]`, and `gateway check --url`
comparing a config with what the gateway runs."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping
from pathlib import Path

import httpx
import numpy as np
import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway.app import create_app
from gateway.cli import main
from gateway.manifests import load_config
from gateway.settings import ApiKey, AuthSettings, Settings
from tensorcodecs import Signature, TensorSpec, lookup_dtype
from tests.conftest import free_port, serve_app
from tests.gateway.test_observability import sample
from tests.tfserving_server import DEFAULT, FakeTFServing, Servable
from tests.waiting import eventually

BATCH = [[1, 2], [1, 3]]


def write_remote_model(config: Path, name: str, target: str, served: str, contract: str = "") -> None:
    (config / "models").mkdir(parents=True, exist_ok=True)
    (config / "models" / f"{name}.yaml").write_text(
        f"kind: Model\nname: {name}\nbackend:\n  protocol: tensorflow-serving\n  target: {target}\n"
        f"  model_name: {served}\n{contract}")


def write_app(config: Path, name: str, body: str) -> None:
    (config / "applications").mkdir(parents=True, exist_ok=True)
    (config / "applications" / f"{name}.yaml").write_text(f"kind: Application\nname: {name}\n{body}")


def predictions(server: FakeTFServing) -> int:
    return sum(1 for method, _ in server.calls if method == "Predict")


def _spec(name: str, dtype: str, shape: tuple[int, ...]) -> TensorSpec:
    return TensorSpec(name, lookup_dtype(dtype), shape)


def doubling() -> Servable:
    """A Toy_double that takes what Toy gives (`output_1`)."""
    signature = Signature(DEFAULT, {"output_1": _spec("output_1", "float32", (-1, 1))},
                          {"doubled": _spec("doubled", "float64", (-1, 1))})

    def run(x: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"doubled": x["output_1"].astype(np.float64) * 2}

    return Servable({DEFAULT: (signature, run)})


RELOAD = {"model_config_list": {"config": [
    {"name": "Toy", "base_path": "/models/Toy", "model_platform": "tensorflow"},
    {"name": "Toy_double", "base_path": "/models/Toy_double", "model_platform": "tensorflow"}]}}
MISMATCH = ("application chain: stage 2 (toy_double) input 'input_1' is not an output of stage 1 (toy) "
            "(its outputs: 'output_1')")


async def test_discovered_contracts_that_do_not_fit_keep_the_application_not_ready_until_they_do(
        tfs: FakeTFServing, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = tmp_path / "config"
    write_remote_model(config, "toy", tfs.target, "Toy")
    write_remote_model(config, "toy_double", tfs.target, "Toy_double")
    write_app(config, "chain", "pipeline:\n  - model: toy\n  - model: toy_double\n")
    write_app(config, "alone", "singular: {model: toy}\n")
    app = create_app(Settings(access_log=False), load_config(config))
    async with serve_app(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        ready = await client.get("/health/ready")
        assert ready.status_code == 503
        detail = ready.json()["applications"]
        assert (detail["chain"]["ready"], detail["chain"]["problems"]) == (False, [MISMATCH])
        assert (detail["alone"]["ready"], detail["alone"]["problems"]) == (True, [])
        assert all(model["ready"] for model in detail["chain"]["models"].values())  # the backends are fine
        assert f"application chain is not ready: {MISMATCH}" in caplog.messages

        before = predictions(tfs)
        for body in ({"input_1": BATCH}, {"nothing": 1}):  # refused before its body is checked or any stage runs
            response = await client.post("/gateway/applications/chain", json=body)
            assert response.status_code == 503
            assert response.json() == {"error": {"code": "application_contract_mismatch", "message": MISMATCH}}
        assert predictions(tfs) == before
        assert (await client.post("/gateway/applications/alone", json={"input_1": BATCH})).status_code == 200

        plan = (await client.get("/gateway/applications/chain")).json()
        assert plan["problems"] == [MISMATCH]
        assert [stage["inputs"] for stage in plan["stages"]] == [
            [{"name": "input_1", "dtype": "float32", "shape": [-1, 2]}]] * 2

        tfs.repository["Toy_double"] = {1: doubling()}  # the server gets a model that fits
        reloaded = await client.post("/gateway/admin/models/toy_double/reload-config", json=RELOAD)
        assert reloaded.status_code == 200, reloaded.text
        ready = await client.get("/health/ready")
        assert ready.status_code == 200, ready.text
        assert ready.json()["applications"]["chain"]["problems"] == []
        assert "application chain: its discovered contracts fit together again" in caplog.messages
        response = await client.post("/gateway/applications/chain", json={"input_1": BATCH})
        assert response.status_code == 200, response.text
        assert response.json()["doubled"] == [[pytest.approx(0.6)], [pytest.approx(0.8)]]  # Toy 2: (a + b) / 10
        assert (await client.get("/gateway/applications/chain")).json()["problems"] == []


SHADOW_NOTE = ("application canary: stage 1 variant toy_double output 'output_1' is float64 but toy has it "
               "as float32")
SHADOW_MISMATCH = ("application canary: stage 1 variant toy_wide input 'input_1' has shape [-1, 3] but toy has it "
                   "with shape [-1, 2]")


async def test_a_shadow_whose_discovered_contract_does_not_fit_is_disabled_and_the_application_serves(
        tfs: FakeTFServing, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    tfs.loaded["Toy_wide"] = {1: wider_toy()}  # takes three columns: the stage's inputs do not fit it
    config = tmp_path / "config"
    write_remote_model(config, "toy", tfs.target, "Toy")
    write_remote_model(config, "toy_double", tfs.target, "Toy_double")  # a float64 re-export of Toy
    write_remote_model(config, "toy_wide", tfs.target, "Toy_wide")
    write_app(config, "canary", "pipeline:\n  - - {model: toy}\n    - {model: toy_double, shadow: true}\n"
                                "    - {model: toy_wide, shadow: true}\n")
    app = create_app(Settings(access_log=False), load_config(config))
    async with serve_app(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        ready = await client.get("/health/ready")
        assert ready.status_code == 200, ready.text
        detail = ready.json()["applications"]["canary"]
        # float64 against float32 is one kind: compared, the difference only listed.
        assert (detail["ready"], detail["problems"], detail["shadow_problems"]) == (
            True, [], [SHADOW_NOTE, SHADOW_MISMATCH])
        disabled = [m for m in caplog.messages if "get no copies" in m]
        assert disabled  # logged as each contract is discovered: toy_wide alone, never toy_double
        assert all(m.startswith("application canary: shadow(s) toy_wide get no copies: ") for m in disabled)
        plan = (await client.get("/gateway/applications/canary")).json()
        assert (plan["problems"], plan["shadow_problems"]) == ([], [SHADOW_NOTE, SHADOW_MISMATCH])

        before = predictions(tfs)
        for _ in range(3):
            response = await client.post("/gateway/applications/canary", json={"input_1": BATCH})
            assert response.status_code == 200, response.text
            assert response.headers["x-gateway-variants"] == "toy"

        async def copies_answered() -> bool:
            text = (await client.get("/metrics")).text
            return sample(text, "gateway_shadow_copies_total", application="canary", stage="1", shadow="toy_double",
                          outcome="answered") == 3

        await eventually(copies_answered, what="toy_double's copies")
        text = (await client.get("/metrics")).text
        assert sample(text, "gateway_shadow_copies_total", application="canary", stage="1", shadow="toy_wide",
                      outcome="mismatched") == 3
        assert predictions(tfs) == before + 6  # the live calls and toy_double's: toy_wide got none


def wider_toy() -> Servable:
    """A Toy version that takes three columns."""
    signature = Signature(DEFAULT, {"input_1": _spec("input_1", "float32", (-1, 3))},
                          {"output_1": _spec("output_1", "float32", (-1, 1))})
    return Servable({DEFAULT: (signature, lambda x: {"output_1": x["input_1"][:, :1]})})


async def test_each_version_a_variant_names_is_discovered_and_checked(tfs: FakeTFServing, tmp_path: Path) -> None:
    tfs.loaded["Toy"][3] = wider_toy()  # the default (latest) version; versions 1 and 2 take two columns
    config = tmp_path / "config"
    write_remote_model(config, "toy", tfs.target, "Toy")
    write_app(config, "canary", "pipeline:\n  - - {model: toy:1, weight: 90}\n    - {model: toy:2, weight: 10}\n")
    write_app(config, "mixed", "pipeline:\n  - - {model: toy:1, weight: 90}\n    - {model: toy:3, weight: 10}\n")
    async with (serve_app(create_app(Settings(access_log=False), load_config(config))) as url,
                httpx.AsyncClient(base_url=url, timeout=10) as client):
        detail = (await client.get("/health/ready")).json()["applications"]
        assert detail["canary"]["problems"] == []  # checked against versions 1 and 2, not the default's
        assert detail["mixed"]["problems"] == [
            "application mixed: stage 1 variant toy:3 input 'input_1' has shape [-1, 3] but toy:1 has it with "
            "shape [-1, 2]"]
        plan = (await client.get("/gateway/applications/canary")).json()
        assert plan["inputs"] == [{"name": "input_1", "dtype": "float32", "shape": [-1, 2]}]
        response = await client.post("/gateway/applications/canary", json={"input_1": BATCH})
        assert response.status_code == 200, response.text  # decoded against version 1's contract
        assert (await client.post("/gateway/applications/mixed", json={"input_1": BATCH})).status_code == 503


async def test_a_version_not_described_at_start_is_asked_for_not_taken_for_the_default(
        tfs: FakeTFServing, tmp_path: Path) -> None:
    config = tmp_path / "config"
    write_remote_model(config, "toy", tfs.target, "Toy")
    write_app(config, "mixed", "pipeline:\n  - - {model: toy:1, weight: 90}\n    - {model: toy:3, weight: 10}\n")
    async with (serve_app(create_app(Settings(access_log=False), load_config(config))) as url,
                httpx.AsyncClient(base_url=url, timeout=10) as client):
        assert (await client.get("/health/ready")).json()["applications"]["mixed"]["problems"] == []  # toy:3 unknown
        tfs.loaded["Toy"][3] = wider_toy()  # version 3 arrives, and it does not fit
        response = await client.post("/gateway/applications/mixed", json={"input_1": BATCH},
                                     headers={"x-gateway-route-key": "user-9"})  # a key toy:3 serves
        assert response.status_code == 503, response.text  # its contract was asked for first
        problem = ("application mixed: stage 1 variant toy:3 input 'input_1' has shape [-1, 3] but toy:1 has it "
                   "with shape [-1, 2]")
        assert response.json()["error"] == {"code": "application_contract_mismatch", "message": problem}
        assert (await client.get("/health/ready")).json()["applications"]["mixed"]["problems"] == [problem]


CANARY = "pipeline:\n  - - {model: toy:1, weight: 90}\n    - {model: toy:3, weight: 10}\n"


async def test_a_canary_version_not_loaded_fails_only_its_requests(tfs: FakeTFServing, tmp_path: Path) -> None:
    config = tmp_path / "config"
    write_remote_model(config, "toy", tfs.target, "Toy")  # the fake serves Toy version 1 only
    write_app(config, "mixed", CANARY)
    write_app(config, "chain", "pipeline:\n  - model: toy:1\n  - model: toy:3\n")
    async with (serve_app(create_app(Settings(access_log=False), load_config(config))) as url,
                httpx.AsyncClient(base_url=url, timeout=10) as client):
        answers = [await client.post("/gateway/applications/mixed", json={"input_1": BATCH},
                                     headers={"x-gateway-route-key": f"user-{i}"}) for i in range(40)]
        served = [a for a in answers if a.status_code == 200]
        assert served
        assert all(a.headers["x-gateway-variants"] == "toy:1" for a in served)
        refused = [a for a in answers if a.status_code != 200]
        assert refused, "some of 40 keys route to the 10 % canary"
        for answer in refused:
            assert answer.status_code == 503, answer.text
            error = answer.json()["error"]
            assert error["code"] == "backend_unavailable"
            assert error["message"].startswith("stage 1 (toy:3): ")
        # Every stage's chosen variant is asked for before any stage runs.
        chained = await client.post("/gateway/applications/chain", json={"input_1": BATCH})
        assert chained.status_code == 503, chained.text
        assert chained.json()["error"]["message"].startswith("stage 2 (toy:3): ")
        health = await client.get("/health/ready")
        detail = health.json()["applications"]
        assert detail["mixed"]["ready"] is True  # toy:1 serves its stage
        assert [line.split(": ")[0] for line in detail["mixed"]["unserved_variants"]] == ["stage 1 (toy:3)"]
        assert detail["chain"]["ready"] is False  # its stage 2 has nothing to serve it
        assert health.status_code == 503


# ---------------------------------------------------------------- the plans as JSON


def declared(inputs: str, outputs: str) -> str:
    return f"  version: 1\ncontract:\n  inputs:\n    {inputs}\n  outputs:\n    {outputs}\n"


INTS = declared("x: {type: int64, shape: [-1]}", "y: {type: int64, shape: [-1]}")
FLOATS = declared("x: {type: float32, shape: [-1]}", "y: {type: int64, shape: [-1]}")
TO_TEXT = declared("y: {type: int64, shape: [-1]}", "text: {type: string, shape: [-1]}")


def running_config(config: Path, target: str) -> Path:
    for name, contract in (("a", INTS), ("b", INTS), ("c", INTS), ("t", INTS), ("words", TO_TEXT)):
        write_remote_model(config, name, target, "Toy", contract)
    write_app(config, "canary", "pipeline:\n  - - {model: a:1, weight: 90}\n    - {model: b:1, weight: 10}\n"
                                "    - {model: c:1, shadow: true, sample: 0.5}\n  - model: words:1\n")
    write_app(config, "typed", "singular: {model: t:1}\n")
    write_app(config, "gone", "singular: {model: a:1}\n")
    return config


CANARY_PLAN = {
    "name": "canary",
    "inputs": [{"name": "x", "dtype": "int64", "shape": [-1]}],
    "outputs": [{"name": "text", "dtype": "string", "shape": [-1]}],
    "stages": [
        {"stage": 1,
         "variants": [{"model": "a:1", "shadow": False, "weight": 90, "share": 90.0},
                      {"model": "b:1", "shadow": False, "weight": 10, "share": 10.0},
                      {"model": "c:1", "shadow": True, "sample": 0.5}],
         "inputs": [{"name": "x", "dtype": "int64", "shape": [-1]}],
         "outputs": [{"name": "y", "dtype": "int64", "shape": [-1]}]},
        {"stage": 2,
         "variants": [{"model": "words:1", "shadow": False, "weight": 100, "share": 100.0}],
         "inputs": [{"name": "y", "dtype": "int64", "shape": [-1]}],
         "outputs": [{"name": "text", "dtype": "string", "shape": [-1]}]},
    ],
    "dropped": [],
    "problems": [],
    "shadow_problems": [],
}


def sha(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


KEYS = AuthSettings(api_keys=(ApiKey("canary-team", sha("canary-key"), ("canary",)), ApiKey("ops", sha("ops-key"))))


async def test_the_plans_as_json(tfs: FakeTFServing, tmp_path: Path) -> None:
    config = load_config(running_config(tmp_path / "config", tfs.target))
    async with (serve_app(create_app(Settings(access_log=False), config)) as url,
                httpx.AsyncClient(base_url=url, timeout=10) as client):
        one = await client.get("/gateway/applications/canary")
        assert one.status_code == 200
        assert one.headers["content-type"] == "application/json"
        assert one.json() == CANARY_PLAN
        listed = (await client.get("/gateway/applications")).json()["applications"]
        assert [plan["name"] for plan in listed] == ["canary", "gone", "typed"]
        assert listed[0] == CANARY_PLAN
        missing = await client.get("/gateway/applications/nope")
        assert (missing.status_code, missing.json()["error"]["code"]) == (404, "not_found")
        assert (await client.post("/gateway/applications/typed", json={"x": [1]})).status_code != 405  # still POST


async def test_the_plans_follow_the_api_keys(tfs: FakeTFServing, tmp_path: Path) -> None:
    config = load_config(running_config(tmp_path / "config", tfs.target))
    async with (serve_app(create_app(Settings(access_log=False, auth=KEYS), config)) as url,
                httpx.AsyncClient(base_url=url, timeout=10) as client):
        for path in ("/gateway/applications", "/gateway/applications/canary"):
            assert (await client.get(path)).status_code == 401
        team = {"authorization": "Bearer canary-key"}
        listed = (await client.get("/gateway/applications", headers=team)).json()["applications"]
        assert [plan["name"] for plan in listed] == ["canary"]
        assert (await client.get("/gateway/applications/canary", headers=team)).json() == CANARY_PLAN
        denied = await client.get("/gateway/applications/typed", headers=team)
        assert (denied.status_code, denied.json()["error"]["code"]) == (403, "permission_denied")
        everything = await client.get("/gateway/applications", headers={"x-api-key": "ops-key"})
        assert len(everything.json()["applications"]) == 3


# ---------------------------------------------------------------- gateway check --url


def next_config(config: Path, target: str) -> Path:
    """The running config with: canary reweighted, a variant and a shadow sample changed; typed's
    input a float; gone removed; fresh added."""
    for name, contract in (("a", INTS), ("b", INTS), ("c", INTS), ("d", INTS), ("t", FLOATS), ("words", TO_TEXT)):
        write_remote_model(config, name, target, "Toy", contract)
    write_app(config, "canary", "pipeline:\n  - - {model: a:1, weight: 50}\n    - {model: d:1, weight: 50}\n"
                                "    - {model: c:1, shadow: true, sample: 1.0}\n  - model: words:1\n")
    write_app(config, "typed", "singular: {model: t:1}\n")
    write_app(config, "fresh", "singular: {model: b:1}\n")
    return config


async def check(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str], str]:
    """`gateway check ARGV` (in a thread: the gateway it asks runs on this loop): its status,
    the lines it printed after the plans, and its error output."""
    capsys.readouterr()
    status = await asyncio.to_thread(main, ["check", *argv])
    out, err = capsys.readouterr()
    lines = out.splitlines()
    return status, lines[lines.index("configuration is valid") + 1:], err


async def test_check_against_a_running_gateway_prints_what_would_change(
        tfs: FakeTFServing, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    running = running_config(tmp_path / "running", tfs.target)
    changed = next_config(tmp_path / "next", tfs.target)
    async with serve_app(create_app(Settings(access_log=False), load_config(running))) as url:
        status, lines, err = await check(capsys, "--config", str(changed), "--url", url)
        assert lines == [
            f"changes against {url}:",
            "  application canary: stage 1 variant b:1 removed",
            "  application canary: stage 1 variant d:1 added (weight 50, 50%)",
            "  application canary: stage 1 variant a:1 weight 90 -> 50 (90% -> 50%)",
            "  application canary: stage 1 shadow c:1 sample 0.5 -> 1",
            "  application fresh: added",
            "  BREAKING application gone: removed",
            "  BREAKING application typed: input 'x' dtype int64 -> float32",
        ]
        assert status == 3
        assert err == f"gateway check: 2 breaking change(s) against {url}\n"

        status, lines, err = await check(capsys, "--config", str(running), "--url", url + "/")
        assert (status, lines, err) == (0, [f"no changes against {url}/"], "")


async def test_check_prints_each_applications_plan(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = running_config(tmp_path / "config", "127.0.0.1:1")
    write_remote_model(config, "x", "127.0.0.1:1", "Toy", declared("y: {type: int64, shape: [-1]}",
                                                                   "z: {type: int64, shape: [-1]}"))
    write_app(config, "canary", "pipeline:\n  - - {model: a:1, weight: 90}\n    - {model: b:1, weight: 10}\n"
                                "    - {model: c:1, shadow: true, sample: 0.5}\n  - model: x:1\n")
    assert main(["check", "--config", str(config)]) == 0
    out = capsys.readouterr().out.splitlines()
    start = out.index("application canary: a:1|b:1|c:1 -> x:1")
    assert out[start + 1:start + 9] == [
        "  stage 1: takes x (int64 [-1]); gives y (int64 [-1])",
        "    live a:1 weight 90 (90%)",
        "    live b:1 weight 10 (10%)",
        "    shadow c:1 sample 0.5",
        "  stage 2: takes y (int64 [-1]); gives z (int64 [-1])",
        "    live x:1 weight 100 (100%)",
        "  contract: inputs x (int64 [-1]); outputs z (int64 [-1])",
        "application gone: a:1",
    ]
    assert out[-1] == "configuration is valid"


async def test_check_says_when_the_gateway_does_not_answer_its_plans(
        tfs: FakeTFServing, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = running_config(tmp_path / "config", tfs.target)
    dead = f"http://127.0.0.1:{free_port()}"
    status, lines, err = await check(capsys, "--config", str(config), "--url", dead)
    assert (status, lines) == (2, [])
    assert err.startswith(f"gateway check: {dead}/gateway/applications does not answer: ")
    assert "Traceback" not in err
    status, _, err = await check(capsys, "--config", str(config), "--url", "not a url")
    assert status == 2
    assert "does not answer" in err
    answers: list[object] = [{"applications": [1]}, {"applications": [{"name": "x"}]}, [], {"applications": "x"}]
    for answer in answers:
        other = Starlette(routes=[Route("/gateway/applications", lambda _, body=answer: JSONResponse(body))])
        async with serve_app(other) as url:
            status, _, err = await check(capsys, "--config", str(config), "--url", url)
            assert status == 2
            assert err.startswith(f"gateway check: {url}/gateway/applications did not answer application plans: ")
    async with serve_app(create_app(Settings(access_log=False, auth=KEYS), load_config(config))) as url:
        status, _, err = await check(capsys, "--config", str(config), "--url", url)
        assert status == 2
        assert err.startswith(f"gateway check: {url}/gateway/applications answered 401: ")
        status, lines, err = await check(capsys, "--config", str(config), "--url", url, "--api-key", "canary-key")
        # the key sees canary only: the others are asked for by name, and not compared
        assert (status, lines) == (4, [f"changes against {url}:",
                                       "  application gone: not compared: the API key may not see it",
                                       "  application typed: not compared: the API key may not see it",
                                       NOT_SEEN])
        assert err == f"gateway check: 2 thing(s) not compared against {url}\n"
        changed = next_config(tmp_path / "next", tfs.target)
        status, lines, _ = await check(capsys, "--config", str(changed), "--url", url, "--api-key", "canary-key")
        assert (status, lines[-3:]) == (4, ["  application fresh: added",  # 404: really added
                                            "  application typed: not compared: the API key may not see it",
                                            NOT_SEEN])
        status, lines, _ = await check(capsys, "--config", str(changed), "--url", url, "--api-key", "ops-key")
        assert status == 3  # a key that sees everything: typed's new dtype and gone's removal are seen
        assert "  BREAKING application gone: removed" in lines


NOT_SEEN = "note: only the applications the API key may call are listed: a removed one it may not call is not seen"


async def test_check_compares_discovered_contracts_through_the_running_gateway(
        tfs: FakeTFServing, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    running = tmp_path / "running"
    write_remote_model(running, "toy", tfs.target, "Toy")
    write_app(running, "alone", "singular: {model: toy}\n")
    changed = tmp_path / "changed"
    write_remote_model(changed, "toy", tfs.target, "Toy")
    write_remote_model(changed, "toy_double", tfs.target, "Toy_double")
    write_app(changed, "alone", "singular: {model: toy_double}\n")
    async with serve_app(create_app(Settings(access_log=False), load_config(running))) as url:
        status, lines, err = await check(capsys, "--config", str(running), "--url", url)
        assert (status, lines, err) == (0, [f"no changes against {url}"], "")  # toy's contract: the gateway's
        status, lines, err = await check(capsys, "--config", str(changed), "--url", url)
        assert (status, lines) == (4, [
            f"changes against {url}:",
            "  application alone: stage 1 variant toy removed",
            "  application alone: stage 1 variant toy_double added (weight 100, 100%)",
            "  application alone: not compared: contract of stage 1 (toy_double): discovered from its backend "
            "when served"])


@pytest.mark.parametrize("argv", [["--timeout", "-1"], ["--timeout", "nan"], ["--timeout", "inf"], ["--timeout", "0"],
                                  ["--timeout", "soon"], ["--api-key", "k"]])
def test_check_refuses_bad_options_in_one_line(argv: list[str], tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    config = running_config(tmp_path / "config", "127.0.0.1:1")
    url = [] if argv[0] == "--api-key" else ["--url", "http://127.0.0.1:1"]
    with pytest.raises(SystemExit) as exit_:
        main(["check", "--config", str(config), *url, *argv])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.splitlines()[-1].startswith(("gateway check: error: ", "gateway: error: check: "))


async def test_check_refuses_declared_contracts_that_do_not_fit(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    config = running_config(tmp_path / "config", "127.0.0.1:1")
    write_app(config, "typed", "pipeline:\n  - model: words:1\n  - model: t:1\n")
    assert main(["check", "--config", str(config)]) == 2
    assert capsys.readouterr().err == (
        f"gateway: invalid configuration: {config}/applications/typed.yaml:5: application typed: stage 2 (t:1) "
        "input 'x' is not an output of stage 1 (words:1) (its outputs: 'text')\n")

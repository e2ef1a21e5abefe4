"""`gateway predict` and `gateway list` against a real uvicorn with real runtimes: the answer
printed, and the exit status of each kind of failure."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from gateway.app import create_app
from gateway.cli import exits, main
from gateway.client import AsyncClient
from gateway.manifests import Config, load_config
from gateway.settings import ApiKey, AuthSettings, Settings
from tests.conftest import REPO, free_port, runtimes_for, serve_app, write_app, write_model
from tests.waiting import until_in_flight


@pytest.fixture
async def url(example_config: Config) -> AsyncIterator[str]:
    async with serve_app(create_app(Settings(access_log=False), example_config)) as url:
        yield url


async def gateway(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """`gateway ARGV...` (in a thread: the server runs on this loop): status, stdout, stderr."""
    status = await asyncio.to_thread(main, list(argv))
    out, err = capsys.readouterr()
    return status, out, err


async def test_predict_prints_the_answer_as_one_line(url: str, capsys: pytest.CaptureFixture[str],
                                                     tmp_path: Path) -> None:
    assert await gateway(capsys, "predict", "increment_app", "--json", '{"number": [1, 2]}', "--url", url) == (
        0, '{"number":[2,3]}\n', "")
    request = tmp_path / "request.json"
    request.write_text('{"features": [[3, 20, 150]], "unit": "cm"}')
    status, out, _ = await gateway(capsys, "predict", "scaler_app", "--file", str(request), "--pretty", "--url", url)
    assert status == 0
    assert json.loads(out) == {"scaled": [[1.0, 2.0, 1.0]], "rows": 1, "unit": "cm"}
    assert out.startswith('{\n  "scaled"')
    status, out, _ = await gateway(capsys, "predict", "--model", "increment_numpy:2", "--json", '{"number": [5]}',
                                   "--url", url)
    assert (status, out) == (0, '{"number":[6]}\n')


async def test_predict_reads_stdin_and_gateway_url(url: str) -> None:
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "gateway", "predict", "increment_app", "-"], input='{"number": [41]}',
        capture_output=True, text=True, timeout=60, cwd=REPO, env={"GATEWAY_URL": url, "PATH": "/usr/bin:/bin"})
    assert (done.returncode, done.stdout, done.stderr) == (0, '{"number":[42]}\n', "")


@pytest.mark.parametrize("command", [["predict", "increment_app", "--json", "{}"], ["list"]])
def test_a_url_without_a_scheme_is_a_usage_error(command: list[str], monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("GATEWAY_URL", "127.0.0.1:8000")
    with pytest.raises(SystemExit) as done:
        main(command)
    assert done.value.code == exits.USAGE
    assert capsys.readouterr().err == (f"gateway {command[0]}: GATEWAY_URL must be an http:// or https:// URL with a "
                                       "host, got '127.0.0.1:8000' (e.g. http://127.0.0.1:8000)\n")
    with pytest.raises(SystemExit) as flag:
        main([*command, "--url", "localhost:8000"])
    assert flag.value.code == exits.USAGE
    assert "--url: must be an http:// or https:// URL with a host, got 'localhost:8000'" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["increment_app", "--pretty", "-", "--url"],
    ["increment_app", "--timeout", "10", "--pretty", "-", "--url"],
    ["--pretty", "increment_app", "-", "--url"],
    ["increment_app", "-", "--pretty", "--url"],
])
async def test_predict_reads_stdin_wherever_the_dash_is(url: str, capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch, argv: list[str]) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO('{"number": [41]}'))
    assert await gateway(capsys, "predict", *argv, url) == (0, '{\n  "number": [\n    42\n  ]\n}\n', "")


async def test_an_unknown_option_is_said_in_the_commands_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["predict", "increment_app", "--pretty", "--bogus", "-"])
    assert done.value.code == exits.USAGE
    err = capsys.readouterr().err
    assert err.startswith("usage: gateway predict ")
    assert "unrecognized arguments: --bogus" in err


@pytest.mark.parametrize(("argv", "status", "said"), [
    (["increment_app", "--json", '{"number": ["x"]}'], exits.REFUSED, "400 contract_violation: "),
    (["increment_app", "--json", '{"as_lists": [1]}'], exits.REFUSED, "400 contract_violation: "),
    (["nope", "--json", "{}"], exits.NOT_FOUND, "404 not_found: "),
    (["--model", "increment_model:7", "--json", '{"number": [1]}'], exits.NOT_FOUND, "404 not_found: "),
    (["increment_app", "--json", "[1]"], exits.USAGE, "must be a JSON object"),
    (["increment_app", "--json", "{"], exits.USAGE, "are not JSON"),
    (["increment_app"], exits.USAGE, "one of --json TEXT, --file F or -"),
    (["increment_app", "--file", "/nonexistent.json"], exits.USAGE, "cannot read /nonexistent.json"),
    (["increment_app", "--model", "increment_model", "--json", "{}"], exits.USAGE, "not both"),
    (["--model", "increment_model:one", "--json", "{}"], exits.USAGE, "NAME:VERSION"),
])
async def test_predict_exit_status_per_error(url: str, capsys: pytest.CaptureFixture[str], argv: list[str],
                                             status: int, said: str) -> None:
    got, out, err = await gateway(capsys, "predict", *argv, "--url", url)
    assert (got, out) == (status, "")
    assert err.startswith("gateway predict: ")
    assert said in err


async def test_predict_exit_status_unreachable(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = await gateway(capsys, "predict", "increment_app", "--json", '{"number": [1]}',
                                     "--url", f"http://127.0.0.1:{free_port()}", "--timeout", "0.5")
    assert (status, out) == (exits.UNREACHABLE, "")
    assert "gateway_unreachable" in err or "gateway_timeout" in err


async def test_predict_exit_status_unauthenticated_and_forbidden(example_config: Config,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    key = ApiKey(name="k", sha256=hashlib.sha256(b"s3cret").hexdigest(), applications=("scaler_app",))
    async with serve_app(create_app(Settings(access_log=False, auth=AuthSettings(api_keys=(key,))),
                                    example_config)) as url:
        body = ["--json", '{"number": [1]}', "--url", url]
        status, _, err = await gateway(capsys, "predict", "increment_app", *body)
        assert (status, err.split(":")[1].strip()) == (exits.DENIED, "401 unauthenticated")
        status, _, err = await gateway(capsys, "predict", "increment_app", *body, "--api-key", "s3cret")
        assert (status, err.split(":")[1].strip()) == (exits.DENIED, "403 permission_denied")


FAULTY = "def predict(x):\n    raise ValueError('no')\n"
SLOW = "import time\n\ndef predict(x):\n    time.sleep(int(x[0]) / 1000)\n    return x\n"


@pytest.fixture(scope="module")
def failing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Config]:
    root = tmp_path_factory.mktemp("failing")
    write_model(root, "faulty", "faulty", FAULTY)
    write_model(root, "slow", "slow", SLOW)
    write_app(root, "faulty", "faulty")
    write_app(root, "narrow", "slow", "max_concurrency: 1")
    with runtimes_for(load_config(root)) as bound:
        yield bound


async def test_predict_exit_status_model_error_and_busy(failing: Config, capsys: pytest.CaptureFixture[str]) -> None:
    async with serve_app(create_app(Settings(access_log=False), failing)) as url:
        status, _, err = await gateway(capsys, "predict", "faulty", "--json", '{"x": [1]}', "--url", url)
        assert status == exits.FAILED
        assert "500 model_error: " in err
        assert "ValueError: no" in err
        async with AsyncClient(url) as holder:
            await holder.predict("narrow", x=[0])  # its contract read: then only the busy request is in flight
            busy = asyncio.create_task(holder.predict("narrow", x=[1500]))
            await until_in_flight(url, 1)
            status, _, err = await gateway(capsys, "predict", "narrow", "--json", '{"x": [0]}', "--url", url,
                                           "--timeout", "0.8")  # one 1 s Retry-After would pass it: given up
            assert status == exits.BUSY
            assert "429 too_many_requests: " in err
            assert (await busy)["y"].tolist() == [1500]


async def test_list_prints_applications_and_models(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = await gateway(capsys, "list", "--url", url)
    assert (status, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].split() == ["APPLICATION", "READY", "STAGES"]
    assert lines[1].split() == ["canary_app", "yes", "increment_model:1", "90%", "|", "increment_numpy:1", "10%",
                                "|", "increment_numpy:2", "(shadow)"]
    assert lines[3].split() == ["pipeline_app", "yes", "celsius_model:1", "->", "kelvin_model:1", "->",
                                "phase_model:1"]
    header = lines.index("") + 1
    assert lines[header].split() == ["MODEL", "VERSION", "LABELS", "KIND", "STATE", "CONTRACT", "APPLICATIONS"]
    assert lines[header + 2].split() == ["increment_model", "1", "-", "local", "ready", "declared",
                                         "canary_app,increment_app"]
    assert lines[1].index("yes") == lines[0].index("READY")  # aligned columns
    status, out, _ = await gateway(capsys, "list", "--url", url, "--json")
    listed = json.loads(out)
    assert [app["name"] for app in listed["applications"]] == ["canary_app", "increment_app", "pipeline_app",
                                                               "scaler_app"]
    assert len(listed["models"]) == 7


async def test_list_exit_status_unreachable(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = await gateway(capsys, "list", "--url", f"http://127.0.0.1:{free_port()}", "--timeout", "0.3")
    assert (status, out) == (exits.UNREACHABLE, "")
    assert err.startswith("gateway list: ")

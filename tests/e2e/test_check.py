"""`gateway check` imports the model code and names what does not load; `gateway serve` checks
its port before starting any runtime."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, write_app, write_model
from tests.e2e.processes import GATEWAY, alive

GOOD = "def predict(x):\n    return x + 1\n"
REMOTE = ("kind: Model\nname: toy\nbackend: {protocol: tensorflow-serving, target: 127.0.0.1:1}\n"
          "---\nkind: Model\nname: toy\nversion: 2\nbackend: {protocol: tensorflow-serving, target: 127.0.0.1:1}\n")


def check(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(GATEWAY), "check", "--config", str(config)], cwd=REPO, capture_output=True,
                          text=True, timeout=60, check=False)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    root = tmp_path / "config"
    root.mkdir()
    (root / "gateway.yaml").write_text("kind: Gateway\ndefaults: {runtime_start_timeout_s: 2}\n")
    write_model(root, "counter", "counter", GOOD)
    write_app(root, "app", "counter")
    return root


def test_a_valid_config_passes_and_remote_models_are_named_as_applications_name_them(config: Path) -> None:
    (config / "models" / "toy.yaml").write_text(REMOTE)
    result = check(config)
    assert result.returncode == 0, result.stderr
    assert "model counter:1 (folder" in result.stdout
    assert "model toy (127.0.0.1:1)" in result.stdout  # floating: every version
    assert "model toy:2 (127.0.0.1:1)" in result.stdout
    assert "toy:0" not in result.stdout
    assert result.stdout.rstrip().endswith("configuration is valid")


def test_v2_models_are_checked_and_a_label_no_manifest_defines_is_named(config: Path) -> None:
    (config / "models" / "adder.yaml").write_text(
        "kind: Model\nname: adder\nbackend: {protocol: v2, target: 127.0.0.1:1, model_name: add}\n"
        "version_labels: {stable: 1}\n")
    write_app(config, "adder_app", "adder@stable")
    result = check(config)
    assert result.returncode == 0, result.stderr
    assert "model adder (127.0.0.1:1)" in result.stdout
    write_app(config, "adder_app", "adder@canary")
    result = check(config)
    assert result.returncode == 2
    assert ("adder_app.yaml:4: model adder has no version label 'canary' (defined: stable; its v2 backend has "
            "no labels of its own)") in result.stderr


@pytest.mark.parametrize(("source", "line", "complaint"), [
    ("def predict(x):\n    return (\n", 2, "syntax error"),
    ("import numpy\nimport no_such_module_anywhere\n\ndef predict(x):\n    return x\n", 2,
     "No module named 'no_such_module_anywhere'"),
    ("import json\n\njson.loads('{')\n\ndef predict(x):\n    return x\n", 3, "JSONDecodeError"),
    # `serve` fails such a model whatever the code, 0 included
    ("import sys\n\nsys.exit(0)\n\ndef predict(x):\n    return x\n", 3, "called sys.exit(0) while importing"),
    ("import sys\nsys.exit(5)\n", 2, "called sys.exit(5) while importing"),
], ids=["syntax-error", "import-error", "raises-on-import", "sys-exit-0", "sys-exit-5"])
def test_a_model_that_does_not_load_fails_the_check_with_file_and_line(
        config: Path, source: str, line: int, complaint: str) -> None:
    code = config / "models" / "counter" / "src" / "func_main.py"
    code.write_text(source)
    result = check(config)
    assert result.returncode == 1
    assert f"{code}:{line}" in result.stderr
    assert complaint in result.stderr
    assert "configuration is valid" not in result.stdout


def test_a_model_hanging_on_import_fails_the_check_at_the_timeout(config: Path) -> None:
    (config / "models" / "counter" / "src" / "func_main.py").write_text("import time\ntime.sleep(60)\n")
    result = check(config)
    assert result.returncode == 1
    assert "did not finish within 2s" in result.stderr


def test_a_process_the_model_starts_at_import_neither_holds_up_nor_outlives_the_check(config: Path) -> None:
    (config / "models" / "counter" / "src" / "func_main.py").write_text(
        "import subprocess\n\nchild = subprocess.Popen(['sleep', '30'])\nopen('child', 'w').write(str(child.pid))\n\n"
        + GOOD)
    started = time.monotonic()
    result = check(config)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 10
    assert not alive(int((config / "models" / "counter" / "child").read_text()))


def test_an_empty_application_file_fails_the_check(config: Path) -> None:
    manifest = config / "applications" / "app.yaml"
    manifest.write_text("")
    result = check(config)
    assert result.returncode == 2
    assert f"{manifest}:1" in result.stderr


def test_serve_on_a_busy_port_fails_before_starting_any_runtime(config: Path) -> None:
    (config / "models" / "counter" / "src" / "func_main.py").write_text(
        "open('started', 'w').close()\n\n" + GOOD)  # the runtime runs in the model folder
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run([str(GATEWAY), "serve", "--config", str(config), "--port", str(port)],
                                cwd=REPO, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert not (config / "models" / "counter" / "started").exists()

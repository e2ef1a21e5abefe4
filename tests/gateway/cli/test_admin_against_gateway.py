"""`gateway upload`, `apply` and `delete` against a real `gateway serve` of a config directory of
their own, with an admin token: what each prints and its exit status (real runtimes, real builds)."""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.cli import exits, main
from tests.e2e.processes import running_gateway

TOKEN = "admin-secret"
MAX_UPLOAD_BYTES = 256 * 1024
CONTRACT = ("contract:\n  inputs:\n    {name}: {{shape: [-1], type: int32}}\n"
            "  outputs:\n    y: {{shape: [-1], type: int32}}\n")


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    config = tmp_path_factory.mktemp("admin") / "config"
    config.mkdir()
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    (config / "gateway.yaml").write_text(f"kind: Gateway\nauth:\n  admin_token_sha256: [{digest}]\n"
                                         f"limits:\n  max_upload_bytes: {MAX_UPLOAD_BYTES}\n")
    with running_gateway(config) as (_, address):
        yield address


def model_folder(root: Path, name: str, input_name: str = "x", install: str | None = None) -> Path:
    folder = root / name
    (folder / "src").mkdir(parents=True)
    (folder / "src" / "func_main.py").write_text(f"def predict({input_name}):\n    return {{'y': {input_name} + 1}}\n")
    (folder / "notes.txt").write_text("not packed\n")
    command = f"install-command: {json.dumps(install)}\n" if install else ""  # YAML reads JSON strings
    (folder / "serving.yaml").write_text(f"kind: Model\nname: {name}\n{command}payload: [src/]\n"
                                         + CONTRACT.format(name=input_name))
    return folder


def gateway(capsys: pytest.CaptureFixture[str], *words: str) -> tuple[int, str, str]:
    status = main(list(words))
    out, err = capsys.readouterr()
    return status, out, err


def test_upload_sends_with_progress_and_answers_each_new_version(url: str, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    folder = model_folder(tmp_path, "plus_one")
    status, out, err = gateway(capsys, "upload", str(folder), "--url", url, "--token", TOKEN)
    assert status == exits.OK, err
    assert out.splitlines() == ["version plus_one:1", "starting plus_one:1", "model plus_one:1 is serving"]
    sending, sent = err.splitlines()
    assert sending.startswith("sending plus_one: 2 file(s), ")  # serving.yaml and src/func_main.py
    assert sent.startswith("sent ")
    monkeypatch.setenv("GATEWAY_URL", url)
    monkeypatch.setenv("GATEWAY_ADMIN_TOKEN", TOKEN)
    monkeypatch.chdir(folder)
    status, out, err = gateway(capsys, "upload")  # the current folder, the gateway and token from the environment
    assert (status, out.splitlines()[-1]) == (exits.OK, "model plus_one:2 is serving"), err
    status, out, _ = gateway(capsys, "list")
    rows = [line.split() for line in out.splitlines() if line.startswith("plus_one")]
    assert [row[:2] + row[4:5] for row in rows] == [["plus_one", "1", "ready"], ["plus_one", "2", "ready"]]
    answer = httpx.post(f"{url}/gateway/models/plus_one/versions/2", json={"x": [1]}, timeout=10)
    assert answer.json() == {"y": [2]}


def test_upload_without_or_with_a_wrong_token_exits_5(url: str, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("GATEWAY_ADMIN_TOKEN", raising=False)
    folder = model_folder(tmp_path, "nobody")
    for token in ([], ["--token", "wrong"]):
        status, out, err = gateway(capsys, "upload", str(folder), "--url", url, *token)
        assert (status, out) == (exits.DENIED, "")
        assert "gateway upload: 401 unauthenticated: admin routes need Authorization: Bearer" in err


def test_an_archive_over_the_upload_limit_is_refused(url: str, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    folder = model_folder(tmp_path, "too_big")
    (folder / "src" / "weights.bin").write_bytes(os.urandom(2 * MAX_UPLOAD_BYTES))  # random: gzip cannot shrink it
    status, out, err = gateway(capsys, "upload", str(folder), "--url", url, "--token", TOKEN)
    assert (status, out) == (exits.REFUSED, "")
    assert "gateway upload: 413 payload_too_large: the model archive of " in err


def test_a_failed_build_shows_its_output_and_leaves_no_version(url: str, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    folder = model_folder(tmp_path, "broken", install="python -c \"print('compiling broken'); raise SystemExit(3)\"")
    status, out, err = gateway(capsys, "upload", str(folder), "--url", url, "--token", TOKEN)
    assert status == exits.REFUSED
    assert out.splitlines()[0] == "building broken:1: python -c \"print('compiling broken'); raise SystemExit(3)\""
    assert "compiling broken" in out.splitlines()[1:]
    assert "gateway upload: 422 build_failed: " in err
    models = httpx.get(f"{url}/gateway/models", timeout=10).json()["models"]
    assert "broken" not in {model["name"] for model in models}


def test_apply_from_a_file_and_from_stdin(url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    manifest = tmp_path / "app.yaml"
    manifest.write_text("kind: Application\nname: app_a\nsingular:\n  model: plus_one:1\n")
    status, out, err = gateway(capsys, "apply", "-f", str(manifest), "--url", url, "--token", TOKEN)
    assert status == exits.OK, err
    assert (out.splitlines()[0], out.splitlines()[-1]) == ("application app_a created", "applied")
    assert httpx.post(f"{url}/gateway/applications/app_a", json={"x": [41]}, timeout=10).json() == {"y": [42]}
    monkeypatch.setattr("sys.stdin", io.StringIO(manifest.read_text()))
    status, out, err = gateway(capsys, "apply", "-f", "-", "--url", url, "--token", TOKEN)
    assert (status, out.splitlines()[0]) == (exits.OK, "application app_a unchanged"), err
    monkeypatch.setattr("sys.stdin", io.StringIO("kind: Application\nname: app_b\nsingle:\n  model: plus_one:1\n"))
    status, out, err = gateway(capsys, "apply", "-f", "-", "--url", url, "--token", TOKEN)
    assert (status, out) == (exits.USAGE, "")
    assert "gateway apply: 422 invalid_manifest: <stdin>:" in err
    manifest.write_text("kind: Application\nname: app_c\nsingular:\n  model: plus_one:9\n")
    status, out, err = gateway(capsys, "apply", "-f", str(manifest), "--url", url, "--token", TOKEN)
    assert (status, out) == (exits.USAGE, "")  # a version the gateway lacks: an invalid document
    assert f"gateway apply: 422 invalid_manifest: {manifest}:" in err
    assert "model plus_one has no version 9 (defined: 1, 2)" in err


def test_a_dry_run_with_breaking_changes_exits_3_and_changes_nothing(url: str, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = gateway(capsys, "upload", str(model_folder(tmp_path, "other", input_name="z")), "--url", url,
                             "--token", TOKEN)
    assert status == exits.OK, err
    manifest = tmp_path / "app.yaml"
    manifest.write_text("kind: Application\nname: app_a\nsingular:\n  model: other:1\n")
    status, out, err = gateway(capsys, "apply", "-f", str(manifest), "--dry-run", "--url", url, "--token", TOKEN)
    assert status == exits.REFUSED
    lines = out.splitlines()
    assert lines[0] == "application app_a would be updated"
    assert "plan of application app_a:" in lines
    assert any(line.startswith("  BREAKING application app_a: ") for line in lines)
    assert lines[-1] == "dry run: nothing was applied"
    assert "breaking change(s): nothing was applied" in err
    assert httpx.post(f"{url}/gateway/applications/app_a", json={"x": [1]}, timeout=10).json() == {"y": [2]}


def test_delete_refuses_a_version_in_use_then_removes(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    admin = ["--url", url, "--token", TOKEN]
    status, out, err = gateway(capsys, "delete", "model", "plus_one:1", *admin)
    assert (status, out) == (exits.REFUSED, "")
    assert "gateway delete: 409 " in err
    assert "app_a" in err
    assert gateway(capsys, "delete", "application", "app_a", *admin)[:2] == (exits.OK, "deleted application app_a\n")
    assert gateway(capsys, "delete", "model", "plus_one:1", *admin)[:2] == (exits.OK, "deleted model plus_one:1\n")
    status, _, err = gateway(capsys, "delete", "model", "plus_one:1", *admin)
    assert status == exits.NOT_FOUND
    assert "gateway delete: 404 " in err

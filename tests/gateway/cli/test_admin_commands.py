"""The pure parts of `gateway upload`, `apply` and `delete`: the sending's progress without and
with a terminal, what apply prints, flags before environment variables, and usage errors found
before anything is sent (exit 2)."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import pytest

from gateway.cli import exits, main
from gateway.cli.apply import lines
from gateway.cli.common import admin_exit_status, admin_token, client_url
from gateway.cli.upload import SendBar, size_text
from gateway.client.admin import AdminClient
from gateway.client.errors import error_for


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        self.now += 0.0625  # exact in binary: the elapsed times print without rounding doubt
        return self.now


def test_sending_without_a_terminal_is_a_line_at_start_and_one_at_end() -> None:
    out = io.StringIO()
    bar = SendBar("increment_model", 3, stream=out, clock=Clock())
    for sent in range(0, 5000, 1000):
        bar.update(sent + 1000, 5000)
    bar.close()
    assert out.getvalue().splitlines() == ["sending increment_model: 3 file(s), 4.9 KiB", "sent 4.9 KiB in 0.2 s"]


def test_sending_on_a_terminal_redraws_one_bar_in_place() -> None:
    out = Terminal()
    bar = SendBar("increment_model", 3, stream=out, columns=80, clock=Clock())
    for sent in range(1, 11):
        bar.update(sent * 1024, 10 * 1024)
    text = out.getvalue()
    frames = [frame.removesuffix("\x1b[K") for frame in text.split("\r") if frame.startswith("sending")]
    assert 3 <= len(frames) <= 10  # at most one redraw each 0.1 s, and the last one
    assert frames[0].startswith("sending increment_model [")
    assert "10% 1.0 KiB / 10.0 KiB" in frames[0]
    assert frames[-1].endswith("] 100% 10.0 KiB / 10.0 KiB")
    assert "." not in frames[-1].split("[")[1].split("]")[0]
    assert all(len(frame) <= 79 for frame in frames)
    assert text.endswith("\r\x1b[Ksent 10.0 KiB in 0.6 s\n")  # the bar gives way to the summary


def test_a_bar_cut_short_by_an_answer_ends_its_line() -> None:
    out = Terminal()
    bar = SendBar("m", 1, stream=out, columns=60, clock=Clock())
    bar.update(1024, 1 << 30)
    bar.close()
    assert out.getvalue().endswith("1.0 KiB / 1.0 GiB\x1b[K\n")


def test_size_text() -> None:
    assert [size_text(n) for n in (0, 1023, 1024, 5 << 20, 3 << 30)] == ["0 B", "1023 B", "1.0 KiB", "5.0 MiB",
                                                                         "3.0 GiB"]


def test_apply_prints_actions_plans_and_changes_breaking_marked() -> None:
    answer = {"applied": False, "dry_run": True,
              "documents": [{"kind": "Application", "name": "increment_app", "action": "updated"},
                            {"kind": "Model", "name": "toy", "version": 2, "action": "unchanged"}],
              "changes": ["BREAKING application increment_app: input number removed"], "breaking": 1,
              "plans": {"increment_app": ["stage 1: increment_model:2", "inputs: x int32 [-1]"]}}
    assert lines(answer) == ["application increment_app would be updated", "model toy:2 unchanged",
                             "plan of application increment_app:", "  stage 1: increment_model:2",
                             "  inputs: x int32 [-1]", "changes:",
                             "  BREAKING application increment_app: input number removed",
                             "dry run: nothing was applied"]
    applied = {**answer, "dry_run": False, "applied": True, "changes": [], "breaking": 0}
    assert lines(applied) == ["application increment_app updated", "model toy:2 unchanged", "applied"]
    assert lines({**applied, "applied": False})[-1] == "nothing to apply: the gateway already serves these documents"


def test_flags_come_before_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_URL", "http://127.0.0.1:9001")
    monkeypatch.setenv("GATEWAY_ADMIN_TOKEN", "from-env")
    given = argparse.Namespace(command="upload", url="http://127.0.0.1:9002", token="from-flag")
    assert (client_url(given), admin_token(given)) == ("http://127.0.0.1:9002", "from-flag")
    unset = argparse.Namespace(command="upload", url=None, token=None)
    assert (client_url(unset), admin_token(unset)) == ("http://127.0.0.1:9001", "from-env")
    with AdminClient() as client:
        assert (client.url, client.token) == ("http://127.0.0.1:9001", "from-env")
    with AdminClient("http://127.0.0.1:9003/", token="t") as client:
        assert (client.url, client.token) == ("http://127.0.0.1:9003", "t")
    monkeypatch.delenv("GATEWAY_URL")
    monkeypatch.delenv("GATEWAY_ADMIN_TOKEN")
    assert (client_url(unset), admin_token(unset)) == ("http://127.0.0.1:8000", None)


def test_a_bad_gateway_url_in_the_environment_is_a_usage_error(monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("GATEWAY_URL", "127.0.0.1:8000")
    with pytest.raises(SystemExit) as done:
        main(["delete", "application", "increment_app"])
    assert done.value.code == 2
    assert "gateway delete: GATEWAY_URL must be an http:// or https:// URL" in capsys.readouterr().err


@pytest.mark.parametrize(("words", "error"), [
    (["delete", "model", "increment_model"], "a model version is NAME:VERSION (a whole number), got 'increment_model'"),
    (["delete", "model", "increment_model:x"], "NAME:VERSION (a whole number)"),
    (["apply", "-f", "/nonexistent/app.yaml"], "cannot read /nonexistent/app.yaml: No such file or directory"),
    (["upload", "/nonexistent"], "/nonexistent is not a folder"),
])
def test_usage_errors_exit_2_before_anything_is_sent(words: list[str], error: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*words, "--url", "http://127.0.0.1:9"]) == 2
    assert error in capsys.readouterr().err


def test_upload_of_an_invalid_folder_names_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "serving.yaml").write_text("kind: Model\nname: bad name\n")
    assert main(["upload", str(tmp_path), "--url", "http://127.0.0.1:9"]) == 2
    assert f"gateway upload: {tmp_path / 'serving.yaml'}:2: name: 'bad name' is not a valid model name" \
        in capsys.readouterr().err


def test_only_an_invalid_manifest_is_a_usage_error_among_the_422s() -> None:
    assert admin_exit_status(error_for(422, "invalid_manifest", "app.yaml:3: singular: required")) == exits.USAGE
    assert admin_exit_status(error_for(422, "build_failed", "exit status 1")) == exits.REFUSED
    assert admin_exit_status(error_for(422, "reload_refused", "model m:1 does not start")) == exits.REFUSED
    assert admin_exit_status(error_for(409, "conflict", "in use by app_a")) == exits.REFUSED
    assert admin_exit_status(error_for(401, "unauthenticated", "admin token")) == exits.DENIED

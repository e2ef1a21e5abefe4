"""`request_log:` on kind Model and kind Application: defaults, and a file:line:field error for
every bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.manifests import load_config
from gateway.manifests.request_log_kind import request_log_text
from gateway.manifests.types import CloudEventsSpec, FileSinkSpec, RequestLogSpec
from tests.conftest import write_app, write_model

IDENTITY = "def predict(x):\n    return x\n"


def _config(tmp_path: Path, model_log: str = "", app_log: str = "") -> Path:
    root = tmp_path / "config"
    write_model(root, "m", "m", IDENTITY, extra=model_log)
    write_app(root, "app", "m:1", app_log)
    return root


def test_both_kinds_take_a_request_log_with_defaults(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    root = _config(tmp_path, f"request_log:\n  file: {{dir: {logs}}}\n",
                   "request_log:\n  sample_rate: 0.25\n  cloudevents: {url: 'http://127.0.0.1:9/events'}\n"
                   f"  file: {{dir: {logs}}}")
    config = load_config(root)
    model_log = config.models[("m", 1)].request_log
    assert model_log == RequestLogSpec(1.0, FileSinkSpec(logs, 64 << 20, 10, 4 << 20), None,
                                       f"{root / 'models/m/serving.yaml'}:3")
    app_log = config.applications["app"].request_log
    assert app_log is not None
    assert (app_log.sample_rate, app_log.file, app_log.cloudevents) == (
        0.25, FileSinkSpec(logs), CloudEventsSpec("http://127.0.0.1:9/events", 5.0, 3, 4 << 20))
    assert app_log.source == f"{root / 'applications/app.yaml'}:5"


def test_a_relative_dir_is_relative_to_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    root = _config(tmp_path, "request_log: {file: {dir: out/logs}}")
    log = load_config(root).models[("m", 1)].request_log
    assert log is not None
    assert log.file is not None
    assert log.file.dir == tmp_path / "out" / "logs"


BAD = [
    ("request_log: {sample_rate: 1.5, file: {dir: /tmp/l}}", "request_log.sample_rate: must be between 0.0 and 1.0"),
    ("request_log: {sample_rate: -0.1, file: {dir: /tmp/l}}", "request_log.sample_rate: must be between"),
    ("request_log: {sample_rate: half, file: {dir: /tmp/l}}", "request_log.sample_rate: expected a number, got 'half'"),
    ("request_log: {sample_rate: 0.5}", "request_log: needs a sink"),
    ("request_log: {file: {dir: /tmp/l}, kafka: x}", "request_log.kafka: unknown field (accepted: cloudevents, file"),
    ("request_log: {file: {dir: /tmp/l, max_size: 3}}", "request_log.file.max_size: unknown field"),
    ("request_log: {file: {max_bytes: 3}}", "request_log.file.dir: required field is missing"),
    ("request_log: {file: {dir: /tmp/l, max_bytes: 0}}", "request_log.file.max_bytes: must be at least 1, got 0"),
    ("request_log: {file: {dir: /tmp/l, max_files: -2}}", "request_log.file.max_files: must be at least 1, got -2"),
    ("request_log: {file: {dir: /tmp/l, max_record_bytes: 0}}",
     "request_log.file.max_record_bytes: must be at least 1"),
    ("request_log: {file: {dir: /tmp/l, max_bytes: 100, max_record_bytes: 200}}",
     "request_log.file.max_record_bytes: 200 is more than max_bytes (100)"),
    ("request_log: {cloudevents: {url: 'ftp://x/'}}",
     "request_log.cloudevents.url: 'ftp://x/' is not an http:// or https://"),
    ("request_log: {cloudevents: {url: 'collector:8080'}}", "request_log.cloudevents.url: 'collector:8080' is not"),
    ("request_log: {cloudevents: {url: 'http://x/', timeout_s: 0}}",
     "request_log.cloudevents.timeout_s: must be a number greater than 0"),
    ("request_log: {cloudevents: {url: 'http://x/', retries: -1}}",
     "request_log.cloudevents.retries: must be between 0 and 10"),
    ("request_log: [file]", "request_log: expected a mapping, got a list"),
    ("request_log:", "request_log: is empty: give it a sink"),
    ("request_log: {file: {dir: /tmp/l, max_bytes: 1000}}",
     "request_log.file.max_bytes: 1000 is less than max_record_bytes (4194304, the default)"),
    ("request_log: {cloudevents: {url: 'http:// bad url'}}",
     "request_log.cloudevents.url: 'http:// bad url' is not an http:// or https:// URL with a host"),
    ("request_log: {cloudevents: {url: 'http:///events'}}", "request_log.cloudevents.url: 'http:///events' is not"),
    ("request_log: {cloudevents: {url: 'http://x/', retries: 11}}",
     "request_log.cloudevents.retries: must be between 0 and 10, got 11"),
    ("request_log: {cloudevents: {url: 'http://x/', timeout_s: 61}}",
     "request_log.cloudevents.timeout_s: must be a number greater than 0 and at most 60, got 61.0"),
    ("request_log: {cloudevents: {url: 'http://x/', timeout_s: .inf}}", "request_log.cloudevents.timeout_s: must be"),
]


@pytest.mark.parametrize(("text", "message"), BAD)
@pytest.mark.parametrize("kind", ["Model", "Application"])
def test_every_bad_value_is_an_error_naming_file_line_and_field(tmp_path: Path, kind: str, text: str,
                                                                 message: str) -> None:
    root = _config(tmp_path, text if kind == "Model" else "", text if kind == "Application" else "")
    with pytest.raises(ConfigError) as caught:
        load_config(root)
    assert message in str(caught.value)
    manifest = "models/m/serving.yaml:3" if kind == "Model" else "applications/app.yaml:5"
    assert f"{root / manifest}" in str(caught.value)


def test_a_dir_inside_the_config_directory_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "config"
    root_log = f"request_log: {{file: {{dir: {root}/logs}}}}"
    root = _config(tmp_path, app_log=root_log)
    with pytest.raises(ConfigError, match="is inside the config directory") as caught:
        load_config(root)
    assert f"{root}/applications/app.yaml:5" in str(caught.value)


def test_two_manifests_naming_one_dir_agree_on_its_limits(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    same = f"request_log: {{file: {{dir: {logs}, max_files: 3}}}}"
    load_config(_config(tmp_path / "a", same, same))  # the same limits: one writer, fine
    other = f"request_log: {{file: {{dir: {logs}, max_files: 4}}}}"
    with pytest.raises(ConfigError, match=r"is also a request-log directory at .*with other limits"):
        load_config(_config(tmp_path / "b", same, other))


def test_gateway_check_prints_each_request_log() -> None:
    spec = RequestLogSpec(0.25, FileSinkSpec(Path("/var/log/gw"), 1000, 3, 100), CloudEventsSpec("http://c/"))
    assert request_log_text(spec) == ("request log: sample 0.25 to file /var/log/gw (3 files of 1000 bytes, "
                                      "records up to 100), cloudevents http://c/")


def test_two_manifests_naming_one_cloudevents_url_agree_on_its_settings(tmp_path: Path) -> None:
    same = "request_log: {cloudevents: {url: 'http://127.0.0.1:9/e', retries: 2}}"
    load_config(_config(tmp_path / "a", same, same))  # one sink, fine
    other = "request_log: {cloudevents: {url: 'http://127.0.0.1:9/e', retries: 2, timeout_s: 1}}"
    root = _config(tmp_path / "b", same, other)
    with pytest.raises(ConfigError, match=r"http://127.0.0.1:9/e is also a CloudEvents sink at .*with other "
                                          r"settings") as caught:
        load_config(root)
    message = str(caught.value)
    assert f"{root / 'models/m/serving.yaml'}:3" in message or f"{root / 'applications/app.yaml'}:5" in message


def test_two_cloudevents_urls_shown_alike_are_refused(tmp_path: Path) -> None:
    a = "request_log: {cloudevents: {url: 'https://tenant-a:tok1@c/in?key=abc'}}"
    b = "request_log: {cloudevents: {url: 'https://tenant-b:tok2@c/in?key=xyz'}}"
    with pytest.raises(ConfigError, match=r"https://c/in\?key=… is shown as a CloudEvents sink at .* too, whose "
                                          r"URL differs only in its credentials or query values") as caught:
        load_config(_config(tmp_path, a, b))
    assert "tok1" not in str(caught.value)
    assert "tok2" not in str(caught.value)


@pytest.mark.parametrize(("url", "shown"), [
    ("https://user:s3cret@collector.example:8443/ingest?access_token=abc&x=1#frag",
     "https://collector.example:8443/ingest?access_token=…&x=…"),
    ("http://collector/", "http://collector/"),
    ("http://[::1]:9000/e", "http://[::1]:9000/e"),
])
def test_gateway_check_shows_a_cloudevents_url_without_credentials(url: str, shown: str) -> None:
    spec = RequestLogSpec(1.0, None, CloudEventsSpec(url))
    assert request_log_text(spec) == f"request log: sample 1 to cloudevents {shown}"

"""`gateway openapi`: the document of a config written offline, in either format and version,
valid for openapi-spec-validator; an invalid config is exit status 2 with its file:line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from openapi_spec_validator import validate
from openapi_spec_validator.validation import OpenAPIV30SpecValidator, OpenAPIV31SpecValidator

from gateway.cli import main
from tests.conftest import CONFIG_DIR


def test_the_document_goes_to_stdout_as_openapi_31_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["openapi", "--config", str(CONFIG_DIR)]) == 0
    document = json.loads(capsys.readouterr().out)
    validate(document, cls=OpenAPIV31SpecValidator)
    assert document["openapi"].startswith("3.1")
    assert {"/gateway/applications/increment_app", "/gateway/applications/scaler_app"} <= set(document["paths"])


@pytest.mark.parametrize(("argv", "name"), [
    (["--format", "yaml", "--openapi", "3.0"], "openapi.txt"),
    (["--openapi", "3.0"], "openapi.yaml"),  # the suffix says YAML
])
def test_yaml_and_openapi_30_to_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
                                       name: str) -> None:
    out = tmp_path / name
    assert main(["openapi", "--config", str(CONFIG_DIR), "--out", str(out), *argv]) == 0
    assert capsys.readouterr().out == ""
    document = yaml.safe_load(out.read_text())
    validate(document, cls=OpenAPIV30SpecValidator)
    assert document["openapi"] == "3.0.3"


def test_an_invalid_config_is_status_2_with_its_file_and_line(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "applications").mkdir()
    (tmp_path / "applications" / "bad.yaml").write_text("kind: Application\nname: bad\nsingular:\n  model: nope:1\n")
    assert main(["openapi", "--config", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "gateway openapi: invalid configuration: " in captured.err
    assert "applications/bad.yaml:4: model nope is not defined" in captured.err


def test_a_file_that_cannot_be_written_is_status_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["openapi", "--config", str(CONFIG_DIR), "--out", str(tmp_path / "missing" / "o.json")]) == 2
    assert "gateway openapi: cannot write " in capsys.readouterr().err

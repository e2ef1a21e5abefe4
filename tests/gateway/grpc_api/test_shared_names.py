"""`gateway check` warns when an application and a model share a name (gRPC serves the application)."""

from __future__ import annotations

from pathlib import Path

from gateway.cli.check import shared_name_warnings
from gateway.manifests import load_config
from tests.conftest import write_app, write_model

SOURCE = "def predict(x):\n    return {'y': x}\n"


def test_an_application_named_as_a_model_is_warned_about(tmp_path: Path) -> None:
    write_model(tmp_path, "toy", "toy", SOURCE)
    write_model(tmp_path, "other", "other", SOURCE)
    write_app(tmp_path, "toy", "toy:1")
    write_app(tmp_path, "other_app", "other:1")
    warnings = shared_name_warnings(load_config(tmp_path))
    assert len(warnings) == 1
    assert warnings[0].startswith("application toy and model toy share a name: gRPC Predict")

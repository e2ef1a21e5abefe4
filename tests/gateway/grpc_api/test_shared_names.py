"""`gateway check` warns when an application and a model share a name (gRPC serves the application)."""

from __future__ import annotations

from pathlib import Path

from gateway.cli.check import shared_name_warnings
from gateway.manifests import load_config
from tests.conftest import write_app, write_model
from tests.gateway.test_tfserving_api import write_config

SOURCE = "def predict(x):\n    return {'y': x}\n"


def test_an_application_named_as_a_model_is_warned_about(tmp_path: Path) -> None:
    write_model(tmp_path, "toy", "toy", SOURCE)
    write_model(tmp_path, "other", "other", SOURCE)
    write_app(tmp_path, "toy", "toy:1")
    write_app(tmp_path, "other_app", "other:1")
    warnings = shared_name_warnings(load_config(tmp_path))
    assert len(warnings) == 1
    assert warnings[0].startswith("application toy and model toy share a name: gRPC Predict")


def test_an_application_named_as_a_backend_model_is_warned_about(tmp_path: Path) -> None:
    write_config(tmp_path, "127.0.0.1:1")
    write_app(tmp_path, "Toy", "toy:1")  # what TF clients send as model_spec.name (`-m Toy`)
    warnings = shared_name_warnings(load_config(tmp_path))
    assert len(warnings) == 1
    assert warnings[0].startswith("application Toy shares its name with the backend model Toy (served as model toy")

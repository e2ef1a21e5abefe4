"""Loading manifests: the example, and errors that name file, line and field."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from gateway.backends.protocols import PROTOCOLS
from gateway.errors import ConfigError
from gateway.manifests import (
    ModelRef,
    Resolution,
    Selector,
    load_config,
    load_model_manifest,
    parse_model_ref,
    resolve_ref,
)
from gateway.registry import BACKENDS
from tests.conftest import CONFIG_DIR, INCREMENT_MODEL


def test_example_config_loads() -> None:
    config = load_config(CONFIG_DIR)
    model = config.models[("increment_model", 1)]
    assert model.signature.name == "increment"
    spec = model.signature.inputs["number"]
    assert (spec.dtype.name, spec.shape, spec.profile) == ("int32", (-1,), "numerical")
    assert model.install_command == "pip install -r requirements.txt"
    assert model.payload == ("src/", "requirements.txt")
    assert model.runtime == "hydrosphere/serving-runtime-python-3.6:0.1.2-rc0"
    assert model.folder == INCREMENT_MODEL.resolve()
    app = config.applications["increment_app"]
    assert app.stages[0].variants[0].model == ModelRef("increment_model", Selector(1))
    assert (config.gateway.values["host"], config.gateway.values["port"]) == ("127.0.0.1", 8000)
    assert sorted(m.key for m in config.local_models()) == [
        ("celsius_model", 1), ("increment_model", 1), ("increment_numpy", 1), ("increment_numpy", 2),
        ("kelvin_model", 1), ("phase_model", 1), ("scaler_model", 1)]


@pytest.fixture
def config_copy(tmp_path: Path) -> Path:
    target = tmp_path / "config"
    shutil.copytree(CONFIG_DIR, target)
    return target


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_missing_field_names_file_and_field(config_copy: Path) -> None:
    serving = config_copy / "models/increment_model/serving.yaml"
    _edit(serving, "      type: int32\n", "")
    with pytest.raises(ConfigError) as caught:
        load_config(config_copy)
    assert caught.value.location == f"{serving}:13"
    assert caught.value.message == "contract.inputs.number.type: required field is missing"


def test_wrong_type_names_file_line_and_field(config_copy: Path) -> None:
    app = config_copy / "applications/increment_app.yaml"
    _edit(app, "name: increment_app", "name: [1, 2]")
    with pytest.raises(ConfigError) as caught:
        load_config(config_copy)
    assert caught.value.location == f"{app}:2"
    assert "name: expected a string, got a list" in str(caught.value)


@pytest.mark.parametrize("name", ["a/b", "my app", "caf\u00e9", "_app", ".hidden", "{x}"])
def test_an_application_name_is_one_path_segment_as_a_model_s(config_copy: Path, name: str) -> None:
    app = config_copy / "applications/increment_app.yaml"
    _edit(app, "name: increment_app", f"name: {json.dumps(name)}")
    with pytest.raises(ConfigError) as caught:
        load_config(config_copy)
    assert caught.value.location == f"{app}:2"
    assert caught.value.message.startswith(f"name: {name!r} is not a valid application name")


def test_unknown_dtype_names_model_field_and_accepted_names(config_copy: Path) -> None:
    serving = config_copy / "models/increment_model/serving.yaml"
    _edit(serving, "type: int32", "type: int33")
    with pytest.raises(ConfigError) as caught:
        load_config(config_copy)
    message = str(caught.value)
    assert f"{serving}:14" in message
    assert "contract.inputs.number.type: model increment_model: unknown type 'int33'" in message
    assert "int32" in message
    assert "DT_FLOAT" in message


def test_unknown_field_is_rejected(config_copy: Path) -> None:
    serving = config_copy / "models/increment_model/serving.yaml"
    _edit(serving, "payload:", "paylod:")
    with pytest.raises(ConfigError, match=r"paylod: unknown field"):
        load_config(config_copy)


def test_application_naming_an_undefined_model(config_copy: Path) -> None:
    _edit(config_copy / "applications/increment_app.yaml", "increment_model:1", "increment_model:7")
    with pytest.raises(ConfigError, match="model increment_model has no version 7 \\(defined: 1\\)"):
        load_config(config_copy)


def test_invalid_yaml_names_the_line(config_copy: Path) -> None:
    app = config_copy / "applications/increment_app.yaml"
    app.write_text("kind: Application\nname: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML") as caught:
        load_config(config_copy)
    assert caught.value.location is not None
    assert caught.value.location.startswith(str(app))


@pytest.mark.parametrize("text", ["", "\n", "# kind: Application\n", "---\n"])
def test_an_empty_or_truncated_manifest_is_an_error(config_copy: Path, text: str) -> None:
    app = config_copy / "applications/increment_app.yaml"
    app.write_text(text)
    with pytest.raises(ConfigError, match="the file is empty") as caught:
        load_config(config_copy)
    assert caught.value.location == f"{app}:1"


def test_unknown_kind(config_copy: Path) -> None:
    (config_copy / "applications/other.yaml").write_text("kind: Pipeline\nname: x\n")
    with pytest.raises(ConfigError, match="kind: expected Model, Application or Gateway"):
        load_config(config_copy)


def test_duplicate_application(config_copy: Path) -> None:
    shutil.copy(config_copy / "applications/increment_app.yaml", config_copy / "applications/again.yaml")
    with pytest.raises(ConfigError, match="application increment_app is also defined"):
        load_config(config_copy)


def test_remote_model_manifest(config_copy: Path) -> None:
    (config_copy / "models/remote.yaml").write_text(
        "kind: Model\nname: toy\nversion: 2\nbackend:\n  protocol: tensorflow-serving\n"
        "  target: 127.0.0.1:8500\ncontract:\n  inputs:\n    x: {type: float32, shape: [-1, 2]}\n"
        "  outputs:\n    y: {type: float, shape: [-1, 1]}\n"
    )
    model = load_config(config_copy).models[("toy", 2)]
    assert model.backend is not None
    assert (model.backend.target, model.backend.model_name, model.backend.signature_name) == (
        "127.0.0.1:8500", "toy", "serving_default")
    assert model.signature.name == "predict"
    assert model.folder is None


def test_gateway_port_must_be_a_port(config_copy: Path) -> None:
    _edit(config_copy / "gateway.yaml", "port: 8000", "port: 70000")
    with pytest.raises(ConfigError, match=r"port 70000 is not a TCP port"):
        load_config(config_copy)


def test_model_folder_alone() -> None:
    assert load_model_manifest(INCREMENT_MODEL).name == "increment_model"


@pytest.mark.parametrize(
    ("text", "ref"),
    [("m", ModelRef("m")), ("m:2", ModelRef("m", Selector(2))), ("m@stable", ModelRef("m", Selector(label="stable")))],
)
def test_model_refs(text: str, ref: ModelRef) -> None:
    assert parse_model_ref(text, "here") == ref


def test_bad_model_ref() -> None:
    with pytest.raises(ConfigError, match="not a model reference"):
        parse_model_ref("m:x", "here")


def _remote(config: Path, name: str, text: str) -> Path:
    path = config / "models" / f"{name}.yaml"
    path.write_text(text)
    return path


TOY = ("kind: Model\nname: toy\nbackend:\n  protocol: tensorflow-serving\n  target: '{target}'\n"
       "  model_name: Toy\n")


def test_floating_tf_serving_model_discovers_its_contract(config_copy: Path) -> None:
    _remote(config_copy, "toy", TOY.format(target="dns:///tfs.local:8500")
            + "version_labels:\n  stable: 1\n  canary: 2\n")
    model = load_config(config_copy).models[("toy", 0)]
    assert model.backend is not None
    assert model.floating
    assert not model.contract_declared
    assert model.signature.name == "serving_default"
    assert (model.backend.version, model.backend.version_label) == (None, None)
    assert dict(model.version_labels) == {"stable": 1, "canary": 2}


def test_pinned_versions_and_labels_resolve(config_copy: Path) -> None:
    _remote(config_copy, "toy1", TOY.format(target="127.0.0.1:8500") + "version: 1\n"
            "version_labels: {stable: 1}\n")
    _remote(config_copy, "toy2", TOY.format(target="127.0.0.1:8500") + "  version: 2\n"
            "version_labels: {canary: 2}\n")
    config = load_config(config_copy)
    assert config.models[("toy", 1)].backend.version == 1  # type: ignore[union-attr]
    assert config.models[("toy", 2)].backend.version == 2  # type: ignore[union-attr]
    stable = resolve_ref(config.models, ModelRef("toy", Selector(label="stable")))
    assert stable == Resolution(config.models[("toy", 1)])
    assert resolve_ref(config.models, ModelRef("toy")).manifest.version == 2
    with pytest.raises(ConfigError, match=r"model toy has no version label 'beta' \(defined: canary, stable"):
        resolve_ref(config.models, ModelRef("toy", Selector(label="beta")))
    with pytest.raises(ConfigError, match="model toy has no version 3"):
        resolve_ref(config.models, ModelRef("toy", Selector(3)))


def test_floating_model_forwards_unknown_versions_and_labels(config_copy: Path) -> None:
    _remote(config_copy, "toy", TOY.format(target="127.0.0.1:8500") + "version_labels: {stable: 1}\n")
    config = load_config(config_copy)
    floating = config.models[("toy", 0)]
    assert resolve_ref(config.models, ModelRef("toy", Selector(7))) == Resolution(floating, Selector(7))
    assert resolve_ref(config.models, ModelRef("toy", Selector(label="stable"))) == Resolution(floating, Selector(1))
    beta = Selector(label="beta")
    assert resolve_ref(config.models, ModelRef("toy", beta)) == Resolution(floating, beta)
    assert resolve_ref(config.models, ModelRef("toy")) == Resolution(floating)


@pytest.mark.parametrize(
    ("extra", "line", "message"),
    [
        ("  version: 1\n  version_label: stable\n", 8,
         "backend.version_label: give either version or version_label, not both"),
        ("  version: x\n", 7, "backend.version: expected an integer, got 'x'"),
        ("  signature_name: ''\n", 7, "backend.signature_name: must not be empty"),
        ("  colour: red\n", 7, "backend.colour: unknown field"),
    ],
)
def test_backend_errors_name_file_line_and_field(config_copy: Path, extra: str, line: int,
                                                 message: str) -> None:
    path = _remote(config_copy, "toy", TOY.format(target="127.0.0.1:8500") + extra)
    with pytest.raises(ConfigError) as caught:
        load_config(config_copy)
    assert caught.value.location == f"{path}:{line}"
    assert message in caught.value.message


def test_bad_target_and_labels(config_copy: Path) -> None:
    path = _remote(config_copy, "toy", TOY.format(target="http://x"))
    with pytest.raises(ConfigError, match=r"backend\.target: 'http://x' is not a gRPC target") as caught:
        load_config(config_copy)
    assert caught.value.location == f"{path}:5"
    path = _remote(config_copy, "toy", TOY.format(target="[::1]:8500") + "version: 1\n"
                   "version_labels:\n  stable: 2\n")
    with pytest.raises(ConfigError, match="model toy has no version 2"):
        load_config(config_copy)
    _remote(config_copy, "toy", TOY.format(target="127.0.0.1:1") + "version: 1\nversion_labels: {s: 1}\n")
    _remote(config_copy, "toy2", TOY.format(target="127.0.0.1:1") + "version: 2\nversion_labels: {s: 2}\n")
    with pytest.raises(ConfigError, match=r"version_labels\.s: model toy labels version"):
        load_config(config_copy)


def test_application_stage_with_label(config_copy: Path) -> None:
    _remote(config_copy, "toy", TOY.format(target="127.0.0.1:8500") + "version_labels: {stable: 1}\n")
    (config_copy / "applications/toy_app.yaml").write_text(
        "kind: Application\nname: toy_app\nsingular:\n  model: toy@stable\n")
    config = load_config(config_copy)
    assert config.applications["toy_app"].stages[0].variants[0].model == ModelRef("toy", Selector(label="stable"))


V2 = "kind: Model\nname: adder\nbackend:\n  protocol: v2\n  target: '127.0.0.1:8001'\n  model_name: add\n"


def test_a_v2_model_is_pinned_or_floating_and_sends_raw_contents_by_default(config_copy: Path) -> None:
    _remote(config_copy, "adder", V2 + "version_labels: {stable: 1}\n")
    _remote(config_copy, "adder_typed", V2.replace("adder", "adder_typed") + "  version: 2\n  contents: typed\n")
    config = load_config(config_copy)
    floating, typed = config.models[("adder", 0)], config.models[("adder_typed", 2)]
    assert floating.backend is not None
    assert typed.backend is not None
    assert (floating.floating, floating.backend.protocol, floating.backend.contents) == (True, "v2", "raw")
    assert (typed.floating, typed.backend.version, typed.backend.contents) == (False, 2, "typed")
    assert floating.signature.name == "serving_default"  # the name its one contract is kept under
    # A label of its manifests reaches its version; a v2 server has no labels to forward others to.
    stable = resolve_ref(config.models, ModelRef("adder", Selector(label="stable")))
    assert stable == Resolution(floating, Selector(1))
    assert resolve_ref(config.models, ModelRef("adder", Selector(7))) == Resolution(floating, Selector(7))
    with pytest.raises(ConfigError, match=r"model adder has no version label 'beta' \(defined: stable; its v2 "
                                          r"backend has no labels of its own\)"):
        resolve_ref(config.models, ModelRef("adder", Selector(label="beta")))


def test_an_application_naming_a_label_a_v2_model_does_not_define_is_refused(config_copy: Path) -> None:
    _remote(config_copy, "adder", V2)
    app = config_copy / "applications/adder_app.yaml"
    app.write_text("kind: Application\nname: adder_app\nsingular:\n  model: adder@canary\n")
    with pytest.raises(ConfigError, match=r"model adder has no version label 'canary' \(defined: none; its v2 "
                                          r"backend has no labels of its own\)") as caught:
        load_config(config_copy)
    assert caught.value.location is not None
    assert str(app) in caught.value.location


@pytest.mark.parametrize(
    ("extra", "line", "message"),
    [
        ("  signature_name: serving_default\n", 7,
         "backend.signature_name: a v2 model has no signatures"),
        ("  version_label: stable\n", 7, "backend.version_label: a v2 server has no version labels"),
        ("  contents: json\n", 7, "backend.contents: 'json' is not one of raw, typed"),
        ("  contents: typed\ncontract:\n  inputs:\n    x: {type: float16, shape: [-1]}\n"
         "  outputs:\n    y: {type: float32, shape: [-1]}\n", 8,
         "input 'x' is float16 (FP16), which has no typed contents field"),
        ("contract:\n  inputs:\n    x: {type: complex64, shape: [-1]}\n"
         "  outputs:\n    y: {type: float32, shape: [-1]}\n", 7,
         "input 'x' is complex64, which the Open Inference Protocol has no datatype for"),
    ],
)
def test_v2_backend_errors_name_file_line_and_field(config_copy: Path, extra: str, line: int, message: str) -> None:
    path = _remote(config_copy, "adder", V2 + extra)
    with pytest.raises(ConfigError) as caught:
        load_config(config_copy)
    assert caught.value.location == f"{path}:{line}"
    assert message in caught.value.message


def test_contents_belongs_to_v2_backends(config_copy: Path) -> None:
    path = _remote(config_copy, "toy", TOY.format(target="127.0.0.1:8500") + "  contents: raw\n")
    with pytest.raises(ConfigError, match=r"backend\.contents: only a v2 backend takes contents") as caught:
        load_config(config_copy)
    assert caught.value.location == f"{path}:7"


def test_numbered_folders_are_versions(tmp_path: Path) -> None:
    for version in (1, 2):
        folder = tmp_path / "models" / "m" / str(version)
        shutil.copytree(INCREMENT_MODEL, folder)
        _edit(folder / "serving.yaml", 'name: "increment_model"', "name: m")
    config = load_config(tmp_path)
    assert sorted(config.models) == [("m", 1), ("m", 2)]
    assert config.models[("m", 2)].folder == (tmp_path / "models/m/2").resolve()


def test_version_field_must_match_a_numbered_folder(tmp_path: Path) -> None:
    folder = tmp_path / "models" / "m" / "3"
    shutil.copytree(INCREMENT_MODEL, folder)
    _edit(folder / "serving.yaml", 'name: "increment_model"', "name: m\nversion: 4")
    with pytest.raises(ConfigError, match="version: 4 contradicts the folder name 3"):
        load_config(tmp_path)


@pytest.mark.parametrize(
    ("line", "words"),
    [("style: fortran", "'fortran' is not a function style"), ("workers: 0", "workers: must be at least 1")],
)
def test_style_and_workers_are_checked(config_copy: Path, line: str, words: str) -> None:
    serving = config_copy / "models/increment_model/serving.yaml"
    _edit(serving, "payload:", f"{line}\npayload:")
    with pytest.raises(ConfigError, match=words):
        load_config(config_copy)


def test_gateway_settings_sections(config_copy: Path) -> None:
    (config_copy / "gateway.yaml").write_text(
        "kind: Gateway\nlisten: {port: 9001}\nlimits: {max_body_bytes: 1024}\n"
        "logging: {access_log: false}\nauth:\n  api_keys:\n    - name: team\n"
        f"      sha256: {'a' * 64}\n      applications: [increment_app]\n")
    values = load_config(config_copy).gateway.values
    assert values["port"] == 9001
    assert values["max_body_bytes"] == 1024
    assert values["access_log"] is False
    assert values["auth"].api_keys[0].allows("increment_app")
    assert not values["auth"].api_keys[0].allows("other")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("limits: {max_body_bytes: lots}", "limits.max_body_bytes='lots': max_body_bytes must be an integer"),
        ("limits: {max_bodybytes: 1}", "limits.max_bodybytes: unknown field"),
        ("defaults: {request_timeout_s: 0}", "request_timeout_s must be greater than 0"),
        ("auth: {api_keys: [{name: a, sha256: xyz}]}", "auth.api_keys[0].sha256: must be the 64 hex digits"),
    ],
)
def test_gateway_settings_errors(config_copy: Path, text: str, words: str) -> None:
    (config_copy / "gateway.yaml").write_text(f"kind: Gateway\n{text}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(config_copy)
    assert words in str(caught.value)
    assert str(config_copy / "gateway.yaml") in str(caught.value)


def test_an_unknown_protocol_names_the_line_and_the_protocols_a_backend_exists_for(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    manifest = models / "remote.yaml"
    manifest.write_text("kind: Model\nname: remote\nbackend:\n  protocol: open-inference\n  target: h:1\n")
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path)
    assert caught.value.location == f"{manifest}:4"
    assert caught.value.message == ("backend.protocol: unknown protocol 'open-inference' "
                                    f"(accepted: {', '.join(PROTOCOLS)})")
    assert set(PROTOCOLS) == set(BACKENDS) == {"tensorflow-serving", "v2"}  # one list: the registry's rows

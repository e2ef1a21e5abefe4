"""`gateway apply -f` and `gateway delete` as config changes against a config directory:
documents rewritten where they are defined, one transaction per apply, refusals."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import Conflict, InvalidManifest, NotFound
from gateway.manifests import Config, Plan, load_config, manifest_plan
from gateway.store.apply import ApplyManifests, apply_answer
from gateway.store.changes import ConfigChange
from gateway.store.delete import DeleteApplication, DeleteModel
from gateway.store.journal import ConfigStore
from modelfolder import ConfigError
from tests.conftest import write_app, write_model

FN = "def predict(x):\n    return x + 1\n"
BOTH = ("# two applications\nkind: Application\nname: a\nsingular:\n  model: m:1\n"
        "--- # the second one\nkind: Application\nname: b\nsingular:\n  model: m:2   # pinned\n")
REMOTE = ("kind: Model\nname: tf\nversion: {version}\nbackend:\n  protocol: tensorflow-serving\n"
          "  target: 127.0.0.1:8500\ncontract:\n  inputs:\n    x: {{type: int32, shape: [-1]}}\n"
          "  outputs:\n    {output}: {{type: int32, shape: [-1]}}\n")


def app_doc(name: str, model: str) -> str:
    return f"kind: Application\nname: {name}\nsingular:\n  model: {model}\n"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "config"
    write_model(root, "m/1", "m", FN)
    write_model(root, "m/2", "m", FN)
    (root / "applications").mkdir()
    (root / "applications" / "both.yaml").write_text(BOTH)
    return root


def make(root: Path, change: ConfigChange) -> dict[str, Any]:
    """Prepare `change` against the directory's config, commit it, check it loads."""
    prepared = change.prepare(load_config(root), ConfigStore(root))
    prepared.transaction.commit().finish()
    load_config(root)
    return prepared.detail


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and ".gateway-state" not in p.parts}


def test_a_new_application_gets_a_file_of_its_own(root: Path) -> None:
    detail = make(root, ApplyManifests("app.yaml", app_doc("new", "m")))
    assert (root / "applications" / "new.yaml").read_text() == app_doc("new", "m")
    assert detail["documents"] == [{"kind": "Application", "name": "new", "action": "created"}]
    assert detail["plans"]["new"][0].startswith("stage 1")
    assert load_config(root).applications["new"].stages[0].variants[0].model.name == "m"


def test_an_application_of_a_multi_document_file_is_replaced_in_place(root: Path) -> None:
    detail = make(root, ApplyManifests("b.yaml", "# now m:1\n" + app_doc("b", "m:1")))
    text = (root / "applications" / "both.yaml").read_text()
    first = BOTH.split("--- # the second one\n")[0]
    assert text == first + "--- # the second one\n# now m:1\n" + app_doc("b", "m:1")
    assert detail["documents"] == [{"kind": "Application", "name": "b", "action": "updated"}]
    config = load_config(root)
    assert str(config.applications["b"].stages[0].variants[0].model) == "m:1"
    assert str(config.applications["a"].stages[0].variants[0].model) == "m:1"


def test_the_same_document_again_is_unchanged(root: Path) -> None:
    before = files(root)
    detail = make(root, ApplyManifests("a.yaml", "kind: Application\nname: a\nsingular: {model: 'm:1'}\n"))
    assert detail["documents"] == [{"kind": "Application", "name": "a", "action": "unchanged"}]
    assert files(root) == before


def test_several_documents_are_one_transaction(root: Path) -> None:
    text = app_doc("x", "m") + "---\n" + REMOTE.format(version=3, output="y") + "---\n" + app_doc("b", "tf:3")
    change = ApplyManifests("all.yaml", text)
    prepared = change.prepare(load_config(root), ConfigStore(root))
    assert sorted(op.path for op in prepared.transaction.operations) == [
        "applications/both.yaml", "applications/x.yaml", "models/tf-3.yaml"]
    prepared.transaction.commit().finish()
    config = load_config(root)
    assert config.models[("tf", 3)].backend is not None
    assert str(config.applications["b"].stages[0].variants[0].model) == "tf:3"
    assert [d["action"] for d in prepared.detail["documents"]] == ["created", "created", "updated"]


def test_an_invalid_second_document_writes_nothing(root: Path) -> None:
    before = files(root)
    text = app_doc("x", "m") + "---\nkind: Application\nname: y\nsingular:\n  model: m:1\n  weight: 3\n"
    with pytest.raises(InvalidManifest) as caught:
        ApplyManifests("two.yaml", text).prepare(load_config(root), ConfigStore(root))
    assert caught.value.status == 422
    assert caught.value.message.startswith("two.yaml:10: singular.weight: unknown field")
    assert files(root) == before
    assert not (root / ".gateway-state").exists()  # refused before a transaction began


def test_errors_name_the_clients_file_and_line_as_start_up_does(root: Path, tmp_path: Path) -> None:
    bad = "kind: Application\nname: z\nsingular:\n  model: m:1\ntimeout_s: -1\n"
    with pytest.raises(InvalidManifest) as caught:
        ApplyManifests("<stdin>", "# first\n" + bad).prepare(load_config(root), ConfigStore(root))
    assert caught.value.message == "<stdin>:6: timeout_s: must be greater than 0"
    (root / "applications" / "z.yaml").write_text("# first\n" + bad)
    with pytest.raises(ConfigError) as started:
        load_config(root)
    assert started.value.message == "timeout_s: must be greater than 0"
    assert started.value.location == f"{root / 'applications' / 'z.yaml'}:6"


@pytest.mark.parametrize(("text", "message"), [
    (app_doc("z", "m:7"), "app.yaml:4: model m has no version 7 (defined: 1, 2)"),
    (app_doc("z", "nope"), "app.yaml:4: model nope is not defined"),
    ("kind: Model\nname: m\ncontract: {}\n", "app.yaml:1: backend: a model without a backend is a model folder"),
    ("kind: Gateway\n", "app.yaml:1: kind: Gateway settings apply at start-up"),
    ("kind: Pipeline\n", "app.yaml:1: kind: expected Model, Application or Gateway, got 'Pipeline'"),
    (app_doc("z", "m") + "---\n" + app_doc("z", "m:1"),
     "app.yaml:6: application z is also defined at app.yaml:1"),
    ("kind: Application\nname: ../etc\nsingular: {model: m}\n", "app.yaml:2: name: '../etc' is not a valid"),
    ("# nothing\n", "app.yaml:1: the file is empty"),
    ("a: [\n", "app.yaml:2: invalid YAML"),
])
def test_refused_documents(root: Path, text: str, message: str) -> None:
    with pytest.raises(InvalidManifest) as caught:
        ApplyManifests("app.yaml", text).plan(load_config(root), root)
    assert caught.value.message.startswith(message)


def test_a_remote_model_over_a_model_folder_is_refused(root: Path) -> None:
    with pytest.raises(InvalidManifest, match="model m:1 is a model folder"):
        ApplyManifests("m.yaml", REMOTE.replace("name: tf", "name: m").format(version=1, output="y")).plan(
            load_config(root), root)


def running(config: Config) -> dict[str, Plan]:
    return {name: manifest_plan(app, config.models) for name, app in config.applications.items()}


def test_a_dry_run_lists_breaking_changes_and_writes_nothing(root: Path) -> None:
    make(root, ApplyManifests("tf.yaml", REMOTE.format(version=3, output="y")))
    make(root, ApplyManifests("b.yaml", app_doc("b", "tf:3")))
    before = files(root)
    config = load_config(root)
    planned = ApplyManifests("tf.yaml", REMOTE.format(version=3, output="z")).plan(config, root)
    answer = apply_answer(planned.detail(), running(config), applied=False, dry_run=True)
    assert answer["documents"] == [{"kind": "Model", "name": "tf", "version": 3, "action": "updated"}]
    assert "BREAKING application b: output 'y' removed" in answer["changes"]
    assert answer["breaking"] >= 1
    assert answer["plans"] == {}  # no application applied
    assert files(root) == before


def test_a_moved_version_label_lists_its_breaking_changes(root: Path) -> None:
    make(root, ApplyManifests("tf.yaml", REMOTE.format(version=1, output="y") + "version_labels:\n  stable: 1\n"))
    make(root, ApplyManifests("tf2.yaml", REMOTE.format(version=2, output="z")))
    write_app(root, "s", "tf@stable")
    config = load_config(root)
    moved = REMOTE.format(version=1, output="y") + "version_labels:\n  stable: 2\n"
    planned = ApplyManifests("tf.yaml", moved).plan(config, root)
    answer = apply_answer(planned.detail(), running(config), applied=False, dry_run=True)
    assert "BREAKING application s: output 'y' removed" in answer["changes"]
    assert answer["breaking"] >= 1
    assert set(planned.proposed) == {"s"}  # a, b and their models are untouched: not compared


def test_a_crlf_file_keeps_its_other_documents_byte_for_byte(root: Path) -> None:
    both = root / "applications" / "both.yaml"
    both.write_bytes(BOTH.replace("\n", "\r\n").encode())
    make(root, ApplyManifests("b.yaml", app_doc("b", "m:1")))
    first, second = both.read_bytes().split(b"--- # the second one\r\n")
    assert first == BOTH.split("--- # the second one\n")[0].replace("\n", "\r\n").encode()
    assert second == app_doc("b", "m:1").replace("\n", "\r\n").encode()
    make(root, DeleteApplication("b"))
    assert both.read_bytes() == BOTH.split("--- # the second one\n")[0].replace("\n", "\r\n").encode()


def test_deleting_the_only_application_of_a_file_with_a_directive(root: Path) -> None:
    (root / "applications" / "d.yaml").write_text("%YAML 1.1\n---\n" + app_doc("d", "m:1"))
    make(root, DeleteApplication("d"))
    assert not (root / "applications" / "d.yaml").exists()


def test_a_manifest_file_removed_by_hand_is_a_conflict(root: Path) -> None:
    config = load_config(root)
    (root / "applications" / "both.yaml").unlink()
    for change in (ApplyManifests("b.yaml", app_doc("b", "m:1")), DeleteApplication("b")):
        with pytest.raises(Conflict, match=r"applications/both\.yaml changed since the gateway read it"):
            change.prepare(config, ConfigStore(root))


def test_another_kind_in_a_manifests_place_is_a_conflict(root: Path) -> None:
    config = load_config(root)
    both = root / "applications" / "both.yaml"
    both.write_text(BOTH.replace("kind: Application\nname: b", "kind: Model\nname: b"))
    with pytest.raises(Conflict, match="changed since the gateway read it"):
        ApplyManifests("b.yaml", app_doc("b", "m:1")).prepare(config, ConfigStore(root))


def test_deleting_a_label_in_use_is_refused_naming_its_applications(root: Path) -> None:
    make(root, ApplyManifests("tf.yaml", REMOTE.format(version=1, output="y")))
    make(root, ApplyManifests("tf2.yaml", REMOTE.format(version=2, output="y") + "version_labels:\n  stable: 1\n"))
    write_app(root, "s", "tf@stable")
    with pytest.raises(Conflict, match=r"model tf:2 defines version labels used by application\(s\) s"):
        DeleteModel("tf", 2).prepare(load_config(root), ConfigStore(root))


def test_deleting_an_application_of_a_multi_document_file(root: Path) -> None:
    detail = make(root, DeleteApplication("a"))
    assert detail == {"deleted": "application", "name": "a"}
    assert (root / "applications" / "both.yaml").read_text() == "--- # the second one\n" + BOTH.split(
        "--- # the second one\n")[1]
    make(root, DeleteApplication("b"))
    assert not (root / "applications" / "both.yaml").exists()
    with pytest.raises(NotFound):
        DeleteApplication("b").prepare(load_config(root), ConfigStore(root))


def test_a_model_version_in_use_is_refused_naming_its_applications(root: Path) -> None:
    with pytest.raises(Conflict, match=r"model m:1 is in use by application\(s\) a"):
        DeleteModel("m", 1).prepare(load_config(root), ConfigStore(root))


def test_the_highest_version_is_in_use_by_an_unversioned_reference(root: Path) -> None:
    write_app(root, "latest", "m")
    make(root, DeleteApplication("b"))
    with pytest.raises(Conflict, match=r"application\(s\) latest"):
        DeleteModel("m", 2).prepare(load_config(root), ConfigStore(root))


def test_a_labelled_version_is_in_use(root: Path) -> None:
    make(root, ApplyManifests("tf.yaml", REMOTE.format(version=3, output="y")))
    labelled = REMOTE.format(version=4, output="y") + "version_labels:\n  stable: 3\n"
    make(root, ApplyManifests("tf4.yaml", labelled))
    write_app(root, "stable", "tf@stable")
    with pytest.raises(Conflict, match=r"model tf:3 is in use by application\(s\) stable"):
        DeleteModel("tf", 3).prepare(load_config(root), ConfigStore(root))
    (root / "applications" / "stable.yaml").unlink()
    with pytest.raises(InvalidManifest, match="model tf has no version 3"):  # the label would name nothing
        DeleteModel("tf", 3).prepare(load_config(root), ConfigStore(root))
    make(root, DeleteModel("tf", 4))
    assert make(root, DeleteModel("tf", 3)) == {"deleted": "model", "name": "tf", "version": 3}
    assert not (root / "models" / "tf-3.yaml").exists()


def test_deleting_model_versions(root: Path) -> None:
    make(root, DeleteApplication("b"))
    assert make(root, DeleteModel("m", 2)) == {"deleted": "model", "name": "m", "version": 2}
    assert not (root / "models" / "m" / "2").exists()
    assert ("m", 2) not in load_config(root).models
    with pytest.raises(NotFound, match="model m:2 is not defined"):
        DeleteModel("m", 2).prepare(load_config(root), ConfigStore(root))


def test_a_version_one_folder_goes_and_its_version_folders_stay(tmp_path: Path) -> None:
    root = tmp_path / "config"
    write_model(root, "k", "k", FN)
    write_model(root, "k/2", "k", FN)
    assert set(load_config(root).models) == {("k", 1), ("k", 2)}
    make(root, DeleteModel("k", 1))
    assert sorted(p.name for p in (root / "models" / "k").iterdir()) == ["2"]
    assert set(load_config(root).models) == {("k", 2)}


def test_a_file_edited_since_it_was_read_is_a_conflict(root: Path) -> None:
    config = load_config(root)
    both = root / "applications" / "both.yaml"
    both.write_text(app_doc("c", "m:1") + "---\n" + app_doc("d", "m:1") + "---\n" + BOTH)
    with pytest.raises(Conflict, match=r"applications/both\.yaml changed since the gateway read it"):
        ApplyManifests("b.yaml", app_doc("b", "m:1")).prepare(config, ConfigStore(root))


def test_new_files_take_free_safe_names(root: Path) -> None:
    (root / "applications" / "new.yaml").write_text(app_doc("other", "m:1"))
    long = "n" * 300  # a valid name, too long for a file name
    detail = make(root, ApplyManifests("x.yaml", app_doc("new", "m") + "---\n" + app_doc(long, "m")))
    assert [d["action"] for d in detail["documents"]] == ["created", "created"]
    assert (root / "applications" / "new-2.yaml").read_text() == app_doc("new", "m")
    names = sorted(p.name for p in (root / "applications").iterdir())
    assert all(len(name) < 120 for name in names)
    assert set(load_config(root).applications) == {"a", "b", "new", "other", long}


def test_documents_on_their_separator_lines(root: Path) -> None:
    second = "{kind: Application, name: f2, singular: {model: 'm:1'}}\n"
    make(root, ApplyManifests("flow.yaml", "--- {kind: Application, name: f1, singular: {model: m}}\n--- " + second))
    assert (root / "applications" / "f2.yaml").read_text() == second
    assert {"f1", "f2"} <= set(load_config(root).applications)


def test_changes_travel_pickled_to_the_process_that_makes_them(root: Path) -> None:
    for change in (ApplyManifests("a.yaml", app_doc("new", "m")), DeleteApplication("a"), DeleteModel("m", 2)):
        assert pickle.loads(pickle.dumps(change)) == change
    detail = ApplyManifests("a.yaml", app_doc("new", "m")).plan(load_config(root), root).detail()
    assert pickle.loads(pickle.dumps(detail)) == detail

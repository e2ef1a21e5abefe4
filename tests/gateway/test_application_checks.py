"""Application manifests checked at load: the parser's rules (weights, shadows, stages) and the
contract rules between variants and stages (gateway/manifests/contract_rules.py, plan.py), each error with its
message and file:line; and what `diff` calls a breaking change."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.manifests import (
    CompareSpec,
    Config,
    ModelRef,
    Plan,
    PlannedStage,
    PlannedVariant,
    Selector,
    diff,
    load_config,
    manifest_plan,
    plan_from_json,
    plan_lines,
    plan_to_json,
    with_running_contracts,
)
from gateway.manifests.contract_rules import compatible_shapes
from tensorcodecs import Signature, TensorSpec, lookup_dtype

Contract = dict[str, str]  # name -> "dtype [shape]" ("dtype" alone: any shape)


def _specs_yaml(specs: Contract) -> str:
    lines = []
    for name, text in specs.items():
        dtype, _, shape = text.partition(" ")
        lines.append(f"    {name}: {{type: {dtype}{', shape: ' + shape if shape else ''}}}")
    return "\n".join(lines)


def write_models(config: Path, models: dict[str, tuple[Contract, Contract] | None]) -> None:
    """Remote models at version 1: with a declared contract (inputs, outputs), or None: the
    contract comes from the backend."""
    (config / "models").mkdir(parents=True, exist_ok=True)
    for name, contract in models.items():
        text = (f"kind: Model\nname: {name}\nbackend:\n  protocol: tensorflow-serving\n  target: 127.0.0.1:1\n"
                f"  version: 1\n")
        if contract is not None:
            text += f"contract:\n  inputs:\n{_specs_yaml(contract[0])}\n  outputs:\n{_specs_yaml(contract[1])}\n"
        (config / "models" / f"{name}.yaml").write_text(text)


def write_application(config: Path, body: str, name: str = "demo") -> Path:
    (config / "applications").mkdir(parents=True, exist_ok=True)
    path = config / "applications" / f"{name}.yaml"
    path.write_text(f"kind: Application\nname: {name}\n{body}")
    return path


def line_of(path: Path, fragment: str, occurrence: int = 1) -> int:
    """The 1-based line where `fragment` occurs the `occurrence`-th time."""
    lines = [number for number, line in enumerate(path.read_text().splitlines(), start=1) if fragment in line]
    return lines[occurrence - 1]


INT = ({"x": "int64 [-1]"}, {"y": "int64 [-1]"})
MODELS: dict[str, tuple[Contract, Contract] | None] = {"a": INT, "b": INT, "c": INT}


@pytest.fixture
def config(tmp_path: Path) -> Path:
    directory = tmp_path / "config"
    write_models(directory, MODELS)
    return directory


def refused(config: Path) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    return caught.value


# ---------------------------------------------------------------- the parser's rules


@pytest.mark.parametrize(("variant", "message"), [
    ("{model: a:1, weight: -1}", "pipeline[0][0].weight: must be a non-negative integer, got -1"),
    ("{model: a:1, weight: 1.5}", "pipeline[0][0].weight: expected an integer, got 1.5"),
    ("{model: a:1, weight: true}", "pipeline[0][0].weight: expected an integer, got True"),
    ("{model: a:1, weight: '10'}", "pipeline[0][0].weight: expected an integer, got '10'"),
    ("{model: a:1, compare: {rtol: 0.1}}",
     "pipeline[0][0].compare: only a shadow variant (shadow: true) takes one"),
    ("{model: a:1, sample: 0.5}", "pipeline[0][0].sample: only a shadow variant (shadow: true) takes one"),
    ("{model: a:1, colour: red}", "pipeline[0][0].colour: unknown field (accepted: compare, model, sample, "
                                  "shadow, weight)"),
])
def test_a_live_variants_fields_are_checked(config: Path, variant: str, message: str) -> None:
    path = write_application(config, f"pipeline:\n  - - {variant}\n    - {{model: b:1}}\n")
    error = refused(config)
    assert (error.message, error.location) == (message, f"{path}:4")


@pytest.mark.parametrize(("fields", "message"), [
    ("weight: 10", "pipeline[0][1].weight: a shadow takes no weight: it gets a copy of every request of its "
                   "stage (or of its `sample` share)"),
    ("weight: 0", "pipeline[0][1].weight: a shadow takes no weight: it gets a copy of every request of its "
                  "stage (or of its `sample` share)"),
    ("sample: 1.5", "pipeline[0][1].sample: must be between 0.0 and 1.0, got 1.5"),
    ("sample: -0.1", "pipeline[0][1].sample: must be between 0.0 and 1.0, got -0.1"),
    ("sample: half", "pipeline[0][1].sample: expected a number, got 'half'"),
    ("compare: {rtol: -1}", "pipeline[0][1].compare.rtol: must be a finite number >= 0, got -1.0"),
    ("compare: {atol: .inf}", "pipeline[0][1].compare.atol: must be a finite number >= 0, got inf"),
    ("compare: {ulps: 2}", "pipeline[0][1].compare.ulps: unknown field (accepted: atol, rtol)"),
])
def test_a_shadows_fields_are_checked(config: Path, fields: str, message: str) -> None:
    path = write_application(config, "pipeline:\n  - - {model: a:1}\n    - model: b:1\n      shadow: true\n"
                                     f"      {fields}\n")
    error = refused(config)
    assert error.message == message
    assert error.location == f"{path}:{line_of(path, fields.partition(':')[0])}"


def test_the_older_modelservices_stage_is_refused_with_the_spelling_to_use(config: Path) -> None:
    path = write_application(config, "pipeline:\n  - modelservices: [{model: a:1, weight: 100}]\n")
    error = refused(config)
    assert error.message == ("pipeline[0][0].modelservices: the older stage spelling; a stage is now the list of its "
                             "variants itself: `- - {model: name:version, weight: N}`")
    assert error.location == f"{path}:4"


def test_a_shadows_sample_and_compare_are_kept(config: Path) -> None:
    write_application(config, "pipeline:\n  - - {model: a:1, weight: 3}\n    - {model: c:1}\n"
                              "    - {model: b:1, shadow: true, sample: 0.25, compare: {rtol: 0.01, atol: 0.5}}\n")
    stage = load_config(config).applications["demo"].stages[0]
    assert [(v.model, v.weight, v.shadow) for v in stage.live] == [
        (ModelRef("a", Selector(1)), 3, False), (ModelRef("c", Selector(1)), 100, False)]  # 100: the default
    (shadow,) = stage.shadows
    assert (shadow.model, shadow.weight, shadow.sample, shadow.compare) == (
        ModelRef("b", Selector(1)), 0, 0.25, CompareSpec(rtol=0.01, atol=0.5))


def test_a_stage_needs_a_live_variant(config: Path) -> None:
    path = write_application(config, "pipeline:\n  - - {model: a:1}\n  - - {model: b:1, shadow: true}\n")
    error = refused(config)
    assert error.message == "stage 2 has no live variant: a stage needs one that is not a shadow"
    assert error.location == f"{path}:5"


def test_live_weights_must_not_sum_to_zero(config: Path) -> None:
    path = write_application(config, "pipeline:\n  - - {model: a:1, weight: 0}\n    - {model: b:1, weight: 0}\n"
                                     "    - {model: c:1, shadow: true}\n")
    error = refused(config)
    assert error.message == ("stage 1: the weights of its live variants sum to 0; at least one must be greater "
                             "than 0")
    assert error.location == f"{path}:4"


def test_a_weight_of_zero_beside_a_positive_one_is_accepted(config: Path) -> None:
    write_application(config, "pipeline:\n  - - {model: a:1, weight: 0}\n    - {model: b:1, weight: 1}\n")
    assert [v.weight for v in load_config(config).applications["demo"].stages[0].live] == [0, 1]


def test_a_model_is_a_variant_of_a_stage_once(config: Path) -> None:
    path = write_application(config, "pipeline:\n  - - {model: a:1}\n    - {model: a:1, shadow: true}\n")
    error = refused(config)
    assert error.message == f"stage 1: model a:1 is also a variant at {path}:4"
    assert error.location == f"{path}:5"


@pytest.mark.parametrize("second", ["{model: a:1, weight: 50}", "{model: a:1, shadow: true}"])
def test_a_model_is_a_variant_of_a_stage_once_however_it_is_spelled(config: Path, second: str) -> None:
    path = write_application(config, f"pipeline:\n  - - {{model: a, weight: 50}}\n    - {second}\n")
    error = refused(config)
    assert error.message == f"stage 1: a:1 (as a:1) is the same model as the variant at {path}:4 (as a)"
    assert error.location == f"{path}:5"


@pytest.mark.parametrize("stage", ["[]", "a:1", "[a:1]"])
def test_a_stage_is_a_list_of_variant_mappings(config: Path, stage: str) -> None:
    path = write_application(config, f"pipeline:\n  - {stage}\n")
    error = refused(config)
    assert error.location == f"{path}:3"  # `pipeline:` (YAML lists keep no lines)
    assert error.message in ("pipeline[0]: stage 1 must be a list of variants ({model: name:version, weight: N})",
                             "pipeline[0][0]: a variant is a mapping with a `model`")


def test_an_empty_pipeline_is_refused(config: Path) -> None:
    path = write_application(config, "pipeline: []\n")
    error = refused(config)
    assert (error.message, error.location) == ("pipeline: needs at least one stage", f"{path}:3")


def test_both_singular_and_pipeline_is_refused(config: Path) -> None:
    path = write_application(config, "singular: {model: a:1}\npipeline:\n  - - {model: b:1}\n")
    error = refused(config)
    assert error.message == "an application needs exactly one of `singular` or `pipeline`"
    assert error.location == f"{path}:1"


def test_neither_singular_nor_pipeline_is_refused(config: Path) -> None:
    write_application(config, "timeout_s: 3\n")
    assert refused(config).message == "an application needs exactly one of `singular` or `pipeline`"


def test_kafka_is_refused_with_the_way_out(config: Path) -> None:
    path = write_application(config, "singular: {model: a:1}\nkafka:\n  - {in-topic: a, out-topic: b}\n")
    error = refused(config)
    assert error.message == ("kafka: Kafka streaming applications are not supported; call the application over "
                             "HTTP")
    assert error.location == f"{path}:4"


def test_a_lone_mapping_is_a_stage_of_one_variant(config: Path) -> None:
    write_models(config, {"b": ({"y": "int64 [-1]"}, {"z": "int64 [-1]"})})
    write_application(config, "pipeline:\n  - model: a:1\n  - - model: b:1\n")
    stages = load_config(config).applications["demo"].stages
    assert [[(str(v.model), v.weight) for v in stage.variants] for stage in stages] == [[("a:1", 100)],
                                                                                        [("b:1", 100)]]


def test_application_options_are_read(config: Path) -> None:
    write_application(config, "singular: {model: a:1}\nallow_variant_override: true\nvalidate_outputs: true\n"
                              "metadata: {owner: team-a, rollout: 2}\n")
    app = load_config(config).applications["demo"]
    assert (app.allow_variant_override, app.validate_outputs, dict(app.metadata)) == (
        True, True, {"owner": "team-a", "rollout": 2})
    defaults = load_config(_only_singular(config)).applications["demo"]
    assert (defaults.allow_variant_override, defaults.validate_outputs, dict(defaults.metadata)) == (False, False, {})


def _only_singular(config: Path) -> Path:
    write_application(config, "singular: {model: a:1}\n")
    return config


def test_metadata_values_are_scalars(config: Path) -> None:
    path = write_application(config, "singular: {model: a:1}\nmetadata: {owner: [a, b]}\n")
    error = refused(config)
    assert (error.message, error.location) == ("metadata: owner: values are strings, numbers or booleans",
                                               f"{path}:4")


# ---------------------------------------------------------------- contracts within a stage


def _stage_of(config: Path, models: dict[str, tuple[Contract, Contract] | None], *, shadow: bool = False) -> Path:
    write_models(config, models)
    second = "{model: b:1, shadow: true}" if shadow else "{model: b:1, weight: 10}"
    return write_application(config, f"pipeline:\n  - - {{model: a:1, weight: 90}}\n    - {second}\n")


@pytest.mark.parametrize(("b", "words"), [
    (({"x": "float32 [-1]"}, {"y": "int64 [-1]"}), "input 'x' is float32 but a:1 has it as int64"),
    (({"x": "int64 [-1]"}, {"y": "int32 [-1]"}), "output 'y' is int32 but a:1 has it as int64"),
    (({"z": "int64 [-1]"}, {"y": "int64 [-1]"}), "has no input 'x', which a:1 has"),
    (({"x": "int64 [-1]", "w": "int64 [-1]"}, {"y": "int64 [-1]"}), "has input 'w', which a:1 has not"),
    (({"x": "int64 [-1]"}, {"y": "int64 [-1]", "debug": "int64 [-1]"}), "has output 'debug', which a:1 has not"),
    (({"x": "int64 [-1, 3]"}, {"y": "int64 [-1]"}), "input 'x' has shape [-1, 3] but a:1 has it with shape [-1]"),
    (({"x": "int64 scalar"}, {"y": "int64 [-1]"}), "input 'x' has shape scalar but a:1 has it with shape [-1]"),
])
@pytest.mark.parametrize("shadow", [False, True])
def test_every_variant_of_a_stage_has_its_contract(config: Path, b: tuple[Contract, Contract], words: str,
                                                   shadow: bool) -> None:
    path = _stage_of(config, {"a": INT, "b": b}, shadow=shadow)
    error = refused(config)
    assert error.message.split("; and at ")[0] == f"application demo: stage 1 variant b:1 {words}"  # the first
    assert error.location == f"{path}:5"  # the variant's `model`


def test_every_contract_problem_is_listed_at_once(config: Path) -> None:
    path = _stage_of(config, {"a": INT, "b": ({"x": "float32 [-1]"}, {"y": "int32 [-1]"})})
    error = refused(config)
    assert error.message == (f"application demo: stage 1 variant b:1 input 'x' is float32 but a:1 has it as int64; "
                             f"and at {path}:5: application demo: stage 1 variant b:1 output 'y' is int32 but a:1 "
                             "has it as int64")


@pytest.mark.parametrize("b", [
    ({"x": "int64 [5]"}, {"y": "int64 [-1]"}),  # -1 on one side
    ({"x": "int64"}, {"y": "int64"}),  # any shape
    ({"x": "int64 [-1]"}, {"y": "int64 [-1]"}),
])
def test_compatible_shapes_within_a_stage_are_accepted(config: Path, b: tuple[Contract, Contract]) -> None:
    _stage_of(config, {"a": INT, "b": b})
    assert load_config(config).applications["demo"].stages[0].variants[1].weight == 10


def test_a_variant_whose_contract_comes_from_its_backend_is_checked_when_discovered(config: Path) -> None:
    _stage_of(config, {"a": INT, "b": None})
    plan = manifest_plan(load_config(config).applications["demo"], load_config(config).models)
    assert plan.problems() == []
    assert plan.stages[0].variants[1].signature is None


# ---------------------------------------------------------------- contracts between stages


def _pipeline(config: Path, models: dict[str, tuple[Contract, Contract] | None]) -> Path:
    write_models(config, models)
    stages = "".join(f"  - - {{model: {name}:1}}\n" for name in models)
    return write_application(config, f"pipeline:\n{stages}")


@pytest.mark.parametrize(("post", "words"), [
    (({"y": "float32 [-1]"}, {"z": "int64 [-1]"}), "input 'y' is float32 but stage 1 (pre:1) outputs it as int64"),
    (({"w": "int64 [-1]"}, {"z": "int64 [-1]"}), "input 'w' is not an output of stage 1 (pre:1) (its outputs: "
                                                 "'y', 'debug')"),
    (({"y": "int64 [-1, 2]"}, {"z": "int64 [-1]"}), "input 'y' has shape [-1, 2] but stage 1 (pre:1) outputs it "
                                                    "with shape [-1]"),
    (({"y": "int64 [3]"}, {"z": "int64 [-1]"}), None),  # -1 on one side: fits
    (({"y": "int64", "debug": "string"}, {"z": "int64 [-1]"}), None),  # any shape; string outputs too
])
def test_each_input_of_a_stage_is_an_output_of_the_stage_before(config: Path, post: tuple[Contract, Contract],
                                                                words: str | None) -> None:
    path = _pipeline(config, {"pre": ({"x": "int64 [-1]"}, {"y": "int64 [-1]", "debug": "string [-1]"}),
                              "post": post})
    if words is None:
        assert list(load_config(config).applications["demo"].stages) != []
        return
    error = refused(config)
    assert error.message == f"application demo: stage 2 (post:1) {words}"
    assert error.location == f"{path}:{line_of(path, 'post:1')}"


def three_stages(config: Path) -> Config:
    """int64 -> float32 -> float64 -> string, with an output stage 2 drops."""
    _pipeline(config, {"ints": ({"n": "int64 [-1]"}, {"f": "float32 [-1]"}),
                       "floats": ({"f": "float32 [-1]"}, {"d": "float64 [-1]", "debug": "float32 [-1]"}),
                       "doubles": ({"d": "float64 [-1]"}, {"text": "string [-1]"})})
    return load_config(config)


def test_a_three_stage_pipeline_changing_dtypes_loads_and_notes_what_is_dropped(config: Path) -> None:
    loaded = three_stages(config)
    plan = manifest_plan(loaded.applications["demo"], loaded.models)
    assert plan.problems() == []
    assert plan.dropped() == ["stage 2 (floats:1) output 'debug' (float32 [-1]) is not an input of stage 3: "
                              "dropped"]
    assert list(plan.inputs or ()) == ["n"]
    assert list(plan.outputs or ()) == ["text"]
    assert plan_lines(plan) == [
        "stage 1: takes n (int64 [-1]); gives f (float32 [-1])",
        "  live ints:1 weight 100 (100%)",
        "stage 2: takes f (float32 [-1]); gives d (float64 [-1]), debug (float32 [-1])",
        "  live floats:1 weight 100 (100%)",
        "note: stage 2 (floats:1) output 'debug' (float32 [-1]) is not an input of stage 3: dropped",
        "stage 3: takes d (float64 [-1]); gives text (string [-1])",
        "  live doubles:1 weight 100 (100%)",
        "contract: inputs n (int64 [-1]); outputs text (string [-1])",
    ]


def test_the_json_plan_reads_back_as_the_same_plan(config: Path) -> None:
    loaded = three_stages(config)
    plan = manifest_plan(loaded.applications["demo"], loaded.models)
    again = plan_from_json(plan_to_json(plan))
    assert diff({"demo": plan}, {"demo": again}) == []
    assert plan_lines(again) == plan_lines(plan)


def test_a_variant_whose_contract_is_not_its_stages_keeps_its_own_in_the_json_plan() -> None:
    live = Signature("", {"a": _spec("a", "int64")}, {"y": _spec("y", "int64")})
    other = Signature("", {"a": _spec("a", "float32")}, {"y": _spec("y", "int64")})
    running = Plan("app", (PlannedStage(1, (PlannedVariant("m:1", 90, signature=live),
                                            PlannedVariant("m:2", 10),  # not discovered yet
                                            PlannedVariant("m:3", shadow=True, signature=other))),))  # disabled
    variants = plan_to_json(running)["stages"][0]["variants"]
    assert ["contract" in v for v in variants] == [False, True, True]
    again = plan_from_json(plan_to_json(running))
    assert [v.signature for v in again.stages[0].variants] == [live, None, other]
    # So the check compares the config's shadow against its own contract, and says m:2 is unknown.
    config = {"app": Plan("app", (PlannedStage(1, (PlannedVariant("m:1", 90), PlannedVariant("m:2", 10),
                                                   PlannedVariant("m:3", shadow=True))),))}
    filled = with_running_contracts({"app": again}, config)["app"]
    assert [v.signature for v in filled.stages[0].variants] == [live, None, other]


def test_a_stage_whose_contract_is_discovered_is_not_checked_at_load(config: Path) -> None:
    write_models(config, {"pre": INT, "remote": None, "post": ({"q": "string"}, {"r": "string"})})
    write_application(config, "pipeline:\n  - {model: pre:1}\n  - {model: remote:1}\n  - {model: post:1}\n")
    loaded = load_config(config)
    assert plan_lines(manifest_plan(loaded.applications["demo"], loaded.models))[2] == (
        "stage 2: contract discovered from its backend when served")


def test_shapes_are_compatible_when_equal_or_minus_one_on_one_side() -> None:
    table = [((), (), True), ((-1,), (3,), True), ((3,), (-1,), True), ((3,), (4,), False),
             ((-1,), (-1, 1), False), ((), (-1,), False), (None, (2, 2), True), ((1, -1), None, True),
             ((2, -1), (-1, 5), True)]
    assert [compatible_shapes(a, b) for a, b, _ in table] == [expected for _, _, expected in table]


# ---------------------------------------------------------------- what a reload would change


def _spec(name: str, dtype: str, shape: tuple[int, ...] | None = (-1,)) -> TensorSpec:
    return TensorSpec(name, lookup_dtype(dtype), shape)


def _plan(name: str, inputs: list[TensorSpec], outputs: list[TensorSpec],
          variants: tuple[PlannedVariant, ...] = (PlannedVariant("m:1", 100),)) -> Plan:
    signature = Signature("", {s.name: s for s in inputs}, {s.name: s for s in outputs})
    return Plan(name, (PlannedStage(1, tuple(PlannedVariant(v.model, v.weight, v.shadow, v.sample, signature)
                                             for v in variants)),))


@pytest.mark.parametrize(("old", "new", "change", "breaking"), [
    ([_spec("a", "int64")], [_spec("a", "float32")], "input 'a' dtype int64 -> float32", True),
    ([_spec("a", "int64"), _spec("b", "int64")], [_spec("a", "int64")], "input 'b' removed", True),
    ([_spec("a", "int64")], [_spec("a", "int64"), _spec("b", "string", ())], "input 'b' (string scalar) added", True),
    ([_spec("a", "int64", (3,))], [_spec("a", "int64", (-1,))], "input 'a' shape [3] -> [-1]", False),
    ([_spec("a", "int64", (-1,))], [_spec("a", "int64", (3,))], "input 'a' shape [-1] -> [3]", True),
    ([_spec("a", "int64", (-1,))], [_spec("a", "int64", (-1, 2))], "input 'a' shape [-1] -> [-1, 2]", True),
    ([_spec("a", "int64", (2,))], [_spec("a", "int64", None)], "input 'a' shape [2] -> any", False),
])
def test_input_changes_and_which_break_callers(old: list[TensorSpec], new: list[TensorSpec], change: str,
                                               breaking: bool) -> None:
    out = [_spec("y", "int64")]
    (found,) = diff({"app": _plan("app", old, out)}, {"app": _plan("app", new, out)})
    assert (found.text, found.breaking) == (change, breaking)
    assert str(found) == f"{'BREAKING ' if breaking else ''}application app: {change}"


@pytest.mark.parametrize(("old", "new", "change", "breaking"), [
    ([_spec("y", "int64")], [_spec("y", "int32")], "output 'y' dtype int64 -> int32", True),
    ([_spec("y", "int64"), _spec("z", "int64")], [_spec("y", "int64")], "output 'z' removed", True),
    ([_spec("y", "int64")], [_spec("y", "int64"), _spec("z", "bool")], "output 'z' (bool [-1]) added", False),
    ([_spec("y", "int64", (-1,))], [_spec("y", "int64", (4,))], "output 'y' shape [-1] -> [4]", False),
    ([_spec("y", "int64", (4,))], [_spec("y", "int64", (-1,))], "output 'y' shape [4] -> [-1]", True),
])
def test_output_changes_and_which_break_callers(old: list[TensorSpec], new: list[TensorSpec], change: str,
                                                breaking: bool) -> None:
    inputs = [_spec("a", "int64")]
    (found,) = diff({"app": _plan("app", inputs, old)}, {"app": _plan("app", inputs, new)})
    assert (found.text, found.breaking) == (change, breaking)


def test_applications_and_variants_added_removed_or_reweighted() -> None:
    a, y = [_spec("a", "int64")], [_spec("y", "int64")]
    running = {"gone": _plan("gone", a, y),
               "canary": _plan("canary", a, y, (PlannedVariant("m:1", 90), PlannedVariant("m:2", 10),
                                                PlannedVariant("m:3", shadow=True, sample=0.5)))}
    config = {"new": _plan("new", a, y),
              "canary": _plan("canary", a, y, (PlannedVariant("m:1", 50), PlannedVariant("m:2", 50),
                                               PlannedVariant("m:4", 0), PlannedVariant("m:3", shadow=True,
                                                                                        sample=1.0)))}
    assert [str(change) for change in diff(running, config)] == [
        "application canary: stage 1 variant m:4 added (weight 0, 0%)",
        "application canary: stage 1 variant m:1 weight 90 -> 50 (90% -> 50%)",
        "application canary: stage 1 variant m:2 weight 10 -> 50 (10% -> 50%)",
        "application canary: stage 1 shadow m:3 sample 0.5 -> 1",
        "BREAKING application gone: removed",
        "application new: added",
    ]
    assert diff(running, running) == []


def test_contracts_not_known_on_one_side_are_said_not_compared() -> None:
    known = _plan("app", [_spec("a", "int64")], [_spec("y", "int64")])
    unknown = Plan("app", (PlannedStage(1, (PlannedVariant("m:1", 100),)),))
    assert [(str(change), change.compared) for change in diff({"app": known}, {"app": unknown})] == [
        ("application app: not compared: contract of stage 1 (m:1): discovered from its backend when served", False)]
    assert [str(change) for change in diff({"app": unknown}, {"app": known})] == [
        "application app: not compared: contract of stage 1 (m:1): the running gateway has not discovered it"]


def test_a_contract_left_to_discovery_is_the_running_variants_of_that_name() -> None:
    running = {"app": _plan("app", [_spec("a", "int64")], [_spec("y", "int64")])}  # m:1, as discovered
    same = {"app": Plan("app", (PlannedStage(1, (PlannedVariant("m:1", 100),)),))}
    assert diff(running, with_running_contracts(running, same)) == []
    other = {"app": Plan("app", (PlannedStage(1, (PlannedVariant("m:2", 100),)),))}
    assert [str(change) for change in diff(running, with_running_contracts(running, other)) if not change.compared] \
        == ["application app: not compared: contract of stage 1 (m:2): discovered from its backend when served"]


def test_a_new_variant_whose_contract_nobody_knows_is_said_not_compared() -> None:
    running = {"app": _plan("app", [_spec("a", "int64")], [_spec("y", "int64")])}  # m:1, as discovered
    config = {"app": Plan("app", (PlannedStage(1, (PlannedVariant("m:1", 90), PlannedVariant("m:2", 10),
                                                   PlannedVariant("m:3", shadow=True, sample=0.5))),))}
    assert [(str(change), change.compared) for change in diff(running, with_running_contracts(running, config))
            if not change.compared] == [
        ("application app: not compared: contract of stage 1 variant m:2: discovered from its backend when served",
         False),
        ("application app: not compared: contract of stage 1 variant m:3: discovered from its backend when served",
         False)]


def test_contract_changes_between_stages_are_listed_but_break_no_caller() -> None:
    def two_stages(middle: str) -> Plan:
        first = Signature("", {"a": _spec("a", "int64")}, {"m": _spec("m", middle)})
        second = Signature("", {"m": _spec("m", middle)}, {"y": _spec("y", "int64")})
        return Plan("app", (PlannedStage(1, (PlannedVariant("p:1", 100, signature=first),)),
                            PlannedStage(2, (PlannedVariant("q:1", 100, signature=second),))))

    assert [str(change) for change in diff({"app": two_stages("int64")}, {"app": two_stages("float32")})] == [
        "application app: stage 1 output 'm' dtype int64 -> float32",
        "application app: stage 2 input 'm' dtype int64 -> float32",
    ]


def test_a_stage_whose_contract_names_no_outputs_feeds_the_next_stage_unchecked() -> None:
    """A v2 server's metadata may list no outputs (MLServer's model-settings need not): they are
    unknown, not none, so the stage after it is not refused; named outputs are still checked."""
    x = {"x": TensorSpec("x", lookup_dtype("float32"), (-1,))}
    no_outputs = Signature("serving_default", x, {})
    takes_y = Signature("serving_default", {"y": TensorSpec("y", lookup_dtype("float32"), (-1,))}, x)
    def plan(first: Signature) -> Plan:
        return Plan("app", (PlannedStage(1, (PlannedVariant("a:1", 100, signature=first),)),
                            PlannedStage(2, (PlannedVariant("b:1", 100, signature=takes_y),))))
    assert plan(no_outputs).problems() == []
    assert [p.message for p in plan(Signature("serving_default", x, x)).problems()] == [
        "application app: stage 2 (b:1) input 'y' is not an output of stage 1 (a:1) (its outputs: 'x')"]

"""An application's plan: its stages, their variants and the contract at each edge, and the
rules those contracts must keep.

The rules, on `tensorcodecs.Signature`s so that the same code checks the contracts manifests
declare (at load, `gateway.manifests.directory`) and those discovered from backends (at run
time, `gateway.registry`):
- every variant of a stage, live or shadow, has the stage's input and output contract: the
  same names, the same dtypes (as on the wire: `bytes` is `string`), compatible shapes;
- each input of stage N+1 is an output of stage N by name, with its dtype and a compatible
  shape; outputs of stage N that stage N+1 does not take are dropped (a note, not an error).
Shapes are compatible when either is None (any shape), or both have the same rank and each
dimension is equal or -1 on one side. A variant whose contract is not known (yet) is skipped.

`diff` compares two plans (a config's against a running gateway's) and says which changes
break callers of the application.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.manifests.resolve import resolve_ref
from gateway.manifests.types import ApplicationManifest, ModelManifest, Resolution, Selector
from tensorcodecs import Signature, TensorSpec, lookup_dtype
from tensorcodecs.contract import Shape


@dataclass(frozen=True, slots=True)
class PlannedVariant:
    """One variant as the plan shows it: `model` named as `x-gateway-variants` names it."""

    model: str
    weight: int = 0
    shadow: bool = False
    sample: float = 1.0
    signature: Signature | None = None  # None: not known (to be discovered from its backend)
    source: str = ""  # file:line of the variant in its manifest


@dataclass(frozen=True, slots=True)
class PlannedStage:
    number: int  # from 1, as errors say
    variants: tuple[PlannedVariant, ...]

    @property
    def live(self) -> tuple[PlannedVariant, ...]:
        return tuple(v for v in self.variants if not v.shadow)

    @property
    def shadows(self) -> tuple[PlannedVariant, ...]:
        return tuple(v for v in self.variants if v.shadow)

    @property
    def reference(self) -> PlannedVariant | None:
        """The variant whose contract stands for the stage's: the first known, live first."""
        return next((v for v in self.live + self.shadows if v.signature is not None), None)

    @property
    def contract(self) -> Signature | None:
        reference = self.reference
        return reference.signature if reference is not None else None

    def share(self, variant: PlannedVariant) -> float:
        """The percentage of the stage's requests a live variant serves."""
        total = sum(v.weight for v in self.live)
        return 100.0 * variant.weight / total if total and not variant.shadow else 0.0


@dataclass(frozen=True, slots=True)
class Problem:
    """A contract rule broken: the message names the application, stage, models and field (and
    no file: answers carry it); `source` is the file:line of the variant it is about."""

    message: str
    source: str = ""


@dataclass(frozen=True, slots=True)
class Plan:
    """An application's stages; its contract is its first stage's inputs and its last stage's
    outputs."""

    application: str
    stages: tuple[PlannedStage, ...]

    @property
    def inputs(self) -> Mapping[str, TensorSpec] | None:
        first = self.stages[0].contract if self.stages else None
        return first.inputs if first is not None else None

    @property
    def outputs(self) -> Mapping[str, TensorSpec] | None:
        last = self.stages[-1].contract if self.stages else None
        return last.outputs if last is not None else None

    def problems(self) -> list[Problem]:
        """Every contract rule the plan breaks, stage by stage."""
        problems: list[Problem] = []
        for stage in self.stages:
            problems.extend(self._stage_problems(stage))
        for before, after in zip(self.stages, self.stages[1:], strict=False):
            problems.extend(self._edge_problems(before, after))
        return problems

    def dropped(self) -> list[str]:
        """Notes on outputs no later stage takes (dropped between stages)."""
        notes = []
        for before, after in zip(self.stages, self.stages[1:], strict=False):
            produced, taken = before.contract, after.contract
            if produced is None or taken is None or before.reference is None:
                continue
            for name, spec in produced.outputs.items():
                if name not in taken.inputs:
                    notes.append(f"stage {before.number} ({before.reference.model}) output {name!r} "
                                 f"({_spec_text(spec)}) is not an input of stage {after.number}: dropped")
        return notes

    def _stage_problems(self, stage: PlannedStage) -> Iterator[Problem]:
        reference = stage.reference
        if reference is None or reference.signature is None:
            return
        for variant in stage.variants:
            if variant is reference or variant.signature is None:
                continue
            for kind in ("input", "output"):
                mine = getattr(variant.signature, f"{kind}s")
                theirs = getattr(reference.signature, f"{kind}s")
                for text in _differences(kind, mine, theirs, reference.model):
                    yield Problem(f"application {self.application}: stage {stage.number} variant {variant.model} "
                                  f"{text}", variant.source)

    def _edge_problems(self, before: PlannedStage, after: PlannedStage) -> Iterator[Problem]:
        produced, taken, reference = before.contract, after.contract, after.reference
        if produced is None or taken is None or reference is None or before.reference is None:
            return
        given = f"stage {before.number} ({before.reference.model})"
        for name, spec in taken.inputs.items():
            output = produced.outputs.get(name)
            where = f"application {self.application}: stage {after.number} ({reference.model}) input {name!r}"
            if output is None:
                outputs = ", ".join(repr(n) for n in produced.outputs) or "none"
                yield Problem(f"{where} is not an output of {given} (its outputs: {outputs})", reference.source)
            elif output.dtype.enum != spec.dtype.enum:
                yield Problem(f"{where} is {spec.dtype} but {given} outputs it as {output.dtype}", reference.source)
            elif not compatible_shapes(spec.shape, output.shape):
                yield Problem(f"{where} has shape {spec.shape_text()} but {given} outputs it with shape "
                              f"{output.shape_text()}", reference.source)


def compatible_shapes(a: Shape | None, b: Shape | None) -> bool:
    """Whether a tensor of one shape may be one of the other: either is any shape, or the same
    rank with each dimension equal or -1 on one side."""
    if a is None or b is None:
        return True
    return len(a) == len(b) and all(x == y or x == -1 or y == -1 for x, y in zip(a, b, strict=True))


def _differences(kind: str, mine: Mapping[str, TensorSpec], theirs: Mapping[str, TensorSpec],
                 other: str) -> Iterator[str]:
    for name in theirs:
        if name not in mine:
            yield f"has no {kind} {name!r}, which {other} has"
    for name, spec in mine.items():
        reference = theirs.get(name)
        if reference is None:
            yield f"has {kind} {name!r}, which {other} has not"
        elif spec.dtype.enum != reference.dtype.enum:
            yield f"{kind} {name!r} is {spec.dtype} but {other} has it as {reference.dtype}"
        elif not compatible_shapes(spec.shape, reference.shape):
            yield f"{kind} {name!r} has shape {spec.shape_text()} but {other} has it with shape " \
                  f"{reference.shape_text()}"


def _spec_text(spec: TensorSpec) -> str:
    return f"{spec.dtype} {spec.shape_text()}"


def plan_lines(plan: Plan) -> list[str]:
    """The plan as `gateway check` prints it: each stage with the contract entering and
    leaving it, its live variants with weight and share, its shadows with their sample, and
    the outputs dropped after it."""
    lines = []
    notes = plan.dropped()
    for stage in plan.stages:
        contract = stage.contract
        if contract is None:
            lines.append(f"stage {stage.number}: contract discovered from its backend when served")
        else:
            lines.append(f"stage {stage.number}: takes {_specs_text(contract.inputs)}; "
                         f"gives {_specs_text(contract.outputs)}")
        for variant in stage.variants:
            if variant.shadow:
                lines.append(f"  shadow {variant.model} sample {variant.sample:g}")
            else:
                lines.append(f"  live {variant.model} weight {variant.weight} ({stage.share(variant):.4g}%)")
        lines.extend(f"note: {note}" for note in notes if note.startswith(f"stage {stage.number} "))
    inputs, outputs = plan.inputs, plan.outputs
    lines.append(f"contract: inputs {_specs_text(inputs) if inputs is not None else '(discovered)'}; "
                 f"outputs {_specs_text(outputs) if outputs is not None else '(discovered)'}")
    return lines


def _specs_text(specs: Mapping[str, TensorSpec]) -> str:
    return ", ".join(f"{name} ({_spec_text(spec)})" for name, spec in specs.items()) or "nothing"


# ---------------------------------------------------------------- from manifests


def variant_name(resolution: Resolution) -> str:
    """`name:version` as `x-gateway-variants` names the variant (`name@label` for a label
    forwarded to a floating model)."""
    manifest, selector = resolution.manifest, resolution.selector or Selector()
    if selector.version is not None:
        return f"{manifest.name}:{selector.version}"
    if selector.label is not None:
        return f"{manifest.name}@{selector.label}"
    return f"{manifest.name}:{manifest.version}"


def manifest_plan(app: ApplicationManifest, models: Mapping[tuple[str, int], ModelManifest]) -> Plan:
    """The plan of an application as its manifests declare it (contracts not declared: None)."""
    stages = []
    for number, stage in enumerate(app.stages, start=1):
        variants = []
        for variant in stage.variants:
            resolution = resolve_ref(models, variant.model, variant.source or app.source)
            manifest = resolution.manifest
            variants.append(PlannedVariant(variant_name(resolution), variant.weight, variant.shadow, variant.sample,
                                           manifest.signature if manifest.contract_declared else None,
                                           variant.source))
        stages.append(PlannedStage(number, tuple(variants)))
    return Plan(app.name, tuple(stages))


# ---------------------------------------------------------------- as JSON (GET /gateway/applications)


def plan_to_json(plan: Plan) -> dict[str, Any]:
    """The plan as `GET /gateway/applications/{name}` answers it (no file paths)."""
    return {
        "name": plan.application,
        "inputs": _specs_json(plan.inputs),
        "outputs": _specs_json(plan.outputs),
        "stages": [{
            "stage": stage.number,
            "variants": [{"model": v.model, "shadow": v.shadow,
                          **({"sample": v.sample} if v.shadow else {"weight": v.weight,
                                                                   "share": round(stage.share(v), 2)})}
                         for v in stage.variants],
            "inputs": _specs_json(stage.contract.inputs if stage.contract else None),
            "outputs": _specs_json(stage.contract.outputs if stage.contract else None),
        } for stage in plan.stages],
        "dropped": plan.dropped(),
    }


def plan_from_json(data: Mapping[str, Any]) -> Plan:
    """A plan as a running gateway answered it (KeyError, TypeError or ValueError when the
    answer is not one)."""
    stages = []
    for stage in data["stages"]:
        inputs, outputs = _specs_from_json(stage["inputs"]), _specs_from_json(stage["outputs"])
        signature = Signature("", inputs, outputs) if inputs is not None and outputs is not None else None
        variants = tuple(PlannedVariant(str(v["model"]), int(v.get("weight", 0)), bool(v["shadow"]),
                                        float(v.get("sample", 1.0)), signature) for v in stage["variants"])
        stages.append(PlannedStage(int(stage["stage"]), variants))
    return Plan(str(data["name"]), tuple(stages))


def _specs_json(specs: Mapping[str, TensorSpec] | None) -> list[dict[str, Any]] | None:
    if specs is None:
        return None
    return [{"name": spec.name, "dtype": spec.dtype.name,
             "shape": list(spec.shape) if spec.shape is not None else None} for spec in specs.values()]


def _specs_from_json(items: Iterable[Mapping[str, Any]] | None) -> dict[str, TensorSpec] | None:
    if items is None:
        return None
    specs = {}
    for item in items:
        shape = item["shape"]
        specs[str(item["name"])] = TensorSpec(str(item["name"]), lookup_dtype(str(item["dtype"])),
                                              tuple(int(d) for d in shape) if shape is not None else None)
    return specs


# ---------------------------------------------------------------- what a reload would change


@dataclass(frozen=True, slots=True)
class Change:
    """One difference between a running gateway's plan and a config's; `breaking` when callers
    of the application as it runs would fail (an application or input removed, an input added,
    an output removed, a dtype changed, a shape made incompatible)."""

    application: str
    text: str
    breaking: bool = False

    def __str__(self) -> str:
        return f"{'BREAKING ' if self.breaking else ''}application {self.application}: {self.text}"


def diff(running: Mapping[str, Plan], config: Mapping[str, Plan]) -> list[Change]:
    """What swapping from the `running` plans to the `config`'s would change, application by
    application (contracts are compared where both sides know them)."""
    changes: list[Change] = []
    for name in sorted(running.keys() | config.keys()):
        old, new = running.get(name), config.get(name)
        if old is None:
            changes.append(Change(name, "added"))
        elif new is None:
            changes.append(Change(name, "removed", breaking=True))
        else:
            changes.extend(_contract_changes(name, "input", old.inputs, new.inputs))
            changes.extend(_contract_changes(name, "output", old.outputs, new.outputs))
            changes.extend(_stage_changes(name, old, new))
    return changes


def _contract_changes(app: str, kind: str, old: Mapping[str, TensorSpec] | None,
                      new: Mapping[str, TensorSpec] | None) -> Iterator[Change]:
    if old is None or new is None:
        return
    for name, spec in old.items():
        after = new.get(name)
        if after is None:
            yield Change(app, f"{kind} {name!r} removed", breaking=True)
        elif after.dtype.name != spec.dtype.name:
            yield Change(app, f"{kind} {name!r} dtype {spec.dtype} -> {after.dtype}", breaking=True)
        elif after.shape != spec.shape:
            yield Change(app, f"{kind} {name!r} shape {spec.shape_text()} -> {after.shape_text()}",
                         breaking=not _widens(kind, spec.shape, after.shape))
    for name, spec in new.items():
        if name not in old:
            # Every input is required: callers as they are do not send a new one.
            yield Change(app, f"{kind} {name!r} ({_spec_text(spec)}) added", breaking=kind == "input")


def _widens(kind: str, old: Shape | None, new: Shape | None) -> bool:
    """Whether every tensor callers send (inputs) or get (outputs) today still fits: for inputs
    the new shape must take every old one, for outputs the old must take every new one."""
    wide, narrow = (new, old) if kind == "input" else (old, new)
    if wide is None:
        return True
    if narrow is None:
        return False
    return len(wide) == len(narrow) and all(w == -1 or w == n for w, n in zip(wide, narrow, strict=True))


def _stage_changes(app: str, old: Plan, new: Plan) -> Iterator[Change]:
    if len(old.stages) != len(new.stages):
        yield Change(app, f"{len(old.stages)} stage(s) -> {len(new.stages)}: "
                     f"{_stages_text(old)} -> {_stages_text(new)}")
        return
    for before, after in zip(old.stages, new.stages, strict=True):
        was = {v.model: v for v in before.variants}
        now = {v.model: v for v in after.variants}
        stage = f"stage {after.number}"
        for model in sorted(was.keys() - now.keys()):
            yield Change(app, f"{stage} variant {model} removed")
        for model in sorted(now.keys() - was.keys()):
            yield Change(app, f"{stage} variant {model} added ({_variant_text(after, now[model])})")
        for model in sorted(was.keys() & now.keys()):
            a, b = was[model], now[model]
            if a.shadow != b.shadow:
                yield Change(app, f"{stage} variant {model} {_variant_text(before, a)} -> {_variant_text(after, b)}")
            elif a.shadow and a.sample != b.sample:
                yield Change(app, f"{stage} shadow {model} sample {a.sample:g} -> {b.sample:g}")
            elif not a.shadow and a.weight != b.weight:
                yield Change(app, f"{stage} variant {model} weight {a.weight} -> {b.weight} "
                             f"({before.share(a):.4g}% -> {after.share(b):.4g}%)")
        # Between stages (the application's own contract is compared above); callers see none of it.
        was_contract, contract = before.contract, after.contract
        if was_contract is not None and contract is not None:
            edges = [("input", was_contract.inputs, contract.inputs)] if after.number > 1 else []
            if after.number < len(new.stages):
                edges.append(("output", was_contract.outputs, contract.outputs))
            for kind, old_specs, new_specs in edges:
                for change in _contract_changes(app, kind, old_specs, new_specs):
                    yield Change(app, f"{stage} {change.text}")


def _variant_text(stage: PlannedStage, variant: PlannedVariant) -> str:
    if variant.shadow:
        return f"shadow, sample {variant.sample:g}"
    return f"weight {variant.weight}, {stage.share(variant):.4g}%"


def _stages_text(plan: Plan) -> str:
    return " -> ".join("|".join(v.model for v in stage.variants) for stage in plan.stages)

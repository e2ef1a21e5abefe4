"""What a reload would change: a running gateway's plans against a config's, and which
changes break callers of an application."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace

from gateway.manifests.contract_rules import spec_text
from gateway.manifests.plan import Plan, PlannedStage, PlannedVariant
from tensorcodecs import TensorSpec
from tensorcodecs.contract import Shape


@dataclass(frozen=True, slots=True)
class Change:
    """One difference between a running gateway's plan and a config's; `breaking` when callers
    of the application as it runs would fail (an application or input removed, an input added,
    an output removed, a dtype changed, a shape made incompatible); `compared` False when the
    check could not tell (a contract one side does not know, an application the API key may
    not see)."""

    application: str
    text: str
    breaking: bool = False
    compared: bool = True

    def __str__(self) -> str:
        return f"{'BREAKING ' if self.breaking else ''}application {self.application}: {self.text}"


def not_compared(application: str, why: str) -> Change:
    return Change(application, f"not compared: {why}", compared=False)


def with_running_contracts(running: Mapping[str, Plan], config: Mapping[str, Plan]) -> dict[str, Plan]:
    """The `config` plans with each contract they leave to discovery (a variant without a
    declared contract) taken from the running gateway's variant of that name in that stage,
    when it runs one: it reaches the same model and version, so what the gateway discovered
    for it is what a reload would serve."""
    filled = {}
    for name, plan in config.items():
        old = running.get(name)
        if old is None:
            filled[name] = plan
            continue
        known = {(stage.number, v.model): v.signature for stage in old.stages for v in stage.variants}
        filled[name] = Plan(plan.application, tuple(
            PlannedStage(stage.number, tuple(
                v if v.signature is not None else replace(v, signature=known.get((stage.number, v.model)))
                for v in stage.variants))
            for stage in plan.stages))
    return filled


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
            changes.extend(_uncompared(name, old, new))
    return changes


def _uncompared(app: str, old: Plan, new: Plan) -> Iterator[Change]:
    """A stage whose contract one side does not know, or a config variant whose contract nobody
    knows (a new canary or shadow beside a known variant): nothing above could compare it."""
    for before, after in zip(old.stages, new.stages, strict=False):
        if after.contract is None:
            names = ", ".join(v.model for v in after.variants)
            yield not_compared(app, f"contract of stage {after.number} ({names}): discovered from its backend "
                               "when served")
            continue
        for variant in after.variants:
            if variant.signature is None:
                yield not_compared(app, f"contract of stage {after.number} variant {variant.model}: discovered "
                                   "from its backend when served")
        if before.contract is not None:
            continue
        names = ", ".join(v.model for v in before.variants)
        yield not_compared(app, f"contract of stage {before.number} ({names}): the running gateway has not "
                           "discovered it")


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
            yield Change(app, f"{kind} {name!r} ({spec_text(spec)}) added", breaking=kind == "input")


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

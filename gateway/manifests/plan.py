"""An application's plan: its stages, their variants and the contract at each edge, checked
against the rules of `gateway.manifests.contract_rules` (a variant whose contract is not known
yet is skipped). `manifest_plan` makes one from manifests (declared contracts), the registry
one from what it runs (discovered ones too). Renderings: `plan_text` (`gateway check`),
`plan_json` (GET /gateway/applications); `plan_diff` compares two plans.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from gateway.manifests.contract_rules import comparable_output, differences, edge_differences, spec_text
from gateway.manifests.resolve import resolve_ref, resolved_name
from gateway.manifests.types import ApplicationManifest, ModelManifest
from tensorcodecs import Signature, TensorSpec


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
    no file: answers carry it); `source` is the file:line of the variant it is about; `shadow`
    names the shadow variant it is about ("": it is about live variants), which a discovered
    problem disables instead of the application; `note`: a shadow's output difference its
    answers can still be compared across (`comparable_output`), listed but disabling nothing."""

    message: str
    source: str = ""
    shadow: str = ""
    note: bool = False


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
                                 f"({spec_text(spec)}) is not an input of stage {after.number}: dropped")
        return notes

    def _stage_problems(self, stage: PlannedStage) -> Iterator[Problem]:
        reference = stage.reference
        if reference is None or reference.signature is None:
            return
        for variant in stage.variants:
            if variant is reference or variant.signature is None:
                continue
            shadow = _shadow_of(variant, reference)
            for kind in ("input", "output"):
                mine = getattr(variant.signature, f"{kind}s")
                theirs = getattr(reference.signature, f"{kind}s")
                # A shadow's outputs one by one: those it can be compared across are notes.
                pairs = [(mine, theirs, False)] if not (variant.shadow and kind == "output") else [
                    ({name: mine[name]} if name in mine else {}, {name: theirs[name]} if name in theirs else {},
                     comparable_output(mine.get(name), theirs.get(name)))
                    for name in [*theirs, *(name for name in mine if name not in theirs)]]
                for one_mine, one_theirs, note in pairs:
                    for text in differences(kind, one_mine, one_theirs, reference.model):
                        yield Problem(f"application {self.application}: stage {stage.number} variant "
                                      f"{variant.model} {text}", variant.source, shadow, note)

    def _edge_problems(self, before: PlannedStage, after: PlannedStage) -> Iterator[Problem]:
        produced, taken, reference = before.contract, after.contract, after.reference
        if produced is None or taken is None or reference is None or before.reference is None:
            return
        if not produced.outputs:  # a contract naming no outputs (a v2 server's metadata may omit them): unknown
            return
        given = f"stage {before.number} ({before.reference.model})"
        for name, text in edge_differences(taken.inputs, produced.outputs, given):
            yield Problem(f"application {self.application}: stage {after.number} ({reference.model}) input {name!r} "
                          f"{text}", reference.source, _shadow_of(reference, before.reference))


def _shadow_of(variant: PlannedVariant, other: PlannedVariant) -> str:
    """The shadow a problem between two variants is about: the one that is a shadow ("": both live)."""
    return variant.model if variant.shadow else other.model if other.shadow else ""


def manifest_plan(app: ApplicationManifest, models: Mapping[tuple[str, int], ModelManifest]) -> Plan:
    """The plan of an application as its manifests declare it (contracts not declared: None)."""
    stages = []
    for number, stage in enumerate(app.stages, start=1):
        variants = []
        for variant in stage.variants:
            resolution = resolve_ref(models, variant.model, variant.source or app.source)
            manifest = resolution.manifest
            variants.append(PlannedVariant(resolved_name(resolution), variant.weight, variant.shadow, variant.sample,
                                           manifest.signature if manifest.contract_declared else None,
                                           variant.source))
        stages.append(PlannedStage(number, tuple(variants)))
    return Plan(app.name, tuple(stages))

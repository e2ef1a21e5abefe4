"""A plan as JSON: the wire format of GET /gateway/applications, and back (`gateway check --url`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from gateway.manifests.plan import Plan, PlannedStage, PlannedVariant
from tensorcodecs import Signature, TensorSpec, lookup_dtype


def plan_to_json(plan: Plan) -> dict[str, Any]:
    """The plan as `GET /gateway/applications/{name}` answers it (no file paths)."""
    return {
        "name": plan.application,
        "inputs": specs_json(plan.inputs),
        "outputs": specs_json(plan.outputs),
        "stages": [{
            "stage": stage.number,
            "variants": [{"model": v.model, "shadow": v.shadow,
                          **({"sample": v.sample} if v.shadow else {"weight": v.weight,
                                                                   "share": round(stage.share(v), 2)}),
                          **_own_contract(stage, v)}
                         for v in stage.variants],
            "inputs": specs_json(stage.contract.inputs if stage.contract else None),
            "outputs": specs_json(stage.contract.outputs if stage.contract else None),
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
                                        float(v.get("sample", 1.0)),
                                        _contract_from_json(v["contract"]) if "contract" in v else signature)
                         for v in stage["variants"])
        stages.append(PlannedStage(int(stage["stage"]), variants))
    return Plan(str(data["name"]), tuple(stages))


def _own_contract(stage: PlannedStage, variant: PlannedVariant) -> dict[str, Any]:
    """A variant's `contract` when it is not the stage's (not known yet: null; a shadow that does
    not fit: its own), so that `gateway check --url` never takes the stage's for it."""
    contract = stage.contract
    mine = variant.signature
    if contract is not None and mine is not None and (mine.inputs, mine.outputs) == (contract.inputs,
                                                                                      contract.outputs):
        return {}
    if mine is None:
        return {"contract": None} if contract is not None else {}
    return {"contract": {"inputs": specs_json(mine.inputs), "outputs": specs_json(mine.outputs)}}


def _contract_from_json(data: Mapping[str, Any] | None) -> Signature | None:
    if data is None:
        return None
    inputs, outputs = _specs_from_json(data["inputs"]), _specs_from_json(data["outputs"])
    return Signature("", inputs or {}, outputs or {})


def specs_json(specs: Mapping[str, TensorSpec] | None) -> list[dict[str, Any]] | None:
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

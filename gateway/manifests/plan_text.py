"""A plan as `gateway check` prints it."""

from __future__ import annotations

from collections.abc import Mapping

from gateway.manifests.contract_rules import spec_text
from gateway.manifests.plan import Plan
from tensorcodecs import TensorSpec


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
    return ", ".join(f"{name} ({spec_text(spec)})" for name, spec in specs.items()) or "nothing"

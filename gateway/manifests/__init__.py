"""Load and validate YAML manifests (kind Model, Application, Gateway) into typed objects.

Errors name the file, line and field. Field names are Hydrosphere's (`kind`, `name`,
`install-command`, `payload`, `contract`, `singular`), so existing model folders load
unchanged. The model-folder format itself (serving.yaml, the contract, `models/<name>/<N>/`)
and the line-numbered YAML reader live in `modelfolder`, which the runtime reads too.

Modules: `types` (the domain values), `model_kind`, `application_kind`, `gateway_kind` (one
parser per kind), `directory` (a whole config directory), `resolve` (request-time resolution
of `name`, `name:V`, `name@label`, and how what they reach is named), `contract_rules` (the
rules contracts keep between variants and stages), `plan` (an application's stages checked
against them, for declared and discovered contracts alike), `plan_text` and `plan_json` (its
renderings), `plan_diff` (what a reload would change).
"""

from gateway.backends.protocols import PROTOCOLS
from gateway.manifests.application_kind import parse_application, parse_model_ref
from gateway.manifests.directory import check_config, load_config
from gateway.manifests.gateway_kind import parse_gateway, with_auth_file
from gateway.manifests.model_kind import load_model_manifest, parse_model
from gateway.manifests.plan import Plan, PlannedStage, PlannedVariant, Problem, manifest_plan
from gateway.manifests.plan_diff import Change, diff, not_compared, with_running_contracts
from gateway.manifests.plan_json import plan_from_json, plan_to_json
from gateway.manifests.plan_text import plan_lines
from gateway.manifests.resolve import resolve_model, resolve_ref, resolved_name, version_labels
from gateway.manifests.types import (
    FLOATING_VERSION,
    ApplicationManifest,
    BackendSpec,
    BatchingSpec,
    CompareSpec,
    Config,
    GatewayManifest,
    ModelManifest,
    ModelRef,
    Resolution,
    RuntimeAddress,
    Selector,
    Stage,
    TLSSpec,
    VariantManifest,
)
from modelfolder import MODEL_FILE, RUNTIME_THREADS, STYLES, model_folders, read_documents

__all__ = [
    "FLOATING_VERSION",
    "MODEL_FILE",
    "PROTOCOLS",
    "RUNTIME_THREADS",
    "STYLES",
    "ApplicationManifest",
    "BackendSpec",
    "BatchingSpec",
    "Change",
    "CompareSpec",
    "Config",
    "GatewayManifest",
    "ModelManifest",
    "ModelRef",
    "Plan",
    "PlannedStage",
    "PlannedVariant",
    "Problem",
    "Resolution",
    "RuntimeAddress",
    "Selector",
    "Stage",
    "TLSSpec",
    "VariantManifest",
    "check_config",
    "diff",
    "load_config",
    "load_model_manifest",
    "manifest_plan",
    "model_folders",
    "not_compared",
    "parse_application",
    "parse_gateway",
    "parse_model",
    "parse_model_ref",
    "plan_from_json",
    "plan_lines",
    "plan_to_json",
    "read_documents",
    "resolve_model",
    "resolve_ref",
    "resolved_name",
    "version_labels",
    "with_auth_file",
    "with_running_contracts",
]

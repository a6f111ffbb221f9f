"""Static checks of the Kubernetes manifests in deploy/kubernetes.

Every object is validated against the official Kubernetes JSON schemas (strict: unknown fields
are errors) with `kubernetes-validate`, which bundles the schemas, so no cluster and no network
are needed. On top of the schemas: the wiring between objects (names, keys, ports, labels) and
the deployment's own rules (edge nodes only, non-root, probes on the health routes, a GPU for
the trainer, configs that the node's settings accept).
"""

from __future__ import annotations

import copy
import functools
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import all_versions
from packaging.version import Version

from tests.deploy.settings_check import load_config_text, unknown_setting

REPO_ROOT = Path(__file__).resolve().parents[2]
KUBERNETES_DIR = REPO_ROOT / "deploy" / "kubernetes"

OLDEST_SUPPORTED_KUBERNETES = Version("1.28")
CUSTOM_RESOURCE_KINDS = {"ServiceMonitor"}
"""Kinds of CRDs: no bundled schema, checked by hand below."""
WORKLOAD_KINDS = {"DaemonSet", "Deployment", "StatefulSet"}
SECRET_NAME = "mainstream-secrets"
API_PORT = 8780
EDGE_LABEL = "mainstream.io/edge"


def kubernetes_versions() -> list[str]:
    """The oldest supported and the newest Kubernetes version the validator has schemas for."""
    versions = sorted({Version(v) for v in all_versions()})
    supported = [v for v in versions if v >= OLDEST_SUPPORTED_KUBERNETES] or versions[-1:]
    return sorted(
        {f"{supported[0].major}.{supported[0].minor}", f"{versions[-1].major}.{versions[-1].minor}"}
    )


def read_yaml_documents(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as stream:
        return [document for document in yaml.safe_load_all(stream) if document]


def kustomization_files() -> list[Path]:
    return sorted(KUBERNETES_DIR.rglob("kustomization.yaml"))


def referenced_manifests() -> list[Path]:
    """Every resource file named by the kustomization and its components."""
    files = []
    for kustomization_path in kustomization_files():
        kustomization = read_yaml_documents(kustomization_path)[0]
        for resource in kustomization.get("resources", []):
            files.append((kustomization_path.parent / resource).resolve())
    return sorted(files)


@functools.cache
def _parsed_objects() -> tuple[tuple[Path, dict[str, Any]], ...]:
    return tuple(
        (path, obj) for path in referenced_manifests() for obj in read_yaml_documents(path)
    )


def all_objects() -> list[tuple[Path, dict[str, Any]]]:
    """Every object of every manifest (parsed once; tests that change one copy it first)."""
    return list(_parsed_objects())


def objects_of_kind(kind: str) -> list[dict[str, Any]]:
    return [obj for _, obj in all_objects() if obj["kind"] == kind]


def one_object(kind: str, name: str) -> dict[str, Any]:
    matches = [obj for obj in objects_of_kind(kind) if obj["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} named {name}, found {len(matches)}"
    return matches[0]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def containers(workload: dict[str, Any], include_init: bool = False) -> Iterator[dict[str, Any]]:
    spec = pod_spec(workload)
    yield from spec["containers"]
    if include_init:
        yield from spec.get("initContainers", [])


def container(workload: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in containers(workload) if c["name"] == name)


def env_by_name(item: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in item.get("env", [])}


def workloads() -> list[dict[str, Any]]:
    return [obj for _, obj in all_objects() if obj["kind"] in WORKLOAD_KINDS]


def secret_keys_from_example() -> set[str]:
    """The keys of the generated Secret, as the example env file lists them."""
    keys = set()
    for line in (KUBERNETES_DIR / "secrets.env.example").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keys.add(line.split("=", 1)[0])
    return keys


def validate_strictly(obj: dict[str, Any], version: str) -> None:
    kubernetes_validate.validate(obj, version, strict=True)


# --- files and schemas ---------------------------------------------------------------------


def test_every_manifest_is_part_of_a_kustomization() -> None:
    on_disk = {
        path.resolve()
        for path in KUBERNETES_DIR.rglob("*.yaml")
        if path.name != "kustomization.yaml"
    }
    referenced = referenced_manifests()
    assert len(referenced) == len(set(referenced)), "a manifest is listed twice"
    assert set(referenced) == on_disk
    for path in referenced:
        assert path.is_file(), f"{path} is listed but missing"


@pytest.mark.parametrize("version", kubernetes_versions())
@pytest.mark.parametrize(
    "manifest", referenced_manifests(), ids=lambda path: str(path.relative_to(KUBERNETES_DIR))
)
def test_manifests_match_the_kubernetes_schemas(manifest: Path, version: str) -> None:
    documents = read_yaml_documents(manifest)
    assert documents, f"{manifest} holds no objects"
    for obj in documents:
        if obj["kind"] in CUSTOM_RESOURCE_KINDS:
            continue
        validate_strictly(obj, version)


def test_schema_validation_rejects_mistakes() -> None:
    """The validator is live: a misspelt field and a wrong type in the DaemonSet are caught."""
    edge = one_object("DaemonSet", "mainstream-edge")
    version = kubernetes_versions()[-1]
    validate_strictly(edge, version)

    misspelt = copy.deepcopy(edge)
    misspelt["spec"]["template"]["spec"]["nodeselector"] = pod_spec(misspelt).pop("nodeSelector")
    with pytest.raises(kubernetes_validate.ValidationError, match="nodeselector"):
        validate_strictly(misspelt, version)

    wrong_type = copy.deepcopy(edge)
    pod_spec(wrong_type)["containers"][0]["ports"][0]["containerPort"] = "http"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_strictly(wrong_type, version)


def test_kustomization_generates_the_secret_from_an_ignored_file() -> None:
    kustomization = read_yaml_documents(KUBERNETES_DIR / "kustomization.yaml")[0]
    generators = {g["name"]: g for g in kustomization["secretGenerator"]}
    assert generators[SECRET_NAME]["envs"] == ["secrets.env"]
    assert (KUBERNETES_DIR / "secrets.env.example").is_file()
    ignored = (REPO_ROOT / "deploy" / ".gitignore").read_text().split()
    assert "kubernetes/secrets.env" in ignored, "secrets.env must stay out of version control"
    assert not any(obj["kind"] == "Secret" for _, obj in all_objects()), (
        "secrets are generated from secrets.env, never committed as manifests"
    )
    components = {
        path.parent.name for path in kustomization_files() if path.parent != KUBERNETES_DIR
    }
    assert components == {"gpu-trainer", "monitoring"}
    for name in components:
        component = read_yaml_documents(KUBERNETES_DIR / name / "kustomization.yaml")[0]
        assert component["kind"] == "Component"
        assert name in (KUBERNETES_DIR / "kustomization.yaml").read_text(), (
            f"the kustomization should show how to enable {name}"
        )


# --- wiring between objects ----------------------------------------------------------------


def test_references_between_objects_resolve() -> None:
    config_maps = {obj["metadata"]["name"]: obj for obj in objects_of_kind("ConfigMap")}
    claims = {obj["metadata"]["name"] for obj in objects_of_kind("PersistentVolumeClaim")}
    secret_keys = secret_keys_from_example()
    for workload in workloads():
        name = workload["metadata"]["name"]
        volumes = {volume["name"]: volume for volume in pod_spec(workload).get("volumes", [])}
        for volume in volumes.values():
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps, f"{name}: {volume}"
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, f"{name}: {volume}"
        for item in containers(workload, include_init=True):
            for mount in item.get("volumeMounts", []):
                assert mount["name"] in volumes, f"{name}/{item['name']}: no volume {mount['name']}"
            for entry in item.get("env", []):
                source = entry.get("valueFrom", {})
                if "secretKeyRef" in source:
                    assert source["secretKeyRef"]["name"] == SECRET_NAME, f"{name}: {entry}"
                    assert source["secretKeyRef"]["key"] in secret_keys, f"{name}: {entry}"
                if "configMapKeyRef" in source:
                    ref = source["configMapKeyRef"]
                    assert ref["key"] in config_maps[ref["name"]]["data"], f"{name}: {entry}"


def test_services_select_pods_and_named_ports() -> None:
    for service in objects_of_kind("Service"):
        selector = service["spec"]["selector"]
        targets = [
            w
            for w in workloads()
            if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(targets) == 1, f"service {service['metadata']['name']} selects {len(targets)}"
        port_names = {port["name"] for c in containers(targets[0]) for port in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in port_names, f"{service['metadata']['name']}: {port}"


def test_workload_selectors_match_their_pod_labels() -> None:
    for workload in workloads():
        selector = workload["spec"]["selector"]["matchLabels"]
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), workload["metadata"]["name"]


def test_service_monitor_scrapes_the_metrics_of_edge_and_registry() -> None:
    (monitor,) = objects_of_kind("ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    port = monitor["spec"]["endpoints"][0]["port"]
    expressions = {
        e["key"]: set(e["values"]) for e in monitor["spec"]["selector"]["matchExpressions"]
    }
    selected = [
        service
        for service in objects_of_kind("Service")
        if all(
            service["metadata"]["labels"].get(key) in values for key, values in expressions.items()
        )
    ]
    assert {s["metadata"]["name"] for s in selected} == {"mainstream-edge", "mainstream-registry"}
    for service in selected:
        assert port in {p["name"] for p in service["spec"]["ports"]}


# --- the edge daemon -----------------------------------------------------------------------


def test_edge_daemon_runs_on_labelled_edge_nodes() -> None:
    edge = one_object("DaemonSet", "mainstream-edge")
    assert pod_spec(edge)["nodeSelector"][EDGE_LABEL] == "true"
    assert f"{EDGE_LABEL}=true" in (KUBERNETES_DIR / "edge.yaml").read_text(), (
        "edge.yaml should show the labelling command"
    )


def test_edge_node_name_comes_from_the_kubernetes_node() -> None:
    env = env_by_name(container(one_object("DaemonSet", "mainstream-edge"), "mainstream"))
    field_ref = env["MAINSTREAM_NODE_NAME"]["valueFrom"]["fieldRef"]
    assert field_ref["fieldPath"] == "spec.nodeName"


def test_edge_keeps_its_data_on_the_node() -> None:
    edge = one_object("DaemonSet", "mainstream-edge")
    main = container(edge, "mainstream")
    data_dir = env_by_name(main)["MAINSTREAM_DATA_DIR"]["value"]
    mounts = {m["mountPath"]: m["name"] for m in main["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec(edge)["volumes"]}
    assert volumes[mounts[data_dir]]["hostPath"]["path"] == "/var/lib/mainstream"
    # hostPath directories are created root-owned; the init step hands it to uid 10001.
    (owner_step,) = pod_spec(edge)["initContainers"]
    assert owner_step["command"] == ["chown", "10001:10001", data_dir]


def test_edge_picks_its_node_config_or_the_default() -> None:
    edge = one_object("DaemonSet", "mainstream-edge")
    main = container(edge, "mainstream")
    script = " ".join(main["args"])
    config_mount = next(m for m in main["volumeMounts"] if m["name"] == "config")["mountPath"]
    assert f"{config_mount}/node-${{MAINSTREAM_NODE_NAME}}.yaml" in script
    assert f"{config_mount}/default.yaml" in script
    assert "exec mainstream serve --config" in script
    data = one_object("ConfigMap", "mainstream-edge-config")["data"]
    assert "default.yaml" in data
    node_keys = [key for key in data if key != "default.yaml"]
    assert node_keys and all(k.startswith("node-") and k.endswith(".yaml") for k in node_keys)


@pytest.mark.parametrize(
    "workload_name", ["mainstream-edge", "mainstream-registry"], ids=["edge", "registry"]
)
def test_daemons_probe_the_health_routes(workload_name: str) -> None:
    workload = next(w for w in workloads() if w["metadata"]["name"] == workload_name)
    (daemon,) = list(containers(workload))
    ports = {port["name"]: port["containerPort"] for port in daemon["ports"]}
    assert ports["http"] == API_PORT
    assert daemon["livenessProbe"]["httpGet"]["path"] == "/api/health/live"
    assert daemon["readinessProbe"]["httpGet"]["path"] == "/api/health/ready"
    assert daemon["startupProbe"]["httpGet"]["path"].startswith("/api/health/")
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert daemon[probe]["httpGet"]["port"] in ("http", API_PORT)


# --- registry and trainer ------------------------------------------------------------------


def test_registry_is_one_daemon_in_registry_mode_on_a_claim() -> None:
    registry = one_object("Deployment", "mainstream-registry")
    assert registry["spec"]["replicas"] == 1
    assert registry["spec"]["strategy"]["type"] == "Recreate", "SQLite on a RWO volume"
    daemon = container(registry, "registry")
    args = daemon["args"]
    assert args[0] == "serve"
    assert args[args.index("--role") + 1] == "registry"
    volumes = {v["name"]: v for v in pod_spec(registry)["volumes"]}
    data_dir = env_by_name(daemon)["MAINSTREAM_DATA_DIR"]["value"]
    data_volume = next(m["name"] for m in daemon["volumeMounts"] if m["mountPath"] == data_dir)
    assert volumes[data_volume]["persistentVolumeClaim"]["claimName"] == "mainstream-registry-data"
    service = one_object("Service", "mainstream-registry")
    assert service["spec"]["ports"][0]["port"] == API_PORT
    edge_env = env_by_name(container(one_object("DaemonSet", "mainstream-edge"), "mainstream"))
    assert edge_env["MAINSTREAM_REGISTRY_URL"]["value"] == f"http://mainstream-registry:{API_PORT}"


def test_trainer_worker_requests_one_gpu() -> None:
    trainer = one_object("Deployment", "mainstream-trainer")
    worker = container(trainer, "trainer")
    resources = worker["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == 1
    # Extended resources cannot be overcommitted: a request, when given, equals the limit.
    assert resources["requests"].get("nvidia.com/gpu", 1) == resources["limits"]["nvidia.com/gpu"]
    assert worker["args"][:3] == ["trainer", "worker", "--listen"]
    listen_port = int(worker["args"][3].rsplit(":", 1)[1])
    assert {p["containerPort"] for p in worker["ports"]} == {listen_port}
    assert "gpu" in worker["image"], "the trainer runs the gpu image variant"
    tolerations = pod_spec(trainer)["tolerations"]
    assert any(t["key"] == "nvidia.com/gpu" for t in tolerations)


# --- security and resources ----------------------------------------------------------------


@pytest.mark.parametrize("workload", workloads(), ids=lambda w: w["metadata"]["name"])
def test_pods_run_unprivileged_with_resource_bounds(workload: dict[str, Any]) -> None:
    name = workload["metadata"]["name"]
    spec = pod_spec(workload)
    pod_security = spec["securityContext"]
    assert pod_security["runAsNonRoot"] is True, name
    assert pod_security["runAsUser"] != 0, name
    assert pod_security["seccompProfile"]["type"] == "RuntimeDefault", name
    assert spec["automountServiceAccountToken"] is False, name
    for item in containers(workload, include_init=True):
        security = item["securityContext"]
        assert security["allowPrivilegeEscalation"] is False, f"{name}/{item['name']}"
        assert security["readOnlyRootFilesystem"] is True, f"{name}/{item['name']}"
        assert security["capabilities"]["drop"] == ["ALL"], f"{name}/{item['name']}"
        for bound in ("requests", "limits"):
            assert {"cpu", "memory"} <= item["resources"][bound].keys(), f"{name}/{item['name']}"
    for item in containers(workload):
        assert item["securityContext"].get("runAsUser", pod_security["runAsUser"]) != 0
        assert item["securityContext"].get("runAsNonRoot", True) is True
        assert "add" not in item["securityContext"]["capabilities"], f"{name}/{item['name']}"
    for step in spec.get("initContainers", []):
        # The only root step may change ownership and nothing else.
        assert step["securityContext"]["capabilities"].get("add", []) in ([], ["CHOWN"])


def test_mainstream_images_are_rewritten_by_the_kustomization() -> None:
    kustomization = read_yaml_documents(KUBERNETES_DIR / "kustomization.yaml")[0]
    image_names = {entry["name"] for entry in kustomization["images"]}
    for workload in workloads():
        for item in containers(workload, include_init=True):
            repository = item["image"].rsplit(":", 1)[0]
            if repository.startswith("mainstream"):
                assert repository in image_names, f"{item['image']} is not set by `images:`"


# --- configs and environment against the node's settings -----------------------------------


def embedded_configs() -> list[tuple[str, str]]:
    return [
        (f"{config_map['metadata']['name']}/{key}", text)
        for config_map in objects_of_kind("ConfigMap")
        if config_map["metadata"]["name"].startswith("mainstream")
        for key, text in config_map["data"].items()
    ]


@pytest.mark.parametrize("name,text", embedded_configs(), ids=[n for n, _ in embedded_configs()])
def test_config_maps_hold_configs_the_node_accepts(
    name: str, text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_config_text(text, tmp_path, monkeypatch)
    assert settings.api.host == "0.0.0.0", f"{name}: the pod must listen on all addresses"
    assert settings.api.port == API_PORT
    assert settings.api.metrics_access == "open", (
        f"{name}: Prometheus scrapes without a token in-cluster"
    )


def test_environment_variables_name_settings() -> None:
    problems = []
    for workload in workloads():
        for item in containers(workload, include_init=True):
            for variable in env_by_name(item):
                if variable.startswith("MAINSTREAM_"):
                    problem = unknown_setting(variable)
                    if problem:
                        problems.append(f"{workload['metadata']['name']}: {problem}")
    assert not problems, "\n".join(problems)


# --- the rendered kustomization (needs kubectl, which bundles kustomize) --------------------


def kubectl_with_kustomize() -> str:
    """kubectl, when its built-in kustomize knows components (kustomize 3.7 and later)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (with its built-in kustomize) is not installed")
    result = subprocess.run(
        [kubectl, "version", "--client", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    try:
        kustomize = str(json.loads(result.stdout).get("kustomizeVersion", ""))
    except json.JSONDecodeError:
        kustomize = ""
    match = re.match(r"v?(\d+)\.(\d+)", kustomize)
    if match is None or (int(match[1]), int(match[2])) < (3, 7):
        pytest.skip(f"kubectl bundles kustomize {kustomize or '(unknown)'}, too old for components")
    return kubectl


def test_kustomize_build_renders_valid_objects(tmp_path: Path) -> None:
    kubectl = kubectl_with_kustomize()
    work = tmp_path / "kubernetes"
    shutil.copytree(KUBERNETES_DIR, work)
    (work / "secrets.env").write_text(
        "admin-token=test-admin\nregistry-token=test-viewer\ntrainer-token=test-trainer\n"
    )
    kustomization = read_yaml_documents(work / "kustomization.yaml")[0]
    kustomization["components"] = ["gpu-trainer", "monitoring"]
    (work / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))

    result = subprocess.run(
        [kubectl, "kustomize", str(work)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    rendered = [obj for obj in yaml.safe_load_all(result.stdout) if obj]

    kinds = sorted(obj["kind"] for obj in rendered)
    assert kinds.count("Secret") == 1 and "ServiceMonitor" in kinds and "DaemonSet" in kinds
    version = kubernetes_versions()[-1]
    for obj in rendered:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "mainstream", obj["metadata"]["name"]
        if obj["kind"] not in CUSTOM_RESOURCE_KINDS:
            validate_strictly(obj, version)
    (secret,) = [obj for obj in rendered if obj["kind"] == "Secret"]
    assert secret["metadata"]["name"].startswith(f"{SECRET_NAME}-"), "hashed name rolls pods"
    edge = next(obj for obj in rendered if obj["kind"] == "DaemonSet")
    main = container(edge, "mainstream")
    token = env_by_name(main)["MAINSTREAM_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert token["name"] == secret["metadata"]["name"]
    assert main["image"].startswith("registry.example.com/mainstream:")

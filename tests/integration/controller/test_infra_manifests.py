"""infra/ is deployable: manifests validate offline against the Kubernetes schemas, every
kustomization points at files that exist, and generated files are current.

`kubernetes-validate` carries the schemas, so nothing here needs a cluster or the network.
Custom resources (Prometheus Operator, KEDA) have no bundled schema; they get structural checks.
Building the overlays needs `kubectl kustomize`, which is used when installed.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from pagefleet.platform.controller.manifests import render_worker_deployments
from pagefleet.platform.controller.settings import KubernetesSettings
from pagefleet.platform.registry import load_registry

ROOT = Path(__file__).resolve().parents[3]
INFRA = ROOT / "infra"
KUSTOMIZATIONS = sorted(INFRA.rglob("kustomization.yaml"))
VERSION = kubernetes_validate.latest_version()
CUSTOM_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule", "ScaledObject"}
KNOWN_METRICS = {
    "desired_replicas", "ready_replicas", "queue_backlog", "scale_events_total", "controller_is_leader",
    "num_requests_running", "num_requests_waiting", "kv_cache_usage_perc", "prefix_cache_hit_rate",
    "generation_tokens_total", "time_to_first_token_seconds_bucket",
}


def _referenced(kustomization: Path) -> list[Path]:
    data = yaml.safe_load(kustomization.read_text())
    refs = list(data.get("resources", [])) + list(data.get("components", []))
    for generator in data.get("configMapGenerator", []) + data.get("secretGenerator", []):
        refs += [entry.split("=", 1)[-1] for entry in generator.get("files", [])]
    refs += [patch["path"] for patch in data.get("patches", []) if "path" in patch]
    return [kustomization.parent / ref for ref in refs]


def _manifest_files() -> list[Path]:
    files = {ref for k in KUSTOMIZATIONS for ref in _referenced(k)
             if ref.suffix == ".yaml" and ref.is_file() and ref.name != "registry.yaml"}
    return sorted(files)


def _check_custom(doc: dict[str, Any]) -> None:
    spec = doc["spec"]
    if doc["kind"] == "ServiceMonitor":
        assert spec["selector"] and all("port" in e for e in spec["endpoints"])
    elif doc["kind"] == "PodMonitor":
        assert spec["selector"] and all("port" in e for e in spec["podMetricsEndpoints"])
    elif doc["kind"] == "PrometheusRule":
        rules = [rule for group in spec["groups"] for rule in group["rules"]]
        assert rules and all({"alert", "expr"} <= set(rule) for rule in rules)
        for rule in rules:
            assert set(re.findall(r"pagefleet:(\w+)", rule["expr"])) <= KNOWN_METRICS, rule["alert"]
    elif doc["kind"] == "ScaledObject":
        assert spec["scaleTargetRef"]["name"].startswith("pf-worker-")
        assert all(t["type"] == "redis-streams" and t["metadata"]["consumerGroup"] == "workers"
                   for t in spec["triggers"])


def _validate(doc: dict[str, Any]) -> None:
    assert doc.get("metadata", {}).get("name"), f"{doc.get('kind')} without a name"
    if doc["kind"] in CUSTOM_KINDS:
        _check_custom(doc)
    else:
        kubernetes_validate.validate(doc, VERSION, strict=True)


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS, ids=lambda p: str(p.parent.relative_to(INFRA)))
def test_kustomization_references_exist(kustomization: Path) -> None:
    missing = [str(ref) for ref in _referenced(kustomization) if not ref.exists()]
    assert not missing


@pytest.mark.parametrize("path", _manifest_files(), ids=lambda p: str(p.relative_to(INFRA)))
def test_manifest_validates_offline(path: Path) -> None:
    docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    assert docs
    for doc in docs:
        _validate(doc)


@pytest.mark.parametrize("registry", ["infra/base/registry.yaml", "examples/registry.yaml",
                                      "platform/registry/default.yaml"])
def test_generated_worker_deployments_validate(registry: str) -> None:
    deployments = render_worker_deployments(load_registry(ROOT / registry), KubernetesSettings())
    for deployment in deployments:
        kubernetes_validate.validate(deployment, VERSION, strict=True)


def test_rendered_keda_workers_are_current() -> None:
    committed = [d for d in yaml.safe_load_all((INFRA / "overlays/keda/worker-deployments.yaml").read_text()) if d]
    rendered = render_worker_deployments(load_registry(INFRA / "base/registry.yaml"), KubernetesSettings())
    assert committed == rendered, "regenerate with `pagefleet controller --render` (see the file's header)"


def test_registries_in_infra_load_and_production_matches_the_example() -> None:
    load_registry(INFRA / "base/registry.yaml")
    production = INFRA / "overlays/production/registry.yaml"
    assert production.read_text() == (ROOT / "examples/registry.yaml").read_text()


def test_dashboard_queries_only_known_metrics() -> None:
    dashboard = json.loads((INFRA / "base/monitoring/grafana-dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert exprs
    used = {m for expr in exprs for m in re.findall(r"pagefleet:(\w+)", expr)}
    assert used <= KNOWN_METRICS and {"desired_replicas", "queue_backlog"} <= used


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (for `kubectl kustomize`) not installed")
@pytest.mark.parametrize("overlay", sorted(p.parent for p in KUSTOMIZATIONS if "overlays" in p.parts),
                         ids=lambda p: p.name)
def test_overlay_builds_and_validates(overlay: Path) -> None:
    built = subprocess.run(["kubectl", "kustomize", str(overlay)], check=True, capture_output=True, text=True)
    docs = [doc for doc in yaml.safe_load_all(built.stdout) if doc]
    kinds = {doc["kind"] for doc in docs}
    assert {"Deployment", "Service", "ConfigMap", "NetworkPolicy"} <= kinds
    for doc in docs:
        assert doc["metadata"].get("namespace", "pagefleet") == "pagefleet" or doc["kind"] == "Namespace"
        _validate(doc)

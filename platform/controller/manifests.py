"""The worker Deployment of one model, built from its registry spec and GPU profile.

A plain dict (what server-side apply sends), so tests can validate it against the Kubernetes
schemas offline and compare it field by field. `spec_hash` covers everything but the replica
count, so the controller re-applies only when the model's spec or the template changed.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pagefleet.platform.controller.settings import KubernetesSettings
from pagefleet.platform.registry import ModelSpec, Registry

FIELD_MANAGER = "pagefleet-controller"
APP_LABEL = "app.kubernetes.io/name"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MODEL_LABEL = "pagefleet.dev/model"
SPEC_HASH_ANNOTATION = "pagefleet.dev/spec-hash"
WORKER_APP = "pagefleet-worker"
REGISTRY_MOUNT = "/etc/pagefleet"


def deployment_name(model: str) -> str:
    return f"pf-worker-{model}"


def worker_deployment(spec: ModelSpec, settings: KubernetesSettings, replicas: int) -> dict[str, Any]:
    """The full desired Deployment; `replicas` is owned by the controller's field manager too."""
    labels = {APP_LABEL: WORKER_APP, MODEL_LABEL: spec.name}
    template = _pod_template(spec, settings, labels)
    deployment: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": deployment_name(spec.name),
            "namespace": settings.namespace,
            "labels": {**labels, MANAGED_BY_LABEL: FIELD_MANAGER},
            "annotations": {},
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": dict(labels)},
            # Surge one new pod before removing an old one: a rollout never drops capacity.
            "strategy": {"type": "RollingUpdate",
                         "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "revisionHistoryLimit": 3,
            "template": template,
        },
    }
    deployment["metadata"]["annotations"][SPEC_HASH_ANNOTATION] = spec_hash(deployment)
    return json.loads(json.dumps(deployment))  # plain JSON data, no shared sub-objects


def render_worker_deployments(registry: Registry, settings: KubernetesSettings) -> list[dict[str, Any]]:
    """Every model's Deployment at its minimum replicas: for review, GitOps or KEDA users."""
    return [worker_deployment(spec, settings, spec.scaling.min_replicas)
            for spec in registry.models.values()]


def spec_hash(deployment: dict[str, Any]) -> str:
    """A digest of the Deployment without its replica count and without the hash itself."""
    body = json.loads(json.dumps(deployment))
    body["spec"].pop("replicas", None)
    body["metadata"].get("annotations", {}).pop(SPEC_HASH_ANNOTATION, None)
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def _pod_template(spec: ModelSpec, settings: KubernetesSettings, labels: dict[str, str]) -> dict[str, Any]:
    profile = spec.profile
    volumes: list[dict[str, Any]] = [
        {"name": "registry", "configMap": {"name": settings.registry_configmap}},
        {"name": "dshm", "emptyDir": {"medium": "Memory", **({"sizeLimit": profile.shm} if profile.shm else {})}},
        ({"name": "model-cache", "persistentVolumeClaim": {"claimName": profile.model_cache_pvc}}
         if profile.model_cache_pvc else {"name": "model-cache", "emptyDir": {}}),
    ]
    pod_spec: dict[str, Any] = {
        "serviceAccountName": settings.service_account,
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": settings.drain_grace_s,
        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [_container(spec, settings)],
        "volumes": volumes,
    }
    if profile.node_selector:
        pod_spec["nodeSelector"] = dict(profile.node_selector)
    if profile.tolerations:
        pod_spec["tolerations"] = [t.as_manifest() for t in profile.tolerations]
    return {
        "metadata": {
            "labels": dict(labels),
            "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": str(settings.health_port)},
        },
        "spec": pod_spec,
    }


def _container(spec: ModelSpec, settings: KubernetesSettings) -> dict[str, Any]:
    profile = spec.profile
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    if profile.cpu:
        requests["cpu"] = profile.cpu
    if profile.memory:
        requests["memory"] = limits["memory"] = profile.memory
    if profile.is_gpu:
        requests[profile.accelerator] = limits[profile.accelerator] = str(profile.count)
    resources = {key: value for key, value in (("requests", requests), ("limits", limits)) if value}
    registry_file = f"{REGISTRY_MOUNT}/{settings.registry_key}"
    health = {"httpGet": {"path": "/health", "port": "http"}}
    return {
        "name": "worker",
        "image": profile.image or settings.image,
        "args": ["worker", "--model", spec.name, "--registry", registry_file,
                 "--redis-url", "$(REDIS_URL)", "--metrics-port", str(settings.health_port)],
        "env": [
            {"name": "REDIS_URL", "valueFrom": {"secretKeyRef": {"name": settings.redis_secret, "key": "url"}}},
            {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": settings.hf_token_secret,
                                                                "key": "token", "optional": True}}},
            {"name": "HF_HOME", "value": profile.model_cache_path},
            {"name": "PAGEFLEET_WORKER_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        ],
        "ports": [{"name": "http", "containerPort": settings.health_port}],
        # Loading weights can take many minutes: the startup probe allows 30 of them before the
        # readiness probe takes over; there is no liveness probe to kill a slow load.
        "startupProbe": {**health, "periodSeconds": 10, "failureThreshold": 180},
        "readinessProbe": {**health, "periodSeconds": 5, "failureThreshold": 2},
        **({"resources": resources} if resources else {}),
        "volumeMounts": [
            {"name": "registry", "mountPath": REGISTRY_MOUNT, "readOnly": True},
            {"name": "dshm", "mountPath": "/dev/shm"},
            {"name": "model-cache", "mountPath": profile.model_cache_path},
        ],
    }

"""One worker Deployment per model, through the official `kubernetes` client.

The Deployment is written with server-side apply under the field manager
`pagefleet-controller` (only when the model's spec or the template changed, detected by a hash
annotation) and scaled through the `scale` subresource every other time, which is one small
PATCH. Only Deployments labelled as managed by the controller are ever deleted.
"""

from __future__ import annotations

import logging
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from pagefleet.platform.controller.backends.base import BackendConflict, BackendError
from pagefleet.platform.controller.manifests import (
    FIELD_MANAGER,
    MANAGED_BY_LABEL,
    MODEL_LABEL,
    SPEC_HASH_ANNOTATION,
    deployment_name,
    worker_deployment,
)
from pagefleet.platform.controller.settings import KubernetesSettings
from pagefleet.platform.registry import ModelSpec

log = logging.getLogger(__name__)
_APPLY = "application/apply-patch+yaml"


def api_client_from_environment() -> client.ApiClient:
    """In-cluster credentials when running in a pod, else the local kubeconfig."""
    from kubernetes import config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.ApiClient()


class KubernetesBackend:
    def __init__(self, api: client.ApiClient, settings: KubernetesSettings) -> None:
        self._apps = client.AppsV1Api(api)
        self._settings = settings
        self._applied: dict[str, str] = {}  # model -> spec hash this process applied

    def current_replicas(self, model: str) -> int | None:
        try:
            scale = self._apps.read_namespaced_deployment_scale(deployment_name(model), self._settings.namespace)
        except ApiException as exc:
            if exc.status == 404:
                self._applied.pop(model, None)
                return None
            raise _translate(exc, f"reading the scale of {model!r}") from exc
        return int(scale.spec.replicas or 0)

    def apply(self, spec: ModelSpec, replicas: int, current: int | None) -> None:
        body = worker_deployment(spec, self._settings, replicas)
        digest = body["metadata"]["annotations"][SPEC_HASH_ANNOTATION]
        try:
            if current is None or self._applied.get(spec.name) != digest:
                self._apps.patch_namespaced_deployment(
                    deployment_name(spec.name), self._settings.namespace, body,
                    field_manager=FIELD_MANAGER, force=True, _content_type=_APPLY)
                self._applied[spec.name] = digest
                log.info("applied Deployment %s (spec %s, %d replicas)",
                         deployment_name(spec.name), digest, replicas)
            elif current != replicas:
                self._apps.patch_namespaced_deployment_scale(
                    deployment_name(spec.name), self._settings.namespace,
                    {"spec": {"replicas": replicas}}, field_manager=FIELD_MANAGER)
        except ApiException as exc:
            self._applied.pop(spec.name, None)  # re-read and re-apply next tick
            raise _translate(exc, f"applying {spec.name!r}") from exc

    def remove_except(self, models: set[str]) -> list[str]:
        selector = f"{MANAGED_BY_LABEL}={FIELD_MANAGER}"
        try:
            listed = self._apps.list_namespaced_deployment(self._settings.namespace, label_selector=selector)
        except ApiException as exc:
            raise _translate(exc, "listing worker Deployments") from exc
        removed = []
        for item in listed.items:
            model = (item.metadata.labels or {}).get(MODEL_LABEL)
            if model is None or model in models:
                continue
            try:
                self._apps.delete_namespaced_deployment(item.metadata.name, self._settings.namespace)
            except ApiException as exc:
                if exc.status != 404:
                    raise _translate(exc, f"deleting {item.metadata.name!r}") from exc
            self._applied.pop(model, None)
            removed.append(model)
            log.info("deleted Deployment %s: %r left the registry", item.metadata.name, model)
        return removed

    def close(self) -> None:
        """Worker Deployments outlive the controller; nothing to stop here."""


def _translate(exc: ApiException, doing: str) -> BackendError:
    detail: Any = exc.reason or exc.body
    if exc.status == 409:
        return BackendConflict(f"conflict {doing}: {detail}")
    return BackendError(f"HTTP {exc.status} {doing}: {detail}")

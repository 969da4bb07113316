"""One worker Deployment per model, through the official `kubernetes` client.

The Deployment is written with server-side apply under the field manager
`pagefleet-controller` (only when the model's spec or the template changed, detected by a hash
annotation) and scaled through the `scale` subresource every other time, which is one small
PATCH. Only Deployments labelled as managed by the controller are ever deleted.

API errors are sorted as kopf sorts them: 409, 429, 5xx and an unreachable API server are
temporary (`BackendError`, retried next tick); any other 4xx (403 RBAC, 422 invalid, a quota
or admission refusal) is permanent (`PermanentBackendError`), reported once, also as a
Warning Event on the model's Deployment.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from pagefleet.platform.controller.backends.base import (
    BackendConflict,
    BackendError,
    PermanentBackendError,
)
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
_NETWORK_ERRORS = (urllib3.exceptions.HTTPError, OSError)
_P = ParamSpec("_P")
_R = TypeVar("_R")


def _network_errors_are_temporary(method: Callable[_P, _R]) -> Callable[_P, _R]:
    """An unreachable API server is a temporary failure like a 503, not a crash of the loop."""

    @functools.wraps(method)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(*args, **kwargs)
        except _NETWORK_ERRORS as exc:
            raise BackendError(f"the Kubernetes API is unreachable: {exc}") from exc

    return wrapper


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
        self._core = client.CoreV1Api(api)
        self._settings = settings
        self._applied: dict[str, str] = {}  # model -> spec hash this process applied

    @_network_errors_are_temporary
    def current_replicas(self, model: str) -> int | None:
        try:
            scale = self._apps.read_namespaced_deployment_scale(deployment_name(model), self._settings.namespace)
        except ApiException as exc:
            if exc.status == 404:
                self._applied.pop(model, None)
                return None
            raise _translate(exc, f"reading the scale of {model!r}") from exc
        return int(scale.spec.replicas or 0)

    @_network_errors_are_temporary
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

    @_network_errors_are_temporary
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

    def report_failure(self, spec: ModelSpec, error: PermanentBackendError) -> None:
        """A Warning Event on the model's Deployment, where `kubectl describe` shows it."""
        name, namespace = deployment_name(spec.name), self._settings.namespace
        now = datetime.now(UTC)
        event = {
            "metadata": {"name": f"{name}.{uuid.uuid4().hex[:16]}", "namespace": namespace},
            "involvedObject": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name,
                               "namespace": namespace},
            "type": "Warning", "reason": "ScalingFailed", "message": str(error)[:1024],
            "source": {"component": FIELD_MANAGER}, "reportingComponent": FIELD_MANAGER,
            "reportingInstance": self._settings.identity,
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        }
        try:
            self._core.create_namespaced_event(namespace, event)
        except (ApiException, *_NETWORK_ERRORS) as exc:
            log.warning("could not record an Event for %s: %s", name, exc)


def _translate(exc: ApiException, doing: str) -> BackendError | PermanentBackendError:
    """409, 429, 5xx (and no status at all) are temporary; any other 4xx is permanent."""
    detail: Any = exc.reason or exc.body
    if exc.status == 409:
        return BackendConflict(f"conflict {doing}: {detail}")
    if exc.status is not None and 400 <= exc.status < 500 and exc.status != 429:
        return PermanentBackendError(f"HTTP {exc.status} {doing}: {detail}", status=exc.status)
    return BackendError(f"HTTP {exc.status} {doing}: {detail}")

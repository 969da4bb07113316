"""The worker Deployment built from a registry spec: resources follow the profile, the hash
follows the spec and not the replica count."""

from __future__ import annotations

from pagefleet.platform.controller.manifests import SPEC_HASH_ANNOTATION, worker_deployment
from pagefleet.platform.controller.settings import KubernetesSettings
from pagefleet.platform.registry import parse_registry

SETTINGS = KubernetesSettings(namespace="ns", image="img:1")


def _spec(profile: dict):
    return parse_registry({"models": {"m": {"profile": profile}}}).get("m")


def _hash(deployment: dict) -> str:
    return deployment["metadata"]["annotations"][SPEC_HASH_ANNOTATION]


def test_cpu_profile_requests_no_accelerator_and_uses_an_empty_cache() -> None:
    deployment = worker_deployment(_spec({"accelerator": "cpu", "memory": "4Gi"}), SETTINGS, 0)
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"] == {"requests": {"memory": "4Gi"}, "limits": {"memory": "4Gi"}}
    assert "nodeSelector" not in pod and "tolerations" not in pod
    assert {"name": "model-cache", "emptyDir": {}} in pod["volumes"]
    assert container["image"] == "img:1" and container["args"][:3] == ["worker", "--model", "m"]
    env = {e["name"]: e for e in container["env"]}
    assert env["REDIS_URL"]["valueFrom"]["secretKeyRef"]["name"] == "pagefleet-redis"
    assert "value" not in env["REDIS_URL"], "no credential in the Deployment"


def test_gpu_profile_sets_limits_and_per_model_image() -> None:
    spec = _spec({"accelerator": "nvidia.com/gpu", "count": 2, "tensor_parallel_size": 2, "image": "gpu:2"})
    container = worker_deployment(spec, SETTINGS, 1)["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"] == {"nvidia.com/gpu": "2"}
    assert container["image"] == "gpu:2"


def test_hash_ignores_replicas_and_tracks_the_spec() -> None:
    spec = _spec({"accelerator": "cpu"})
    assert _hash(worker_deployment(spec, SETTINGS, 0)) == _hash(worker_deployment(spec, SETTINGS, 5))
    changed = _spec({"accelerator": "cpu", "shm": "1Gi"})
    assert _hash(worker_deployment(changed, SETTINGS, 0)) != _hash(worker_deployment(spec, SETTINGS, 0))
    other_image = KubernetesSettings(namespace="ns", image="img:2")
    assert _hash(worker_deployment(spec, other_image, 0)) != _hash(worker_deployment(spec, SETTINGS, 0))

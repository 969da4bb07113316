"""The Kubernetes backend and Lease election, driven through the real `kubernetes` client.

The API server here is `tests.support.k8s_api_double`: a local test double that stands in for a
cluster (no real cluster is involved). See its docstring for what it does and does not model.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
from kubernetes import client

from pagefleet.platform.controller.backends.base import (
    BackendConflict,
    BackendError,
    PermanentBackendError,
)
from pagefleet.platform.controller.backends.kubernetes import KubernetesBackend
from pagefleet.platform.controller.leader import LeaseElector
from pagefleet.platform.controller.loop import Controller
from pagefleet.platform.controller.manifests import deployment_name
from pagefleet.platform.controller.settings import KubernetesSettings
from pagefleet.platform.processes.ports import free_port
from pagefleet.platform.protocol import keys
from pagefleet.platform.registry import load_registry, parse_registry
from tests.support.k8s_api_double import KubeApiDouble, kube_api_double

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "registry.yaml"
NS = "pagefleet"
SMALL, LARGE = "smollm2-135m-instruct", "llama-3.1-70b-instruct"


@pytest.fixture
def double() -> Iterator[KubeApiDouble]:
    with kube_api_double() as api_double:
        yield api_double


@pytest.fixture
def api(double: KubeApiDouble) -> Iterator[client.ApiClient]:
    configuration = client.Configuration()
    configuration.host = double.url
    with client.ApiClient(configuration) as api_client:
        yield api_client


@pytest.fixture
def backend(api: client.ApiClient) -> KubernetesBackend:
    return KubernetesBackend(api, KubernetesSettings(namespace=NS, image="example/worker:1"))


def test_creates_deployment_from_gpu_profile_with_server_side_apply(
    double: KubeApiDouble, backend: KubernetesBackend
) -> None:
    spec = load_registry(EXAMPLE).get(LARGE)
    assert backend.current_replicas(LARGE) is None
    backend.apply(spec, 2, None)
    deployment = double.get("deployments", NS, deployment_name(LARGE))
    assert deployment is not None and deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    shm = next(v for v in pod["volumes"] if v["name"] == "dshm")["emptyDir"]
    assert shm == {"medium": "Memory", "sizeLimit": "16Gi"}
    cache = next(v for v in pod["volumes"] if v["name"] == "model-cache")
    assert cache["persistentVolumeClaim"]["claimName"] == "pagefleet-model-cache"
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    assert pod["terminationGracePeriodSeconds"] >= 60
    apply = [r for r in double.requests if r.method == "PATCH"]
    assert apply[-1].content_type == "application/apply-patch+yaml"
    assert apply[-1].query == {"fieldManager": "pagefleet-controller", "force": "true"}
    assert backend.current_replicas(LARGE) == 2


def test_scales_through_the_scale_subresource_once_applied(
    double: KubeApiDouble, backend: KubernetesBackend
) -> None:
    spec = load_registry(EXAMPLE).get(SMALL)
    backend.apply(spec, 0, None)
    assert double.get("deployments", NS, deployment_name(SMALL))["spec"]["replicas"] == 0
    backend.apply(spec, 3, backend.current_replicas(SMALL))
    assert double.requests[-1].path.endswith(f"/deployments/{deployment_name(SMALL)}/scale")
    assert backend.current_replicas(SMALL) == 3
    before = len(double.requests)
    backend.apply(spec, 3, 3)
    assert len(double.requests) == before, "nothing to do, no request"


def test_conflict_is_typed_and_the_next_attempt_recovers(
    double: KubeApiDouble, backend: KubernetesBackend
) -> None:
    spec = load_registry(EXAMPLE).get(SMALL)
    backend.apply(spec, 1, None)
    double.fail_next("PATCH", "/scale", 409)
    with pytest.raises(BackendConflict):
        backend.apply(spec, 2, 1)
    backend.apply(spec, 2, backend.current_replicas(SMALL))
    assert backend.current_replicas(SMALL) == 2


def test_deployment_deleted_out_of_band_is_recreated(double: KubeApiDouble, backend: KubernetesBackend) -> None:
    spec = load_registry(EXAMPLE).get(SMALL)
    backend.apply(spec, 1, None)
    double.handle("DELETE", f"/apis/apps/v1/namespaces/{NS}/deployments/{deployment_name(SMALL)}", "", b"")
    current = backend.current_replicas(SMALL)
    assert current is None
    backend.apply(spec, 1, current)
    assert double.get("deployments", NS, deployment_name(SMALL))["spec"]["replicas"] == 1


def test_removes_only_managed_deployments_of_dropped_models(
    double: KubeApiDouble, api: client.ApiClient, backend: KubernetesBackend
) -> None:
    registry = load_registry(EXAMPLE)
    for spec in registry.models.values():
        backend.apply(spec, 0, None)
    unmanaged = {"apiVersion": "apps/v1", "kind": "Deployment",
                 "metadata": {"name": "pf-worker-hand-made", "labels": {"pagefleet.dev/model": "x"}},
                 "spec": {"replicas": 1, "selector": {"matchLabels": {"a": "b"}},
                          "template": {"metadata": {"labels": {"a": "b"}},
                                       "spec": {"containers": [{"name": "c", "image": "i"}]}}}}
    client.AppsV1Api(api).create_namespaced_deployment(NS, unmanaged)
    assert backend.remove_except({SMALL}) == [LARGE]
    assert double.names("deployments", NS) == ["pf-worker-hand-made", deployment_name(SMALL)]


def test_lease_has_one_holder_and_passes_on_after_expiry(double: KubeApiDouble, api: client.ApiClient) -> None:
    now = [1000.0]
    first = LeaseElector(api, NS, "lease", "a", lease_duration_s=10, clock=lambda: now[0])
    second = LeaseElector(api, NS, "lease", "b", lease_duration_s=10, clock=lambda: now[0])
    assert first.try_acquire_or_renew() and not second.try_acquire_or_renew()
    now[0] += 5
    assert first.try_acquire_or_renew() and not second.try_acquire_or_renew()
    now[0] += 11  # `a` stopped renewing
    assert second.try_acquire_or_renew() and not first.try_acquire_or_renew()
    assert double.get("leases", NS, "lease")["spec"]["leaseTransitions"] == 1
    second.release()
    assert first.try_acquire_or_renew()


def test_lost_race_on_stale_resource_version_is_not_leadership(double: KubeApiDouble, api: client.ApiClient) -> None:
    elector = LeaseElector(api, NS, "lease", "a", lease_duration_s=10)
    assert elector.try_acquire_or_renew()
    double.fail_next("PUT", "/leases/lease", 409)
    assert not elector.try_acquire_or_renew()
    assert elector.try_acquire_or_renew()


def test_only_the_leader_scales(double: KubeApiDouble, api: client.ApiClient, redis_url: str,
                                redis_client: redis.Redis) -> None:
    registry = parse_registry({"models": {"m1": {"scaling": {"max_replicas": 3, "target_in_flight": 2}}}})
    redis_client.xadd(keys.request_stream("m1", 0), {keys.ENTRY_REQUEST_ID: "r1", keys.ENTRY_ENVELOPE: b"x"})
    settings = KubernetesSettings(namespace=NS)

    async def scenario() -> None:
        controllers = []
        for identity in ("a", "b"):
            elector = LeaseElector(api, NS, "pf", identity, lease_duration_s=30)
            controllers.append(Controller(registry, KubernetesBackend(api, settings),
                                          aioredis.Redis.from_url(redis_url), elector=elector))
        try:
            leader_decisions = await controllers[0].tick()
            follower_decisions = await controllers[1].tick()
        finally:
            for controller in controllers:
                await controller.aclose()
        assert leader_decisions["m1"].desired_replicas == 1, "activation on the first queued request"
        assert follower_decisions == {} and not controllers[1].is_leader

    asyncio.run(scenario())
    assert double.get("deployments", NS, deployment_name("m1"))["spec"]["replicas"] == 1


@pytest.mark.parametrize(("status", "permanent"), [
    (403, True), (422, True), (400, True), (409, False), (429, False), (500, False), (503, False),
])
def test_api_errors_are_typed_permanent_or_temporary(
    double: KubeApiDouble, backend: KubernetesBackend, status: int, permanent: bool
) -> None:
    spec = load_registry(EXAMPLE).get(SMALL)
    double.fail_next("PATCH", deployment_name(SMALL), status)
    expected = PermanentBackendError if permanent else BackendError
    with pytest.raises(expected) as raised:
        backend.apply(spec, 1, None)
    assert isinstance(raised.value, BackendError) != permanent  # permanent is never retryable
    backend.apply(spec, 1, None)  # the double failed once; the next attempt goes through
    assert double.get("deployments", NS, deployment_name(SMALL))["spec"]["replicas"] == 1


def test_an_unreachable_api_server_is_a_temporary_error() -> None:
    configuration = client.Configuration()
    configuration.host = f"http://127.0.0.1:{free_port()}"
    configuration.retries = False
    with client.ApiClient(configuration) as api_client:
        backend = KubernetesBackend(api_client, KubernetesSettings(namespace=NS))
        with pytest.raises(BackendError, match="unreachable"):
            backend.current_replicas(SMALL)


def test_a_permanent_failure_is_reported_once_and_not_resent_every_tick(
    double: KubeApiDouble, api: client.ApiClient, redis_url: str, redis_client: redis.Redis
) -> None:
    registry = parse_registry({"models": {"m403": {"scaling": {"min_replicas": 1, "max_replicas": 2}}}})
    name = deployment_name("m403")

    def writes() -> int:
        return sum(r.method == "PATCH" and name in r.path for r in double.requests)

    async def scenario() -> None:
        controller = Controller(registry, KubernetesBackend(api, KubernetesSettings(namespace=NS)),
                                aioredis.Redis.from_url(redis_url))
        try:
            double.fail_next("PATCH", name, 403)
            for _ in range(3):
                await controller.tick()
            assert writes() == 1, "a 403 is not sent again every tick"
            events = [double.get("events", NS, n) for n in double.names("events", NS)]
            events = [e for e in events if e["involvedObject"]["name"] == name]
            assert len(events) == 1 and events[0]["type"] == "Warning"
            assert "HTTP 403" in events[0]["message"]
            failures = controller.metrics.registry.get_sample_value(
                "pagefleet:controller_permanent_failures_total", {"model": "m403"})
            assert failures == 1.0
            # A new registry version (what an operator does to fix it) is tried at once.
            controller.registry = parse_registry(
                {"models": {"m403": {"scaling": {"min_replicas": 2, "max_replicas": 2}}}})
            await controller.tick()
            assert writes() == 2
        finally:
            await controller.aclose()

    asyncio.run(scenario())
    assert double.get("deployments", NS, name)["spec"]["replicas"] == 2

"""Leader election with a coordination.k8s.io Lease, so several controller replicas are safe.

Only the holder of an unexpired Lease acts. Every write carries the Lease's resourceVersion, so
two candidates racing for an expired Lease cannot both win: the API server answers the loser
with 409 Conflict.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from kubernetes import client
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)


class LeaseElector:
    def __init__(self, api: client.ApiClient, namespace: str, name: str, identity: str,
                 lease_duration_s: int = 15, clock: Callable[[], float] = time.time) -> None:
        self._coordination = client.CoordinationV1Api(api)
        self._namespace = namespace
        self._name = name
        self.identity = identity
        self._duration_s = lease_duration_s
        self._clock = clock

    def try_acquire_or_renew(self) -> bool:
        """True while this process holds the Lease; never raises for an ordinary lost race."""
        now = datetime.fromtimestamp(self._clock(), tz=UTC)
        try:
            lease = self._coordination.read_namespaced_lease(self._name, self._namespace)
        except ApiException as exc:
            if exc.status != 404:
                log.warning("cannot read Lease %s: HTTP %s", self._name, exc.status)
                return False
            return self._create(now)
        spec = lease.spec or client.V1LeaseSpec()
        holder = spec.holder_identity
        if holder and holder != self.identity and not self._expired(spec, now):
            return False
        if holder != self.identity:
            spec.acquire_time = now
            spec.lease_transitions = (spec.lease_transitions or 0) + 1
            log.info("taking over Lease %s from %r", self._name, holder)
        spec.holder_identity = self.identity
        spec.lease_duration_seconds = self._duration_s
        spec.renew_time = now
        lease.spec = spec
        return self._replace(lease)

    def release(self) -> None:
        """Give the Lease up on shutdown so another replica takes over at once."""
        try:
            lease = self._coordination.read_namespaced_lease(self._name, self._namespace)
        except ApiException:
            return
        if lease.spec is None or lease.spec.holder_identity != self.identity:
            return
        lease.spec.holder_identity = None
        lease.spec.renew_time = None
        self._replace(lease)

    def _expired(self, spec: client.V1LeaseSpec, now: datetime) -> bool:
        if spec.renew_time is None:
            return True
        duration = spec.lease_duration_seconds or self._duration_s
        return (now - spec.renew_time).total_seconds() > duration

    def _create(self, now: datetime) -> bool:
        body = client.V1Lease(
            metadata=client.V1ObjectMeta(name=self._name, namespace=self._namespace),
            spec=client.V1LeaseSpec(holder_identity=self.identity, lease_duration_seconds=self._duration_s,
                                    acquire_time=now, renew_time=now, lease_transitions=0))
        try:
            self._coordination.create_namespaced_lease(self._namespace, body)
        except ApiException as exc:
            if exc.status != 409:
                log.warning("cannot create Lease %s: HTTP %s", self._name, exc.status)
            return False
        return True

    def _replace(self, lease: client.V1Lease) -> bool:
        try:
            self._coordination.replace_namespaced_lease(self._name, self._namespace, lease)
        except ApiException as exc:
            if exc.status != 409:
                log.warning("cannot update Lease %s: HTTP %s", self._name, exc.status)
            return False
        return True

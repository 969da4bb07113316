"""A test double of the Kubernetes API server -- it stands in for a cluster, it is not one.

A small threaded HTTP server that answers the few endpoints pagefleet's controller uses, with
the semantics the controller relies on, so tests can drive the real `kubernetes` client:

- apps/v1 Deployments: create, get, list (with `labelSelector` equality terms), delete, PUT,
  PATCH as merge / strategic-merge (treated as a JSON merge) / JSON patch, and server-side
  apply (`application/apply-patch+yaml`, `fieldManager` required, creates when absent);
- the `scale` subresource of a Deployment (GET, PATCH, PUT);
- coordination.k8s.io/v1 Leases: create, get, PUT, delete;
- core/v1 Events: create and list (what the controller records about a Deployment);
- 404 for missing objects, 409 for a create of an existing object and for any write that
  carries a stale `metadata.resourceVersion`; `fail_next()` injects a failure on demand.

What it does not do: admission, defaulting, schema validation, field-ownership conflicts
between managers, watches, pods or rollouts (a Deployment's status simply mirrors its spec).
"""

from __future__ import annotations

import copy
import json
import re
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

_ROUTE = re.compile(
    r"^/(?:apis/(?P<group>apps|coordination\.k8s\.io)/v1|api/v1)/namespaces/(?P<ns>[^/]+)/"
    r"(?P<kind>deployments|leases|events)(?:/(?P<name>[^/]+))?(?P<sub>/scale)?$"
)
_KINDS = {"deployments": ("apps/v1", "Deployment"), "leases": ("coordination.k8s.io/v1", "Lease"),
          "events": ("v1", "Event")}


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    content_type: str


class KubeApiDouble:
    """The stored objects and the request log; `url` is what a client's `host` should be."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._version = 0
        self._faults: list[tuple[str, str, int]] = []
        self.requests: list[RecordedRequest] = []
        self.url = ""

    # -- test helpers ---------------------------------------------------------------------------
    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            obj = self._objects.get((kind, namespace, name))
            return copy.deepcopy(obj)

    def names(self, kind: str, namespace: str) -> list[str]:
        with self._lock:
            return sorted(n for (k, ns, n) in self._objects if k == kind and ns == namespace)

    def fail_next(self, method: str, path_contains: str, status: int) -> None:
        """Answer the next `method` request whose path contains `path_contains` with `status`."""
        with self._lock:
            self._faults.append((method, path_contains, status))

    # -- request handling -----------------------------------------------------------------------
    def handle(self, method: str, raw_path: str, content_type: str, body: bytes) -> tuple[int, dict]:
        parts = urlsplit(raw_path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        with self._lock:
            self.requests.append(RecordedRequest(method, parts.path, query, content_type))
            for fault in self._faults:
                if fault[0] == method and fault[1] in parts.path:
                    self._faults.remove(fault)
                    raise ApiError(fault[2], "Injected", f"injected failure {fault[2]}")
            route = _ROUTE.match(parts.path)
            if route is None:
                raise ApiError(404, "NotFound", f"the double does not serve {parts.path}")
            kind, ns, name, sub = route["kind"], route["ns"], route["name"], route["sub"]
            payload = _parse(content_type, body)
            if name is None:
                return self._collection(method, kind, ns, query, payload)
            if sub:
                return self._scale(method, ns, name, payload)
            return self._item(method, kind, ns, name, query, content_type, payload)

    def _collection(self, method: str, kind: str, ns: str, query: dict, payload: Any) -> tuple[int, dict]:
        if method == "GET":
            wanted = _selector(query.get("labelSelector", ""))
            items = [copy.deepcopy(o) for (k, n, _), o in sorted(self._objects.items())
                     if k == kind and n == ns and _matches(o, wanted)]
            api_version, object_kind = _KINDS[kind]
            return 200, {"apiVersion": api_version, "kind": f"{object_kind}List", "items": items,
                         "metadata": {"resourceVersion": str(self._version)}}
        if method == "POST":
            name = payload.get("metadata", {}).get("name")
            if (kind, ns, name) in self._objects:
                raise ApiError(409, "AlreadyExists", f'{kind} "{name}" already exists')
            return 201, self._store(kind, ns, name, payload, created=True)
        raise ApiError(405, "MethodNotAllowed", f"{method} on a collection")

    def _item(self, method: str, kind: str, ns: str, name: str, query: dict, content_type: str,
              payload: Any) -> tuple[int, dict]:
        key = (kind, ns, name)
        current = self._objects.get(key)
        if method == "PATCH" and content_type.startswith("application/apply-patch"):
            if not query.get("fieldManager"):
                raise ApiError(400, "BadRequest", "fieldManager is required for apply patch")
            merged = _merge(copy.deepcopy(current) if current else {}, payload)
            merged.setdefault("metadata", {})["managedFields"] = _managers(current, query["fieldManager"])
            return (200 if current else 201), self._store(kind, ns, name, merged, created=current is None)
        if current is None:
            raise ApiError(404, "NotFound", f'{kind} "{name}" not found')
        if method == "GET":
            return 200, copy.deepcopy(current)
        if method == "DELETE":
            del self._objects[key]
            return 200, {"kind": "Status", "apiVersion": "v1", "status": "Success"}
        self._check_version(current, payload)
        if method == "PUT":
            return 200, self._store(kind, ns, name, payload, created=False, previous=current)
        if method == "PATCH":
            patched = _patch(copy.deepcopy(current), payload)
            return 200, self._store(kind, ns, name, patched, created=False, previous=current)
        raise ApiError(405, "MethodNotAllowed", method)

    def _scale(self, method: str, ns: str, name: str, payload: Any) -> tuple[int, dict]:
        current = self._objects.get(("deployments", ns, name))
        if current is None:
            raise ApiError(404, "NotFound", f'deployments.apps "{name}" not found')
        if method in ("PUT", "PATCH"):
            self._check_version(current, payload)
            scale = _patch(_scale_of(current), payload) if method == "PATCH" else payload
            updated = copy.deepcopy(current)
            updated["spec"]["replicas"] = int(scale["spec"]["replicas"])
            current = self._store("deployments", ns, name, updated, created=False, previous=current)
        elif method != "GET":
            raise ApiError(405, "MethodNotAllowed", method)
        return 200, _scale_of(current)

    def _check_version(self, current: dict, payload: Any) -> None:
        wanted = (payload or {}).get("metadata", {}).get("resourceVersion") if isinstance(payload, dict) else None
        if wanted and wanted != current["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict", "the object has been modified; please apply your changes "
                                            "to the latest version and try again")

    def _store(self, kind: str, ns: str, name: str, obj: dict, created: bool,
               previous: dict | None = None) -> dict:
        self._version += 1
        obj = copy.deepcopy(obj)
        api_version, object_kind = _KINDS[kind]
        obj["apiVersion"], obj["kind"] = api_version, object_kind
        meta = obj.setdefault("metadata", {})
        old_meta = (previous or {}).get("metadata", {})
        meta.update(name=name, namespace=ns, resourceVersion=str(self._version))
        meta["uid"] = old_meta.get("uid", meta.get("uid") or str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", old_meta.get("creationTimestamp", _now()))
        if kind == "deployments":
            spec = obj.setdefault("spec", {})
            spec.setdefault("replicas", 1)  # the API server's default, as on a real cluster
            changed = created or previous is None or previous.get("spec") != spec
            meta["generation"] = old_meta.get("generation", 0) + (1 if changed else 0)
            obj["status"] = {"replicas": spec["replicas"], "observedGeneration": meta["generation"]}
        self._objects[(kind, ns, name)] = obj
        return copy.deepcopy(obj)


def _parse(content_type: str, body: bytes) -> Any:
    if not body:
        return None
    if content_type.startswith("application/apply-patch+yaml"):
        return yaml.safe_load(body)
    return json.loads(body)


def _merge(target: dict, patch: dict) -> dict:
    """RFC 7386 JSON merge: maps merge key by key, null deletes, anything else replaces."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)
    return target


def _patch(target: dict, payload: Any) -> dict:
    if isinstance(payload, list):  # RFC 6902, the "replace"/"add" operations only
        for op in payload:
            *parents, leaf = [p for p in op["path"].split("/") if p]
            node = target
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = op["value"]
        return target
    return _merge(target, payload or {})


def _managers(current: dict | None, manager: str) -> list[dict]:
    existing = [m for m in (current or {}).get("metadata", {}).get("managedFields", [])
                if m.get("manager") != manager]
    return [*existing, {"manager": manager, "operation": "Apply", "apiVersion": "apps/v1", "time": _now()}]


def _scale_of(deployment: dict) -> dict:
    meta = deployment["metadata"]
    labels = deployment["spec"].get("selector", {}).get("matchLabels", {})
    return {"apiVersion": "autoscaling/v1", "kind": "Scale",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"],
                         "resourceVersion": meta["resourceVersion"], "uid": meta["uid"]},
            "spec": {"replicas": deployment["spec"]["replicas"]},
            "status": {"replicas": deployment["spec"]["replicas"],
                       "selector": ",".join(f"{k}={v}" for k, v in sorted(labels.items()))}}


def _selector(text: str) -> dict[str, str]:
    return dict(term.split("=", 1) for term in text.split(",") if term)


def _matches(obj: dict, wanted: dict[str, str]) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    return all(labels.get(k) == v for k, v in wanted.items())


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _handler(double: KubeApiDouble) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                status, payload = double.handle(self.command, self.path,
                                                self.headers.get("Content-Type", ""), body)
            except ApiError as exc:
                status, payload = exc.code, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                             "reason": exc.reason, "message": exc.message, "code": exc.code}
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the request log on the double is what tests read."""

    return Handler


@contextmanager
def kube_api_double() -> Iterator[KubeApiDouble]:
    """Serve a fresh double on a free local port for the duration of the block."""
    double = KubeApiDouble()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(double))
    server.daemon_threads = True
    double.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02},
                              name="kube-api-double", daemon=True)
    thread.start()
    try:
        yield double
    finally:
        server.shutdown()
        server.server_close()
        thread.join()

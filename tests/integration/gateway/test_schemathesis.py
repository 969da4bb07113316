"""Property-based requests generated from the gateway's own OpenAPI schema never get a 5xx.

Run against the open gateway with the worker runtime (scripted engine) serving `fake-echo`, so
valid requests are answered rather than timing out. Few, derandomized examples per operation: this guards
the error paths (malformed bodies, odd types) in CI time, not an exhaustive search.
(Schemathesis' lazy `from_fixture` loader does not work with pytest 9, so the operations are
driven through Hypothesis directly.)
"""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.integration.gateway.conftest import LiveGateway


def test_no_server_errors(open_gateway: LiveGateway) -> None:
    schema = schemathesis.openapi.from_url(f"{open_gateway.root_url}/schema/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {f"{op.method.upper()} {op.path}" for op in operations} >= {
        "POST /v1/chat/completions", "POST /v1/completions", "GET /v1/models", "POST /v1/jobs",
        "GET /v1/jobs/{job_id}", "DELETE /v1/jobs/{job_id}", "GET /v1/jobs"}
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=8, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def no_server_error(case) -> None:
            response = case.call(timeout=60)
            assert response.status_code < 500, (
                f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:500]}")

        no_server_error()

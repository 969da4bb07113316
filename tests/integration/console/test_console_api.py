"""The console's page, static files and JSON API over HTTP: who may see what."""

from __future__ import annotations

import httpx
import pytest

from tests.integration.console.conftest import ADMIN_KEY, MODEL, USER_KEY, ConsoleStack


def _get(stack: ConsoleStack, path: str, key: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.get(f"{stack.gateway.root_url}{path}", headers=headers, timeout=10)


def test_the_page_and_its_assets_are_served_from_the_package_without_a_key(console: ConsoleStack) -> None:
    page = _get(console, "/console/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script src="/console/static/console.js"' in page.text
    assert "https://" not in page.text, "no CDN: deployments are often air-gapped"
    script = _get(console, "/console/static/console.js")
    assert script.status_code == 200 and "sessionStorage" in script.text
    assert "javascript" in script.headers["content-type"]
    assert _get(console, "/console/static/console.css").status_code == 200
    assert _get(console, "/console/static/nothing.js").status_code == 404


def test_the_session_says_whether_the_key_is_an_admin_key(console: ConsoleStack) -> None:
    assert _get(console, "/console/api/session").status_code == 401
    assert _get(console, "/console/api/session", "sk-wrong").status_code == 401
    assert _get(console, "/console/api/session", USER_KEY).json() == {"auth_required": True, "admin": False}
    assert _get(console, "/console/api/session", ADMIN_KEY).json() == {"auth_required": True, "admin": True}


@pytest.mark.parametrize("path", ["/console/api/fleet", "/console/api/events"])
def test_fleet_wide_views_answer_403_to_a_normal_key(console: ConsoleStack, path: str) -> None:
    response = _get(console, path, USER_KEY)
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["code"] == "admin_key_required" and "admin key" in error["message"]
    assert _get(console, path).status_code == 401


def test_an_admin_key_sees_the_fleet_and_is_an_ordinary_api_key_too(console: ConsoleStack) -> None:
    fleet = _get(console, "/console/api/fleet", ADMIN_KEY)
    assert fleet.status_code == 200
    (model,) = [m for m in fleet.json()["models"] if m["name"] == MODEL]
    assert model["accelerator"] == "cpu" and model["gpus"] == 0 and model["max_replicas"] == 1
    assert [q["name"] for q in model["queues"]] == ["interactive", "jobs", "batch"]
    assert all(q["backlog"] == 0 and q["in_flight"] == 0 for q in model["queues"])
    assert _get(console, "/v1/models", ADMIN_KEY).status_code == 200
    assert _get(console, "/console/api/events?limit=0", ADMIN_KEY).status_code == 400

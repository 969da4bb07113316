from __future__ import annotations

import pytest

from pagefleet.platform.batch.settings import BatchSettings
from pagefleet.platform.gateway import GatewaySettings
from pagefleet.platform.gateway.auth import ANONYMOUS, is_valid_key, owner_of


@pytest.mark.parametrize("kwargs", [
    {"redis_url": "http://localhost"},
    {"api_keys": ["a"]},
    {"api_keys": ("",)},
    {"request_timeout_s": 0},
    {"max_backlog": 0},
    {"job_retention_s": -1},
    {"max_body_bytes": 0},
    {"max_choices": 0},
    {"max_job_backlog": 0},
    {"max_in_flight": 0},
    {"result_readers": 0},
    {"result_buffer_events": 0},
    {"max_json_depth": 0},
    {"redis_pool_size": 0},
    {"redis_retries": -1},
])
def test_invalid_settings_raise(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        GatewaySettings(**kwargs)


def test_defaults_are_valid_and_open() -> None:
    assert GatewaySettings().api_keys == ()


def test_each_priority_has_its_own_backlog_bound() -> None:
    settings = GatewaySettings(max_backlog=10, max_job_backlog=20,
                               batch=BatchSettings(max_backlog=30))
    assert [settings.backlog_bound(p) for p in (0, 1, 2)] == [10, 20, 30]


def test_keys() -> None:
    assert is_valid_key(None, ())
    assert is_valid_key("anything", ())
    assert is_valid_key("k1", ("k0", "k1"))
    assert not is_valid_key("k2", ("k0", "k1"))
    assert not is_valid_key(None, ("k0",))


def test_owner_is_a_stable_hash_not_the_key() -> None:
    assert owner_of(None) == ANONYMOUS
    assert owner_of("secret") == owner_of("secret") != owner_of("other")
    assert "secret" not in owner_of("secret")

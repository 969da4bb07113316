"""Several gateway processes: settings reach each spawned process, /metrics sums them all."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pagefleet.platform.cli import build_parser
from pagefleet.platform.gateway import GatewaySettings
from pagefleet.platform.gateway.serving import SETTINGS_VARIABLE, app_from_environment, serve

_OBSERVE = """
import sys
from pagefleet.platform.gateway.metrics import GatewayMetrics
metrics = GatewayMetrics()
for _ in range(int(sys.argv[1])):
    metrics.observe_request("/v1/completions", "POST", 200, 0.02)
metrics.observe_ttft("m", 0.01)
metrics.backlog.labels(model="m").set(float(sys.argv[2]))
"""
_RENDER = """
import sys
from pagefleet.platform.gateway.metrics import GatewayMetrics
sys.stdout.write(GatewayMetrics().render().decode())
"""


def _python(code: str, *args: str, metrics_dir: Path) -> str:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    done = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True,
                          text=True, timeout=60, check=True)
    return done.stdout


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_of_every_process_are_summed(tmp_path: Path) -> None:
    """Each process writes its own file; any process's scrape reads them all, counters and
    histograms summed, the backlog gauge as last set (every process reads it from Redis)."""
    _python(_OBSERVE, "3", "7", metrics_dir=tmp_path)
    _python(_OBSERVE, "5", "2", metrics_dir=tmp_path)
    assert len(list(tmp_path.glob("counter_*.db"))) == 2  # two processes, two files
    samples = _samples(_python(_RENDER, metrics_dir=tmp_path))
    route = (("method", "POST"), ("route", "/v1/completions"))
    assert samples[("pagefleet:gateway_requests_total", (*route, ("status", "200")))] == 8
    assert samples[("pagefleet:gateway_request_latency_seconds_count", route)] == 8
    assert samples[("pagefleet:gateway_time_to_first_token_seconds_count", (("model", "m"),))] == 2
    assert samples[("pagefleet:gateway_queue_backlog", (("model", "m"),))] == 2


def test_each_process_rebuilds_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = GatewaySettings(api_keys=("sk-a", "sk-b"), max_in_flight=7, request_timeout_s=9.5)
    monkeypatch.setenv(SETTINGS_VARIABLE, msgspec.json.encode(settings).decode())
    assert app_from_environment().state.settings == settings


def test_settings_are_validated_in_each_process(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = msgspec.json.encode(GatewaySettings()).replace(b'"max_in_flight":10000', b'"max_in_flight":0')
    monkeypatch.setenv(SETTINGS_VARIABLE, raw.decode())
    with pytest.raises(msgspec.ValidationError, match="max_in_flight"):
        app_from_environment()


def test_the_factory_says_what_it_is_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SETTINGS_VARIABLE, raising=False)
    with pytest.raises(RuntimeError, match="--workers"):
        app_from_environment()


def test_workers_must_be_positive() -> None:
    with pytest.raises(ValueError, match="workers"):
        serve(GatewaySettings(), "127.0.0.1", 1, workers=0)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["gateway", "--workers", "0"])
    assert build_parser().parse_args(["gateway", "--workers", "3"]).workers == 3

"""CLI flags come from the settings dataclasses: one default, one name, one type."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from pagefleet.platform.cli import build_parser, flags, register_commands
from pagefleet.platform.cli.controller import settings_from_args as controller_settings
from pagefleet.platform.cli.gateway import settings_from_args as gateway_settings
from pagefleet.platform.controller.settings import (
    ControllerSettings,
    KubernetesSettings,
    LocalSettings,
)
from pagefleet.platform.gateway import GatewaySettings
from pagefleet.platform.protocol.connection import DEFAULT_REDIS_URL
from pagefleet.workers.runtime.config import WorkerSettings


@pytest.fixture(autouse=True)
def _no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("REDIS_URL", "PAGEFLEET_REGISTRY", "PAGEFLEET_API_KEYS", "PAGEFLEET_ADMIN_KEYS",
                 "PAGEFLEET_WORKER_ID",
                 "POD_NAMESPACE", "POD_NAME", "PAGEFLEET_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)


def test_flag_names_drop_the_unit_suffix() -> None:
    assert flags.flag_name("request_timeout_s") == "--request-timeout"
    assert flags.flag_name("registry_path") == "--registry"
    assert flags.flag_name("max_backlog") == "--max-backlog"


def test_defaults_without_flags_are_the_settings_defaults() -> None:
    parser = build_parser()
    assert gateway_settings(parser.parse_args(["gateway"])) == GatewaySettings()
    controller = controller_settings(parser.parse_args(["controller"]))
    assert controller.redis_url == DEFAULT_REDIS_URL
    assert controller.kubernetes == dataclasses.replace(KubernetesSettings(),
                                                        identity=controller.kubernetes.identity)
    assert controller.local == LocalSettings()
    worker = flags.settings_from_args(WorkerSettings, parser.parse_args(["worker"]), model="m")
    assert dataclasses.replace(worker, worker_id="w") == WorkerSettings(model="m", worker_id="w")


def test_flags_and_environment_reach_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://env:1/0")
    monkeypatch.setenv("POD_NAME", "pod-7")
    parser = build_parser()
    settings = gateway_settings(parser.parse_args(
        ["gateway", "--request-timeout", "5", "--max-backlog", "3", "--api-key", "a", "--api-key", "b",
         "--max-job-backlog", "7", "--max-in-flight", "9"]))
    assert (settings.redis_url, settings.request_timeout_s, settings.max_backlog, settings.api_keys) \
        == ("redis://env:1/0", 5.0, 3, ("a", "b"))
    assert (settings.max_job_backlog, settings.max_in_flight) == (7, 9)
    assert not settings.webhook_allow_private
    assert gateway_settings(parser.parse_args(
        ["gateway", "--webhook-allow-private"])).webhook_allow_private
    controller = controller_settings(parser.parse_args(
        ["controller", "--backend", "kubernetes", "--interval", "2", "--worker-image", "img:1",
         "--worker-command", "run {model} --x", "--redis-url", "redis://flag:2/0"]))
    assert controller == ControllerSettings(
        redis_url="redis://flag:2/0", backend="kubernetes", interval_s=2.0,
        kubernetes=KubernetesSettings(image="img:1", identity="pod-7"),
        local=LocalSettings(worker_command=("run", "{model}", "--x")))


def test_admin_keys_come_from_flags_or_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAGEFLEET_ADMIN_KEYS", " adm1, adm2 ,")
    parser = build_parser()
    settings = gateway_settings(parser.parse_args(["gateway", "--api-key", "u"]))
    assert (settings.api_keys, settings.admin_keys) == (("u",), ("adm1", "adm2"))
    assert settings.accepted_keys == ("u", "adm1", "adm2")
    flagged = gateway_settings(parser.parse_args(["gateway", "--admin-key", "x"]))
    assert (flagged.api_keys, flagged.admin_keys) == ((), ("x",))
    with pytest.raises(ValueError, match="admin_keys"):
        GatewaySettings(admin_keys=("",))


def test_a_bad_value_is_a_usage_error() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["controller", "--backend", "nomad"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["gateway", "--max-backlog", "many"])


def test_bench_engine_takes_the_kv_cache_dtype_from_engine_config() -> None:
    """`--kv-cache-dtype` is generated from `EngineConfig.kv_cache_dtype`: its choices and
    default come from the field, and a bad value is a usage error."""
    from pagefleet.platform.cli import bench_engine

    parser = argparse.ArgumentParser()
    bench_engine.register(parser.add_subparsers())
    assert parser.parse_args(["engine"]).kv_cache_dtype == "auto"
    assert parser.parse_args(["engine", "--kv-cache-dtype", "fp8"]).kv_cache_dtype == "fp8"
    with pytest.raises(SystemExit):
        parser.parse_args(["engine", "--kv-cache-dtype", "int8"])


def test_a_missing_command_module_is_an_error() -> None:
    subparsers = argparse.ArgumentParser().add_subparsers()
    with pytest.raises(ModuleNotFoundError, match="no_such_command"):
        register_commands(subparsers, ("pagefleet.platform.cli.no_such_command",))


def test_up_passes_gateway_processes_on() -> None:
    from pagefleet.platform.cli.up import UpSettings

    parser = build_parser()
    assert flags.settings_from_args(UpSettings, parser.parse_args(["up"])).gateway_workers == 1
    settings = flags.settings_from_args(UpSettings, parser.parse_args(["up", "--gateway-workers", "3"]))
    assert settings.gateway_workers == 3
    with pytest.raises(ValueError, match="gateway_workers"):
        flags.settings_from_args(UpSettings, parser.parse_args(["up", "--gateway-workers", "0"]))

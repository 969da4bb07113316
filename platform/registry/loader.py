"""Reading the registry YAML into validated `ModelSpec`s, with errors that name model and key."""

from __future__ import annotations

import importlib.resources
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from pagefleet.platform.registry.spec import (
    EngineSettings,
    GpuProfile,
    ModelSpec,
    RegistryError,
    ScalingPolicy,
    Toleration,
)

_PLAIN_KEYS = ("task", "matryoshka", "tool_parser", "synthetic_step_ms", "engine_process")  # passed as written: ModelSpec has the defaults
_MODEL_KEYS = ("source", "engine", "profile", "scaling", *_PLAIN_KEYS)
_QUANTITY_KEYS = ("cpu", "memory", "shm")


class UnknownModelError(KeyError):
    """A model name the registry does not hold; the gateway maps it to OpenAI's 404."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(name)
        self.name = name
        self.known = known

    def __str__(self) -> str:
        return f"unknown model {self.name!r}; the registry serves {self.known}"


@dataclass(frozen=True, slots=True)
class Registry:
    """All models one deployment serves, keyed by name (the OpenAI `model` field)."""

    models: dict[str, ModelSpec]
    origin: str = "<memory>"

    def get(self, name: str) -> ModelSpec:
        """The spec of `name`; raises `UnknownModelError` (a `KeyError`) for unknown names."""
        try:
            return self.models[name]
        except KeyError:
            raise UnknownModelError(name, sorted(self.models)) from None

    def get_or_first(self, name: str | None) -> ModelSpec:
        """`name`'s spec, or the first listed model's when `name` is None (the CLI default)."""
        return self.get(name if name is not None else next(iter(self.models)))

    def __contains__(self, name: object) -> bool:
        return name in self.models

    def names(self) -> list[str]:
        return sorted(self.models)


def default_registry_path() -> Path:
    """The registry shipped inside the package: the embedded default model on the CPU."""
    return Path(str(importlib.resources.files("pagefleet.platform.registry") / "default.yaml"))


def load_registry(path: str | Path | None = None) -> Registry:
    """Parse and validate a registry file (the packaged default when `path` is None)."""
    file = Path(path) if path is not None else default_registry_path()
    try:
        text = file.read_text()
    except OSError as exc:
        raise RegistryError(f"{file}: cannot read the registry: {exc.strerror or exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RegistryError(f"{file}: not valid YAML: {exc}") from exc
    return parse_registry(data, origin=str(file))


def parse_registry(data: Any, origin: str = "<memory>") -> Registry:
    """Validate an already parsed document `{models: {name: {...}}}`."""
    if not isinstance(data, Mapping):
        raise RegistryError(f"{origin}: the registry must be a mapping with a 'models' key")
    _reject_unknown(data, ("models",), f"{origin}")
    models = data.get("models")
    if not isinstance(models, Mapping) or not models:
        raise RegistryError(f"{origin}: 'models' must be a non-empty mapping of name to model")
    specs = {str(name): _parse_model(str(name), body, origin) for name, body in models.items()}
    return Registry(models=specs, origin=origin)


def _parse_model(name: str, body: Any, origin: str) -> ModelSpec:
    where = f"{origin}: model {name!r}"
    if body is None:
        body = {}
    if not isinstance(body, Mapping):
        raise RegistryError(f"{where}: must be a mapping with keys {list(_MODEL_KEYS)}")
    _reject_unknown(body, _MODEL_KEYS, where)
    engine = _build(EngineSettings, body.get("engine"), f"{where}: engine")
    profile = _build(GpuProfile, _profile_fields(body.get("profile"), f"{where}: profile"),
                     f"{where}: profile")
    scaling = _build(ScalingPolicy, body.get("scaling"), f"{where}: scaling")
    try:
        return ModelSpec(name=name, source=str(body.get("source", name)), engine=engine,
                         profile=profile, scaling=scaling,
                         **{key: body[key] for key in _PLAIN_KEYS if key in body})
    except ValueError as exc:
        raise RegistryError(f"{where}: {exc}") from None


def _profile_fields(raw: Any, where: str) -> Any:
    """Turn YAML shapes into the profile's types: tolerations, numeric quantities."""
    if not isinstance(raw, Mapping):
        return raw
    out = dict(raw)
    for key in _QUANTITY_KEYS:
        if isinstance(out.get(key), int | float) and not isinstance(out.get(key), bool):
            out[key] = str(out[key])
    if "node_selector" in out and not isinstance(out["node_selector"], Mapping):
        raise RegistryError(f"{where}: node_selector must be a mapping of label to value")
    if "node_selector" in out:
        out["node_selector"] = dict(out["node_selector"])
    raw_tolerations = out.get("tolerations", [])
    if not isinstance(raw_tolerations, list):
        raise RegistryError(f"{where}: tolerations must be a list")
    out["tolerations"] = tuple(
        _build(Toleration, item, f"{where}: tolerations[{index}]")
        for index, item in enumerate(raw_tolerations)
    )
    return out


def _build(cls: type, raw: Any, where: str) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise RegistryError(f"{where}: must be a mapping, got {type(raw).__name__}")
    _reject_unknown(raw, tuple(f.name for f in fields(cls)), where)
    try:
        return cls(**raw)
    except ValueError as exc:
        raise RegistryError(f"{where}: {exc}") from None


def _reject_unknown(raw: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
    unknown = sorted(str(key) for key in raw if key not in allowed)
    if unknown:
        raise RegistryError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")

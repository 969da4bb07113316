"""Command-line flags generated from a settings dataclass, so a default is typed once.

Like vLLM's `EngineArgs`, the settings class is the source of truth: a field `request_timeout_s`
becomes `--request-timeout` (a unit suffix `_s` is dropped from the flag, not from the field),
its type gives argparse's `type` or `choices`, and its default is the dataclass default, shown
in `--help`. A few fields also read an environment variable (`ENVIRONMENT`) so a container can
be configured without flags. The namespace attribute is the field name, so `settings_from_args`
builds the settings object back without a hand-written mapping.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any

# Fields that any settings class may have, and the variable that overrides their default.
ENVIRONMENT = {"redis_url": "REDIS_URL", "registry_path": "PAGEFLEET_REGISTRY"}
_RENAMED = {"registry_path": "registry"}  # a flag name older than the field name
_UNIT_SUFFIXES = ("_s",)


def positive_int(text: str) -> int:
    """argparse `type` of a count that must be at least 1 (processes, workers)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def flag_name(field_name: str) -> str:
    """`request_timeout_s` -> `--request-timeout`."""
    name = _RENAMED.get(field_name, field_name)
    for suffix in _UNIT_SUFFIXES:
        name = name.removesuffix(suffix)
    return "--" + name.replace("_", "-")


def add_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup, settings_cls: type,
              field_names: Iterable[str], *, help: Mapping[str, str] | None = None,
              flags: Mapping[str, str] | None = None,
              parse: Mapping[str, Callable[[str], Any]] | None = None,
              env: Mapping[str, str] | None = None) -> None:
    """Add one flag per named field of `settings_cls`.

    `flags` overrides a flag name, `parse` the function that turns the text into the value
    (for example `shlex.split` for a command line), `env` adds environment variables to
    `ENVIRONMENT` for this class's fields. A field whose default comes from a
    factory, or a tuple of strings (a repeatable flag), defaults to None on the command line,
    which `settings_from_args` reads as "the dataclass default".
    """
    help, flags, parse = help or {}, flags or {}, parse or {}
    env = {**ENVIRONMENT, **(env or {})}
    fields = {f.name: f for f in dataclasses.fields(settings_cls)}
    hints = typing.get_type_hints(settings_cls)
    for name in field_names:
        field = fields[name]
        kind, _ = _unwrap_optional(hints[name])
        default = field.default if field.default is not dataclasses.MISSING else None
        if os.environ.get(env.get(name, "")):  # set and not empty
            raw = os.environ[env[name]]
            default = raw.lower() in ("1", "true", "yes") if kind is bool else raw
        options: dict[str, Any] = {"dest": name, "default": default, "help": help.get(name)}
        if name in parse:
            options["type"] = parse[name]
        elif typing.get_origin(kind) is tuple:
            options.update(action="append", default=None)
        elif typing.get_origin(kind) is typing.Literal:
            options["choices"] = typing.get_args(kind)
        elif kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        elif kind in (int, float):
            options["type"] = kind
        if options.get("default") is not None and not isinstance(default, tuple):
            options["help"] = f"{options['help'] or ''} (default: %(default)s)".lstrip()
        flag = flags.get(name, flag_name(name))
        if "choices" not in options and options.get("action") in (None, "append"):
            options["metavar"] = flag.removeprefix("--").replace("-", "_").upper()
        parser.add_argument(flag, **options)


def add_registry_flag(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """`--registry` for commands whose settings have no `registry_path` (worker, up, bench)."""
    parser.add_argument(flag_name("registry_path"), dest="registry_path",
                        default=os.environ.get(ENVIRONMENT["registry_path"]),
                        help="registry YAML (default: the packaged one with the embedded model)")


def settings_from_args(settings_cls: type, args: argparse.Namespace, **overrides: Any) -> Any:
    """Build `settings_cls` from the flags `add_flags` added (plus `overrides`).

    A flag left at None keeps the dataclass default unless the field itself may be None, so
    `--metrics-port` unset stays None and an unset `--identity` stays the host name.
    """
    hints = typing.get_type_hints(settings_cls)
    kwargs: dict[str, Any] = {}
    for field in dataclasses.fields(settings_cls):
        if field.name in overrides or not hasattr(args, field.name):
            continue
        value = getattr(args, field.name)
        kind, optional = _unwrap_optional(hints[field.name])
        if value is None and not optional:
            continue
        kwargs[field.name] = tuple(value) if typing.get_origin(kind) is tuple and value is not None else value
    return settings_cls(**kwargs, **overrides)


def _unwrap_optional(hint: Any) -> tuple[Any, bool]:
    """`int | None` -> (int, True); `int` -> (int, False)."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        if len(args) == 1:
            return args[0], True
    return hint, False

"""YAML loading with EMBER_* environment overrides and key-naming errors.

An override names a nested key with double underscores:
`EMBER_SERVE__PORT=9000` sets `serve.port`. Values are parsed as YAML, so
`EMBER_X=3` is an int and `EMBER_X=[1,2]` a list.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from ember.errors import EmberError

T = TypeVar("T", bound=BaseModel)


class ConfigError(EmberError, ValueError):
    """A config file or value is wrong; the message names the key and the file."""


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def apply_env_overrides(
    data: dict[str, Any], prefix: str = "EMBER_", environ: dict[str, str] | None = None
) -> dict[str, Any]:
    """Return a copy of `data` with `PREFIX_A__B=value` variables applied."""
    result = _deep_copy(data)
    for name, raw in sorted((environ if environ is not None else os.environ).items()):
        if not name.startswith(prefix) or "__" not in name:
            continue
        keys = name[len(prefix) :].lower().split("__")
        node = result
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = yaml.safe_load(raw)
    return result


def deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`base` with `overrides` applied key by key, nested mappings merged, not replaced."""
    result = _deep_copy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = deep_merge(result[key], value)
        else:
            result[key] = value
    return result


def parse_set_overrides(pairs: list[str]) -> dict[str, Any]:
    """`["train.lr=1e-4", "name=x"]` -> `{"train": {"lr": 1e-4}, "name": "x"}` (YAML values)."""
    result: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE, got {pair!r}")
        node = result
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = yaml.safe_load(raw)
    return result


def validate(model: type[T], data: dict[str, Any], source: str = "config") -> T:
    """Validate `data` into `model`, turning pydantic errors into one readable message."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: " + describe_errors(exc)) from exc


def describe_errors(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "<root>"
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown key '{key}'")
        else:
            parts.append(f"'{key}': {err['msg']} (got {err.get('input')!r})")
    return "; ".join(parts)


def _deep_copy(data: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in data.items()}

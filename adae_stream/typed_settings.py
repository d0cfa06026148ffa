"""Typed configuration from YAML and the environment, for any tree of dataclasses (config.py's schema).

Each value is checked against its field's type (an int is accepted for a float, nothing else is coerced)
and an error is one line naming the key; a secret's value is never shown. ``ADAE_<SECTION>__<KEY>``
environment variables override the file; string fields take the variable's text verbatim.
This is the hand-written part pydantic-settings could replace (README, "Stack"): it is kept in one
module, apart from the schema, so that the swap touches nothing else.
"""

from __future__ import annotations

import dataclasses
import logging
import types
import typing
from typing import Any, Literal

import yaml

from adae_stream.errors import ConfigError

log = logging.getLogger(__name__)

SECRET_MARKERS = ("password", "secret", "token", "key")  # ssl_keyfile is a path, but redacting it costs nothing


def is_secret(key: str) -> bool:
    return any(m in key for m in SECRET_MARKERS) and not key.endswith(("_file", "file"))


def _check(value: Any, tp: Any, where: str) -> Any:
    """Return value coerced to tp (int -> float only), or raise ConfigError naming `where`."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"config key '{where}': must not be null")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"config key '{where}': {value!r} is not one of {', '.join(map(str, choices))}")
        return value
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"config key '{where}': expected a list, got {type(value).__name__}")
        return [_check(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        _, val_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{where}': expected a mapping, got {type(value).__name__}")
        return {str(k): _check(v, val_tp, f"{where}.{k}") for k, v in value.items()}
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if (tp in (int, float) and isinstance(value, bool)) or not isinstance(value, tp):
        shown = "(value hidden)" if is_secret(where.rsplit(".", 1)[-1]) else repr(value)
        raise ConfigError(f"config key '{where}': expected {tp.__name__}, got {type(value).__name__} {shown}")
    return value


def build(cls: type, data: dict, prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise ConfigError(
            f"config key '{where}' is unknown (known keys{' in ' + prefix if prefix else ''}: "
            f"{', '.join(sorted(names))})"
        )
    kwargs = {}
    for name, value in data.items():
        where = f"{prefix}.{name}" if prefix else name
        tp = hints[name]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise ConfigError(f"config key '{where}': expected a section (mapping), got {type(value).__name__}")
            kwargs[name] = build(tp, value, where)
        else:
            kwargs[name] = _check(value, tp, where)
    return cls(**kwargs)


def _is_text(tp: Any) -> bool:
    """str, a Literal of strings, or either of them optional: values taken from the environment verbatim."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return all(_is_text(a) for a in args)
    if typing.get_origin(tp) is Literal:
        return all(isinstance(a, str) for a in args)
    return tp is str


def _env_value(name: str, raw: str, tp: Any) -> Any:
    """A string field's value is the variable's text as it is (a password '123' or 'null' stays that
    string); other fields are parsed as YAML scalars or flow collections ('7', 'true', '[1, 8]')."""
    if tp is not None and _is_text(tp):
        return raw
    try:
        return yaml.safe_load(raw) if raw != "" else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"environment variable {name}: not a valid value: {str(exc).splitlines()[0]}") from exc


def env_overrides(root: type, environ: dict[str, str]) -> dict[str, Any]:
    """Only ADAE_<SECTION>__<KEY> with a known section, and ADAE_<TOP_LEVEL_KEY>, are config. Other ADAE_*
    names are not ours: Kubernetes, for one, injects ADAE_STREAM_SERVICE_HOST, ADAE_STREAM_PORT and more
    for a Service named adae-stream. An unknown key in a known section is still an error (a typo)."""
    hints = typing.get_type_hints(root)
    sections = {name: tp for name, tp in hints.items() if dataclasses.is_dataclass(tp)}
    out: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith("ADAE_"):
            continue
        section, sep, rest = name[len("ADAE_") :].lower().partition("__")
        if not sep and section in hints and section not in sections:
            out[section] = _env_value(name, raw, hints[section])
            continue
        if not sep or section not in sections or not rest:
            log.debug("environment variable %s ignored: not ADAE_<SECTION>__<KEY> with a known section", name)
            continue
        key, *deeper = rest.split("__")
        field_tp = typing.get_type_hints(sections[section]).get(key)
        value = _env_value(name, raw, None if deeper else field_tp)
        node = out.setdefault(section, {})
        for part in [key, *deeper][:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"environment variable {name}: conflicts with another override")
        node[([key, *deeper])[-1]] = value
    return out


def merge(base: dict, over: dict) -> dict:
    merged = dict(base)
    for k, v in over.items():
        merged[k] = merge(merged[k], v) if isinstance(v, dict) and isinstance(merged.get(k), dict) else v
    return merged

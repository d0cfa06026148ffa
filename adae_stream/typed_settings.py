"""Loading a pydantic-settings schema (config.py's) from YAML, the environment and overrides, in that order.

pydantic validates the types and ranges and pydantic-settings parses ``ADAE_<SECTION>__<KEY>``
environment variables (a string field takes the text verbatim; others are parsed to their type, lists and
mappings as JSON). What is ours: reading the YAML file with errors that name it, an environment given as a
mapping (the tests', or os.environ), and turning pydantic's multi-line ValidationError into the one line
naming the key that the CLI prints, with a secret's value never shown.
"""

from __future__ import annotations

import os
import re
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import BaseModel, BeforeValidator, Field, ValidationError
from pydantic_settings import BaseSettings, EnvSettingsSource
from pydantic_settings.sources.utils import parse_env_vars

from adae_stream.errors import ConfigError

ENV_PREFIX, ENV_NESTING = "ADAE_", "__"
SECRET_MARKERS = ("password", "secret", "token", "key")  # ssl_keyfile is a path, but redacting it costs nothing

Settings = TypeVar("Settings", bound=BaseSettings)


def is_secret(key: str) -> bool:
    return any(m in key for m in SECRET_MARKERS) and not key.endswith(("_file", "file"))


def load(
    schema: type[Settings], path: str | os.PathLike | None, environ: Mapping[str, str], overrides: dict
) -> Settings:
    data = _merge(_merge(_read_yaml(path), _EnvironSource(schema, environ)()), overrides)
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_one_line(schema, exc)) from None


def _read_yaml(path: str | os.PathLike | None) -> dict:
    if path is None:
        return {}
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError(f"config file {p}: {exc.strerror or exc}") from exc
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {p}: invalid YAML: {str(exc).splitlines()[0]}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p}: top level must be a mapping of sections")
    return data


class _EnvironSource(EnvSettingsSource):
    """pydantic-settings' environment source over a mapping we pass in instead of os.environ. Only
    ADAE_<SECTION>__<KEY> with a known section, and ADAE_<TOP_LEVEL_KEY>, are read: other ADAE_* names are
    not ours (Kubernetes injects ADAE_STREAM_SERVICE_HOST, ADAE_STREAM_PORT and more for a Service named
    adae-stream). An unknown key in a known section is still an error (a typo)."""

    def __init__(self, schema: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(schema)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(self._environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str)


def _one_line(schema: type[BaseModel], exc: ValidationError) -> str:
    """The first error, as "config key 'section.key[i]': what is wrong (got TYPE VALUE)"."""
    error = exc.errors(include_url=False)[0]
    key, model = _key(schema, error["loc"])
    if error["type"] == "extra_forbidden":
        known = ", ".join(sorted(model.model_fields)) if model is not None else ""
        section = key.rpartition(".")[0]
        return f"config key '{key}' is unknown (known keys{' in ' + section if section else ''}: {known})"
    value = error.get("input")
    shown = "(value hidden)" if is_secret(key.rsplit(".", 1)[-1]) else repr(value)[:200]
    got = f" (got {type(value).__name__} {shown})" if value is not None else ""
    return f"config key '{key}': {error['msg']}{got}"


def _key(schema: type[BaseModel], loc: tuple[int | str, ...]) -> tuple[str, type[BaseModel] | None]:
    """The config key an error's location names, and for a key the schema does not know, the section it
    was found in. pydantic's location also holds the union member that was tried ('str', 'list[str]'),
    which is not part of the key."""
    parts: list[str] = []
    model: type[BaseModel] | None = schema
    annotation: Any = None
    for item in loc:
        if isinstance(item, int):
            parts[-1] += f"[{item}]"
            annotation = _member(annotation, list)
        elif model is not None:
            parts.append(item)
            field = model.model_fields.get(item)
            if field is None:  # unknown: extra_forbidden names it
                return ".".join(parts), model
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                model, annotation = annotation, None
            else:
                model = None
        elif (value_type := _member(annotation, dict)) is not None:  # a mapping's key, then its value's errors
            parts.append(item)
            annotation = value_type
        else:
            break  # a union member's tag
    return ".".join(parts), None


def _member(annotation: Any, container: type) -> Any:
    """The item type of a list (or the value type of a dict) annotation, optional or not; None otherwise."""
    for tp in (annotation, *typing.get_args(annotation)):
        if typing.get_origin(tp) is container:
            return typing.get_args(tp)[-1]
    return None


def _merge(base: dict, over: dict) -> dict:
    merged = dict(base)
    for k, v in over.items():
        merged[k] = _merge(merged[k], v) if isinstance(v, dict) and isinstance(merged.get(k), dict) else v
    return merged


_DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any) -> Any:
    """'30d', '12h', '15m', '90s' or a number of seconds, as seconds."""
    if isinstance(value, str):
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([smhd]?)\s*", value)
        if match is None:
            raise ValueError(f"not a duration: {value!r} (a number with s, m, h or d, e.g. 30d)")
        return float(match.group(1)) * _DURATION_UNITS[match.group(2) or "s"]
    return value


Duration = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]

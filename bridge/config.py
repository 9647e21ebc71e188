"""The configuration: one typed, frozen object, loaded once from `bridge.toml`.

Unknown keys are errors, and every error names the file, the dotted key and
the bad value. `bridge.toml.example` documents every key with its default;
a test keeps the two in step.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from bridge.errors import ConfigError
from bridge.store.db import DEFAULT_DB_URL


@dataclass(frozen=True, slots=True)
class DatabaseConfig:
    url: str = DEFAULT_DB_URL


@dataclass(frozen=True, slots=True)
class ImportConfig:
    workers: int = 2
    batch_size: int = 500


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    max_message_bytes: int = 64 * 1024 * 1024
    max_mime_parts: int = 2000
    max_mime_depth: int = 60


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    host: str = "127.0.0.1"
    port: int = 2525
    domains: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class WebConfig:
    host: str = "127.0.0.1"
    port: int = 8080


@dataclass(frozen=True, slots=True)
class Config:
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    imports: ImportConfig = field(default_factory=ImportConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    web: WebConfig = field(default_factory=WebConfig)
    source: str = "(defaults)"


SECTIONS: dict[str, type] = {
    "database": DatabaseConfig,
    "import": ImportConfig,
    "limits": LimitsConfig,
    "smtp": SmtpConfig,
    "web": WebConfig,
}
ATTRIBUTE = {"import": "imports"}


def load_config(path: str | None) -> Config:
    """The config in `path`, or the defaults when `path` is None."""
    if path is None:
        return Config()
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(path, "", "no such file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, "", f"not valid TOML: {exc}") from None
    return parse_config(data, path)


def parse_config(data: dict[str, Any], path: str) -> Config:
    values: dict[str, Any] = {"source": path}
    for key, section in data.items():
        if key not in SECTIONS:
            raise ConfigError(path, key, "unknown section")
        if not isinstance(section, dict):
            raise ConfigError(path, key, "must be a table")
        values[ATTRIBUTE.get(key, key)] = _section(SECTIONS[key], section, key, path)
    return Config(**values)


def _section(cls: type, data: dict[str, Any], prefix: str, path: str) -> Any:
    known = {f.name: f for f in fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in known:
            raise ConfigError(path, f"{prefix}.{key}", "unknown key")
        default = getattr(cls(), key)
        if isinstance(default, tuple) and isinstance(value, list):
            if not all(isinstance(v, str) for v in value):
                raise ConfigError(path, f"{prefix}.{key}", f"has value {value!r}: expected strings")
            value = tuple(value)
        if isinstance(default, bool) != isinstance(value, bool) or not isinstance(
            value, type(default)
        ):
            raise ConfigError(
                path,
                f"{prefix}.{key}",
                f"has value {value!r}: expected {type(default).__name__}",
            )
        kwargs[key] = value
    return cls(**kwargs)

"""The config schema and its documented example stay in step; errors are one line."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import pytest

from bridge.config import SECTIONS, Config, load_config, parse_config
from bridge.errors import ConfigError

EXAMPLE = Path(__file__).parent.parent / "bridge.toml.example"


def _schema_keys(cls: Any, prefix: str) -> set[str]:
    """Every dotted key of a section, list items named `key[]` (walks the schema, not data)."""
    keys: set[str] = set()
    pending = [(cls, prefix)]
    while pending:
        current, at = pending.pop()
        hints = get_type_hints(current)
        for f in dataclasses.fields(current):
            hint = hints[f.name]
            dotted = f"{at}.{f.name}"
            keys.add(dotted)
            if dataclasses.is_dataclass(hint):
                pending.append((hint, dotted))
            elif get_origin(hint) is tuple and dataclasses.is_dataclass(get_args(hint)[0]):
                pending.append((get_args(hint)[0], f"{dotted}[]"))
    return keys


def test_every_schema_key_is_documented_in_the_example() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    # A key is documented when the example sets it, or shows it commented out
    # (list entries such as IMAP accounts have no default entry to set).
    written = set(re.findall(r"^#?\s*([a-z0-9_]+)\s*=", text, re.MULTILINE))
    for header in re.findall(r"^#?\s*\[\[?([a-z0-9_.]+)\]\]?", text, re.MULTILINE):
        written.add(header.rpartition(".")[2])
    assert set(tomllib.loads(text)) == set(SECTIONS)
    for section, cls in SECTIONS.items():
        for key in _schema_keys(cls, section):
            assert key.rpartition(".")[2] in written, f"{key} is not in bridge.toml.example"


def test_example_loads_to_the_defaults() -> None:
    config = load_config(str(EXAMPLE))
    assert dataclasses.replace(config, source=Config().source) == Config()


def test_unknown_key_names_file_and_dotted_key() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"database": {"uri": "x"}}, "bridge.toml")
    assert str(info.value) == "bridge.toml: database.uri: unknown key"


def test_wrong_type_names_the_value() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"import": {"workers": "two"}}, "b.toml")
    assert "import.workers" in str(info.value) and "'two'" in str(info.value)


def test_bad_port_in_a_listener_names_its_index() -> None:
    data = {"smtp": {"listeners": [{"port": 25}, {"port": 70000}]}}
    with pytest.raises(ConfigError) as info:
        parse_config(data, "b.toml")
    assert str(info.value) == "b.toml: smtp.listeners[1].port: has value 70000: not a valid port"


def test_unknown_protocol_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"smtp": {"listeners": [{"protocol": "pop3"}]}}, "b.toml")
    assert "smtp.listeners[0].protocol" in str(info.value) and "'lmtp'" in str(info.value)


def test_lists_and_floats_convert() -> None:
    config = parse_config(
        {"smtp": {"domains": ["example.com"], "idle_timeout": 30, "listeners": []}}, "b.toml"
    )
    assert config.smtp.domains == ("example.com",)
    assert config.smtp.idle_timeout == 30.0 and isinstance(config.smtp.idle_timeout, float)
    assert config.smtp.listeners == ()


def test_open_listener_needs_domains() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"smtp": {"listeners": [{"host": "0.0.0.0"}]}}, "b.toml")
    assert "smtp.domains" in str(info.value)
    ok = parse_config(
        {"smtp": {"listeners": [{"host": "0.0.0.0"}], "domains": ["example.com"]}}, "b.toml"
    )
    assert ok.smtp.listeners[0].host == "0.0.0.0"


def test_missing_certificate_file_is_named(tmp_path: Path) -> None:
    cert = str(tmp_path / "missing.pem")
    with pytest.raises(ConfigError) as info:
        parse_config({"smtp": {"tls_cert": cert, "tls_key": cert}}, "b.toml")
    assert "smtp.tls_cert" in str(info.value) and "no such file" in str(info.value)


def test_bad_log_level() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"log": {"level": "loud"}}, "b.toml")
    assert "log.level" in str(info.value)


def test_bad_toml_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[database\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert str(path) in str(info.value) and "\n" not in str(info.value)

"""The config schema and its documented example stay in step."""

from __future__ import annotations

import tomllib
from dataclasses import fields
from pathlib import Path

import pytest

from bridge.config import SECTIONS, Config, load_config, parse_config
from bridge.errors import ConfigError

EXAMPLE = Path(__file__).parent.parent / "bridge.toml.example"


def test_example_documents_every_key_with_its_default() -> None:
    data = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    assert set(data) == set(SECTIONS)
    for section, cls in SECTIONS.items():
        names = {f.name for f in fields(cls)}
        assert set(data[section]) == names, section
        default = cls()
        for name in names:
            expected = getattr(default, name)
            value = data[section][name]
            value = tuple(value) if isinstance(expected, tuple) else value
            assert value == expected, f"{section}.{name}"


def test_example_loads_to_the_defaults() -> None:
    config = load_config(str(EXAMPLE))
    assert config.database == Config().database
    assert config.imports == Config().imports


def test_unknown_key_names_file_and_dotted_key() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"database": {"uri": "x"}}, "bridge.toml")
    assert str(info.value) == "bridge.toml: database.uri: unknown key"


def test_wrong_type_names_the_value() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"import": {"workers": "two"}}, "b.toml")
    assert "import.workers" in str(info.value) and "'two'" in str(info.value)


def test_bad_toml_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[database\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert str(path) in str(info.value) and "\n" not in str(info.value)

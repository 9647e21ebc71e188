"""What the README and bridge.toml.example say about database URLs and imported archives."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bridge.config import load_config
from bridge.store.db import make_engine

ROOT = Path(__file__).parent.parent
EXAMPLE = ROOT / "bridge.toml.example"
README = ROOT / "README.md"


def _flat(path: Path) -> str:
    """The text with comment marks and line breaks folded, so sentences can be matched."""
    text = re.sub(r"(?m)^# ?", "", path.read_text(encoding="utf-8"))
    return " ".join(text.split())


@pytest.mark.parametrize("doc", [EXAMPLE, README], ids=["example", "readme"])
def test_docs_explain_sqlite_urls_and_archive_owners(doc: Path) -> None:
    text = _flat(doc)
    assert "relative to the working directory" in text
    assert "four" in text and "sqlite:////var/lib/bridge/bridge.db" in text
    assert "BRIDGE_CONFIG" in text
    for word in ("--owner", "--owners", "Who sees what"):
        assert word in text, f"{doc.name} does not mention {word}"


def test_the_example_still_loads() -> None:
    config = load_config(str(EXAMPLE))
    assert config.database.url == "sqlite:///var/bridge.db"


def test_sqlite_urls_are_what_the_docs_say(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    # Three slashes: relative to the working directory.
    make_engine("sqlite:///var/bridge.db").dispose()
    assert (work / "var" / "bridge.db").exists()
    # Four: an absolute path.
    absolute = tmp_path / "lib" / "bridge" / "bridge.db"
    make_engine(f"sqlite:///{absolute}").dispose()
    assert f"sqlite:///{absolute}".startswith("sqlite:////")
    assert absolute.exists()

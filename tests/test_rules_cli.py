"""`bridge rules test` and `bridge rules replay` on real messages and a real store.

The handlers are called directly with an argparse Namespace (as `bridge.cli`
would); the store is filled through `pipeline.prepare` + `decide` +
`store_batch`, the way the pipeline stores rule decisions.
"""

from __future__ import annotations

import argparse
import io
import re
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from bridge.config import Config, load_config
from bridge.core.admin_rules.rules import decide
from bridge.core.message import Provenance, RawMessage
from bridge.errors import RulesArgumentError
from bridge.pipeline import Outcome, prepare, store_batch
from bridge.rules_cli import add_arguments, cmd_rules, parse_since
from bridge.store.tables import Message, RuleHit, Skipped

DATA = Path(__file__).parent / "data" / "rules"
FILES = sorted(DATA.glob("*.eml"))

CONFIG = """
[bridge]
message_id_domain = "bridge.example.com"

[[spaces]]
slug = "gas"
members = ["@enron.com"]
[[spaces]]
slug = "lists"
visibility = "staff"

[[rules]]
name = "no-bounces"
description = "Delivery failures are kept, not bridged"
skip = true
[rules.match]
flag = "bounce"

[[rules]]
name = "gas"
space = "gas"
tags = ["gas"]
[rules.match]
domain = "enron.com"
subject = "gas|office"

[[rules]]
name = "lists"
space = "lists"
tags = ["list"]
private = true
[rules.match]
header = "List-Id"
"""


def write_config(tmp_path: Path, text: str = CONFIG) -> Config:
    path = tmp_path / "bridge.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(str(path))


def namespace(*argv: str, db: str | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(list(argv))
    args.db = db
    return args


def run(config: Config, *argv: str, db: str | None = None) -> tuple[int, str]:
    out = io.StringIO()
    code = cmd_rules(namespace(*argv, db=db), config, out)
    return code, out.getvalue()


# -- rules test -----------------------------------------------------------------


def test_rules_test_shows_each_rule_and_the_outcome(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    code, out = run(config, "test", str(DATA / "enron-socal-gas.eml"))
    assert code == 0
    lines = out.splitlines()
    assert (
        lines[0]
        == "message <29759530.1075861861183.JavaMail.evans@thyme> 'SoCal Gas CPUC Proceeding'"
    )
    assert "own mail: no" in lines and "mail loop: no" in lines
    assert "rule 1 no-bounces: no match -> skip" in lines
    assert "    flag: no (flags none; wanted bounce)" in lines
    assert "rule 2 gas: MATCH -> space=gas tags=gas" in lines
    assert "    domain: yes (bill.rapp@enron.com)" in lines
    assert "    subject: yes ('Gas')" in lines
    assert "rule 3 lists: no match -> space=lists tags=list private" in lines
    assert lines[-1] == "outcome: bridged; space=gas tags=gas private=no"


def test_rules_test_on_a_bounce_says_skipped(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    code, out = run(config, "test", str(DATA / "mailman-bounce.eml"))
    assert code == 0
    assert "flags: bounce" in out
    assert "rule 1 no-bounces: MATCH -> skip" in out
    # The list rule would match too, but the skip ended evaluation.
    assert "rule 3 lists: MATCH (not reached: evaluation had ended)" in out
    assert out.splitlines()[-1] == (
        "outcome: skipped by no-bounces (kept and counted, not bridged)"
    )


def test_rules_test_with_envelope_and_account(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        CONFIG
        + '[[rules]]\nname = "hr"\nprivate = true\n[rules.match]\nenvelope_to = "hr@enron.com"\n'
        + '[[rules]]\nname = "sales-imap"\ntags = ["imap"]\n[rules.match]\naccount = "sales"\n',
    )
    path = str(DATA / "enron-ooo-autoreply.eml")
    _, out = run(config, "test", path, "--envelope-to", "HR@enron.com")
    assert "rule 4 hr: MATCH -> private" in out and "rule 5 sales-imap: no match" in out
    assert out.splitlines()[-1] == "outcome: bridged; space=gas tags=gas private=yes"
    _, out = run(config, "test", path, "--account", "sales/INBOX")
    assert out.splitlines()[-1] == "outcome: bridged; space=gas tags=gas,imap private=no"


def test_rules_test_without_rules(tmp_path: Path) -> None:
    _, out = run(Config(), "test", str(DATA / "fedora-devel-list.eml"))
    assert "no rules in the config" in out
    assert out.splitlines()[-1] == "outcome: bridged; space=none tags=none private=no"


def test_rules_test_own_mail(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    eml = tmp_path / "own.eml"
    eml.write_bytes(
        b"X-Bridge-Origin: bridge.example.com\n" + (DATA / "enron-socal-gas.eml").read_bytes()
    )
    _, out = run(config, "test", str(eml))
    assert "own mail: X-Bridge-Origin: bridge.example.com" in out
    assert "rule 2 gas: MATCH (not reached: evaluation had ended)" in out
    assert out.splitlines()[-1].startswith("outcome: skipped by builtin:own-mail")


def test_rules_test_needs_a_readable_file(tmp_path: Path) -> None:
    with pytest.raises(RulesArgumentError, match="needs a message file"):
        run(Config(), "test")
    with pytest.raises(RulesArgumentError, match=r"missing\.eml"):
        run(Config(), "test", str(tmp_path / "missing.eml"))


# -- rules replay -------------------------------------------------------------------


def store(engine: Engine, config: Config) -> list[Outcome]:
    """Every test message, decided by `config`'s rules and stored as the pipeline would."""
    items = []
    for path in FILES:
        raw = RawMessage(path.read_bytes(), Provenance("file", str(path), "rules", str(path)))
        item = prepare(raw)
        assert item.parsed is not None
        decision, failure = decide(config.ruleset, item.parsed, raw.provenance)
        assert failure is None
        items.append(replace(item, decision=decision))
    with Session(engine) as session, session.begin():
        return store_batch(session, items, datetime(2024, 1, 1, tzinfo=UTC))


def test_replay_counts_per_rule_and_changes_nothing(tmp_path: Path, sqlite_engine: Engine) -> None:
    config = write_config(tmp_path)
    outcomes = store(sqlite_engine, config)
    assert outcomes.count(Outcome.SKIPPED) == 2  # the two bounces
    db = str(sqlite_engine.url)
    with Session(sqlite_engine) as session:
        before = session.execute(select(Message.message_id, Message.space, Message.tags)).all()
        hits = dict(session.execute(select(RuleHit.rule, RuleHit.hits)).all())
    assert hits == {"no-bounces": 2, "gas": 3, "lists": 1}

    # Same rules: nothing would change, replayed hits equal the counted ones.
    code, out = run(config, "replay", db=db)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "replayed 4 copies of 4 messages and 2 skipped copies (nothing was changed)"
    assert lines[2].split() == ["builtin:own-mail", "0", "0"]
    assert lines[3].split() == ["no-bounces", "2", "2"]
    assert lines[4].split() == ["gas", "3", "3"]
    assert lines[5].split() == ["lists", "1", "1"]
    assert "messages that would change space: 0" in lines
    assert "skipped copies that would now be bridged: 0" in lines

    # New rules: bounces are bridged into "lists"; no Enron subject starts with "gas".
    changed = write_config(
        tmp_path,
        CONFIG.replace('flag = "bounce"', 'flag = "truncated"').replace(
            'subject = "gas|office"', 'subject = "^gas"'
        ),
    )
    _, out = run(changed, "replay", db=db)
    lines = out.splitlines()
    assert lines[3].split() == ["no-bounces", "0", "2"]
    assert lines[4].split() == ["gas", "0", "3"]
    assert lines[5].split() == ["lists", "2", "1"]  # the Fedora list mail, the Mailman bounce
    assert "messages that would change space: 3" in lines
    assert "    gas -> (none): 3" in lines
    assert "messages whose tags would change: 3" in lines
    assert "skipped copies that would now be bridged: 2" in lines

    with Session(sqlite_engine) as session:
        after = session.execute(select(Message.message_id, Message.space, Message.tags)).all()
        assert session.execute(select(func.count()).select_from(Skipped)).scalar() == 2
        assert dict(session.execute(select(RuleHit.rule, RuleHit.hits)).all()) == hits
    assert after == before


def test_replay_since_filters_by_message_date(tmp_path: Path, sqlite_engine: Engine) -> None:
    config = write_config(tmp_path)
    store(sqlite_engine, config)
    db = str(sqlite_engine.url)
    # 2012 onwards: only the Fedora list message (2012-09-23); skipped copies by arrival (2024).
    _, out = run(config, "replay", "--since", "2012-01-01", db=db)
    assert out.splitlines()[0] == (
        "replayed 1 copies of 1 messages and 2 skipped copies (nothing was changed)"
    )
    _, out = run(config, "replay", "--since", "2030-01-01T00:00:00+00:00", db=db)
    assert out.splitlines()[0].startswith("replayed 0 copies of 0 messages and 0 skipped")


def test_since_must_be_a_date() -> None:
    assert parse_since("2024-02-03") == datetime(2024, 2, 3, tzinfo=UTC)
    assert parse_since(None) is None
    with pytest.raises(RulesArgumentError, match="--since 'last week'"):
        parse_since("last week")


# -- the documented example ------------------------------------------------------------

EXAMPLE = Path(__file__).parent.parent / "bridge.toml.example"


def test_example_documents_every_rule_and_space_key() -> None:
    from bridge.core.admin_rules.rule_config import MATCH_KEYS, RULE_KEYS, SPACE_KEYS

    text = EXAMPLE.read_text(encoding="utf-8")
    described = re.findall(r"^#\s{1,3}([a-z_]+(?:, [a-z_]+)*)\b", text, re.MULTILINE)
    documented = {key for keys in described for key in keys.split(", ")}
    for key in (*RULE_KEYS, *MATCH_KEYS, *SPACE_KEYS):
        assert key in documented, f"{key} is not described in bridge.toml.example"


def test_example_rules_load_when_uncommented(tmp_path: Path) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    start = text.index("# [[spaces]]")
    block = [
        line[2:]
        for line in text[start:].splitlines()
        if line.startswith("# ") and re.match(r"# (\[|[a-z_]+ = )", line)
    ]
    path = tmp_path / "bridge.toml"
    path.write_text("\n".join(block) + "\n", encoding="utf-8")
    config = load_config(str(path))
    assert [s.slug for s in config.spaces] == ["sales"]
    assert [r.name for r in config.rules] == ["no-bounces", "sales", "hr-private"]
    assert [type(m).__name__ for m in config.rules[2].matchers] == [
        "EnvelopeToMatcher",
        "HeaderMatcher",
    ]


def test_rules_commands_as_a_user_runs_them(tmp_path: Path) -> None:
    import subprocess
    import sys

    config = tmp_path / "bridge.toml"
    config.write_text(CONFIG, encoding="utf-8")
    db = tmp_path / "b.db"
    common = ["--config", str(config), "--db", str(db)]

    def bridge(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "bridge", *args, *common],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        return done.stdout

    bounce = DATA / "aol-mailbox-full-dsn.eml"
    tested = bridge("rules", "test", str(bounce))
    assert "rule 1 no-bounces: MATCH -> skip" in tested
    assert "outcome: skipped by no-bounces" in tested
    imported = bridge("import", *map(str, FILES))
    assert "stored 4" in imported and "skipped by rules 2" in imported
    replayed = bridge("rules", "replay")
    assert re.search(r"^no-bounces\s+2\s+2$", replayed, re.MULTILINE)
    assert re.search(r"^gas\s+3\s+3$", replayed, re.MULTILINE)
    assert "messages that would change space: 0" in replayed

"""Owners of mail with no envelope: IMAP accounts' `owners`, `bridge import --owner/--owners`.

Each copy records its owners as the people it was delivered to: the
delivery's `envelope_to` and one `envelope_recipients` row per owner.
Against a real Dovecot, the real `bridge` command and both store backends.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select, text

from bridge.config import load_config, parse_config
from bridge.daemon import Daemon
from bridge.errors import ConfigError, OwnersFileError
from bridge.ingest.imap import AccountStatus, ImapWorker, SessionStore
from bridge.ingest.owners import Owners, load_owners
from bridge.store.db import make_engine
from bridge.store.tables import EnvelopeRecipient, Person
from tests.conftest import DATA
from tests.dovecot import Dovecot
from tests.ingest.test_imap import ENRON as ENRON_FILES
from tests.ingest.test_imap import append, enron, make_account, running, synced, wait_for
from tests.ingest.test_import_cli import ENRON, bridge
from tests.smtp_support import fresh_copy, real_message

ALLEN = "phillip.allen@enron.com"
MBOX = DATA / "rlists" / "r-devel-2020-November.txt"
EML = DATA / "mime" / "mailgun-flanker" / "office365.eml"


def held(engine: Engine, source: str) -> dict[str, tuple[str, frozenset[str]]]:
    """Each copy's key → (its envelope_to, the people envelope_recipients holds its message for)."""
    sql = text(
        "SELECT d.key, d.envelope_to, p.address FROM deliveries d "
        "LEFT JOIN envelope_recipients e ON e.message_pk = d.message_pk "
        "LEFT JOIN people p ON p.id = e.person_id WHERE d.source = :source"
    )
    out: dict[str, tuple[str, set[str]]] = {}
    with engine.connect() as conn:
        for key, envelope_to, address in conn.execute(sql, {"source": source}):
            out.setdefault(key, (envelope_to, set()))[1].update([address] if address else [])
    return {key: (to, frozenset(people)) for key, (to, people) in out.items()}


def envelope_rows(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(EnvelopeRecipient)) or 0)


def url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


# -- the owners table --------------------------------------------------------


def test_longest_key_wins_and_unmapped_mailboxes_are_named_once() -> None:
    owners = Owners(
        by_mailbox={"allen-p": (ALLEN,), "lay-k/sent": ("k@enron.com",), "shared": ()},
        mapped=True,
    )
    assert owners.of("allen-p/inbox") == (ALLEN,)
    assert owners.of("lay-k/sent") == ("k@enron.com",)
    assert owners.of("lay-k/inbox") == owners.of("allen-pp/inbox") == ()
    mailboxes = ["allen-p/inbox", "shared/x", "donoho-l/inbox", "donoho-l/sent", "lay-k/inbox"]
    # donoho-l by its top folder, the key that would map it; lay-k has keys below it already
    assert owners.unowned(mailboxes) == ["donoho-l", "lay-k/inbox"]
    everyone = Owners(("a@x.com", ALLEN), owners.by_mailbox, mapped=True)
    assert everyone.of("allen-p/inbox") == ("a@x.com", ALLEN)
    assert everyone.unowned(mailboxes) == []
    assert not Owners() and Owners(("a@x.com",)) and not Owners().unowned(mailboxes)


def test_owners_file_errors_name_the_file_and_the_key(tmp_path: Path) -> None:
    path = tmp_path / "owners.toml"
    path.write_text('allen-p = "phillip.allen@enron.com"\nlay-k = ["k@enron.com", "r@enron.com"]\n')
    assert load_owners(str(path)) == {"allen-p": (ALLEN,), "lay-k": ("k@enron.com", "r@enron.com")}
    for body, message in [
        ('allen-p = "Phillip.Allen@enron.com"', "allen-p: has value 'Phillip.Allen@enron.com': "),
        ('"lay-k/sent" = ["k@enron.com", "nobody"]', "lay-k/sent: has value 'nobody': "),
        ("donoho-l = 3", "donoho-l: has value 3: expected an address or a list of addresses"),
        ("[allen-p]\nx = 1", "allen-p: has value {'x': 1}: expected an address"),
        ("allen-p = ", "not valid TOML"),
    ]:
        path.write_text(body + "\n")
        with pytest.raises(OwnersFileError) as caught:
            load_owners(str(path))
        assert str(caught.value).startswith(f"{path}: ")
        assert message in str(caught.value) and caught.value.exit_code == 2
    with pytest.raises(OwnersFileError, match="cannot read"):
        load_owners(str(tmp_path / "missing.toml"))


def test_imap_owners_are_validated_naming_the_account() -> None:
    base = {"name": "sales", "host": "127.0.0.1", "tls": "plain", "username": "u"}
    account = {**base, "password_env": "X", "owners": ["alice@example.com"]}
    config = parse_config({"imap": {"accounts": [account]}}, "b.toml")
    assert config.imap.accounts[0].owners == ("alice@example.com",)
    for bad in ["Alice@example.com", "alice", "alice @example.com"]:
        wrong = {**account, "owners": ["bob@example.com", bad]}
        with pytest.raises(ConfigError) as caught:
            parse_config({"imap": {"accounts": [wrong]}}, "b.toml")
        message = str(caught.value)
        assert message.startswith(f"b.toml: imap.accounts[0].owners: has value {bad!r}")
        assert "(account 'sales')" in message and "\n" not in message


# -- IMAP, against Dovecot -----------------------------------------------------


def test_imap_copies_are_delivered_to_the_account_owners(dovecot: Dovecot, engine: Engine) -> None:
    personal = enron()
    shared = enron(2)[len(ENRON_FILES) :]  # distinct messages, in a mailbox with no owner
    append(dovecot, personal, user="alice")
    append(dovecot, shared, user="bob")
    owners = ("alice@example.com", "boss@example.com")
    store = SessionStore.from_engine(engine)
    for account in (make_account(dovecot, "alice", owners=owners), make_account(dovecot, "bob")):
        status = AccountStatus(account.name)
        with running(ImapWorker(account, store, status)):
            wait_for(synced(status), what=f"{account.name} synced")
    copies = held(engine, "imap")
    alice = [v for k, v in copies.items() if k.startswith("imap:alice/")]
    bob = [v for k, v in copies.items() if k.startswith("imap:bob/")]
    assert len(alice) == len(personal) and len(bob) == len(shared)
    assert set(alice) == {("alice@example.com\nboss@example.com", frozenset(owners))}
    assert set(bob) == {("", frozenset())}
    with engine.connect() as conn:
        messages = conn.scalar(
            text("SELECT count(DISTINCT message_pk) FROM deliveries WHERE key LIKE 'imap:alice/%'")
        )
    assert envelope_rows(engine) == len(owners) * messages  # a row per owner per message


async def test_sighup_reload_gives_the_new_owners_to_new_mail(
    dovecot: Dovecot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BRIDGE_TEST_OWNERS_ALICE", "alice-pw")
    path = tmp_path / "bridge.toml"

    def write(owners: str) -> None:
        path.write_text(
            f'[database]\nurl = "sqlite:///{tmp_path}/bridge.db"\n'
            "[smtp]\nlisteners = [{port = 0}]\n[web]\nport = 0\n"
            f'[[imap.accounts]]\nname = "alice"\nhost = "{dovecot.host}"\n'
            f'port = {dovecot.port}\ntls = "plain"\nusername = "alice"\n'
            'password_env = "BRIDGE_TEST_OWNERS_ALICE"\npoll_interval = 0.5\n'
            f"owners = {owners}\n",
            encoding="utf-8",
        )

    def stored() -> dict[str, str]:
        engine = make_engine(str(tmp_path / "bridge.db"))
        try:
            with engine.connect() as conn:
                rows = conn.execute(
                    text(
                        "SELECT m.message_id, d.envelope_to FROM deliveries d "
                        "JOIN messages m ON m.id = d.message_pk"
                    )
                )
                return dict(rows.all())
        finally:
            engine.dispose()

    async def wait_stored(message_id: str) -> None:
        for _ in range(300):
            if message_id in stored():
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"{message_id} not stored")

    before, before_id = fresh_copy(real_message(0), "owners-before")
    after, after_id = fresh_copy(real_message(1), "owners-after")
    write("[]")
    append(dovecot, [before])
    daemon = Daemon(load_config(str(path)))
    await daemon.start()
    try:
        await wait_stored(before_id)
        write('["alice@example.com"]')
        assert await daemon.reload(str(path))
        await asyncio.to_thread(append, dovecot, [after])
        await wait_stored(after_id)
    finally:
        await daemon.stop()
    assert stored() == {before_id: "", after_id: "alice@example.com"}


# -- bridge import --------------------------------------------------------------


def enron_tree(root: Path) -> Path:
    """A maildir-per-user archive like Enron's: maildir/<user>/<folder>/<n>."""
    for user in ("allen-p", "donoho-l"):
        shutil.copytree(ENRON / user, root / "maildir" / user)
    return root / "maildir"


def owners_file(root: Path) -> Path:
    path = root / "owners.toml"
    path.write_text(f'allen-p = "{ALLEN}"\n', encoding="utf-8")
    return path


def no_owner_warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "has no owner" in line]


def test_owners_file_maps_user_folders_and_warns_about_the_rest(
    tmp_path: Path, engine: Engine
) -> None:
    tree, owners = enron_tree(tmp_path), owners_file(tmp_path)
    run = bridge("import", "--owners", str(owners), str(tree), "--db", url(engine))
    assert "owners recorded on 0 copies already stored" in run.stdout
    assert no_owner_warnings(run.stderr) == [
        f"bridge: warning: {owners} has no owner for mailbox 'donoho-l'"
    ]
    copies = held(engine, "file")
    allen = {v for k, v in copies.items() if "/maildir/allen-p/" in k}
    donoho = {v for k, v in copies.items() if "/maildir/donoho-l/" in k}
    assert len(copies) == sum(1 for p in tree.rglob("*") if p.is_file())
    assert allen == {(ALLEN, frozenset([ALLEN]))}
    assert donoho == {("", frozenset())}


def test_owner_owns_every_copy_of_an_mbox_and_an_eml(tmp_path: Path, engine: Engine) -> None:
    owners = ("a@example.com", "b@example.com")
    run = bridge(
        "import", "--owner", owners[0], "--owner", owners[1], "--owner", owners[0],
        str(MBOX), str(EML), "--db", url(engine),
    )  # fmt: skip
    assert no_owner_warnings(run.stderr) == []
    copies = held(engine, "file")
    assert len(copies) > 30 and any(key.endswith(".eml") for key in copies)
    assert set(copies.values()) == {("a@example.com\nb@example.com", frozenset(owners))}


def test_importing_again_with_owners_records_them_on_stored_copies(
    tmp_path: Path, engine: Engine
) -> None:
    tree, owners = enron_tree(tmp_path), owners_file(tmp_path)
    db = url(engine)
    bridge("import", str(tree), "--db", db)
    bridge("import", "--owner", "a@example.com", str(MBOX), "--db", db)
    files = held(engine, "file")
    allen = [k for k in files if "/maildir/allen-p/" in k]
    mbox = [k for k in files if k.startswith(str(MBOX.resolve()))]
    assert allen and mbox and envelope_rows(engine) > 0
    rows_before = envelope_rows(engine)

    mapped = bridge("import", "--owners", str(owners), str(tree), "--db", db)
    assert "read 0 messages" in mapped.stdout
    assert f"owners recorded on {len(allen)} copies already stored" in mapped.stdout
    both = bridge("import", "--owner", "a@example.com", "--owner", "b@example.com", str(MBOX),
                  "--db", db)  # fmt: skip
    assert f"owners recorded on {len(mbox)} copies already stored" in both.stdout
    after = held(engine, "file")
    assert {after[k] for k in allen} == {(ALLEN, frozenset([ALLEN]))}
    pair = frozenset(["a@example.com", "b@example.com"])
    assert {after[k] for k in mbox} == {("a@example.com\nb@example.com", pair)}
    assert {v for k, v in after.items() if "/donoho-l/" in k} == {("", frozenset())}
    rows = envelope_rows(engine)
    assert rows > rows_before

    again = bridge("import", "--owners", str(owners), str(tree), str(MBOX), "--db", db)
    assert "owners recorded on 0 copies already stored" in again.stdout
    assert held(engine, "file") == after and envelope_rows(engine) == rows
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).where(Person.address == ALLEN)) == 1


def test_bad_owners_exit_2_with_one_line(tmp_path: Path) -> None:
    db = str(tmp_path / "b.db")
    owners = tmp_path / "owners.toml"
    owners.write_text('allen-p = "Phillip.Allen@enron.com"\n', encoding="utf-8")
    bad_file = bridge("import", "--owners", str(owners), str(MBOX), "--db", db, check=False)
    assert bad_file.returncode == 2
    assert bad_file.stderr.strip().count("\n") == 0
    assert f"bridge: error: {owners}: allen-p: has value 'Phillip.Allen@enron.com'" in (
        bad_file.stderr
    )
    missing = bridge(
        "import", "--owners", str(tmp_path / "no.toml"), str(MBOX), "--db", db, check=False
    )
    assert missing.returncode == 2 and "no.toml: cannot read" in missing.stderr
    bad_owner = bridge("import", "--owner", "nobody", str(MBOX), "--db", db, check=False)
    assert bad_owner.returncode == 2 and "argument --owner: 'nobody'" in bad_owner.stderr
    assert not Path(db).exists()

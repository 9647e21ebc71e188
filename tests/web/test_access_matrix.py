"""People × threads × every route: what each person may see, asked of every page and API.

The expectation is computed here from the mail files and the config alone
(stdlib email, tomllib): threads by Message-ID/References (and, for Enron's
header-less replies, by subject), each message's space and privacy by the
config's rules read with `re`, each person's spaces from the config's
members and staff domains, then the rule of the issue, per message: a person
sees a message delivered to them (an envelope recipient), one whose From, To
or Cc names them, or one in a space they may read that is not private; a
thread shows them exactly those of its messages, and a thread with none is
missing. The store is only asked which ids the files got.

Every route then answers accordingly: home, space, thread, `/m/`, `/raw/`,
`/a/`, search (results and counts, page and API), person, both feeds and
every API route. Hidden things answer 404 with exactly the body of
something missing, and never appear in a list, a count or a search.

The people: parties of each thread, a member of a members-only space, a
member of staff who only reads the staff-open space, an envelope recipient
who is in no header, a late Cc on a private thread whose References name
mail they may not see, a member of a private thread's space who was no
party, an outsider, and a stranger who replied to a known Message-ID.
"""

from __future__ import annotations

import email
import json
import re
import shutil
import tomllib
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import Message as EmailMessage
from email.utils import getaddresses
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from bridge.config import Config
from bridge.core.message import Provenance, RawMessage
from bridge.core.normalize import normalize_message_id
from bridge.pipeline import Outcome, prepare, store_batch
from bridge.search import search
from bridge.store.db import make_engine
from bridge.store.migrate import upgrade
from bridge.store.read.reading import find_message
from bridge.store.tables import Message
from bridge.web.account.auth_store import feed_token
from bridge.web.frame.keys import SIGNER
from tests.conftest import DATA
from tests.web.support import CONFIG, ENRON, LKML, MIME, imported, sign_in, viewer_app

CLOCK_FILE = MIME / "cpython-test_email-data" / "msg_26.txt"
HANDWRITTEN = DATA / "web-api"
MATRIX_CONFIG = (
    CONFIG
    + """
[[rules]]
name = "clock"
space = "gas"
[rules.match]
subject = "IMAP file test"
"""
)
AUDITOR = "auditor@example.net"  # an envelope recipient of the spam copy, in no header
INTRUDER = "intruder@example.com"
SPAM_FILE = ENRON / "allen-p" / "inbox" / "8"
# One file of each thread, to name it.
NAMED = {
    "west": ENRON / "allen-p" / "inbox" / "1",
    "spam": SPAM_FILE,
    "socal": ENRON / "donoho-l" / "inbox" / "144",
    "heads": ENRON / "keiser-k" / "inbox" / "135",
    "rio": LKML / "1382298770.004581.eml",
    "cifs": LKML / "1382298770.001739.eml",
    "markup": HANDWRITTEN / "markup.eml",
    "clock": CLOCK_FILE,
}
# The same expectation written by hand, as a check on the computed one.
THREADS_SEEN = {
    "heather.dunton@enron.com": {"west", "heads"},  # From on West (private); staff
    "k..allen@enron.com": {"west", "heads"},
    "pallen@enron.com": {"spam", "heads"},
    AUDITOR: {"spam"},
    "outside.analyst@example.org": {"socal", "clock"},  # member of "gas"; West is private
    "someone.new@enron.com": {"heads"},  # staff: the staff-open "trading" only
    "d..winfree@enron.com": {"heads", "markup"},
    "thomas.moll@sysgo.com": {"rio"},  # Cc on the private RapidIO thread
    "r58472@freescale.com": {"rio"},  # joined late: sees three mails of it
    "observer@example.org": set(),  # member of "rio", but rio is private
    "jlayton@samba.org": {"cifs"},
    "timbo@jeeves.wooster.local": {"clock"},
    "nobody@example.net": set(),
    INTRUDER: {"heads"},  # his own reply sits in the thread: he sees that one mail
}
PER_REQUEST = re.compile(rb'name="(csrf_token|next)" value="[^"]*"')
WORD = re.compile(r"[A-Za-z]{7,}")
REPLY_PREFIX = re.compile(r"^\s*((re|fw|fwd)\s*:\s*)+", re.IGNORECASE)


# --- the expectation, from the files and the config ------------------------------


@dataclass
class Mail:
    """One message (Enron's copies in several mailboxes are one), as its headers say."""

    key: str
    files: list[Path]
    ids: set[str]
    refs: set[str]
    sender: str
    parties: set[str]
    subject: str
    text: str
    has_attachment: bool
    space: str | None = None
    private: bool = False
    thread: str = ""


@dataclass
class World:
    mails: dict[str, Mail]
    threads: dict[str, list[str]]  # name -> mail keys
    spaces: dict[str, set[str]] = field(default_factory=dict)  # slug -> readers (by rule)


def addresses(message: EmailMessage, *names: str) -> set[str]:
    values = [v for name in names for v in message.get_all(name, [])]
    return {a.lower() for _, a in getaddresses(values) if "@" in a}


def body_text(message: EmailMessage) -> str:
    parts = []
    for part in message.walk():
        if part.get_content_type() == "text/plain":
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                parts.append(payload.decode(part.get_content_charset() or "latin-1", "replace"))
    return "\n".join(parts)


def ids_in(value: str | None) -> set[str]:
    found = (normalize_message_id(f"<{x}>") for x in re.findall(r"<([^<>\s]+)>", value or ""))
    return {x for x in found if x}


def read_mails(files: list[Path]) -> dict[str, Mail]:
    mails: dict[str, Mail] = {}
    for path in files:
        # Some of Enron's files start with a blank line before their headers.
        message = email.message_from_bytes(path.read_bytes().lstrip(b"\r\n"))
        subject = " ".join((message["Subject"] or "").split())
        sender = next(iter(addresses(message, "From")), "")
        # Enron's copies of one mail carry different Message-IDs: same sender, date, subject.
        key = f"{sender}|{message['Date']}|{subject}"
        mail = mails.get(key)
        if mail is None:
            mail = mails[key] = Mail(
                key=key,
                files=[],
                ids=set(),
                refs=ids_in(message["References"]) | ids_in(message["In-Reply-To"]),
                sender=sender,
                parties=addresses(message, "From", "To", "Cc"),
                subject=subject,
                text=body_text(message),
                has_attachment=any(
                    part.get_content_disposition() == "attachment" for part in message.walk()
                ),
            )
        mail.files.append(path)
        mail.ids |= ids_in(message["Message-ID"])
    return mails


def apply_rules(mails: dict[str, Mail], config: dict[str, Any]) -> None:
    """The config's rules, read here with `re`: the first rule that matches decides."""
    for mail in mails.values():
        for rule in config["rules"]:
            match = rule["match"]
            hit = True
            if "subject" in match:
                hit &= re.search(match["subject"], mail.subject, re.IGNORECASE) is not None
            if "from" in match:
                hit &= mail.sender == match["from"].lower()
            if hit:
                mail.space, mail.private = rule.get("space"), bool(rule.get("private"))
                break


def group_threads(mails: dict[str, Mail]) -> dict[str, list[str]]:
    """Union-find over Message-IDs named in References/In-Reply-To, and Enron's subjects."""
    parent = {key: key for key in mails}

    def root(key: str) -> str:
        while parent[key] != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    def join(a: str, b: str) -> None:
        parent[root(a)] = root(b)

    owner = {i: mail.key for mail in mails.values() for i in mail.ids}
    by_subject: dict[str, str] = {}
    for mail in mails.values():
        for ref in mail.refs:
            if ref in owner:
                join(mail.key, owner[ref])
        if all(ENRON in f.parents for f in mail.files):
            topic = REPLY_PREFIX.sub("", mail.subject).lower()
            join(mail.key, by_subject.setdefault(topic, mail.key))
    groups: dict[str, list[str]] = defaultdict(list)
    for key in mails:
        groups[root(key)].append(key)
    names = {}
    for name, path in NAMED.items():
        key = next(m.key for m in mails.values() if path in m.files)
        names[root(key)] = name
    assert set(groups) == set(names), "every thread of the test mail has a name"
    threads = {names[r]: keys for r, keys in groups.items()}
    for name, keys in threads.items():
        for key in keys:
            mails[key].thread = name
    return threads


def readers_of(config: dict[str, Any], address: str) -> set[str]:
    """Spaces `address` may read: a member (address or @domain), or staff in a staff space."""
    domain = address.rpartition("@")[2]
    staff = any(domain == d or domain.endswith("." + d) for d in config["bridge"]["staff_domains"])
    found = set()
    for space in config["spaces"]:
        members = [m.lower() for m in space.get("members", [])]
        member = address in members or any(
            m.startswith("@") and (domain == m[1:] or domain.endswith("." + m[1:])) for m in members
        )
        if member or (staff and space.get("visibility") == "staff"):
            found.add(space["slug"])
    return found


def world(files: list[Path]) -> World:
    config = tomllib.loads(MATRIX_CONFIG)
    mails = read_mails(files)
    spam = next(m for m in mails.values() if SPAM_FILE in m.files)
    spam.parties.add(AUDITOR)
    apply_rules(mails, config)
    return World(mails, group_threads(mails))


@dataclass(frozen=True)
class Sight:
    threads: frozenset[str]
    mails: frozenset[str]
    spaces: frozenset[str]


def sight(w: World, address: str) -> Sight:
    config = tomllib.loads(MATRIX_CONFIG)
    spaces = readers_of(config, address)
    mails = {
        m.key
        for m in w.mails.values()
        if address in m.parties or (not m.private and m.space in spaces)
    }
    threads = {w.mails[k].thread for k in mails}
    return Sight(frozenset(threads), frozenset(mails), frozenset(spaces))


def in_space(s: Stored, expected: Sight, slug: str) -> set[str]:
    """Threads with a message the reader sees in space `slug`."""
    return {s.world.mails[k].thread for k in expected.mails if s.world.mails[k].space == slug}


# --- the store and the app -----------------------------------------------------------


@dataclass
class Stored:
    engine: Engine
    config: Config
    world: World
    thread_id: dict[str, int]  # thread name -> id
    pk: dict[str, int]  # mail key -> message pk
    message_id: dict[str, str]  # mail key -> stored Message-ID
    probes: dict[str, str]  # mail key -> a word found in that mail only


def mail_files() -> list[Path]:
    enron = sorted(p for p in ENRON.rglob("*") if p.is_file())
    return [*enron, *sorted(LKML.glob("*.eml")), *sorted(HANDWRITTEN.glob("*.eml")), CLOCK_FILE]


def build(engine: Engine, root: Path) -> Stored:
    extra = root / "extra"
    extra.mkdir()
    for path in [*HANDWRITTEN.glob("*.eml"), CLOCK_FILE]:
        shutil.copy(path, extra / (path.stem + ".eml"))
    config = imported(engine, [ENRON, LKML, extra], MATRIX_CONFIG)
    # The spam also came in over SMTP for the auditor alone (a Bcc): a second copy.
    smtp = Provenance("smtp", "127.0.0.1:2525", AUDITOR, "matrix-1", None, (AUDITOR,))
    copy = prepare(RawMessage(SPAM_FILE.read_bytes(), smtp), rules=config.ruleset)
    with Session(engine) as session, session.begin():
        assert store_batch(session, [copy], datetime.now(UTC)) == [Outcome.MERGED]
    w = world(mail_files())
    pk, message_id = {}, {}
    with Session(engine) as session, session.begin():
        for mail in w.mails.values():
            if mail.ids:
                row = find_message(session, sorted(mail.ids)[0])
            else:  # Enron's maildir files without a Message-ID
                row = session.execute(
                    select(Message).where(Message.subject.startswith(mail.subject[:30]))
                ).scalar_one()
            pk[mail.key], message_id[mail.key] = row.id, row.message_id
    with Session(engine) as session:
        thread_of = dict(session.execute(select(Message.id, Message.thread_id)).all())
        thread_id = {}
        for name, keys in w.threads.items():
            (tid,) = {thread_of[pk[k]] for k in keys}
            thread_id[name] = tid
        probes = choose_probes(session, w, pk, thread_id)
    return Stored(engine, config, w, thread_id, pk, message_id, probes)


def choose_probes(
    session: Session, w: World, pk: dict[str, int], thread_id: dict[str, int]
) -> dict[str, str]:
    """A word of each mail found in no other mail, kept when plain search finds its thread."""
    counts: dict[str, set[str]] = defaultdict(set)
    for mail in w.mails.values():
        for word in WORD.findall(mail.text + " " + mail.subject):
            counts[word.lower()].add(mail.key)
    probes = {}
    for mail in w.mails.values():
        for word in dict.fromkeys(w.lower() for w in WORD.findall(mail.text)):
            if counts[word] != {mail.key}:
                continue
            found = search(session, word, limit=50)
            if {h.thread_id for h in found.hits} == {thread_id[mail.thread]}:
                probes[mail.key] = word
                break
    return probes


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stored]:
    root = tmp_path_factory.mktemp("matrix")
    engine = make_engine(str(root / "bridge.db"))
    upgrade(engine)
    yield build(engine, root)
    engine.dispose()


# --- asking every route ----------------------------------------------------------------


class Reader:
    def __init__(self, client: TestClient, address: str) -> None:
        self.client = client
        self.address = address
        self.headers = sign_in(client.app, address)
        self.token = feed_token(client.app[SIGNER], address, 0)

    async def get(self, path: str, **params: str) -> tuple[int, bytes, str]:
        response = await self.client.get(
            path, headers=self.headers, params=params, allow_redirects=False
        )
        body = PER_REQUEST.sub(rb'name="\1"', await response.read())
        return response.status, body, response.headers.get("Location", "")

    async def json(self, path: str, **params: str) -> Any:
        status, body, _ = await self.get(path, **params)
        assert status == 200, (path, status)
        return json.loads(body)

    async def feed(self, path: str) -> tuple[int, bytes]:
        status, body, _ = await self.get(path, token=self.token)
        return status, body


def thread_links(body: bytes) -> set[int]:
    return {int(x) for x in re.findall(rb'href="/t/(\d+)(?:#unread)?"', body)}


def anchors(body: bytes) -> set[int]:
    return {int(x) for x in re.findall(rb'<article[^>]* id="m(\d+)"', body)}


def feed_pks(body: bytes) -> set[int]:
    return {int(x) for x in re.findall(rb"#m(\d+)", body)}


async def check_reader(client: TestClient, s: Stored, address: str) -> None:
    expected = sight(s.world, address)
    assert expected.threads == THREADS_SEEN[address]
    w = s.world
    me = Reader(client, address)
    tids = {s.thread_id[n] for n in expected.threads}
    pks = {s.pk[k] for k in expected.mails}
    mails_in = {n: {s.pk[k] for k in keys if k in expected.mails} for n, keys in w.threads.items()}

    # API lists, counts and spaces.
    listing = await me.json("/api/v1/threads", limit="100")
    assert {t["id"] for t in listing["threads"]} == tids
    assert listing["total"] == len(tids)
    for t in listing["threads"]:
        name = next(n for n, i in s.thread_id.items() if i == t["id"])
        assert t["message_count"] == len(mails_in[name])
    spaces = await me.json("/api/v1/spaces")
    assert {sp["slug"] for sp in spaces["spaces"]} == expected.spaces

    # Home.
    status, home, _ = await me.get("/")
    assert status == 200 and thread_links(home) == tids

    # Space pages: readable ones list their visible threads; others are missing.
    missing_space = await me.get("/s/no-such-space")
    assert missing_space[0] == 404
    for slug in ("gas", "trading", "rio"):
        answer = await me.get(f"/s/{slug}")
        if slug in expected.spaces:
            listed = {s.thread_id[n] for n in in_space(s, expected, slug)}
            assert answer[0] == 200 and thread_links(answer[1]) == listed
        else:
            assert answer == missing_space

    # Thread pages, thread API and thread feeds.
    missing_page = await me.get("/t/99999999")
    missing_api = await me.get("/api/v1/threads/99999999")
    missing_feed = await me.feed("/feeds/t/99999999.atom")
    assert missing_page[0] == missing_api[0] == missing_feed[0] == 404
    for name, tid in s.thread_id.items():
        page = await me.get(f"/t/{tid}")
        api = await me.get(f"/api/v1/threads/{tid}")
        feed = await me.feed(f"/feeds/t/{tid}.atom")
        if tid in tids:
            assert page[0] == 200 and anchors(page[1]) == mails_in[name], name
            assert api[0] == 200
            assert {m["id"] for m in json.loads(api[1])["messages"]} == mails_in[name]
            assert feed[0] == 200 and feed_pks(feed[1]) == mails_in[name]
        else:
            assert page == missing_page and api == missing_api and feed == missing_feed, name

    # Space feeds.
    missing_space_feed = await me.feed("/feeds/s/no-such-space.atom")
    for slug in ("gas", "trading", "rio"):
        feed = await me.feed(f"/feeds/s/{slug}.atom")
        if slug in expected.spaces:
            held = {
                s.pk[k]
                for n in in_space(s, expected, slug)
                for k in w.threads[n]
                if k in expected.mails
            }
            assert feed[0] == 200 and feed_pks(feed[1]) == held
        else:
            assert feed == missing_space_feed

    # Each message: permalink, original, API, attachments.
    missing_m = await me.get("/m/no-such-message@example.org")
    missing_raw = await me.get("/raw/99999999")
    missing_msg_api = await me.get("/api/v1/messages/no-such-message@example.org")
    missing_a = await me.get("/a/99999999/0")
    for key, mail in w.mails.items():
        pk, tid = s.pk[key], s.thread_id[mail.thread]
        link = await me.get("/m/" + quote(s.message_id[key], safe="@"))
        raw = await me.get(f"/raw/{pk}")
        api = await me.get("/api/v1/messages/" + quote(s.message_id[key], safe="@"))
        files = [await me.get(f"/a/{pk}/{n}") for n in range(2)] if mail.has_attachment else []
        if pk in pks:
            assert link[0] == 303 and link[2] == f"/t/{tid}#m{pk}"
            assert raw[0] == 200 and api[0] == 200
            assert any(f[0] == 200 for f in files) or not mail.has_attachment
        else:
            assert link == missing_m and raw == missing_raw and api == missing_msg_api, key
            assert all(f == missing_a for f in files)

    # Search: a word only one mail holds finds its thread exactly when the mail is seen.
    assert len({w.mails[k].thread for k in s.probes}) >= 6
    by_message_id = {s.message_id[k]: s.thread_id[m.thread] for k, m in w.mails.items()}
    for key, word in s.probes.items():
        want = {s.thread_id[w.mails[key].thread]} if s.pk[key] in pks else set()
        found = await me.json("/api/v1/search", q=word)
        assert {r["thread_id"] for r in found["results"]} == want, (key, word)
        assert found["total_threads"] == len(want)
        status, page, _ = await me.get("/search", q=word)
        linked = {
            by_message_id.get(unquote(x.decode())) for x in re.findall(rb'href="/m/([^"]+)"', page)
        }
        assert status == 200 and linked == want, (key, word)
    everything = await me.json("/api/v1/search", q="after:1990-01-01")
    assert {r["thread_id"] for r in everything["results"]} == tids
    assert everything["total_threads"] == len(tids)


async def check_people(client: TestClient, s: Stored, address: str) -> None:
    """Person pages list only threads the reader sees in which that person took part
    in a mail the reader sees; someone met only in hidden mail is missing."""
    expected = sight(s.world, address)
    w = s.world
    me = Reader(client, address)
    hidden_tids = set(s.thread_id.values()) - {s.thread_id[n] for n in expected.threads}
    missing_person = await me.get("/p/no.such.person@example.org")
    for other in sorted({m.sender for m in w.mails.values()}):
        shared = {
            s.thread_id[n]
            for n in expected.threads
            if any(other in w.mails[k].parties for k in w.threads[n] if k in expected.mails)
        }
        answer = await me.get("/p/" + quote(other, safe="@"))
        if shared:
            assert answer[0] == 200 and thread_links(answer[1]) <= shared, other
            assert not thread_links(answer[1]) & hidden_tids
        else:
            assert answer == missing_person, other


PEOPLE = sorted(THREADS_SEEN)


@pytest.mark.parametrize("address", PEOPLE)
async def test_every_route_shows_each_person_exactly_what_they_may_see(
    stored: Stored, aiohttp_client: Any, address: str
) -> None:
    client = await aiohttp_client(viewer_app(stored.engine, stored.config))
    await check_reader(client, stored, address)


@pytest.mark.parametrize("address", PEOPLE)
async def test_person_pages_show_no_one_met_only_in_hidden_mail(
    stored: Stored, aiohttp_client: Any, address: str
) -> None:
    client = await aiohttp_client(viewer_app(stored.engine, stored.config))
    await check_people(client, stored, address)


@pytest.mark.parametrize("address", ["r58472@freescale.com", "outside.analyst@example.org"])
async def test_the_matrix_holds_on_each_backend(
    engine: Engine, tmp_path: Path, aiohttp_client: Any, address: str
) -> None:
    s = build(engine, tmp_path)
    client = await aiohttp_client(viewer_app(engine, s.config))
    await check_reader(client, s, address)

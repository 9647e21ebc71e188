"""Attacks on the access rule, against a real `bridge run` over its sockets.

One daemon for the whole module: mail goes in over SMTP on the loopback
(envelope recipients as an MTA would give them), readers sign in through
`bridge login-link` and the sign-in page, and everything is asked of the web
viewer over HTTP: thread pages, `/raw/<pk>`, `/m/<id>`, search (page and
API), listings and the JSON API (counts, first and last dates, participants,
titles, order), person pages, space pages and the Atom feeds.

The rule (per message): a person sees a message when a copy was delivered to
them, when its own From, To or Cc names them, or when it is in a space they
read and it is not private. Nothing else grants sight. The expectation here
is computed from the mail written below by that rule alone; no other mail is
in a space except the "hr" space's, where payroll mail is private.

The attacks:

1. Salary: alice writes to bob, bob answers, bob writes again in the thread
   with chloe in Cc (quoting nothing), alice answers bob and dana only.
   chloe sees the third message and nothing of the others.
2. Forged From and References: mallory sends `From: alice`, `To: mallory`,
   `References: <salary-1>`.
3. Ghost ids: mallory references an id the store only knows from References,
   and sends a message that takes that id as its own.
4. Message-ID collision after the genuine mail (and a back-dated one).
5. Message-ID collision before the genuine mail (mallory dated earlier, and
   a control dated later).
6. Bcc: the sender's copy names a Bcc recipient, the others' copies do not.
7. Hidden reply times: a later reply chloe may not see moves nothing of hers.
8. References naming ids of two threads mallory cannot see glue them into
   one: the merged thread's old id must stay missing to outsiders.
9. The reader's marks (a daemon of its own): unread counts, rule tags,
   follow and mute never reveal a reply the reader was not sent, and
   following or reading a thread one may not see is a missing thread.
10. Replies: mallory cannot answer what she cannot see (page, form, API);
   a reply goes to its parent's people only, never to a Bcc recipient.
11. A reply mailed to someone else's digest reply address (bob's, for a
   message of the salary thread): refused whether mallory sends it as
   herself, forges only the From header, or forges the envelope only;
   nothing is stored or queued.

Plus: payroll mail made private by a rule in the staff-open "hr" space is
seen by its parties only, while the space's open mail is seen by all staff.
A matrix asks every route, as every reader, for every message and thread.

Tests marked xfail document a known limit (strict: they start failing once
it is lifted): a forgery that is stored before the genuine mail, which needs
its Message-ID guessed in advance, keeps the id, so replies naming it thread
with the forgery (5, 5c). It shows the forger nothing, and the genuine mail
is stored whole for its own readers.
"""

from __future__ import annotations

import http.client
import json
import re
import smtplib
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime as rfc2822
from functools import cache
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from bridge.core.mail.copies import shared_copy
from bridge.core.outgoing.reply_address import make_token, reply_address
from bridge.i18n import format_datetime
from bridge.outbound.keys import SIGNING_SECRET
from bridge.signing import DIGEST_REPLY, Signer
from bridge.store.db import make_engine
from bridge.store.tables import (
    Delivery,
    Message,
    MessageId,
    Outbox,
    Secret,
    Thread,
    ThreadRedirect,
)
from tests.daemon_support import Bridge

CONFIG = """
[bridge]
staff_domains = ["example.com"]
address = "bridge@example.com"

[[spaces]]
slug = "hr"
name = "Human resources"
visibility = "staff"

[[rules]]
name = "payroll-private"
space = "hr"
private = true
[rules.match]
subject = "payroll"

[[rules]]
name = "handbook"
space = "hr"
[rules.match]
subject = "handbook"
"""

ALICE, BOB, CHLOE = "alice@example.com", "bob@example.com", "chloe@example.com"
DAVE = "dave@example.com"
DANA, ERIN, MALLORY = "dana@example.com", "erin@example.com", "mallory@example.com"
FRANK = "frank@example.com"  # writes mail, never reads
READERS = (ALICE, BOB, CHLOE, DAVE, DANA, ERIN, MALLORY)
SPACE_READERS = {"hr": set(READERS)}  # "hr" is open to all staff: everyone here is staff
PER_REQUEST = re.compile(rb'name="(csrf_token|next)" value="[^"]*"')


# --- the mail ----------------------------------------------------------------------


@dataclass(frozen=True)
class Mail:
    """One message, and the copies of it that reach Bridge (envelope, with the Bcc line?)."""

    name: str
    message_id: str
    sender: str
    to: tuple[str, ...]
    date: datetime
    subject: str
    marker: str  # a word only this message holds: what search looks for
    copies: tuple[tuple[tuple[str, ...], bool], ...]
    cc: tuple[str, ...] = ()
    bcc: tuple[str, ...] = ()
    refs: tuple[str, ...] = ()
    envelope_from: str = ""
    space: str | None = None
    private: bool = False

    def data(self, with_bcc: bool) -> bytes:
        lines = [
            f"Message-ID: <{self.message_id}>",
            f"Date: {rfc2822(self.date)}",
            f"From: {self.sender}",
            f"To: {', '.join(self.to)}",
        ]
        if self.cc:
            lines.append(f"Cc: {', '.join(self.cc)}")
        if self.bcc and with_bcc:
            lines.append(f"Bcc: {', '.join(self.bcc)}")
        lines.append(f"Subject: {self.subject}")
        if self.refs:
            lines.append(f"In-Reply-To: <{self.refs[-1]}>")
            lines.append("References: " + " ".join(f"<{r}>" for r in self.refs))
        lines += [
            "MIME-Version: 1.0",
            "Content-Type: text/plain; charset=utf-8",
            "",
            f"Note {self.marker}: {self.name} as written by its sender.",
            "",
        ]
        return "\r\n".join(lines).encode()

    @property
    def holders(self) -> set[str]:
        return {a for envelope, _bcc in self.copies for a in envelope}

    @property
    def named(self) -> set[str]:
        return {self.sender, *self.to, *self.cc}

    def copy_for(self, reader: str) -> bytes:
        """The bytes this reader should get from /raw: their own copy, else a shared one."""
        for envelope, with_bcc in self.copies:
            if reader in envelope:
                return self.data(with_bcc)
        return shared_copy(self.data(self.copies[0][1]))


def at(day: int, hour: int, minute: int) -> datetime:
    return datetime(2025, 1, day, hour, minute, tzinfo=UTC)


def mail(
    name: str,
    message_id: str,
    sender: str,
    to: tuple[str, ...],
    date: datetime,
    subject: str,
    marker: str,
    envelope: tuple[str, ...],
    **more: Any,
) -> Mail:
    return Mail(name, message_id, sender, to, date, subject, marker, ((envelope, False),), **more)


SALARY = "Salary: raise for Dana"
# In the order they reach Bridge.
MAIL = [
    # 1 and 7: the salary thread. salary-1 answers a memo Bridge never got (ghost-1).
    mail("S1", "salary-1@example.com", ALICE, (BOB,), at(6, 9, 17), SALARY, "ZEBRAFINCH",
         (BOB,), refs=("ghost-1@example.com",)),
    mail("S2", "salary-2@example.com", BOB, (ALICE,), at(6, 11, 43), f"Re: {SALARY}", "PANGOLIN",
         (ALICE,), refs=("ghost-1@example.com", "salary-1@example.com")),
    mail("S3", "salary-3@example.com", BOB, (ALICE,), at(8, 15, 5), "Offsite agenda", "KINGFISHER",
         (ALICE, CHLOE), cc=(CHLOE,),
         refs=("ghost-1@example.com", "salary-1@example.com", "salary-2@example.com")),
    mail("S4", "salary-4@example.com", ALICE, (BOB,), at(9, 17, 52), f"Re: {SALARY}", "MARMOSET",
         (BOB, DANA), cc=(DANA,),
         refs=("ghost-1@example.com", "salary-1@example.com", "salary-2@example.com",
               "salary-3@example.com")),
    # chloe's other thread: newer than S3 and older than S4, for the order of her list.
    mail("C1", "lunch-1@example.com", FRANK, (CHLOE,), at(8, 20, 4), "Lunch on Friday", "OCELOT",
         (CHLOE,)),
    # The private rule: payroll mail in "hr" is private; the handbook is open to staff.
    mail("P1", "payroll-1@example.com", ALICE, (BOB,), at(13, 9, 21), "Payroll corrections",
         "CHINCHILLA", (BOB,), space="hr", private=True),
    mail("P2", "payroll-2@example.com", BOB, (ALICE,), at(13, 10, 2), "Re: Payroll corrections",
         "BARRACUDA", (ALICE,), refs=("payroll-1@example.com",), space="hr", private=True),
    mail("P3", "payroll-3@example.com", BOB, (ALICE,), at(13, 11, 36), "Re: Payroll corrections",
         "NARWHAL", (ALICE, CHLOE), cc=(CHLOE,),
         refs=("payroll-1@example.com", "payroll-2@example.com"), space="hr", private=True),
    mail("H1", "handbook-1@example.com", FRANK, (ALICE,), at(14, 8, 45), "Handbook update",
         "HEDGEHOG", (ALICE,), space="hr"),
    # 4: a collision after the genuine mail, dated later; then a reply to the genuine one.
    mail("G4", "budget-4@example.com", ALICE, (BOB,), at(7, 10, 0), "Budget 2025", "CAPYBARA",
         (BOB,)),
    mail("M4", "budget-4@example.com", ALICE, (MALLORY,), at(10, 10, 11), "Budget 2025",
         "AXOLOTL", (MALLORY,), envelope_from=MALLORY),
    mail("R4", "budget-4-re@example.com", BOB, (ALICE,), at(10, 12, 30), "Re: Budget 2025",
         "WALRUS", (ALICE,), refs=("budget-4@example.com",)),
    # 4, back-dated: the forgery claims to be older than the genuine mail.
    mail("G4b", "contract-4@example.com", ALICE, (BOB,), at(7, 13, 0), "Contract renewal",
         "TAPIR", (BOB,)),
    mail("M4b", "contract-4@example.com", ALICE, (MALLORY,), at(2, 8, 8), "Contract renewal",
         "IBEX", (MALLORY,), envelope_from=MALLORY),
    mail("R4b", "contract-4-re@example.com", BOB, (ALICE,), at(10, 14, 14),
         "Re: Contract renewal", "MANATEE", (ALICE,), refs=("contract-4@example.com",)),
    # 5: mallory sends first, with the id alice will use and an earlier Date (she wrote first).
    mail("M5", "plan-5@example.com", ALICE, (MALLORY,), at(6, 8, 3), "Q1 plan", "GECKO",
         (MALLORY,), envelope_from=MALLORY),
    mail("G5", "plan-5@example.com", ALICE, (BOB,), at(7, 9, 9), "Q1 plan", "MEERKAT", (BOB,)),
    mail("R5", "plan-5-re@example.com", BOB, (ALICE,), at(7, 12, 12), "Re: Q1 plan", "LEMUR",
         (ALICE,), refs=("plan-5@example.com",)),
    # 5, control: mallory sends first again, but her Date is later than alice's.
    mail("M5c", "memo-5@example.com", ALICE, (MALLORY,), at(9, 9, 49), "Hiring memo", "BISON",
         (MALLORY,), envelope_from=MALLORY),
    mail("G5c", "memo-5@example.com", ALICE, (BOB,), at(7, 15, 15), "Hiring memo", "PELICAN",
         (BOB,)),
    mail("R5c", "memo-5-re@example.com", BOB, (ALICE,), at(8, 9, 27), "Re: Hiring memo",
         "TOUCAN", (ALICE,), refs=("memo-5@example.com",)),
    # 6: Bcc. alice's own copy (with its Bcc: line) first, then one transaction to bob and dave.
    Mail("B6", "party-6@example.com", ALICE, (BOB,), at(7, 16, 16), "Surprise party",
         "FLAMINGO", (((ALICE,), True), ((BOB, DAVE), False)), bcc=(DAVE,)),
    # ... and the other way round.
    Mail("B6b", "party-6b@example.com", ALICE, (BOB,), at(7, 17, 17), "Farewell gift",
         "PUFFIN", (((BOB, DAVE), False), ((ALICE,), True)), bcc=(DAVE,)),
    # 2: a forged From with References to a known id.
    mail("M2", "forged-2@example.com", ALICE, (MALLORY,), at(10, 8, 0), f"Re: {SALARY}",
         "WOMBAT", (MALLORY,), refs=("salary-1@example.com",), envelope_from=MALLORY),
    # 3: References naming a ghost, then a forgery taking the ghost's id as its own.
    mail("M3a", "forged-3a@example.com", MALLORY, (MALLORY,), at(10, 9, 0), "Re: HR memo",
         "QUOKKA", (MALLORY,), refs=("ghost-1@example.com",), envelope_from=MALLORY),
    mail("M3b", "ghost-1@example.com", ALICE, (MALLORY,), at(5, 9, 59), "HR memo", "NUMBAT",
         (MALLORY,), envelope_from=MALLORY),
    # 8: References naming ids of two threads mallory cannot see: they become one.
    mail("M8", "forged-8@example.com", MALLORY, (MALLORY,), at(15, 7, 30), "Re: Lunch on Friday",
         "CHAMELEON", (MALLORY,), refs=("lunch-1@example.com", "budget-4-re@example.com"),
         envelope_from=MALLORY),
]  # fmt: skip
BY_NAME = {m.name: m for m in MAIL}


def sees(reader: str, m: Mail) -> bool:
    """The rule, from the mail alone."""
    in_space = m.space is not None and not m.private and reader in SPACE_READERS[m.space]
    return reader in m.holders or reader in m.named or in_space


def visible(reader: str) -> list[Mail]:
    return [m for m in MAIL if sees(reader, m)]


# --- the daemon and its readers --------------------------------------------------------


@dataclass
class Answer:
    status: int
    raw: bytes  # as sent
    location: str = ""

    @property
    def body(self) -> bytes:
        """Without the per-request form values, so that two 404 pages compare equal."""
        return PER_REQUEST.sub(rb'name="\1"', self.raw)

    def json(self) -> Any:
        assert self.status == 200, (self.status, self.body[:300])
        return json.loads(self.body)


class Reader:
    """A person signed in to the running viewer (by a `bridge login-link` link)."""

    def __init__(self, daemon: Bridge, address: str, link: str) -> None:
        self.address = address
        self.conn = http.client.HTTPConnection("127.0.0.1", daemon.web_port, timeout=20)
        self.cookies: dict[str, str] = {}
        self.seen: list[tuple[str, bytes]] = []  # every answer, for the leak sweep
        confirm = urlsplit(link)
        page = self.get(f"{confirm.path}?{confirm.query}")
        assert page.status == 200, page
        token = re.search(rb'name="csrf_token" value="([^"]+)"', page.raw)
        assert token is not None
        form = {"t": dict(parse_qsl(confirm.query))["t"], "csrf_token": token.group(1).decode()}
        done = self.request("POST", "/login/confirm", urlencode(form).encode())
        assert done.status == 303 and "bridge_session" in self.cookies, done
        settings = self.get("/settings")
        found = re.search(rb"token=([A-Za-z0-9_.\-]+)", settings.body)
        assert settings.status == 200 and found is not None
        self.token = found.group(1).decode()
        self.seen.clear()

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        extra: dict[str, str] | None = None,
    ) -> Answer:
        headers = {"Accept-Language": "en"}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        headers.update(extra or {})
        self.conn.request(method, path, body=body, headers=headers)
        response = self.conn.getresponse()
        data = response.read()
        for header in response.headers.get_all("Set-Cookie") or []:
            name, _, value = header.split(";", 1)[0].partition("=")
            self.cookies[name.strip()] = value.strip()
        self.seen.append((path, PER_REQUEST.sub(rb'name="\1"', data)))
        return Answer(response.status, data, response.headers.get("Location", ""))

    def get(self, path: str, **query: str) -> Answer:
        return self.request("GET", path + ("?" + urlencode(query) if query else ""))

    def feed(self, path: str) -> Answer:
        return self.get(path, token=self.token)

    def form_token(self) -> str:
        found = re.search(rb'name="csrf_token" value="([^"]+)"', self.get("/settings").raw)
        assert found is not None
        return found.group(1).decode()

    def post(self, path: str, **form: str) -> Answer:
        return self.request(
            "POST", path, urlencode({"csrf_token": self.form_token(), **form}).encode()
        )

    def post_json(self, path: str, value: Any) -> Answer:
        extra = {"Content-Type": "application/json", "X-CSRF-Token": self.form_token()}
        return self.request("POST", path, json.dumps(value).encode(), extra)


@dataclass
class World:
    daemon: Bridge
    engine: Engine
    readers: dict[str, Reader]
    pk: dict[str, int]  # mail name -> message pk
    tid: dict[str, int] = field(default_factory=dict)  # mail name -> current thread id
    holder: dict[str, int] = field(default_factory=dict)  # real Message-ID -> pk holding it
    thread_ids: set[int] = field(default_factory=set)  # every current thread id
    redirects: dict[int, int] = field(default_factory=dict)  # merged thread id -> current


def delivered_pk(engine: Engine) -> int:
    with Session(engine) as session:
        newest = session.execute(select(Delivery.message_pk).order_by(Delivery.id.desc())).first()
    assert newest is not None
    return int(newest[0])


def login_link(daemon: Bridge, address: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bridge", "login-link", address, "--config", str(daemon.config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=daemon.tmp_path,
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("attacks")
    daemon = Bridge(root, extra=CONFIG)
    daemon.start()
    engine = make_engine(str(daemon.db))
    readers: dict[str, Reader] = {}
    try:
        pk: dict[str, int] = {}
        for m in MAIL:
            for envelope, with_bcc in m.copies:
                daemon.send(m.data(with_bcc), list(envelope), m.envelope_from or m.sender)
                assert pk.setdefault(m.name, delivered_pk(engine)) == delivered_pk(engine)
        procs = {address: login_link(daemon, address) for address in READERS}
        links = {address: proc.communicate(timeout=30) for address, proc in procs.items()}
        assert all(proc.returncode == 0 for proc in procs.values()), links
        for address, (out, _err) in links.items():
            readers[address] = Reader(daemon, address, out.strip())
        w = World(daemon, engine, readers, pk)
        with Session(engine) as session:
            thread_of = dict(session.execute(select(Message.id, Message.thread_id)).all())
            w.holder = dict(
                session.execute(select(MessageId.message_id, MessageId.message_pk)).all()
            )
            w.thread_ids = set(session.execute(select(Thread.id)).scalars())
            moved = session.execute(select(ThreadRedirect.old_id, ThreadRedirect.new_id)).all()
            w.redirects = {int(old): int(new) for old, new in moved}
        w.tid = {name: thread_of[p] for name, p in pk.items()}
        yield w
    finally:
        for reader in readers.values():
            reader.conn.close()
        engine.dispose()
        daemon.stop()


# --- what a reader is shown ---------------------------------------------------------------


def iso(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def thread_links(body: bytes) -> set[int]:
    return {int(x) for x in re.findall(rb'href="/t/(\d+)(?:#unread)?"', body)}


def ordered_links(body: bytes) -> list[int]:
    return list(dict.fromkeys(int(x) for x in re.findall(rb'href="/t/(\d+)(?:#unread)?"', body)))


def anchors(body: bytes) -> set[int]:
    return {int(x) for x in re.findall(rb'<article[^>]* id="m(\d+)"', body)}


def feed_pks(body: bytes) -> set[int]:
    return {int(x) for x in re.findall(rb"#m(\d+)", body)}


def feed_updated(body: bytes) -> str:
    found = re.search(rb"<updated>([^<]+)</updated>", body)  # the feed's own, before entries
    assert found is not None
    return found.group(1).decode()


def missing_answers(me: Reader) -> dict[str, Answer]:
    """Each kind of page asked for something that does not exist."""
    return {
        "page": me.get("/t/99999999"),
        "api": me.get("/api/v1/threads/99999999"),
        "feed": me.feed("/feeds/t/99999999.atom"),
        "raw": me.get("/raw/99999999"),
        "m": me.get("/m/" + quote("no-such-message@example.org", safe="@")),
        "msg_api": me.get("/api/v1/messages/no-such-message@example.org"),
        "person": me.get("/p/no.such.person@example.org"),
    }


def mine(w: World, reader: str) -> tuple[list[Mail], dict[int, list[Mail]]]:
    """The reader's messages, and by thread."""
    seen = visible(reader)
    by_thread: dict[int, list[Mail]] = {}
    for m in seen:
        by_thread.setdefault(w.tid[m.name], []).append(m)
    return seen, by_thread


def check_listing(w: World, reader: str) -> None:
    """API list, home page: exactly the reader's threads, each as their own messages make it."""
    me = w.readers[reader]
    _seen, by_thread = mine(w, reader)
    listing = me.get("/api/v1/threads", limit="100").json()
    assert {t["id"] for t in listing["threads"]} == set(by_thread), reader
    assert listing["total"] == len(by_thread)
    for t in listing["threads"]:
        own = by_thread[t["id"]]
        assert t["message_count"] == len(own), (reader, t)
        assert t["last_date"] == iso(max(m.date for m in own)), (reader, t)
        assert t["first_date"] == iso(min(m.date for m in own)), (reader, t)
        senders = {m.sender for m in own}
        assert {p["address"] for p in t["participants"]} <= senders, (reader, t)
        assert t["subject"] in {m.subject for m in own}, (reader, t)
    # Newest of the reader's own messages first: hidden replies move nothing.
    by_last = sorted(by_thread, key=lambda t: (max(m.date for m in by_thread[t]), t), reverse=True)
    assert [t["id"] for t in listing["threads"]] == by_last, reader
    home = me.get("/")
    assert home.status == 200 and ordered_links(home.body) == by_last, reader
    for after, before in (("2025-01-09T18:00:00Z", None), (None, "2025-01-08T16:00:00Z")):
        window = {k: v for k, v in (("after", after), ("before", before)) if v}
        found = me.get("/api/v1/threads", limit="100", **window).json()
        last = {t: max(m.date for m in own) for t, own in by_thread.items()}
        want = {
            t
            for t, d in last.items()
            if (after is None or iso(d) >= after) and (before is None or iso(d) < before)
        }
        assert {t["id"] for t in found["threads"]} == want, (reader, window)
    everyone = sorted({a for m in MAIL for a in (*m.named, *m.bcc, *m.holders)})
    for person in everyone:  # took part (From, To, Cc): only through the reader's messages
        found = me.get("/api/v1/threads", limit="100", participant=person).json()
        want = {t for t, own in by_thread.items() if any(person in x.named for x in own)}
        assert {t["id"] for t in found["threads"]} == want, (reader, person)


def check_threads(w: World, reader: str) -> None:
    """Every thread id there is: the reader's messages of it, or exactly a missing thread."""
    me = w.readers[reader]
    missing = missing_answers(me)
    _seen, by_thread = mine(w, reader)
    for old, new in sorted(w.redirects.items()):
        # A merged thread's old id leads to the thread it joined, for those who see it;
        # for anyone else it is missing like any other.
        page = me.get(f"/t/{old}")
        if new in by_thread:
            assert (page.status, page.location) == (308, f"/t/{new}"), (reader, old)
        else:
            assert (page.status, page.body) == (404, missing["page"].body), (reader, old, page)
        for kind, path in (("api", f"/api/v1/threads/{old}"), ("feed", f"/feeds/t/{old}.atom")):
            answer = me.feed(path) if kind == "feed" else me.get(path)
            if new not in by_thread:
                assert (answer.status, answer.body) == (404, missing[kind].body), (reader, path)
    for tid in sorted(w.thread_ids | {max(w.thread_ids) + 1}):
        page = me.get(f"/t/{tid}")
        flat = me.get(f"/t/{tid}", view="flat")
        api = me.get(f"/api/v1/threads/{tid}")
        feed = me.feed(f"/feeds/t/{tid}.atom")
        own = by_thread.get(tid)
        if own is None:
            assert page.status == 404 and page.body == missing["page"].body, (reader, tid, page)
            assert flat.status == 404 and flat.body == missing["page"].body, (reader, tid)
            assert (api.status, api.body) == (404, missing["api"].body), (reader, tid)
            assert (feed.status, feed.body) == (404, missing["feed"].body), (reader, tid)
            continue
        pks = {w.pk[m.name] for m in own}
        assert page.status == 200 and anchors(page.body) == pks, (reader, tid)
        assert flat.status == 200 and anchors(flat.body) == pks, (reader, tid)
        detail = api.json()
        assert {x["id"] for x in detail["messages"]} == pks, (reader, tid)
        assert detail["message_count"] == len(own)
        assert detail["last_date"] == iso(max(m.date for m in own))
        assert detail["first_date"] == iso(min(m.date for m in own))
        named = {a for m in own for a in m.named}
        assert {p["address"] for p in detail["participants"]} <= named, (reader, tid)
        for x in detail["messages"]:
            assert x["parent_id"] is None or x["parent_id"] in pks, (reader, tid, x)
        assert feed.status == 200 and feed_pks(feed.body) == pks, (reader, tid)
        assert feed_updated(feed.body) == iso(max(m.date for m in own)), (reader, tid)


def check_messages(w: World, reader: str) -> None:
    """/raw/<pk> of every message; /m/<id> and the message API of every Message-ID."""
    me = w.readers[reader]
    missing = missing_answers(me)
    for m in MAIL:
        raw = me.get(f"/raw/{w.pk[m.name]}")
        if sees(reader, m):
            assert raw.status == 200 and raw.raw == m.copy_for(reader), (reader, m.name)
        else:
            assert (raw.status, raw.body) == (404, missing["raw"].body), (reader, m.name)
    by_pk = {w.pk[m.name]: m for m in MAIL}
    for message_id in sorted({m.message_id for m in MAIL}):
        holder = by_pk[w.holder[message_id]]
        link = me.get("/m/" + quote(message_id, safe="@"))
        api = me.get("/api/v1/messages/" + quote(message_id, safe="@"))
        if sees(reader, holder):
            want = f"/t/{w.tid[holder.name]}#m{w.pk[holder.name]}"
            assert (link.status, link.location) == (303, want), (reader, message_id)
            assert api.json()["id"] == w.pk[holder.name]
        else:
            assert (link.status, link.body) == (404, missing["m"].body), (reader, message_id)
            assert (api.status, api.body) == (404, missing["msg_api"].body), (reader, message_id)


def search_threads(w: World, me: Reader, query: str) -> tuple[set[int], int, set[int]]:
    """(threads in the API's results, its total, threads of the search page's results)."""
    api = me.get("/api/v1/search", q=query).json()
    page = me.get("/search", q=query)
    assert page.status == 200
    tid_of = {w.pk[m.name]: w.tid[m.name] for m in MAIL}
    linked = {
        tid_of[w.holder[unquote(x.decode())]] for x in re.findall(rb'href="/m/([^"]+)"', page.body)
    }
    return {r["thread_id"] for r in api["results"]}, api["total_threads"], linked


def check_search(w: World, reader: str) -> None:
    me = w.readers[reader]
    seen, by_thread = mine(w, reader)
    for m in MAIL:
        want = {w.tid[m.name]} if sees(reader, m) else set()
        found, total, linked = search_threads(w, me, m.marker)
        assert (found, total, linked) == (want, len(want), want), (reader, m.name)
    everything, total, _ = search_threads(w, me, "after:2000-01-01")
    assert (everything, total) == (set(by_thread), len(by_thread)), reader
    fields = {"from": lambda x: {x.sender}, "to": lambda x: set(x.to), "cc": lambda x: set(x.cc)}
    for person in READERS:
        for op, field_of in fields.items():
            want = {w.tid[x.name] for x in seen if person in field_of(x)}
            found, total, _ = search_threads(w, me, f"{op}:{person}")
            assert (found, total) == (want, len(want)), (reader, op, person)


def check_people(w: World, reader: str) -> None:
    """/p/<address>: the reader's threads that the person took part in through the reader's
    messages (From, To, Cc); someone met only in hidden mail is missing."""
    me = w.readers[reader]
    missing = missing_answers(me)
    seen, _ = mine(w, reader)
    everyone = sorted({a for m in MAIL for a in (*m.named, *m.bcc, *m.holders)})
    for person in everyone:
        want = {w.tid[m.name] for m in seen if person in m.named}
        page = me.get("/p/" + quote(person, safe="@"))
        if want:
            assert page.status == 200 and thread_links(page.body) == want, (reader, person)
        else:
            assert (page.status, page.body) == (404, missing["person"].body), (reader, person)


def check_space(w: World, reader: str) -> None:
    me = w.readers[reader]
    seen, _ = mine(w, reader)
    in_hr = {w.tid[m.name] for m in seen if m.space == "hr"}
    page = me.get("/s/hr")
    assert page.status == 200 and thread_links(page.body) == in_hr, reader
    feed = me.feed("/feeds/s/hr.atom")
    held = {w.pk[m.name] for m in seen if w.tid[m.name] in in_hr}
    assert feed.status == 200 and feed_pks(feed.body) == held, reader
    for sender in sorted({m.sender for m in MAIL}):  # the space's "from" filter
        want = {t for t in in_hr if any(w.tid[m.name] == t and m.sender == sender for m in seen)}
        page = me.get("/s/hr", **{"from": sender})
        assert page.status == 200 and thread_links(page.body) == want, (reader, sender)
    last = {t: max(m.date for m in seen if w.tid[m.name] == t) for t in in_hr}
    for day in ("2025-01-13", "2025-01-14"):
        want = {t for t, d in last.items() if d.date().isoformat() >= day}
        page = me.get("/s/hr", after=day)
        assert page.status == 200 and thread_links(page.body) == want, (reader, day)


@cache
def stamps(value: datetime) -> tuple[str, ...]:
    """The ways a page or the API may write this date (to the minute)."""
    forms = [value.strftime("%Y-%m-%dT%H:%M")]
    for form in ("short", "medium", "long"):
        forms.append(format_datetime(value, "en", ZoneInfo("UTC"), form))
    return tuple(forms)


def secrets(reader: str) -> set[str]:
    """What only mail hidden from the reader holds (words, subjects, dates, ids, people),
    and who was sent a copy or a Bcc of any mail, unless the reader's own mail says it."""
    seen = visible(reader)
    known = b"".join(m.copy_for(reader) for m in seen).decode()
    known += " ".join(s for m in seen for s in stamps(m.date))
    # Who else got a copy, or a Bcc, is the reader's to know only through their own copy.
    found: set[str] = {a for m in MAIL for a in (*m.bcc, *m.holders)}
    for m in MAIL:
        if m in seen:
            continue
        found.add(m.marker)
        found.update(stamps(m.date))
        found.add(m.subject.removeprefix("Re: "))
        found.add(m.message_id)
        found.update((*m.named, *m.bcc, *m.holders))
    hidden = {s for s in found if s not in known and s != reader}
    return hidden | {quote(s) for s in hidden if "@" in s}  # as in /p/ links


def sweep(w: World, reader: str) -> None:
    """Nothing the reader was answered holds anything only hidden mail holds."""
    me = w.readers[reader]
    hidden = secrets(reader)
    for path, body in me.seen:
        text = body.decode("utf-8", "replace")
        # Pages repeat what was asked (the search box, the API's "query"): not a leak.
        asked = [v for _k, v in parse_qsl(urlsplit(path).query)]
        for echo in sorted(asked, key=len, reverse=True):
            forms = (f'value="{escape(echo)}"', f"<title>{escape(echo)} ", json.dumps(echo))
            for form in forms:
                text = text.replace(form, "")
        leaked = sorted(s for s in hidden if s in text)
        assert not leaked, (reader, path, leaked)


def check_everything(w: World, reader: str) -> None:
    w.readers[reader].seen.clear()
    check_listing(w, reader)
    check_threads(w, reader)
    check_messages(w, reader)
    check_search(w, reader)
    check_people(w, reader)
    check_space(w, reader)
    sweep(w, reader)


# --- the tests -------------------------------------------------------------------------


@pytest.mark.parametrize("reader", READERS)
def test_every_route_shows_each_reader_exactly_their_messages(world: World, reader: str) -> None:
    check_everything(world, reader)


# --- the attacks, one by one -----------------------------------------------------------------


def thread_of(w: World, reader: str, name: str) -> dict[str, Any]:
    """The API's thread of mail `name`, as `reader` sees it."""
    detail: dict[str, Any] = w.readers[reader].get(f"/api/v1/threads/{w.tid[name]}").json()
    return detail


def api_message(w: World, reader: str, name: str) -> dict[str, Any]:
    found = [m for m in thread_of(w, reader, name)["messages"] if m["id"] == w.pk[name]]
    assert len(found) == 1, (reader, name)
    return found[0]


def shown(w: World, reader: str, *names: str) -> None:
    """The reader sees these messages: thread page, /raw, search by their word."""
    me = w.readers[reader]
    for name in names:
        m, pk, tid = BY_NAME[name], w.pk[name], w.tid[name]
        page = me.get(f"/t/{tid}")
        assert page.status == 200 and pk in anchors(page.body), (reader, name)
        assert m.marker.encode() in page.body, (reader, name)
        raw = me.get(f"/raw/{pk}")
        assert raw.status == 200 and m.marker.encode() in raw.raw, (reader, name)
        assert search_threads(w, me, m.marker) == ({tid}, 1, {tid}), (reader, name)


def hidden(w: World, reader: str, *names: str) -> None:
    """The reader sees nothing of these messages, wherever they look."""
    me = w.readers[reader]
    missing = missing_answers(me)
    for name in names:
        m, pk, tid = BY_NAME[name], w.pk[name], w.tid[name]
        page = me.get(f"/t/{tid}")
        if page.status == 200:  # the reader sees other messages of the thread
            assert pk not in anchors(page.body) and m.marker.encode() not in page.body
        else:
            assert (page.status, page.body) == (404, missing["page"].body), (reader, name)
        api = me.get(f"/api/v1/threads/{tid}")
        assert api.status == 404 or pk not in {x["id"] for x in api.json()["messages"]}
        raw = me.get(f"/raw/{pk}")
        assert (raw.status, raw.body) == (404, missing["raw"].body), (reader, name)
        assert search_threads(w, me, m.marker) == (set(), 0, set()), (reader, name)
        if w.holder[m.message_id] == pk:
            link = me.get("/m/" + quote(m.message_id, safe="@"))
            assert (link.status, link.body) == (404, missing["m"].body), (reader, name)


def listed(w: World, reader: str) -> dict[int, dict[str, Any]]:
    threads = w.readers[reader].get("/api/v1/threads", limit="100").json()["threads"]
    return {t["id"]: t for t in threads}


def test_1_salary_chloe_sees_only_the_mail_she_was_copied_on(world: World) -> None:
    w = world
    shown(w, BOB, "S1", "S2", "S3", "S4")
    shown(w, ALICE, "S1", "S2", "S3", "S4")
    shown(w, CHLOE, "S3")
    hidden(w, CHLOE, "S1", "S2", "S4")
    row = listed(w, CHLOE)[w.tid["S3"]]
    assert row["subject"] == "Offsite agenda" and row["message_count"] == 1
    assert [p["address"] for p in row["participants"]] == [BOB]
    detail = thread_of(w, CHLOE, "S3")
    assert [m["id"] for m in detail["messages"]] == [w.pk["S3"]]
    assert detail["messages"][0]["parent_id"] is None  # S2, its parent, is not hers
    assert {p["address"] for p in detail["participants"]} == {ALICE, BOB, CHLOE}
    me = w.readers[CHLOE]
    for query in ("salary", "subject:salary", "from:alice@example.com", "Dana", "raise"):
        assert search_threads(w, me, query) == (set(), 0, set()), query
    # The legitimate readers find what chloe does not.
    assert search_threads(w, w.readers[BOB], "salary")[0] == {w.tid["S1"]}
    assert me.get("/p/" + quote(DANA, safe="@")).status == 404  # met only in S4


def test_7_hidden_reply_times_move_nothing_chloe_sees(world: World) -> None:
    w = world
    mine_s3, tid = BY_NAME["S3"].date, w.tid["S3"]
    row = listed(w, CHLOE)[tid]
    assert row["first_date"] == row["last_date"] == iso(mine_s3)
    assert listed(w, BOB)[tid]["last_date"] == iso(BY_NAME["S4"].date)  # the data is there
    me = w.readers[CHLOE]
    # C1 (8 Jan 20:04) is newer than S3 (8 Jan 15:05), older than S4 (9 Jan 17:52).
    order = [t["id"] for t in me.get("/api/v1/threads").json()["threads"]]
    assert order.index(w.tid["C1"]) == order.index(tid) - 1
    assert ordered_links(me.get("/").body) == order
    # Active after S3, or after the 9th: not the salary thread, for her.
    late = me.get("/api/v1/threads", after="2025-01-08T15:06:00Z", limit="100").json()
    assert tid not in {t["id"] for t in late["threads"]}
    assert tid not in search_threads(w, me, "after:2025-01-09")[0]
    feed = me.feed(f"/feeds/t/{tid}.atom")
    assert feed_updated(feed.body) == iso(mine_s3) and feed_pks(feed.body) == {w.pk["S3"]}
    for page in (me.get("/"), me.get(f"/t/{tid}"), me.get("/p/" + quote(BOB, safe="@")), feed):
        for name in ("S1", "S2", "S4"):
            assert not any(s.encode() in page.body for s in stamps(BY_NAME[name].date)), name


def test_2_forged_from_and_references_show_mallory_only_her_forgery(world: World) -> None:
    w = world
    assert w.tid["M2"] == w.tid["S1"]  # the References put it in the real thread...
    shown(w, MALLORY, "M2")
    hidden(w, MALLORY, "S1", "S2", "S3", "S4", "C1")  # ...which stays closed to her
    detail = thread_of(w, MALLORY, "M2")
    own = {w.pk[n] for n in ("M2", "M3a", "M3b")}
    assert {m["id"] for m in detail["messages"]} == own
    assert detail["message_count"] == 3 and detail["subject"] == "HR memo"  # hers (M3b)
    assert {p["address"] for p in detail["participants"]} == {ALICE, MALLORY}
    assert api_message(w, MALLORY, "M2")["parent_id"] in own | {None}
    # The forged From names alice, so she sees it; bob, the real thread's other party, does not.
    shown(w, ALICE, "M2")
    hidden(w, BOB, "M2")


def test_3_ghost_ids_open_nothing(world: World) -> None:
    w = world
    # M3a names ghost-1 (known only from the References of S1..S4); M3b takes ghost-1 as
    # its own id and so becomes the parent of S1: both sit in the salary thread.
    assert w.tid["M3a"] == w.tid["M3b"] == w.tid["S1"]
    assert w.holder["ghost-1@example.com"] == w.pk["M3b"]
    shown(w, MALLORY, "M3a", "M3b")
    hidden(w, MALLORY, "S1", "S2", "S3", "S4")
    row = listed(w, MALLORY)[w.tid["S1"]]
    assert row["last_date"] == iso(BY_NAME["M3a"].date)  # hers, not S4's or anyone's
    assert row["message_count"] == 3
    # bob's thread has not changed title or shape for a root he cannot see.
    bob = thread_of(w, BOB, "S1")
    assert bob["subject"] == SALARY and api_message(w, BOB, "S1")["parent_id"] is None
    hidden(w, BOB, "M3a", "M3b")


def test_4_collision_after_the_genuine_mail(world: World) -> None:
    w = world
    assert w.holder["budget-4@example.com"] == w.pk["G4"]  # the genuine one keeps the id
    assert w.tid["M4"] != w.tid["G4"]  # the forgery is stored apart
    shown(w, MALLORY, "M4")
    hidden(w, MALLORY, "G4", "R4")
    forged = api_message(w, MALLORY, "M4")
    assert forged["message_id"] != "budget-4@example.com" and "AXOLOTL" in forged["new_text"]
    for reader in (ALICE, BOB):
        shown(w, reader, "G4", "R4")
        genuine = api_message(w, reader, "G4")
        assert "CAPYBARA" in genuine["new_text"] and genuine["message_id"] == "budget-4@example.com"
        assert [p["address"] for p in genuine["to"]] == [BOB]
        assert genuine["cc"] == genuine["bcc"] == []
        assert MALLORY not in {p["address"] for p in thread_of(w, reader, "G4")["participants"]}
        link = w.readers[reader].get("/m/budget-4@example.com")
        assert link.location == f"/t/{w.tid['G4']}#m{w.pk['G4']}"
    raw = w.readers[BOB].get(f"/raw/{w.pk['G4']}")
    assert raw.raw == BY_NAME["G4"].data(False) and b"mallory" not in raw.raw
    hidden(w, BOB, "M4")
    assert w.readers[BOB].get("/p/" + quote(MALLORY, safe="@")).status == 404
    # A reply naming the id threads with the genuine mail.
    assert w.tid["R4"] == w.tid["G4"]
    assert api_message(w, BOB, "R4")["parent_id"] == w.pk["G4"]


def test_4b_backdated_collision_shows_mallory_only_her_copy(world: World) -> None:
    w = world
    shown(w, MALLORY, "M4b")
    hidden(w, MALLORY, "G4b", "R4b")
    assert listed(w, MALLORY)[w.tid["M4b"]]["message_count"] == 1
    for reader in (ALICE, BOB):
        shown(w, reader, "G4b", "R4b")
        genuine = api_message(w, reader, "G4b")
        assert "TAPIR" in genuine["new_text"] and [p["address"] for p in genuine["to"]] == [BOB]
        assert genuine["cc"] == genuine["bcc"] == []
    # alice sees the forgery (its From names her); bob does not, nor mallory among his parties.
    shown(w, ALICE, "M4b")
    hidden(w, BOB, "M4b")
    assert MALLORY not in {p["address"] for p in thread_of(w, BOB, "G4b")["participants"]}


def test_4b_backdated_collision_leaves_the_genuine_mail_its_id_and_its_replies(
    world: World,
) -> None:
    w = world
    assert w.holder["contract-4@example.com"] == w.pk["G4b"]
    assert api_message(w, BOB, "R4b")["parent_id"] == w.pk["G4b"]
    assert not thread_of(w, BOB, "G4b")["private"]


def test_4c_backdated_collision_cannot_hide_space_mail(tmp_path: Path) -> None:
    """A daemon of its own: here the attack changes what others see, and the shared one
    must keep the rule's answers."""
    daemon = Bridge(tmp_path, extra=CONFIG)
    daemon.start()
    readers: list[Reader] = []
    try:
        genuine = mail("H2", "handbook-2@example.com", FRANK, (ALICE,), at(14, 9, 0),
                       "Handbook chapter two", "OKAPI", (ALICE,), space="hr")  # fmt: skip
        daemon.send(genuine.data(False), [ALICE], FRANK)
        procs = {a: login_link(daemon, a) for a in (ALICE, ERIN)}
        links = {a: proc.communicate(timeout=30)[0] for a, proc in procs.items()}
        alice, erin = (Reader(daemon, a, links[a].strip()) for a in (ALICE, ERIN))
        readers += [alice, erin]
        assert erin.get("/api/v1/search", q="OKAPI").json()["total_threads"] == 1
        forged = mail("X2", "handbook-2@example.com", MALLORY, (MALLORY,), at(1, 0, 0),
                      "Anything", "YAK", (MALLORY,))  # fmt: skip
        daemon.send(forged.data(False), [MALLORY], MALLORY)
        assert erin.get("/api/v1/search", q="OKAPI").json()["total_threads"] == 1
        assert erin.get("/api/v1/threads", space="hr").json()["total"] == 1
        assert alice.get("/m/handbook-2@example.com").status == 303
    finally:
        for reader in readers:
            reader.conn.close()
        daemon.stop()


def test_5_collision_before_the_genuine_mail(world: World) -> None:
    w = world
    # The genuine text is stored, shown and searchable for bob (and alice)...
    for reader in (ALICE, BOB):
        shown(w, reader, "G5", "R5")
        genuine = api_message(w, reader, "G5")
        assert "MEERKAT" in genuine["new_text"] and [p["address"] for p in genuine["to"]] == [BOB]
        assert MALLORY not in {p["address"] for p in thread_of(w, reader, "G5")["participants"]}
        found = search_threads(w, w.readers[reader], "subject:plan")[0]
        assert found == {w.tid["G5"], w.tid["R5"]}
    raw = w.readers[BOB].get(f"/raw/{w.pk['G5']}")
    assert raw.raw == BY_NAME["G5"].data(False)
    # ...and mallory, who sent her copy first, sees none of it.
    shown(w, MALLORY, "M5")
    hidden(w, MALLORY, "G5", "R5")
    assert search_threads(w, w.readers[MALLORY], "subject:plan")[0] == {w.tid["M5"]}
    hidden(w, BOB, "M5")


PRE_EMPTED = pytest.mark.xfail(
    strict=True,
    reason="known limit: a copy stored first keeps its Message-ID, so replies naming it "
    "thread with a forgery sent before the genuine mail (the id guessed in advance)",
)


@PRE_EMPTED
def test_5_replies_to_a_pre_empted_id_thread_with_the_genuine_mail(world: World) -> None:
    w = world
    assert w.tid["R5"] == w.tid["G5"]
    assert api_message(w, BOB, "R5")["parent_id"] == w.pk["G5"]
    link = w.readers[BOB].get("/m/plan-5@example.com")
    assert link.location == f"/t/{w.tid['G5']}#m{w.pk['G5']}"


@PRE_EMPTED
def test_5c_collision_before_the_genuine_mail_dated_later(world: World) -> None:
    w = world
    assert w.holder["memo-5@example.com"] == w.pk["G5c"]
    for reader in (ALICE, BOB):
        shown(w, reader, "G5c", "R5c")
        link = w.readers[reader].get("/m/memo-5@example.com")
        assert link.location == f"/t/{w.tid['G5c']}#m{w.pk['G5c']}"
    assert w.tid["R5c"] == w.tid["G5c"]
    assert api_message(w, BOB, "R5c")["parent_id"] == w.pk["G5c"]
    assert not thread_of(w, BOB, "G5c")["private"]
    shown(w, MALLORY, "M5c")
    hidden(w, MALLORY, "G5c", "R5c")
    assert listed(w, MALLORY)[w.tid["M5c"]]["message_count"] == 1


@pytest.mark.parametrize("name", ["B6", "B6b"])
def test_6_bcc_is_shown_to_its_sender_and_its_recipient_only(world: World, name: str) -> None:
    w = world
    m, pk = BY_NAME[name], w.pk[name]
    for reader in (ALICE, BOB, DAVE):
        shown(w, reader, name)
    # bob: no trace of dave, in any page, API answer or the bytes of his copy.
    bob = w.readers[BOB]
    bob.seen.clear()
    message = api_message(w, BOB, name)
    assert message["bcc"] == [] and [p["address"] for p in message["to"]] == [BOB]
    assert DAVE not in {p["address"] for p in thread_of(w, BOB, name)["participants"]}
    raw = bob.get(f"/raw/{pk}")
    assert raw.raw == m.data(False) and b"Bcc" not in raw.raw
    for page in (f"/t/{w.tid[name]}", f"/t/{w.tid[name]}?view=flat", "/", "/api/v1/threads"):
        bob.get(page)
    bob.feed(f"/feeds/t/{w.tid[name]}.atom")
    for query in (f"to:{DAVE}", f"cc:{DAVE}", "dave"):
        assert search_threads(w, bob, query) == (set(), 0, set()), query
    assert bob.get("/p/" + quote(DAVE, safe="@")).status == 404
    for path, body in bob.seen:
        if "dave" not in path:
            assert b"dave" not in body.lower(), path
    # dave holds a copy: he reads it, and may see himself among its Bcc, nobody else.
    assert {p["address"] for p in api_message(w, DAVE, name)["bcc"]} <= {DAVE}
    assert w.readers[DAVE].get(f"/raw/{pk}").raw == m.data(False)
    # alice, who sent it, gets her own copy with its Bcc line.
    own = w.readers[ALICE].get(f"/raw/{pk}").raw
    assert own == m.data(True) and b"Bcc: dave@example.com" in own


@pytest.mark.parametrize("name", ["B6", "B6b"])
def test_6_bcc_in_the_senders_copy_is_listed_for_her(world: World, name: str) -> None:
    w = world
    assert [p["address"] for p in api_message(w, ALICE, name)["bcc"]] == [DAVE]
    assert [p["address"] for p in api_message(w, DAVE, name)["bcc"]] == [DAVE]
    page = w.readers[ALICE].get(f"/t/{w.tid[name]}")
    assert DAVE.encode() in page.body


def test_private_rule_hides_payroll_mail_from_the_spaces_readers(world: World) -> None:
    w = world
    for reader in (ALICE, BOB):
        shown(w, reader, "P1", "P2", "P3", "H1")
    shown(w, CHLOE, "P3", "H1")
    hidden(w, CHLOE, "P1", "P2")
    for reader in (DAVE, ERIN, MALLORY):  # staff: they read "hr", but payroll is private
        shown(w, reader, "H1")
        hidden(w, reader, "P1", "P2", "P3")
        me = w.readers[reader]
        assert thread_links(me.get("/s/hr").body) == {w.tid["H1"]}
        assert feed_pks(me.feed("/feeds/s/hr.atom").body) == {w.pk["H1"]}
        assert search_threads(w, me, "payroll") == (set(), 0, set())
    chloe = listed(w, CHLOE)[w.tid["P3"]]
    assert chloe["message_count"] == 1 and chloe["first_date"] == iso(BY_NAME["P3"].date)


def test_8_references_gluing_threads_open_neither(world: World) -> None:
    w = world
    # M8 names lunch-1 (chloe's) and budget-4-re (alice's and bob's): the threads join...
    assert w.tid["M8"] == w.tid["C1"] == w.tid["R4"]
    assert set(w.redirects.values()) == {w.tid["C1"]}
    shown(w, MALLORY, "M8")
    hidden(w, MALLORY, "C1", "G4", "R4")
    shown(w, CHLOE, "C1")
    hidden(w, CHLOE, "G4", "R4", "M8")
    # ...and the old id of the one merged away is missing to those who see none of it.
    for old in w.redirects:
        for reader in (DAVE, DANA, ERIN):
            me = w.readers[reader]
            page = me.get(f"/t/{old}")
            assert (page.status, page.body) == (404, missing_answers(me)["page"].body), reader
        assert w.readers[BOB].get(f"/t/{old}").status == 308


MARK_RULES = """
[[rules]]
name = "agenda"
tags = ["agenda-tag"]
[rules.match]
subject = "agenda"

[[rules]]
name = "bonus"
tags = ["secret-tag"]
[rules.match]
subject = "bonus"
"""


def test_9_marks_and_tags_reveal_no_hidden_reply(tmp_path: Path) -> None:
    """A daemon of its own: marks are state, and the shared world must keep its answers."""
    daemon = Bridge(tmp_path, extra=CONFIG + MARK_RULES)
    daemon.start()
    readers: list[Reader] = []
    try:
        opening = mail(
            "A1",
            "agenda-1@example.com",
            ALICE,
            (BOB,),
            at(20, 9, 0),
            "Offsite agenda",
            "AARDVARK",
            (BOB, CHLOE),
            cc=(CHLOE,),
        )
        hush = mail("A2", "agenda-2@example.com", BOB, (ALICE,), at(20, 10, 0),
                    "Re: Offsite agenda (bonus)", "BONOBO", (ALICE,),
                    refs=("agenda-1@example.com",))  # fmt: skip
        for m in (opening, hush):
            daemon.send(m.data(False), list(m.copies[0][0]), m.sender)
        procs = {a: login_link(daemon, a) for a in (ALICE, CHLOE, MALLORY)}
        links = {a: proc.communicate(timeout=30)[0] for a, proc in procs.items()}
        alice, chloe, mallory = (
            Reader(daemon, a, links[a].strip()) for a in (ALICE, CHLOE, MALLORY)
        )
        readers += [alice, chloe, mallory]
        (row,) = chloe.get("/api/v1/threads").json()["threads"]
        tid = row["id"]
        # Hers: the opening only (alice wrote it), with its tag; never the reply's.
        assert (row["unread"], row["tags"], row["message_count"]) == (1, ["agenda-tag"], 1)
        theirs = {t["id"]: t for t in alice.get("/api/v1/threads").json()["threads"]}[tid]
        assert theirs["unread"] == 1 and theirs["tags"] == ["agenda-tag", "secret-tag"]
        for page in (chloe.get("/"), chloe.get(f"/t/{tid}"), chloe.get("/search", q="agenda")):
            assert b"secret-tag" not in page.body and b"BONOBO" not in page.body
        assert chloe.get("/api/v1/search", q="tag:secret-tag").json()["total_threads"] == 0
        assert alice.get("/api/v1/search", q="tag:secret-tag").json()["total_threads"] == 1
        # Opened: read. A later reply she was not sent moves nothing of hers.
        assert chloe.get("/api/v1/threads").json()["threads"][0]["unread"] == 0
        later = mail("A3", "agenda-3@example.com", ALICE, (BOB,), at(20, 11, 0),
                     "Re: Offsite agenda (bonus)", "BUDGERIGAR", (BOB,),
                     refs=("agenda-1@example.com", "agenda-2@example.com"))  # fmt: skip
        daemon.send(later.data(False), [BOB], ALICE)
        assert chloe.get("/api/v1/threads").json()["threads"][0]["unread"] == 0
        page = chloe.get(f"/t/{tid}")
        assert b'id="unread"' not in page.body and b"BUDGERIGAR" not in page.body
        assert alice.get("/api/v1/threads").json()["threads"][0]["unread"] == 1
        # Mallory: following, muting or reading it is a missing thread, to the byte.
        for path, value in ((f"/t/{tid}/watch", "follow"), (f"/t/{tid}/watch", "mute")):
            hidden_answer = mallory.post(path, watch=value)
            missing = mallory.post("/t/99999999/watch", watch=value)
            assert hidden_answer.status == missing.status == 404
            assert hidden_answer.body == missing.body
        for template, value in (("/api/v1/threads/{}/watch", {"watch": "follow"}),
                                ("/api/v1/threads/{}/read", {})):  # fmt: skip
            hidden_answer = mallory.post_json(template.format(tid), value)
            missing = mallory.post_json(template.format(99999999), value)
            assert hidden_answer.status == missing.status == 404
            assert hidden_answer.body == missing.body
        assert mallory.get("/api/v1/threads", muted="true").json()["threads"] == []
        assert mallory.get("/api/v1/threads").json()["threads"] == []
        # Chloe's own marks work on what she sees, through the forms.
        assert chloe.post(f"/t/{tid}/watch", watch="follow").status == 303
        assert chloe.get("/api/v1/threads").json()["threads"][0]["watch"] == "follow"
        assert alice.get("/api/v1/threads").json()["threads"][0]["watch"] == "none"
        assert chloe.post(f"/t/{tid}/watch", watch="mute").status == 303
        assert chloe.get("/api/v1/threads").json()["threads"] == []
        assert tid not in thread_links(chloe.get("/").body)
        assert tid in thread_links(chloe.get("/", muted="1").body)
        assert tid in thread_links(alice.get("/").body)
    finally:
        for reader in readers:
            reader.conn.close()
        daemon.stop()


def test_10_replies_open_nothing_and_reach_only_the_parents_people(tmp_path: Path) -> None:
    """A daemon of its own (replies add mail). mallory cannot answer, through the page,
    the form or the API, a message she cannot see: every way answers as for a message
    that does not exist, and nothing is stored or queued. chloe, Cc'd on S3 only,
    answers it: the reply goes to S3's people and no one else, and mallory cannot see
    it. The sender of a Bcc'd message answers it: the Bcc recipient is not on it."""
    identity = '[bridge]\nmessage_id_domain = "bridge.example.com"\n'
    daemon = Bridge(tmp_path, extra=CONFIG.replace("[bridge]\n", identity))
    daemon.start()
    engine = make_engine(str(daemon.db))
    readers: list[Reader] = []
    try:
        by_name = {m.name: m for m in MAIL}
        for name in ("S1", "S2", "S3"):
            m = by_name[name]
            for envelope, with_bcc in m.copies:
                daemon.send(m.data(with_bcc), list(envelope), m.envelope_from or m.sender)
        bcc = mail("B1", "budget-1@example.com", ERIN, (BOB,), at(10, 9, 0), "Budget",
                   "TAPIR", (BOB,), bcc=(DAVE,))  # fmt: skip
        bcc = Mail(
            **{**bcc.__dict__, "copies": (((ERIN,), True), ((BOB,), False), ((DAVE,), False))}
        )
        for envelope, with_bcc in bcc.copies:
            daemon.send(bcc.data(with_bcc), list(envelope), ERIN)
        procs = {a: login_link(daemon, a) for a in (MALLORY, CHLOE, ERIN)}
        links = {a: proc.communicate(timeout=30)[0].strip() for a, proc in procs.items()}
        mallory, chloe, erin = (Reader(daemon, a, links[a]) for a in (MALLORY, CHLOE, ERIN))
        readers += [mallory, chloe, erin]

        def pk_of(message_id: str) -> tuple[int, int]:
            with Session(engine) as session:
                row = session.execute(
                    select(Message.id, Message.thread_id).where(Message.message_id == message_id)
                ).one()
            return int(row.id), int(row.thread_id)

        def queued() -> list[tuple[list[str], bytes]]:
            from bridge.store.tables import Outbox

            with Session(engine) as session:
                rows = session.execute(select(Outbox.recipients, Outbox.data)).all()
            return [(r.recipients.split("\n"), r.data) for r in rows]

        s1, thread = pk_of("salary-1@example.com")
        hidden = mallory.get(f"/t/{thread}/reply", message=str(s1))
        missing = mallory.get(f"/t/{thread}/reply", message="999999")
        assert hidden.status == missing.status == 404
        asked = f"message={s1}".encode()
        assert hidden.body.replace(asked, b"message=N") == (
            missing.body.replace(b"message=999999", b"message=N")
        )
        token = re.search(rb'name="csrf_token" value="([^"]+)"', mallory.get("/settings").raw)
        assert token is not None
        form = {"csrf_token": token.group(1).decode(), "message": str(s1), "body": "Let me in"}
        posted = mallory.request("POST", f"/t/{thread}/reply", urlencode(form).encode())
        assert posted.status == 404
        mallory.conn.request(
            "POST",
            "/api/v1/messages",
            body=json.dumps({"in_reply_to": "<salary-1@example.com>", "body": "x"}).encode(),
            headers={
                "Cookie": "; ".join(f"{k}={v}" for k, v in mallory.cookies.items()),
                "Content-Type": "application/json",
                "X-CSRF-Token": token.group(1).decode(),
            },
        )
        api = mallory.conn.getresponse()
        api_body = api.read()
        assert api.status == 404, api_body
        assert queued() == []

        # chloe answers S3 (she was Cc'd): the reply goes to bob and alice, no one else.
        s3, thread3 = pk_of("salary-3@example.com")
        token = re.search(rb'name="csrf_token" value="([^"]+)"', chloe.get("/settings").raw)
        assert token is not None
        form = {"csrf_token": token.group(1).decode(), "message": str(s3), "body": "QUOKKA"}
        posted = chloe.request("POST", f"/t/{thread3}/reply", urlencode(form).encode())
        assert posted.status == 303, posted
        [(recipients, data)] = queued()
        assert sorted(recipients) == sorted([ALICE, BOB])
        assert b"ZEBRAFINCH" not in data and b"PANGOLIN" not in data, "only S3 is quoted"
        assert mallory.get("/api/v1/search", q="QUOKKA").json()["total_threads"] == 0
        assert chloe.get("/api/v1/search", q="QUOKKA").json()["total_threads"] == 1

        # erin Bcc'd dave on B1; her reply-all to it does not name dave.
        b1, thread_b = pk_of("budget-1@example.com")
        token = re.search(rb'name="csrf_token" value="([^"]+)"', erin.get("/settings").raw)
        assert token is not None
        page = erin.get(f"/t/{thread_b}/reply", message=str(b1))
        assert page.status == 200 and DAVE.encode() not in page.body
        form = {"csrf_token": token.group(1).decode(), "message": str(b1), "body": "WOMBAT"}
        assert erin.request("POST", f"/t/{thread_b}/reply", urlencode(form).encode()).status == 303
        recipients_b = [r for r, d in queued() if b"WOMBAT" in d]
        assert recipients_b == [[BOB]]
    finally:
        for reader in readers:
            reader.conn.close()
        daemon.stop()


def test_11_a_forged_reply_to_someone_elses_digest_address_is_refused(world: World) -> None:
    w = world
    with Session(w.engine) as session:
        key = session.execute(
            select(Secret.value).where(Secret.name == SIGNING_SECRET)
        ).scalar_one()
        before = (
            session.execute(select(func.count()).select_from(Message)).scalar_one(),
            session.execute(select(func.count()).select_from(Delivery)).scalar_one(),
        )
    signer = Signer(key)
    expires = datetime.now(UTC).date() + timedelta(days=30)
    token = make_token(lambda d: signer.mac(DIGEST_REPLY, d), w.pk["S4"], BOB, expires)
    bobs = reply_address("bridge@example.com", token)
    assert bobs is not None
    local, _, domain = bobs.partition("@")
    guessed = f"{local[:-4]}{'aaaa' if local[-4:] != 'aaaa' else 'bbbb'}@{domain}"

    def forged(sender: str) -> bytes:
        return (
            f"From: {sender}\r\nTo: {bobs}\r\nSubject: Re: {SALARY}\r\n"
            "Message-ID: <forged-reply@example.com>\r\n\r\nPay mallory instead. WALRUS\r\n"
        ).encode()

    def dialogue(envelope: str, header: str, to: str) -> tuple[int, bytes]:
        with smtplib.SMTP("127.0.0.1", w.daemon.smtp_port, timeout=10) as client:
            client.ehlo()
            client.mail(envelope)
            code, text = client.rcpt(to)
            if code != 250:
                return code, text
            return client.data(forged(header))

    as_herself = dialogue(MALLORY, MALLORY, bobs)
    assert as_herself[0] == 550 and as_herself[1].startswith(b"5.7.1"), as_herself
    from_forged = dialogue(MALLORY, BOB, bobs)
    assert from_forged[0] == 550, from_forged
    envelope_forged = dialogue(BOB, MALLORY, bobs)
    assert envelope_forged[0] == 550 and envelope_forged[1].startswith(b"5.7.1"), envelope_forged
    assert b"From header" in envelope_forged[1]
    tampered = dialogue(MALLORY, MALLORY, guessed)
    assert tampered[0] == 550 and tampered[1].startswith(b"5.1.1"), tampered
    with Session(w.engine) as session:
        after = (
            session.execute(select(func.count()).select_from(Message)).scalar_one(),
            session.execute(select(func.count()).select_from(Delivery)).scalar_one(),
        )
        queued = session.execute(select(func.count()).select_from(Outbox)).scalar_one()
    assert after == before and queued == 0, "nothing stored, nothing sent"
    hidden(w, MALLORY, "S4")

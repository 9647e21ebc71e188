"""Threading on real mail: notmuch's corpora, Perl Mail::Thread, Enron chains."""

from __future__ import annotations

import base64
import email
import email.header
import email.utils
import mailbox
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.message import Message
from itertools import pairwise
from pathlib import Path
from random import Random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.core.linking.thread_fallback import fingerprint, parse_stamp
from bridge.core.linking.threads import (
    ThreadMember,
    build_tree,
    fallback_key,
    header_parent,
    reply_link,
    thread_index_keys,
    thread_order,
)
from bridge.core.normalize import is_reply_subject, normalize_subject, parse_id_list

DATA = Path(__file__).parent.parent / "data" / "threads"

# --- building members with stdlib email (the real parser is elsewhere) -----

_ADDRESS = re.compile(r"[\w.+'-]+@[\w-]+(?:\.[\w-]+)+")
# Crude quote split for these tests: '>' lines, and everything from the first
# Outlook / attribution / Lotus header on, are quoted.
_QUOTE_START = re.compile(
    r"^\s*-{3,}\s*(?:original message|forwarded)|(?:wrote|writes)\s*:\s*$"
    r"|\d{1,2}/\d{1,2}/\d{2,4}\s+\d{1,2}:\d{2}",
    re.IGNORECASE,
)


def _split(text: str) -> tuple[str, str]:
    lines = text.splitlines()
    cut = next((n for n, line in enumerate(lines) if _QUOTE_START.search(line)), len(lines))
    new = [line for line in lines[:cut] if not line.lstrip().startswith(">")]
    quoted = [line for line in lines[:cut] if line.lstrip().startswith(">")] + lines[cut:]
    return "\n".join(new).strip(), "\n".join(quoted).strip()


def _addresses(value: object) -> list[str]:
    return _ADDRESS.findall(str(value or "").lower())


def _text(msg: Message) -> str:
    for part in msg.walk():
        if part.get_content_type() == "text/plain":
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                return payload.decode(part.get_content_charset() or "latin-1", "replace")
    return ""


def member_of(msg: Message, fallback_id: str) -> ThreadMember:
    ids = parse_id_list(str(msg.get("Message-ID", "")))
    refs = parse_id_list(" ".join(str(v) for v in msg.get_all("References", [])))
    irt = parse_id_list(" ".join(str(v) for v in msg.get_all("In-Reply-To", [])))
    sent = email.utils.parsedate_to_datetime(str(msg["Date"]))
    subject = str(email.header.make_header(email.header.decode_header(str(msg["Subject"]))))
    sender = (_addresses(msg["From"]) or [""])[0]
    new, quoted = _split(_text(msg))
    index = msg.get("Thread-Index")
    return ThreadMember(
        message_id=ids[0] if ids else fallback_id,
        aliases=(),
        references=refs + tuple(i for i in irt if i not in refs),
        in_reply_to=irt,
        thread_index=None if index is None else base64.b64decode(str(index)),
        date=sent.astimezone(UTC),
        subject_norm=normalize_subject(subject),
        is_reply=is_reply_subject(subject) or bool(quoted),
        sender=sender,
        participants=frozenset([sender, *_addresses(msg["To"]), *_addresses(msg["Cc"])]),
        new_text=new,
        quoted_text=quoted,
        sent_local=sent.replace(tzinfo=None),
    )


def load(path: Path) -> ThreadMember:
    return member_of(email.message_from_bytes(path.read_bytes()), path.name)


def load_dir(folder: str) -> dict[str, ThreadMember]:
    """Members of a folder, by file name."""
    return {p.name: load(p) for p in sorted((DATA / folder).iterdir())}


def load_mbox(name: str) -> list[ThreadMember]:
    box = mailbox.mbox(DATA / "mail-thread" / name, create=False)
    try:
        return [member_of(msg, f"{name}-{n}") for n, msg in enumerate(box)]
    finally:
        box.close()


def check_tree(members: list[ThreadMember], parents: dict[str, str | None]) -> None:
    """Every parent is a member and there is no cycle."""
    ids = {m.message_id for m in members}
    assert set(parents) == ids
    for start in ids:
        seen = {start}
        node = parents[start]
        while node is not None:
            assert node in ids
            assert node not in seen, f"cycle through {node}"
            seen.add(node)
            node = parents[node]


# --- header rules -----------------------------------------------------------


def test_header_parent_prefers_last_reference_then_in_reply_to() -> None:
    pp = load_dir("notmuch/parent-priority")
    # References holds a misspelt ghost; the In-Reply-To id, appended after
    # it (the ThreadMember contract), is the last one named.
    assert pp["child"].references == ("B00--root@example.org", "B00-root@example.org")
    assert header_parent(pp["child"]) == "B00-root@example.org"
    assert header_parent(pp["grand-child"]) == "B00-root@example.org"
    assert header_parent(pp["root"]) is None
    gr = load_dir("notmuch/ghost-root")
    assert header_parent(gr["fake-root"]) == "nonexistent-message@example.org"
    loop = load_dir("notmuch/loop")
    assert header_parent(loop["loop-12"]) == "mid-loop-21@example.org"


def test_ghost_root_corpus() -> None:
    members = load_dir("notmuch/ghost-root")
    parents = build_tree(list(members.values()))
    mid = {name: m.message_id for name, m in members.items()}
    expected = {
        "real-root": None,
        "child": "real-root",
        "grand-child": "child",
        "grand-child2": "child",
        "great-grand-child": "grand-child",  # skips the grand-child2 sibling
        # References real-root, child, then a ghost: child is the nearest member.
        "fake-root": "child",
        "fyi-root": None,
        "rt-autoreply": "fyi-root",
        "rt-resolved": None,  # names only the ghost RT-Ticket id
    }
    assert {n: parents[mid[n]] for n in expected} == {
        n: (mid[p] if p else None) for n, p in expected.items()
    }
    order = [i for i, _ in thread_order(list(members.values()), parents)]
    assert order.index(mid["real-root"]) < order.index(mid["fake-root"])


def test_parent_priority_corpus_uses_the_nearest_named_ancestor() -> None:
    members = load_dir("notmuch/parent-priority")
    parents = build_tree(list(members.values()))
    assert parents == {
        "B00-root@example.org": None,
        # References holds only a misspelt ghost; In-Reply-To names the root.
        "B01-child@example.org": "B00-root@example.org",
        # References lists child then root (reversed); child is the deeper one.
        "B01-grand-child@example.org": "B01-child@example.org",
    }
    order = thread_order(list(members.values()), parents)
    assert [depth for _, depth in order] == [0, 1, 2]


def test_reference_loop_is_cut_at_the_oldest_message() -> None:
    members = list(load_dir("notmuch/loop").values())
    parents = build_tree(members)
    assert parents == {
        "mid-loop-12@example.org": None,
        "mid-loop-21@example.org": "mid-loop-12@example.org",
    }
    assert build_tree(members[::-1]) == parents


LKML_ORDER = [
    ("1277220214-3597-1-git-send-email-sjayaraman@suse.de", 0),
    ("9822.1277312573@redhat.com", 1),
    ("4C24A606.5040001@suse.de", 2),
    ("22697.1277470549@redhat.com", 3),
    ("20100625125306.7f9b1966@tlielax.poochiereds.net", 4),
    ("18628.1277502398@redhat.com", 5),
    ("20100625182651.36800d06@tlielax.poochiereds.net", 6),
    ("20123.1277507068@redhat.com", 7),
    ("AANLkTilOTrHLvLv4XWYZO6xCnYZgYT7gO2M-oKZ6VvqM@mail.gmail.com", 7),
    ("OFB55E8EC7.E8DD23D5-ON8725774E.0004921E-8825774E.0004CC31@us.ibm.com", 8),
    ("871vbscpce.fsf@linux.vnet.ibm.com", 9),
    ("20100627182229.GA492@infradead.org", 10),
    ("AANLkTine3pc2Ai2Woj81Y9fS_KgGs1sIMb2NMR6G74ww@mail.gmail.com", 0),
    ("AANLkTinKbimKyLpvFD7KOvavshu_n8gRcp2BvEJj0XZQ@mail.gmail.com", 1),
    ("4381.1280815590@neuling.org", 2),
    ("0CE8B6BE3C4AD74AB97D9D29BD24E5520114309D@CORPEXCH1.na.ads.idt.com", 3),
    ("AANLkTinpwYnyc1oN1VbtBgUF6bk6E5q_Gq1Dj3WXV3wc@mail.gmail.com", 4),
    ("0CE8B6BE3C4AD74AB97D9D29BD24E552011430BC@CORPEXCH1.na.ads.idt.com", 5),
    ("26581.1280979260@neuling.org", 6),
    ("0CE8B6BE3C4AD74AB97D9D29BD24E552011935BD@CORPEXCH1.na.ads.idt.com", 7),
    ("C9528078-D64C-4944-B960-0E985B3EE0BA@kernel.crashing.org", 8),
    ("0CE8B6BE3C4AD74AB97D9D29BD24E55201193609@CORPEXCH1.na.ads.idt.com", 9),
]


def test_lkml_deep_threads() -> None:
    members = list(load_dir("notmuch/lkml").values())
    parents = build_tree(members)
    check_tree(members, parents)
    assert thread_order(members, parents) == LKML_ORDER
    # The reply whose In-Reply-To is a gmane-mangled id still finds its
    # parent through References.
    assert (
        parents["20123.1277507068@redhat.com"] == "20100625182651.36800d06@tlielax.poochiereds.net"
    )


def test_mail_thread_ghosts_and_reply_prefixes() -> None:
    members = load_mbox("testbox")
    parents = build_tree(members)
    check_tree(members, parents)
    assert parents["avefva+gol5@eGroups.com"] is None  # parent 3E1A9807 is a ghost
    assert parents["000001c2b64c$03af8740$56734151@noos.fr"] == "avefva+gol5@eGroups.com"
    assert (
        parents["3E1B380C.F5713721@earthlink.net"]
        == "4.3.2-J.20030107222402.051f7418@mail.chipple.net"
    )
    assert parents["20030107145325.33120.qmail@web13704.mail.yahoo.com"] == (
        "20030107164205.E98585-100000@nemesis.eahd.or.ug"
    )
    # "January's meeting" hangs off two ghosts from November: the first
    # stored reply is a root, the rest a chain.
    assert parents["20030107153054.GB21728@soto.kasei.com"] is None
    assert parents["20030107161602.GA8784@labac.net"] == "20030107160909.GA11673@futureless.org"
    # Re:, RE: and the Italian R: all normalise to one fallback key.
    karie = {fallback_key(m) for m in members if "karie" in m.subject_norm}
    assert karie == {"karie kahimi binge...help needed"}

    two = load_mbox("testbox-2")
    assert build_tree(two) == {
        "20030101210258.63148.qmail@web20805.mail.yahoo.com": None,
        "auvpjq$ede$1@post.home.lunix": "20030101210258.63148.qmail@web20805.mail.yahoo.com",
        "r3i71vcul4g95orb58173qj6b8dus6pnch@4ax.com": (
            "20030101210258.63148.qmail@web20805.mail.yahoo.com"
        ),
    }


def test_aliases_resolve_to_the_member() -> None:
    pp = load_dir("notmuch/parent-priority")
    root = pp["root"]
    # Dedupe saw the root also under the misspelt id the child references.
    root = replace(root, aliases=("B00--root@example.org",))
    child = replace(pp["child"], in_reply_to=(), references=("B00--root@example.org",))
    assert build_tree([child, root]) == {
        "B00-root@example.org": None,
        "B01-child@example.org": "B00-root@example.org",
    }


# --- Outlook Thread-Index ---------------------------------------------------

# A real Thread-Index (ruby-mail fixture, see SOURCE.md): 22 bytes.
ROOT_INDEX = base64.b64decode("AcT9+CUlRgRKMiKZSj+BjT+PHEf8rQ==")


def test_thread_index_keys() -> None:
    assert len(ROOT_INDEX) == 22
    assert thread_index_keys(ROOT_INDEX) == (ROOT_INDEX, None)
    reply = ROOT_INDEX + b"\x00\x00\x01\x02\x03"
    assert thread_index_keys(reply) == (ROOT_INDEX, ROOT_INDEX)
    with pytest.raises(ValueError):
        thread_index_keys(ROOT_INDEX[:-1])
    with pytest.raises(ValueError):
        thread_index_keys(reply + b"\x01")


def test_thread_index_links_messages_without_headers() -> None:
    base = list(load_dir("notmuch/lkml").values())[:4]
    root_i = ROOT_INDEX
    child_i = root_i + b"\x00\x00\x00\x00\x01"
    grand_i = child_i + b"\x00\x00\x00\x00\x02"
    lost_i = child_i + b"\x00\x00\x00\x00\x03" + b"\x00\x00\x00\x00\x04"  # its parent is unseen

    def bare(m: ThreadMember, index: bytes, ident: str) -> ThreadMember:
        return replace(m, message_id=ident, references=(), in_reply_to=(), thread_index=index)

    members = [
        bare(base[0], root_i, "r"),
        bare(base[1], child_i, "c"),
        bare(base[2], grand_i, "g"),
        bare(base[3], lost_i, "l"),
    ]
    assert build_tree(members) == {"r": None, "c": "r", "g": "c", "l": "c"}


# --- fallback on Enron, which has no threading headers ---------------------


def enron() -> dict[str, ThreadMember]:
    return {p.stem: load(p) for p in sorted((DATA / "enron").iterdir())}


def fallback_links(members: list[ThreadMember]) -> list[tuple[str, str, float]]:
    """What the store does: every earlier message of the same fallback key."""
    links = []
    for child in members:
        for parent in members:
            key = fallback_key(child)
            if key and key == fallback_key(parent) and parent is not child:
                score = reply_link(child, parent)
                if score is not None:
                    links.append((child.message_id, parent.message_id, score))
    return links


def test_enron_outlook_chain() -> None:
    mail = enron()
    corry, kathy, david = (
        mail["baughman-d-inbox-40"],
        mail["baughman-d-inbox-36"],
        mail["baughman-d-inbox-30"],
    )
    assert reply_link(kathy, corry) is not None
    assert reply_link(corry, kathy) is None  # a parent never replies to its child
    # David quotes Kathy first, then Corry: the direct parent scores higher.
    direct, older = reply_link(david, kathy), reply_link(david, corry)
    assert direct is not None and older is not None and direct > older
    members = [corry, kathy, david]
    parents = build_tree(members, fallback_links(members))
    assert parents == {
        corry.message_id: None,
        kathy.message_id: corry.message_id,
        david.message_id: kathy.message_id,
    }


def test_enron_lunch_thread_and_unrelated_lunches() -> None:
    mail = enron()
    names = ["bass-e-inbox-102", "bass-e-inbox-101", "bass-e-inbox-100", "bass-e-inbox-99"]
    names += ["bass-e-inbox-98", "bass-e-inbox-93", "giron-d-inbox-148", "giron-d-inbox-126"]
    names += ["whitt-m-inbox-813"]
    members = [mail[n] for n in names]
    assert len({fallback_key(m) for m in members}) == 1  # all "lunch"
    parents = build_tree(members, fallback_links(members))
    ident = {n: mail[n].message_id for n in names}
    # 99 quotes Baumbach's reply (not in this inbox) and then Brenda's 102;
    # 93 quotes a lost reply, then 99: the nearest member ancestor wins.
    assert parents[ident["bass-e-inbox-99"]] == ident["bass-e-inbox-102"]
    assert parents[ident["bass-e-inbox-93"]] == ident["bass-e-inbox-99"]
    # The Andersen and Whitt lunches share the subject but not the conversation.
    bass = {ident[n] for n in names if n.startswith("bass")}

    def root(node: str) -> str:
        while (up := parents[node]) is not None:
            node = up
        return node

    assert {root(ident[n]) for n in names if n.startswith("bass")} == {ident["bass-e-inbox-102"]}
    assert root(ident["giron-d-inbox-126"]) not in bass
    assert root(ident["whitt-m-inbox-813"]) not in bass
    for other in ("giron-d-inbox-148", "giron-d-inbox-126", "whitt-m-inbox-813"):
        for name in names[:6]:
            assert reply_link(mail[name], mail[other]) is None
            assert reply_link(mail[other], mail[name]) is None


def test_unrelated_meetings_do_not_link() -> None:
    mail = enron()
    early, late = mail["tycholiz-b-inbox-286"], mail["taylor-m-inbox-compression-4"]
    assert fallback_key(early) == fallback_key(late) == "meeting"
    assert early.date is not None and late.date is not None
    assert timedelta(0) < late.date - early.date < timedelta(days=60)
    assert reply_link(late, early) is None


def test_reply_link_guards() -> None:
    mail = enron()
    corry, kathy = mail["baughman-d-inbox-40"], mail["baughman-d-inbox-36"]
    assert reply_link(kathy, corry, window=timedelta(minutes=30)) is None  # 2h18m later
    other_subject = replace(kathy, subject_norm="something else")
    assert reply_link(other_subject, corry) is None
    outsider = replace(
        kathy, sender="x@example.com", participants=frozenset({"x@example.com", "y@example.com"})
    )
    assert reply_link(outsider, corry) is None  # no participant overlap
    # "Thanks" alone proves nothing, even when quoted.
    thanks = replace(corry, new_text="Thanks!")
    quoting = replace(kathy, quoted_text="> Thanks!")
    assert reply_link(quoting, thanks) is None


def rjdbc() -> dict[str, ThreadMember]:
    """R-devel, March 2007: one question posted twice, and a reply to the second post."""
    box = mailbox.mbox(DATA / "rlists" / "r-devel-2007-March-RJDBC.mbox", create=False)
    try:
        members = [member_of(msg, f"rjdbc-{n}") for n, msg in enumerate(box)]
    finally:
        box.close()
    return {m.message_id.split("@")[1]: m for m in members}


def test_words_quoted_under_another_posts_attribution_do_not_link() -> None:
    mail = rjdbc()
    first, again, reply = mail["yahoo.es"], mail["integromics.com"], mail["r-project.org"]
    assert reply.in_reply_to == (again.message_id,)  # the headers' answer
    assert reply.date is not None and first.date is not None and again.date is not None
    assert first.date < again.date < reply.date
    # Both posts have the same words; the reply quotes them under
    # "On Mar 5, 2007, at 7:39 AM, Jose Sierra wrote:", which is the second
    # post's time (13:39 +0100 read in New York), not the first's (13:06).
    assert fingerprint(first.new_text) == fingerprint(again.new_text) is not None
    assert reply_link(reply, again) is not None
    assert reply_link(reply, first) is None
    parents = build_tree(
        [first, again, replace(reply, references=(), in_reply_to=())],
        [
            (reply.message_id, p.message_id, score)
            for p in (first, again)
            if (score := reply_link(reply, p)) is not None
        ],
    )
    assert parents[reply.message_id] == again.message_id


def test_parse_stamp_reads_dotted_am_pm() -> None:
    # "On 23/09/2023 1:43 p.m., X wrote:" (Thunderbird in English (Canada))
    assert parse_stamp("On 23/09/2023 1:43 p.m., X wrote:") == datetime(2023, 9, 23, 13, 43)


def test_fallback_only_for_members_without_header_links() -> None:
    members = list(load_dir("notmuch/parent-priority").values())
    links = [
        ("B01-grand-child@example.org", "B00-root@example.org", 9.0),
        ("B00-root@example.org", "B01-child@example.org", 1.0),
    ]
    parents = build_tree(members, links)
    assert parents["B01-grand-child@example.org"] == "B01-child@example.org"
    # The root names nothing, so a fallback link applies; the loop it would
    # make with header links is cut at the fallback link.
    check_tree(members, parents)
    assert parents["B00-root@example.org"] is None


def test_fallback_picks_best_score_then_nearest_date() -> None:
    mail = enron()
    a, b, c = mail["bass-e-inbox-102"], mail["bass-e-inbox-99"], mail["bass-e-inbox-93"]
    members = [a, b, c]
    assert (
        build_tree(members, [(c.message_id, a.message_id, 2.0), (c.message_id, b.message_id, 1.0)])[
            c.message_id
        ]
        == a.message_id
    )
    tie = build_tree(
        members, [(c.message_id, a.message_id, 1.0), (c.message_id, b.message_id, 1.0)]
    )
    assert tie[c.message_id] == b.message_id  # the nearer earlier one


# --- shape, scale and order independence ------------------------------------


def _chain(length: int) -> list[ThreadMember]:
    start = datetime(2020, 1, 1, tzinfo=UTC)
    members = []
    for n in range(length):
        members.append(
            ThreadMember(
                message_id=f"m{n}@x",
                aliases=(),
                references=(f"m{n - 1}@x",) if n else (),
                in_reply_to=(f"m{n - 1}@x",) if n else (),
                thread_index=None,
                date=start + timedelta(minutes=n),
                subject_norm="deep",
                is_reply=bool(n),
                sender="a@x",
                participants=frozenset({"a@x"}),
                new_text="",
                quoted_text="",
            )
        )
    return members


def test_two_thousand_deep_chain() -> None:
    members = _chain(2000)
    parents = build_tree(members[::-1])
    assert parents["m1999@x"] == "m1998@x" and parents["m0@x"] is None
    order = thread_order(members, parents)
    assert order[-1] == ("m1999@x", 1999)
    assert [depth for _, depth in order] == list(range(2000))


_CORPUS = [
    *load_dir("notmuch/ghost-root").values(),
    *load_dir("notmuch/parent-priority").values(),
    *load_dir("notmuch/loop").values(),
    *load_mbox("testbox"),
]


@settings(max_examples=60, deadline=None)
@given(st.permutations(_CORPUS))
def test_result_does_not_depend_on_order(members: list[ThreadMember]) -> None:
    expected = build_tree(_CORPUS)
    parents = build_tree(members)
    assert parents == expected
    assert thread_order(members, parents) == thread_order(_CORPUS, expected)
    check_tree(members, parents)


_IDS = [f"i{n}" for n in range(8)]


@st.composite
def random_threads(draw: st.DrawFn) -> tuple[list[ThreadMember], list[tuple[str, str, float]]]:
    ids = draw(st.lists(st.sampled_from(_IDS), min_size=1, max_size=8, unique=True))
    members = []
    for ident in ids:
        refs = tuple(draw(st.lists(st.sampled_from([*_IDS, "ghost"]), max_size=3, unique=True)))
        members.append(
            ThreadMember(
                message_id=ident,
                aliases=(),
                references=refs,
                in_reply_to=refs[-1:],
                thread_index=None,
                date=datetime(2020, 1, 1, tzinfo=UTC) + timedelta(hours=draw(st.integers(0, 3))),
                subject_norm="s",
                is_reply=True,
                sender="a@x",
                participants=frozenset({"a@x"}),
                new_text="",
                quoted_text="",
            )
        )
    links = draw(
        st.lists(st.tuples(st.sampled_from(ids), st.sampled_from(ids), st.sampled_from([1.0, 2.0])))
    )
    return members, links


@settings(max_examples=200, deadline=None)
@given(random_threads(), st.randoms(use_true_random=False))
def test_random_threads_are_trees_in_any_order(
    case: tuple[list[ThreadMember], list[tuple[str, str, float]]], rng: Random
) -> None:
    members, links = case
    parents = build_tree(members, links)
    check_tree(members, parents)
    shuffled, shuffled_links = members[:], links[:]
    rng.shuffle(shuffled)
    rng.shuffle(shuffled_links)
    assert build_tree(shuffled, shuffled_links) == parents
    order = thread_order(shuffled, parents)
    assert order == thread_order(members, parents)
    assert sorted(i for i, _ in order) == sorted(m.message_id for m in members)
    for (_, depth), (_, next_depth) in pairwise(order):
        assert next_depth <= depth + 1

"""Search language: tokens agree with SQLite FTS5, queries parse, both backends agree.

The SQLite and PostgreSQL checks are I/O in the test only: an in-memory FTS5
table, and the PostgreSQL server at 127.0.0.1 (database `test`).
"""

from __future__ import annotations

import html
import re
import sqlite3
import unicodedata
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.core.search_language.query import (
    AllOf,
    AnyOf,
    Match,
    Query,
    fold,
    parse_query,
    tokenize,
)
from bridge.core.search_language.snippets import highlight
from bridge.core.search_language.syntax import (
    MAX_POSITION,
    fts5_excluded,
    fts5_match,
    tsquery_excluded,
    tsquery_text,
    tsvector_literal,
)

DATA = Path(__file__).parent.parent / "data" / "query"
FILES = sorted(DATA.glob("*.txt"))
PG_DSN = "host=127.0.0.1 port=5432 dbname=test user=postgres"
HYPO = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def read(name: str) -> str:
    return (DATA / name).read_text(encoding="utf-8")


# ------------------------------------------------------------------ SQLite helpers


class Fts5:
    """An in-memory FTS5 table tokenised like production, with its vocabulary."""

    def __init__(self) -> None:
        self.db = sqlite3.connect(":memory:")
        self.db.execute(
            "CREATE VIRTUAL TABLE t USING fts5(subject, new_text, quoted_text,"
            " tokenize='unicode61 remove_diacritics 2')"
        )
        self.db.execute("CREATE VIRTUAL TABLE v USING fts5vocab(t, 'instance')")

    def add(self, rowid: int, subject: str, new: str = "", quoted: str = "") -> None:
        self.db.execute(
            "INSERT INTO t(rowid, subject, new_text, quoted_text) VALUES (?,?,?,?)",
            (rowid, subject, new, quoted),
        )

    def tokens(self, rowid: int, column: str = "subject") -> list[str]:
        rows = self.db.execute(
            "SELECT term FROM v WHERE doc = ? AND col = ? ORDER BY offset", (rowid, column)
        )
        return [term for (term,) in rows]

    def match(self, expression: str) -> set[int]:
        rows = self.db.execute("SELECT rowid FROM t WHERE t MATCH ?", (expression,))
        return {rowid for (rowid,) in rows}

    def clear(self) -> None:
        self.db.execute("DELETE FROM t")


@pytest.fixture(scope="module")
def fts() -> Iterator[Fts5]:
    table = Fts5()
    yield table
    table.db.close()


def pg_matches(pg: psycopg.Connection, tsvector: str, tsquery: str) -> bool:
    row = pg.execute("SELECT %s::tsvector @@ %s::tsquery", (tsvector, tsquery)).fetchone()
    assert row is not None
    return bool(row[0])


@pytest.fixture(scope="module")
def pg() -> Iterator[psycopg.Connection]:
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        yield conn


# ------------------------------------------------------------------ tokenizer


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_tokens_are_exactly_fts5_unicode61_tokens_on_real_mail(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    table = Fts5()
    table.add(1, text)
    assert tokenize(text) == table.tokens(1)
    for token in set(tokenize(text)):
        assert table.match(f'"{token}"') == {1}, token


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        (
            "je n'ai pas eu de retour sur ma précision..",
            "je n ai pas eu de retour sur ma precision",
        ),
        (
            "Vous avez reçu une réponse à votre question !",
            "vous avez recu une reponse a votre question",
        ),
        ("Ursprüngliche Nachricht", "ursprungliche nachricht"),
        # unicode61 folds one code point to one: ß, œ, æ, ø, ł stay.
        ("Straßburg Dößä", "straßburg doßa"),
        ("ŒUVRE Æsop Søren Łódź", "œuvre æsop søren łodz"),
        (
            "Jak się masz? Wszystko w porządku, dziękuję.",
            "jak sie masz wszystko w porzadku dziekuje",
        ),
        ("Med Vänlig Hälsning", "med vanlig halsning"),
        ("ср, 30 апр. 2025 г. привет ЁЖ", "ср 30 апр 2025 г привет ёж"),
        ("ΆΈ µ ſ İstanbul", "άέ μ s istanbul"),
        ("re\u0301union", "reunion"),  # decomposed accent stays in the token, then goes
        ("お世話になっております。織田です。", "お世話になっております 織田です"),
        ("alice_smith@example.com", "alice smith example com"),
        ("https://aka.ms/o0ukef v2.0-beta x\u200by", "https aka ms o0ukef v2 0 beta x y"),
        ("① ² ½ Ⅻ", "① ² ½ ⅻ"),
        ("Å ﬁn", "a ﬁn"),  # the Angstrom sign folds to å, then to a
        ("", ""),
    ],
)
def test_tokenize_folds_like_sqlite(text: str, tokens: str, fts: Fts5) -> None:
    assert tokenize(text) == tokens.split()
    fts.clear()
    fts.add(1, text)
    assert fts.tokens(1) == tokens.split()


def test_every_european_and_cjk_code_point_tokenizes_as_in_fts5() -> None:
    """Exhaustive over Latin, Greek, Cyrillic, kana, CJK and Hangul: each code
    point between two letters. Only letters newer than SQLite's Unicode tables
    (Ϳ, Ԩ..Ԯ: Unicode 7) and ǡ, which SQLite leaves accented, differ."""
    ranges = [(0x20, 0x530), (0x1E00, 0x2000), (0x3040, 0x3100), (0x4E00, 0xA000),
              (0xAC00, 0xD7A4)]  # fmt: skip
    codes = [c for lo, hi in ranges for c in range(lo, hi) if unicodedata.category(chr(c)) != "Cn"]
    table = Fts5()
    table.db.executemany(
        "INSERT INTO t(rowid, subject) VALUES (?, ?)", ((c, f"x{chr(c)}x") for c in codes)
    )
    expected: dict[int, list[str]] = {}
    rows = table.db.execute("SELECT doc, term FROM v ORDER BY doc, offset")
    for rowid, term in rows:
        expected.setdefault(rowid, []).append(term)
    differ = {chr(c) for c in codes if tokenize(f"x{chr(c)}x") != expected.get(c, [])}
    assert len(codes) > 34_000
    assert differ == set("ǠǡͿԨԪԬԮ")


def test_fold_keeps_separators_and_lowers() -> None:
    assert fold("Réunion à 10h — Café") == "reunion a 10h — cafe"
    assert fold("ẞ ǅ") == "ß ǆ"


# Scripts seen in company mail where SQLite 3.40's Unicode tables agree with
# Python's (SQLite's tables date from Unicode 6; newer letters differ).
_MAIL_RANGES = [
    (0x20, 0x1E0),  # ASCII, Latin-1, Latin Extended-A, most of Extended-B
    (0x200, 0x250),
    (0x300, 0x370),  # combining marks
    (0x386, 0x3D0),  # Greek
    (0x400, 0x500),  # Cyrillic
    (0x5D0, 0x5EB),  # Hebrew letters
    (0x620, 0x64B),  # Arabic letters
    (0x1E00, 0x1F00),  # Latin Extended Additional (Vietnamese)
    (0x3040, 0x3100),  # kana
    (0x4E00, 0x4E40),  # some CJK ideographs
]
MAIL_ALPHABET = st.sampled_from(
    [
        ch
        for lo, hi in _MAIL_RANGES
        for ch in map(chr, range(lo, hi))
        if unicodedata.category(ch) != "Cn"  # SQLite reads unassigned as letters
    ]
    + list("\n\t\u00a0\u200b—–‘’“”«»€…•😀🎉\ue000")
)


@HYPO
@given(st.text(MAIL_ALPHABET, max_size=80))
def test_tokenize_agrees_with_fts5_on_mixed_scripts(fts: Fts5, text: str) -> None:
    fts.clear()
    fts.add(1, text)
    assert tokenize(text) == fts.tokens(1)


@HYPO
@given(st.text(max_size=60))
def test_tokenize_is_idempotent(text: str) -> None:
    tokens = tokenize(text)
    assert tokenize(" ".join(tokens)) == tokens
    assert all(fold(t) == t for t in tokens)


# ------------------------------------------------------------------ parser


def test_every_operator() -> None:
    q = parse_query(
        'Réunion "ordre du jour" -annulée FROM:Alice to:"Bob Martin" cc:carol@example.com '
        'Subject:"budget 2001" subject:Réponse filename:Report.PDF has:attachment '
        "before:2001-12-07 after:2001-12-01 in:Engineering is:unread is:auto-reply"
    )
    assert q.terms == ("reunion",)
    assert q.phrases == (("ordre", "du", "jour"),)
    assert q.excluded == ("annulee",)
    assert q.subject == (("budget", "2001"), ("reponse",))
    assert q.from_ == ("alice",)
    assert q.to == ("bob martin",)
    assert q.cc == ("carol@example.com",)
    assert q.filenames == ("report.pdf",)
    assert q.has_attachment
    assert q.before == date(2001, 12, 7)
    assert q.after == date(2001, 12, 1)
    assert q.spaces == ("engineering",)
    assert q.is_flags == ("unread", "auto-reply")
    assert q.hints == ()
    assert not q.is_empty()


@pytest.mark.parametrize(
    ("text", "expected", "hint"),
    [
        ("form:alice budget", {"terms": ("form", "alice", "budget")}, 'unknown operator "form:"'),
        ('"unclosed phrase', {"phrases": (("unclosed", "phrase"),)}, "unclosed quote"),
        ("from: budget", {"terms": ("budget",)}, 'nothing after "from:"'),
        ("before:2001-13-45 x", {"before": None}, "bad date in before:2001-13-45"),
        ("has:pictures x", {"has_attachment": False}, 'unknown "has:pictures"'),
        ("-spam", {"excluded": ()}, "excluded words need something else to search for"),
        ("-spam -(ham OR eggs)", {"excluded_groups": ()}, "excluded words need something else"),
        ("OR budget", {"terms": ("budget",)}, "OR needs a word on each side"),
        ("budget OR", {"terms": ("budget",)}, "OR needs a word on each side"),
        ("budget OR from:alice", {"from_": ("alice",)}, 'OR joins words and phrases: "from:alice"'),
        ("budget OR -draft", {"excluded": ("draft",)}, "OR cannot join an excluded word"),
        ("(budget OR plan", {"terms": ()}, 'unclosed "("'),
        ("budget plan)", {"terms": ("budget", "plan")}, '")" without "("'),
        ("budget ) plan", {"terms": ("budget", "plan")}, '")" without "("'),
        ("((a OR b) c)", {"terms": ("c",)}, "parentheses inside parentheses"),
        ("co* budget", {"terms": ("co", "budget")}, '"co*": a prefix needs at least 3 letters'),
        ("-from:alice x", {"from_": ()}, '"-from:" cannot be negated'),
        ("subject:!!! x", {"subject": ()}, 'nothing to search after "subject:"'),
        ("after:2002 before:2001", {"after": date(2002, 1, 1)}, "no date is both"),
        ("word " * 400, {"terms": ("word",)}, "query cut"),
    ],
)
def test_malformed_queries_search_the_words_and_say_why(
    text: str, expected: dict[str, object], hint: str
) -> None:
    q = parse_query(text)
    for name, value in expected.items():
        assert getattr(q, name) == value
    assert any(hint in h for h in q.hints), q.hints


def test_words_with_punctuation_are_phrases_and_urls_are_not_operators() -> None:
    q = parse_query("jean-pierre alice@example.com https://aka.ms/o0ukef 11:00 mailto:x@y.fr")
    assert q.terms == ()
    assert q.phrases == (
        ("jean", "pierre"),
        ("alice", "example", "com"),
        ("https", "aka", "ms", "o0ukef"),
        ("11", "00"),
        ("mailto", "x", "y", "fr"),
    )
    assert q.hints == ()


def test_negation_forms_and_dates() -> None:
    q = parse_query(
        'budget -"ordre du jour" NOT lundi AND mardi before:2001-12 before:2002 after:2001'
    )
    assert q.terms == ("budget", "mardi")
    assert q.excluded == ("ordre du jour", "lundi")
    assert q.before == date(2001, 12, 1)  # the earlier of two before: wins
    assert q.after == date(2001, 1, 1)
    assert parse_query("“smart quotes” here").phrases == (("smart", "quotes"),)


def test_empty_queries() -> None:
    for text in ("", "   ", "— … !!", "from:"):
        assert parse_query(text).is_empty()
    assert not parse_query("is:unread").is_empty()
    assert Query().is_empty()


@pytest.mark.parametrize(
    "text",
    [
        "from:alice -acme",
        "in:all-staff -parking",
        "to:bob -acme",
        "has:attachment -acme",
        "after:2001-06 -acme",
        "filename:pdf -acme",
        "is:reply -acme",
    ],
)
def test_exclusions_work_whenever_something_else_narrows_the_search(text: str) -> None:
    q = parse_query(text)
    assert q.excluded == (text.split()[-1][1:],) and q.hints == ()
    # No word to search for: the backends get the exclusion on its own.
    assert fts5_match(q) is None and tsquery_text(q) is None
    assert fts5_excluded(q) == f'"{q.excluded[0]}"'
    assert tsquery_excluded(q) == f"'{q.excluded[0]}'"
    # With a word, the exclusion is part of the match expression.
    worded = parse_query(text + " budget")
    assert fts5_excluded(worded) is None and tsquery_excluded(worded) is None


def test_or_binds_tighter_than_and_like_gmail() -> None:
    a, b, c = Match(("a",)), Match(("b",)), Match(("c",))
    q = parse_query("a OR b c")
    assert q.groups == (AnyOf((a, b)),) and q.terms == ("c",) and q.hints == ()
    assert parse_query("a OR b OR c").groups == (AnyOf((a, b, c)),)
    # Lower-case "or" is a word, as in Gmail.
    assert parse_query("a or b").terms == ("a", "or", "b")
    both = parse_query("a OR b c OR d")
    assert both.groups == (AnyOf((a, b)), AnyOf((c, Match(("d",)))))
    assert parse_query("(a OR b) c") == q


def test_or_joins_phrases_prefixes_subjects_and_groups() -> None:
    q = parse_query('"heads up" OR gmake OR subject:"rechnung marz" OR contra*')
    assert q.groups == (
        AnyOf(
            (
                Match(("heads", "up")),
                Match(("gmake",)),
                Match(("rechnung", "marz"), subject=True),
                Match(("contra",), prefix=True),
            )
        ),
    )
    grouped = parse_query("(budget review) OR (forecast -draft)")
    assert grouped.groups == (
        AnyOf(
            (
                AllOf((Match(("budget",)), Match(("review",)))),
                AllOf((Match(("forecast",)),), (Match(("draft",)),)),
            )
        ),
    )
    # Parentheses without OR only group: the words are plain words.
    assert parse_query("(budget review) -draft") == parse_query("budget review -draft")
    assert parse_query("x (-y)") == parse_query("x -y")


def test_excluded_groups() -> None:
    q = parse_query("budget -(draft OR forecast) -(gas prices) -contra*")
    assert q.terms == ("budget",)
    assert q.excluded == ("draft", "forecast")  # neither one nor the other
    assert q.excluded_groups == (
        AllOf((Match(("gas",)), Match(("prices",)))),  # not both together
        Match(("contra",), prefix=True),
    )
    assert q.hints == ()
    assert parse_query("NOT (draft OR forecast) budget") == parse_query("budget -draft -forecast")


def test_prefixes() -> None:
    assert parse_query("contra*").groups == (Match(("contra",), prefix=True),)
    assert parse_query("Réun**").groups == (Match(("reun",), prefix=True),)
    # The star goes on the last word of a phrase or of a word with punctuation.
    assert parse_query('"quarterly rep"*').groups == (Match(("quarterly", "rep"), prefix=True),)
    assert parse_query("jean-pie*").groups == (Match(("jean", "pie"), prefix=True),)
    assert parse_query("subject:contra*").groups == (Match(("contra",), subject=True, prefix=True),)
    # Too short: searched as a word, with a hint saying why.
    short = parse_query("jean-p* co*")
    assert short.phrases == (("jean", "p"),) and short.terms == ("co",)
    assert len(short.hints) == 2
    assert parse_query("con*").groups == (Match(("con",), prefix=True),)
    # A star alone, or inside a word, is punctuation.
    assert parse_query("* budget").terms == ("budget",)
    assert parse_query("con*tract").phrases == (("con", "tract"),)


# ------------------------------------------------------------------ backend syntax


def test_fts5_and_tsquery_text_shapes() -> None:
    q = parse_query('réunion "ordre du jour" subject:budget -annulée')
    assert fts5_match(q) == (
        '("reunion" AND "ordre du jour" AND {subject} : "budget") NOT ("annulee")'
    )
    assert tsquery_text(q) == "'reunion' & ('ordre' <-> 'du' <-> 'jour') & 'budget':A & !'annulee'"
    assert fts5_match(parse_query("from:alice")) is None
    assert tsquery_text(parse_query("from:alice")) is None


def test_or_group_and_prefix_shapes() -> None:
    q = parse_query('(budget OR "gas prices") subject:contra* -(draft x) -réun*')
    assert fts5_match(q) == (
        '(("budget" OR "gas prices") AND {subject} : "contra" *) '
        'NOT (("draft" AND "x") OR "reun" *)'
    )
    assert tsquery_text(q) == (
        "('budget' | ('gas' <-> 'prices')) & 'contra':*A & !('draft' & 'x') & !'reun':*"
    )
    inner = parse_query("(a -b) OR c")
    assert fts5_match(inner) == '(("a" NOT "b") OR "c")'
    assert tsquery_text(inner) == "(('a' & !'b') | 'c')"


def test_tsvector_literal_positions_weights_and_gap() -> None:
    literal = tsvector_literal([("A", "Re: Réunion"), ("B", "la réunion de lundi"), ("D", "")])
    assert literal == "'re':1A 'reunion':2A,104B 'la':103B 'de':105B 'lundi':106B"
    assert tsvector_literal([]) == ""
    with pytest.raises(ValueError, match="weight"):
        tsvector_literal([("E", "x")])


def _split_mail(text: str) -> tuple[str, str, str]:
    """Subject = first line, quoted = lines starting with '>', new = the rest."""
    first, _, rest = text.partition("\n")
    lines = rest.splitlines()
    quoted = "\n".join(line for line in lines if line.startswith(">"))
    new = "\n".join(line for line in lines if not line.startswith(">"))
    return first, new, quoted


FR, SV, DE, JA = (
    "crisp_email_customer_quote_header_3",
    "alfonsrv_email_swedish_1",
    "alfonsrv_multiline_on_de",
    "alfonsrv_email_ja_1_2",
)
LOREM = {
    "crisp_email_7",
    "crisp_email_german_outlook",
    "crisp_email_russian",
    "crisp_email_tricky_5_mixed_languages",
}
BACKEND_QUERIES: dict[str, set[str]] = {
    "reponse": {FR},
    "réponse question": {FR},
    '"votre question"': {FR},
    '"question votre"': set(),
    "subject:bonjour": {FR},
    "subject:precision": set(),  # in the body, not the subject
    "precision -yahoo": set(),
    "someone@yahoo.fr": {FR},
    "forsok": {SV},
    '"sista försök"': {SV},
    "försök -hunnit": set(),
    "straßburg": {DE},
    "doßa": {DE},
    "dossa": set(),  # ß is not expanded, as in unicode61
    "noreply@github.com -straßburg": set(),
    "ursprungliche nachricht": {"crisp_email_german_outlook"},
    "織田です": {JA},
    "織田": set(),  # no CJK word splitting: a run of ideographs is one token
    '"お世話になっております"': {JA},
    "привет": {"crisp_email_russian"},
    "porządku": {"alfonsrv_email_pl_1_2"},
    "porzadku dziekuje": {"alfonsrv_email_pl_1_2"},
    "0123-456789": {"crisp_email_7"},
    "subject:fusce bibendum": LOREM,
    '"consequat ut vel"': LOREM,
    # OR, groups and prefixes.
    "reponse OR straßburg": {FR, DE},
    "reponse OR forsok OR привет": {FR, SV, "crisp_email_russian"},
    "(forsok OR привет) -hunnit": {"crisp_email_russian"},
    "(reponse question) OR (porzadku -dziekuje)": {FR},
    "-(reponse OR forsok) ursprungliche": {"crisp_email_german_outlook"},
    "fusce OR (sista försök)": LOREM | {SV},
    "repon*": {FR},
    "répon* -yahoo": set(),
    "subject:bonj*": {FR},
    "subject:fus*": LOREM,
    '"sista för"*': {SV},
    '"votre quest"*': {FR},
    "прив*": {"crisp_email_russian"},
    "お世話*": {JA},
    "straß*": {DE},
    "strass*": set(),
    "ursprung* OR noreply@github.com": {DE, "crisp_email_german_outlook"},
    "conseq* -(fusce OR bibendum)": set(),
}


@pytest.mark.postgres
def test_sqlite_and_postgresql_find_the_same_real_messages(pg: psycopg.Connection) -> None:
    table = Fts5()
    pg.execute("CREATE TEMP TABLE docs (id int PRIMARY KEY, tsv tsvector)")
    try:
        for rowid, path in enumerate(FILES, start=1):
            subject, new, quoted = _split_mail(path.read_text(encoding="utf-8"))
            table.add(rowid, subject, new, quoted)
            literal = tsvector_literal([("A", subject), ("B", new), ("D", quoted)])
            pg.execute("INSERT INTO docs VALUES (%s, %s::tsvector)", (rowid, literal))
        for text, expected in BACKEND_QUERIES.items():
            q = parse_query(text)
            expression, tsquery = fts5_match(q), tsquery_text(q)
            assert expression is not None and tsquery is not None
            in_sqlite = table.match(expression)
            assert {FILES[rowid - 1].stem for rowid in in_sqlite} == expected, text
            rows = pg.execute("SELECT id FROM docs WHERE tsv @@ %s::tsquery", (tsquery,))
            assert {rowid for (rowid,) in rows} == in_sqlite, text
    finally:
        pg.execute("DROP TABLE docs")


words = st.lists(st.text(MAIL_ALPHABET, min_size=1, max_size=12), min_size=1, max_size=30)


@pytest.mark.postgres
@HYPO
@given(
    doc=words,
    picks=st.lists(
        st.tuples(st.sampled_from(["", "-", "subject:", '"']), st.integers(0, 29)), max_size=4
    ),
    noise=st.text(max_size=20),
)
def test_backends_agree_on_random_documents(
    pg: psycopg.Connection,
    fts: Fts5,
    doc: list[str],
    picks: list[tuple[str, int]],
    noise: str,
) -> None:
    subject, body = " ".join(doc[:3]), " ".join(doc[3:])
    # Words of the document, some excluded, in the subject or in a phrase with the next.
    chosen = [prefix + doc[i] for prefix, i in picks if i < len(doc)]
    q = parse_query(" ".join(chosen) + " " + noise)
    expression, tsquery = fts5_match(q), tsquery_text(q)
    if expression is None or tsquery is None:
        assert expression is None and tsquery is None
        return
    fts.clear()
    fts.add(1, subject, body)
    literal = tsvector_literal([("A", subject), ("B", body)])
    assert (fts.match(expression) == {1}) == pg_matches(pg, literal, tsquery)


@pytest.mark.postgres
@HYPO
@given(
    doc=words,
    picks=st.lists(
        st.tuples(
            st.sampled_from(["", "-", "subject:", '"', "(", "-(", "NOT "]),
            st.integers(0, 29),
            st.integers(0, 5),  # cut the word there and add a star (0: no star)
            st.sampled_from([" ", " OR ", ") ", ") OR ", '" ', '"* OR ']),
        ),
        max_size=5,
    ),
    narrowed=st.booleans(),
)
def test_backends_agree_on_or_groups_prefixes_and_exclusions(
    pg: psycopg.Connection,
    fts: Fts5,
    doc: list[str],
    picks: list[tuple[str, int, int, str]],
    narrowed: bool,
) -> None:
    subject, body = " ".join(doc[:3]), " ".join(doc[3:])
    chosen = [
        before + (doc[i][: cut + 1] + "*" if cut else doc[i]) + after
        for before, i, cut, after in picks
        if i < len(doc)
    ]
    q = parse_query(("from:x " if narrowed else "") + "".join(chosen))
    fts.clear()
    fts.add(1, subject, body)
    literal = tsvector_literal([("A", subject), ("B", body)])
    pairs = [(fts5_match(q), tsquery_text(q)), (fts5_excluded(q), tsquery_excluded(q))]
    for expression, tsquery in pairs:
        assert (expression is None) == (tsquery is None)
        if expression is not None and tsquery is not None:
            assert (fts.match(expression) == {1}) == pg_matches(pg, literal, tsquery), (
                expression,
                tsquery,
            )


# Query text built from the pieces that could break a parser or a backend syntax.
QUERY_PIECES = st.lists(
    st.sampled_from(
        [
            "from:",
            "subject:",
            "before:",
            "has:",
            "in:",
            "is:",
            "foo:",
            "http://",
            "-",
            "NOT",
            "OR",
            "AND",
            "NEAR",
            " OR ",
            "-(",
            "contra*",
            "co*",
            '"* ',
            '"',
            "“",
            "'",
            ":",
            "\\",
            "(",
            ")",
            "*",
            "^",
            "{",
            "}",
            "!",
            "&",
            "|",
            "<->",
            " ",
            "2001-12-07",
            "2001-13-45",
            "attachment",
            "réunion",
            "x",
            "ß",
            "織田",
            "\u0301",
            "\x00",
        ]
    ),
    max_size=25,
).map("".join)
ANY_QUERY = st.one_of(st.text(max_size=120), QUERY_PIECES)
RAW_QUERIES = st.builds(
    Query,
    terms=st.lists(st.text(max_size=8), max_size=3).map(tuple),
    phrases=st.lists(st.lists(st.text(max_size=5), max_size=3).map(tuple), max_size=2).map(tuple),
    excluded=st.lists(st.text(max_size=8), max_size=2).map(tuple),
    subject=st.lists(st.lists(st.text(max_size=5), max_size=3).map(tuple), max_size=2).map(tuple),
)


@HYPO
@given(ANY_QUERY)
def test_parse_query_never_raises_and_fts5_accepts_its_output(fts: Fts5, text: str) -> None:
    q = parse_query(text)
    expression = fts5_match(q)
    assert (expression is None) == (tsquery_text(q) is None)
    if expression is not None:
        fts.match(expression)  # raises sqlite3.OperationalError on bad syntax
    excluded = fts5_excluded(q)
    assert (excluded is None) == (tsquery_excluded(q) is None)
    if excluded is not None:
        fts.match(excluded)


@HYPO
@given(RAW_QUERIES)
def test_fts5_accepts_queries_built_by_hand(fts: Fts5, q: Query) -> None:
    expression = fts5_match(q)
    if expression is not None:
        fts.match(expression)


@pytest.mark.postgres
@HYPO
@given(ANY_QUERY)
def test_postgresql_accepts_every_tsquery_and_tsvector(pg: psycopg.Connection, text: str) -> None:
    q = parse_query(text)
    for tsquery in (tsquery_text(q), tsquery_excluded(q)):
        if tsquery is not None:
            pg.execute("SELECT %s::tsquery", (tsquery,))
            pg.execute("SELECT to_tsquery('simple', %s)", (tsquery,))
    text = text.replace("\x00", "")  # PostgreSQL text cannot hold NUL at all
    pg.execute("SELECT %s::tsvector", (tsvector_literal([("A", text), ("D", text)]),))


@pytest.mark.postgres
@HYPO
@given(RAW_QUERIES.filter(lambda q: "\x00" not in repr(q)))
def test_postgresql_accepts_queries_built_by_hand(pg: psycopg.Connection, q: Query) -> None:
    tsquery = tsquery_text(q)
    if tsquery is not None:
        pg.execute("SELECT %s::tsquery", (tsquery,))


@pytest.mark.postgres
def test_tsvector_limits_are_respected(pg: psycopg.Connection) -> None:
    many = " ".join(f"w{i % 500}" for i in range(20_000)) + " lastword"
    literal = tsvector_literal([("B", many)])
    assert f"'lastword':{MAX_POSITION}B" in literal
    assert f"{MAX_POSITION + 1}" not in literal
    assert pg_matches(pg, literal, "'lastword'")
    long_token = "ł" * 3000  # 6000 bytes: over PostgreSQL's 2047-byte lexeme limit
    unique = " ".join(f"t{i:07d}" for i in range(200_000))  # 1.6 MB of distinct lexemes
    for text in (long_token, unique):
        literal = tsvector_literal([("B", text)])
        pg.execute("SELECT %s::tsvector", (literal,))
    long_query = tsquery_text(Query(terms=tuple(tokenize(long_token))))
    assert long_query is not None
    assert pg_matches(pg, tsvector_literal([("B", long_token)]), long_query)


def test_tsvector_literal_on_two_megabytes_keeps_every_word() -> None:
    text = read("crisp_email_tricky_5_mixed_languages.txt")
    big = text * (2_000_000 // len(text))
    assert len(big) > 1_900_000
    literal = tsvector_literal([("B", big)])
    lexemes = {entry.split("':", 1)[0].lstrip("'") for entry in literal.split(" '")}
    assert {t.replace("'", "''") for t in tokenize(text)} <= lexemes


# ------------------------------------------------------------------ snippets


def test_highlight_folds_accents_on_real_french_mail() -> None:
    text = read("crisp_email_customer_quote_header_3.txt")
    assert "<mark>réponse</mark>" in highlight(text, parse_query("reponse"))
    snippet = highlight(text, parse_query("reponse precision"), width=400)
    assert "<mark>précision</mark>" in snippet
    assert "<mark>réponse</mark>" in snippet


def test_highlight_marks_phrases_only_where_adjacent() -> None:
    text = read("alfonsrv_email_swedish_1.txt")
    snippet = highlight(text, parse_query('"sista forsok"'))
    assert "<mark>sista försök</mark>" in snippet
    assert snippet.count("<mark>") == 1  # "övriga försök" alone is not the phrase
    assert "&gt; Nu gör jag" in snippet  # quoted text, escaped


def test_highlight_marks_prefixes_and_every_or_option() -> None:
    text = read("crisp_email_customer_quote_header_3.txt")
    snippet = highlight(text, parse_query("répon* OR precision -yahoo"), width=400)
    assert "<mark>précision</mark>" in snippet and "<mark>réponse</mark>" in snippet
    assert "<mark>" not in snippet.split("someone@")[1].split("&gt;")[0]  # excluded: unmarked
    swedish = highlight(read("alfonsrv_email_swedish_1.txt"), parse_query('"sista för"*'))
    assert "<mark>sista försök</mark>" in swedish and swedish.count("<mark>") == 1


def test_highlight_window_cut_and_escape() -> None:
    text = read("crisp_email_tricky_5_mixed_languages.txt")
    snippet = highlight(text, parse_query("schrieb mueller"), width=60)
    assert snippet.startswith("…") and snippet.endswith("…")
    assert "<mark>schrieb</mark>" in snippet and "<mark>Mueller</mark>" in snippet
    assert "&lt;hans@example.de&gt;" in snippet
    plain = snippet.replace("<mark>", "").replace("</mark>", "")
    assert len(plain) < 60 + 20
    raw = highlight(text, parse_query("mueller"), mark=("[", "]"), escape=False, width=60)
    assert "[Mueller] <hans@example.de>" in raw


def test_highlight_prefers_the_window_with_most_different_words() -> None:
    text = "budget " + "filler " * 60 + "budget review meeting " + "filler " * 60
    snippet = highlight(text, parse_query("budget meeting"), width=80)
    assert "<mark>budget</mark> review <mark>meeting</mark>" in snippet


def test_highlight_without_hits_is_the_start_of_the_text() -> None:
    text = read("alfonsrv_email_pl_1_2.txt")
    snippet = highlight(text, parse_query("nothing-matches-here"), width=40)
    assert snippet == "Od: Jan Kowalski…"  # cut between words, not inside the address
    assert highlight("", parse_query("x")) == ""
    assert highlight("short text", Query()) == "short text"


@HYPO
@given(
    text=st.text(MAIL_ALPHABET, max_size=400),
    query=st.text(MAIL_ALPHABET, max_size=30),
    width=st.integers(0, 200),
)
def test_highlight_is_a_marked_piece_of_the_text(text: str, query: str, width: int) -> None:
    snippet = highlight(text, parse_query(query), width=width, mark=("\x01", "\x02"))
    assert "<" not in snippet.replace("&lt;", "")
    plain = html.unescape(snippet.replace("\x01", "").replace("\x02", ""))
    collapsed = re.sub(r"\s+", " ", text)
    assert plain.strip("…").strip() in collapsed
    assert snippet.count("\x01") == snippet.count("\x02")


def test_tag_operator_reads_rule_tags_in_lower_case() -> None:
    query = parse_query('tag:Urgent tag:"two words" budget')
    assert query.tags == ("urgent", "two words") and query.terms == ("budget",)
    assert not parse_query("tag:urgent").is_empty()
    negated = parse_query("budget -tag:urgent")
    assert negated.tags == () and any("cannot be negated" in h for h in negated.hints)

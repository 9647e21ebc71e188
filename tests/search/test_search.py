"""Search on real imported mail, on SQLite and PostgreSQL (the `engine` fixture)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from bridge.ingest.files import run_import
from bridge.search import SearchResults, search
from bridge.search import engine as engine_module
from bridge.store.db import make_engine
from bridge.store.migrate import upgrade
from tests.conftest import DATA

ENRON = DATA / "enron" / "maildir"
RLISTS = DATA / "rlists"
MIME = DATA / "mime"
QUOTES = DATA / "quotes"
SOURCES = [
    str(ENRON),
    str(RLISTS / "r-devel-1998-December.txt"),
    str(RLISTS / "r-devel-2020-November.txt"),
    str(MIME / "enmime" / "malformed-multiple-address-header-values.raw"),  # test.pdf
    str(MIME / "ruby-mail" / "content_transfer_encoding_x_uuencode.eml"),  # a .doc
    str(MIME / "james-mime4j" / "intl.msg"),  # Cc: André Pirard
]
DAY = datetime(2016, 11, 30, 10, 30, tzinfo=UTC)


def eml(folder: Path, name: str, sender: str, subject: str, body_file: str) -> None:
    """A message around a real body from the quote-splitting cases."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = "questions@mycompany.com"
    message["Subject"] = subject
    message["Date"] = format_datetime(DAY)
    message["Message-ID"] = f"<{name}@search.test>"
    message.set_content((QUOTES / body_file).read_text())
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.eml").write_bytes(message.as_bytes())


def load(engine: Engine, tmp_path: Path) -> None:
    letters = tmp_path / "letters"
    eml(
        letters,
        "fr",
        "Someone <someone@yahoo.fr>",
        "Re: Vous avez reçu une réponse à votre question !",
        "fr_outlook_yahoo_indented.txt",
    )
    eml(
        letters,
        "de",
        "Stefan <stefan@example.de>",
        "Fwd: Rechnung März",
        "de_weitergeleitete_nachricht.txt",
    )
    result = run_import(engine, [*SOURCES, str(letters)], workers=1)
    assert result.tally.outcomes["quarantined"] == 0


def find(engine: Engine, query: str, **kwargs: object) -> SearchResults:
    with Session(engine) as session:
        return search(session, query, **kwargs)  # type: ignore[arg-type]


def subjects(results: SearchResults) -> list[str]:
    return [hit.subject for hit in results.hits]


def test_words_phrases_and_exclusions(engine: Engine, tmp_path: Path) -> None:
    load(engine, tmp_path)
    # Words must all match, in any field and order.
    assert subjects(find(engine, "cpuc proceeding")) == ["SoCal Gas CPUC Proceeding"]
    assert find(engine, "cpuc gmake").hits == []
    # "heads up" as words: "up" is everywhere, "heads" only in one thread.
    words = find(engine, "heads up")
    assert subjects(words) == ["Heads up"]
    phrase = find(engine, '"heads up"')
    assert subjects(phrase) == ["Heads up"]
    assert "<mark>heads up</mark>" in phrase.hits[0].snippet
    # Adjacent words only: "number random" is never written.
    assert find(engine, '"number random"').hits == []
    assert subjects(find(engine, "number random"))[0].startswith("Random Number Generators")
    # -word removes the messages that contain it; the thread stays if others match.
    every = find(engine, "vignettes")
    without = find(engine, "vignettes -murdoch")
    assert every.hits[0].thread_id == without.hits[0].thread_id
    assert without.hits[0].matches < every.hits[0].matches == 11
    assert find(engine, "gmake -recursive -gmake").hits == []


def test_exclusions_narrow_searches_made_of_operators_only(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    load(engine, tmp_path)
    every = find(engine, "from:maechler")
    without = find(engine, "from:maechler -package")
    assert without.hints == () and without.total_threads == every.total_threads - 1 == 6
    assert all("package" not in subject for subject in subjects(without))
    assert subjects(find(engine, "has:attachment -comments")) == ["Test"]
    assert find(engine, "to:kam.keiser -physical").hits == []
    day = "after:2020-11-05 before:2020-11-06"
    assert len(find(engine, day).hits) == 3
    assert subjects(find(engine, day + ' -r -"bashisms"')) == ["[Rd] Named class vector"]
    assert find(engine, "from:maechler -(legend OR package)").total_threads == 4
    # With few candidates, the page's counts still leave the excluded messages out.
    monkeypatch.setattr(engine_module, "CANDIDATES", 2)
    capped = find(engine, "from:maechler -package", limit=10)
    assert capped.more and len(capped.hits) == 2
    assert all("package" not in hit.subject for hit in capped.hits)


def test_or_groups_and_prefixes(engine: Engine, tmp_path: Path) -> None:
    load(engine, tmp_path)
    either = find(engine, "gmake OR cpuc")
    assert sorted(subjects(either)) == ["SoCal Gas CPUC Proceeding", "gmake"]
    assert [h.matches for h in either.hits] == [5, 3] and not either.hints
    assert "<mark>CPUC</mark>" in either.hits[0].snippet
    assert sorted(subjects(find(engine, 'cpuc OR "heads up"'))) == [
        "Heads up",
        "SoCal Gas CPUC Proceeding",
    ]
    # OR binds tighter than AND: (gmake OR cpuc) AND recursive.
    tight = find(engine, "gmake OR cpuc recursive")
    assert subjects(tight) == ["gmake"] and tight.hits[0].matches == 1
    grouped = find(engine, "(gmake OR cpuc) -recursive")
    assert sorted((h.subject, h.matches) for h in grouped.hits) == [
        ("SoCal Gas CPUC Proceeding", 5),
        ("gmake", 2),
    ]
    # A prefix finds the words it starts, and marks them.
    prefix = find(engine, "vignet*")
    assert prefix.hits[0].matches == find(engine, "vignettes").hits[0].matches == 11
    assert "<mark>vignettes</mark>" in prefix.hits[0].snippet.lower()
    assert len(find(engine, "makef*").hits) == 2
    assert subjects(find(engine, "subject:makef*")) == ["Makefiles in contributed packages"]
    assert subjects(find(engine, '"physical mac"*')) == ["Heads up"]
    assert subjects(find(engine, "rechn* OR précis*")) == subjects(
        find(engine, "rechnung OR precision")
    )
    # Too short a prefix is searched as a word, and says so.
    short = find(engine, "vi*")
    assert short.hits == [] and "prefix needs at least 3 letters" in short.hints[0]
    mixed = find(engine, "from:ripley OR legend")
    assert mixed.hits == [] and "applies to every result" in mixed.hints[0]


def test_people_operators(engine: Engine, tmp_path: Path) -> None:
    load(engine, tmp_path)
    by_address = find(engine, "from:maechler")
    assert by_address.total_threads == 7
    assert {hit.sender for hit in by_address.hits} == {"maechler@stat.math.ethz.ch"}
    # A display-name substring finds the same sender as the address.
    by_name = find(engine, 'from:"brian ripley"')
    assert {hit.sender for hit in by_name.hits} == {"ripley@stats.ox.ac.uk"}
    assert by_name.total_threads == 3
    assert find(engine, "from:ripley legend").hits == []
    assert subjects(find(engine, "from:ripley makefiles")) == ["Makefiles in contributed packages"]
    # To: a reply-all recipient; the root of "Heads up" went to someone else.
    to = find(engine, "to:kam.keiser")
    assert subjects(to) == ["Heads up"] and to.hits[0].matches == 4
    assert subjects(find(engine, "cc:pirard")) == [
        "If you can read this you understand the example... so, cool!"
    ]
    assert find(engine, "cc:kam.keiser").hits == []


def test_subject_attachment_and_date_operators(engine: Engine, tmp_path: Path) -> None:
    load(engine, tmp_path)
    # subject: only looks at subjects; plain words look everywhere.
    assert subjects(find(engine, "subject:gmake")) == ["gmake"]
    assert len(find(engine, "recursive").hits) >= 1
    assert find(engine, "subject:recursive").hits == []
    attached = find(engine, "has:attachment")
    assert set(subjects(attached)) == {"Test", "PGP Comments on RTO West Release of Dec. 14"}
    assert subjects(find(engine, "filename:pdf")) == ["Test"]
    # `_` is a literal underscore, not LIKE's any-character.
    assert subjects(find(engine, "filename:pgp_cmts")) == [
        "PGP Comments on RTO West Release of Dec. 14"
    ]
    assert find(engine, "filename:pgp_cmts_pkg").hits == []
    assert subjects(find(engine, "comments has:attachment")) == [
        "PGP Comments on RTO West Release of Dec. 14"
    ]
    old = find(engine, "legend before:1999-01-01")
    assert old.total_threads == 3
    assert all(hit.date and hit.date.year == 1998 for hit in old.hits)
    assert find(engine, "legend after:1999-01-01").hits == []
    november = find(engine, "after:2020-11-05 before:2020-11-06")
    assert november.hits and all(
        hit.date and hit.date.date().isoformat() == "2020-11-05" for hit in november.hits
    )
    assert find(engine, "vignettes after:2020-11-03").hits == []


def test_results_are_threads_with_marked_snippets(engine: Engine, tmp_path: Path) -> None:
    load(engine, tmp_path)
    results = find(engine, "gmake")
    assert len(results.hits) == results.total_threads == 1
    hit = results.hits[0]
    assert hit.subject == "gmake" and hit.matches == hit.thread_messages == 3
    assert "<mark>gmake</mark>" in hit.snippet
    # Every thread shows once, however many of its messages match.
    up = find(engine, "up", limit=100)
    ids = [h.thread_id for h in up.hits]
    assert len(ids) == len(set(ids)) == up.total_threads > 1
    assert sum(h.matches for h in up.hits) > len(ids)
    # Pages split the same ranking.
    first, second = find(engine, "up", limit=2), find(engine, "up", limit=2, offset=2)
    assert [h.thread_id for h in first.hits + second.hits] == ids[:4]
    # Snippets are escaped HTML around the marks.
    amp = find(engine, '"heads up" macro').hits[0].snippet
    assert "<mark>heads up</mark>" in amp and "<mark>Macro</mark> in your P&amp;L&#x27;s" in amp


def test_common_words_rank_a_capped_set_but_count_exactly(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    load(engine, tmp_path)
    full = find(engine, "up", limit=100)
    assert not full.more
    exact = {h.thread_id: h.matches for h in full.hits}
    monkeypatch.setattr(engine_module, "CANDIDATES", 3)
    capped = find(engine, "up", limit=100)
    assert capped.more and 0 < capped.total_threads < full.total_threads
    # The page's threads get their true count of matching messages.
    assert all(h.matches == exact[h.thread_id] for h in capped.hits)
    # A subject hit is kept among the candidates even when it is not the newest match.
    assert "Heads up" in subjects(capped)
    monkeypatch.setattr(engine_module, "CANDIDATES", 2)
    people = find(engine, "from:maechler")
    assert people.more and len(people.hits) == 2
    assert all(h.matches == 1 for h in people.hits)


def test_accents_are_optional(engine: Engine, tmp_path: Path) -> None:
    load(engine, tmp_path)
    for query in ("precision", "précision", "PRECISION"):
        results = find(engine, query)
        assert subjects(results) == ["Re: Vous avez reçu une réponse à votre question !"], query
        assert "<mark>précision</mark>" in results.hits[0].snippet
    german = find(engine, "prufen")
    assert subjects(german) == ["Fwd: Rechnung März"]
    assert "<mark>prüfen</mark>" in german.hits[0].snippet
    assert subjects(find(engine, "subject:reponse")) == subjects(find(engine, "réponse"))
    assert subjects(find(engine, '"rechnung fur marz"')) == ["Fwd: Rechnung März"]


def test_quoted_history_ranks_below_new_text(engine: Engine, tmp_path: Path) -> None:
    # "Monday" is in what Christopher wrote, and only in the history Shona's
    # note quotes; same day, so only where the word stands decides.
    letters = tmp_path / "letters"
    eml(
        letters, "new", "Christopher <c@example.com>", "Support call", "en_gmail_outlook_nested.txt"
    )
    eml(letters, "quoted", "Shona <s@example.com>", "DPR schedule", "enron_orig_1.txt")
    run_import(engine, [str(letters)], workers=1)
    results = find(engine, "monday")
    assert subjects(results) == ["Support call", "DPR schedule"]
    assert results.hits[0].score > results.hits[1].score
    assert "<mark>Monday</mark>" in results.hits[1].snippet  # shown from the quoted text


@pytest.mark.parametrize(
    "query",
    [
        "",
        "   ",
        '"unclosed phrase',
        "from:",
        "before:2001-13-45 gmake",
        "has:wings gmake",
        "-gmake",
        "OR gmake",
        "gmake OR",
        "(gmake OR (cpuc",
        "-(gmake OR cpuc)",
        "from:alice -(x",
        'a* b** co* "de"* -(*)',
        ") OR ( OR -",
        "foo:bar",
        '"" ""',
        "((( ))) *",
        "subject:",
        "after:2002-01-01 before:2001-01-01",
        "from:% to:_ filename:\\",
        "NEAR(gmake recursive)",
        "\x00gmake\x00",
        "x" * 5000,
        '-"',
        "🙂 ✉️",
    ],
)
def test_malformed_queries_never_raise(engine: Engine, query: str) -> None:
    results = find(engine, query)
    assert isinstance(results, SearchResults)


# Pieces of query text that could break the parser, a backend's syntax or the SQL.
QUERY_TEXT = st.one_of(
    st.text(max_size=60),
    st.lists(
        st.sampled_from(
            ["précision", "prufen", "rech*", "co*", "marz", "from:someone", "in:x", "-", "(",
             ")", "OR", "NOT", "AND", '"', "*", "'", ":", "\\", "{", "}", "^", "!", "&", "|",
             "<->", "NEAR", " ", " ", "after:2016", "has:attachment", "subject:", "\x00"]
        ),
        max_size=16,
    ).map("".join),
)  # fmt: skip


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(text=QUERY_TEXT)
@example(text="from:\x00")  # PostgreSQL refuses a NUL in the LIKE pattern
@example(text="budget\x00 OR to:a\x07b filename:\x1f")
def test_random_queries_never_raise(engine: Engine, tmp_path: Path, text: str) -> None:
    if not (tmp_path / "letters").exists():
        eml(tmp_path / "letters", "fr", "Someone <someone@yahoo.fr>", "Réponse",
            "fr_outlook_yahoo_indented.txt")  # fmt: skip
        eml(tmp_path / "letters", "de", "Stefan <stefan@example.de>", "Rechnung März",
            "de_weitergeleitete_nachricht.txt")  # fmt: skip
        run_import(engine, [str(tmp_path / "letters")], workers=1)
    results = find(engine, text)
    assert isinstance(results, SearchResults)
    assert all(isinstance(hint, str) for hint in results.hints)


def test_malformed_queries_give_hints(engine: Engine, tmp_path: Path) -> None:
    load(engine, tmp_path)
    unclosed = find(engine, '"physical macro')
    assert unclosed.hints and subjects(unclosed) == ["Heads up"]
    bad_date = find(engine, "gmake before:2001-13-45")
    assert any("date" in hint for hint in bad_date.hints) and subjects(bad_date) == ["gmake"]
    assert find(engine, "has:wings gmake").hints
    assert find(engine, "-gmake").hints and find(engine, "-gmake").hits == []
    assert find(engine, "foo:bar").hints
    assert find(engine, "x" * 5000).hints


# Queries over every operator, for the two backends to agree on.
AGREEMENT_QUERIES = [
    "up",
    "the",
    "gmake",
    "heads up",
    '"heads up"',
    "vignettes -murdoch",
    "r",
    "package",
    "legend",
    "from:maechler",
    'from:"brian ripley"',
    "from:murdoch package",
    "to:kam.keiser",
    "subject:vignettes",
    "subject:re gas",
    "has:attachment",
    "filename:doc",
    "legend before:1999-01-01",
    "after:2020-11-05",
    "thanks after:2001-01-01 before:2002-12-31",
    "precision",
    "prufen",
    "proceeding",
    "thanks -macro",
    # Exclusions narrowing operators alone.
    "from:maechler -package",
    "has:attachment -comments",
    "after:2020-11-05 before:2020-11-06 -r",
    "from:ripley -(gmake OR legend)",
    # OR, groups and prefixes.
    "gmake OR cpuc",
    'cpuc OR "heads up"',
    "gmake OR cpuc recursive",
    "(gmake OR cpuc) -recursive",
    "the OR up",
    "prufen OR précision",
    "(vignettes -murdoch) OR (legend plot)",
    "vignet*",
    "vignet* -murdoch",
    "makef*",
    "subject:makef*",
    "pack*",
    "pack* OR legend",
    "proceed* OR legend",
    '"physical mac"*',
]


@pytest.mark.postgres
@pytest.mark.parametrize("candidates", [engine_module.CANDIDATES, 4])
def test_sqlite_and_postgresql_give_the_same_results(
    sqlite_engine: Engine,
    pg_database: str,
    tmp_path: Path,
    candidates: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # With few candidates, common words take the capped path (newest matches,
    # plus the newest with a hit in the subject and in new text).
    monkeypatch.setattr(engine_module, "CANDIDATES", candidates)
    pg = make_engine(pg_database)
    try:
        with pg.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        upgrade(pg)
        for eng in (sqlite_engine, pg):
            load(eng, tmp_path / eng.dialect.name)
        empty = []
        capped = 0
        for query in AGREEMENT_QUERIES:
            # The same threads with the same counts; the order (and so the message a
            # snippet is taken from) is each engine's own relevance: BM25 / ts_rank.
            lite, post = find(sqlite_engine, query, limit=50), find(pg, query, limit=50)
            assert sorted((h.thread_id, h.matches) for h in lite.hits) == sorted(
                (h.thread_id, h.matches) for h in post.hits
            ), query
            assert lite.total_threads == post.total_threads, query
            if not lite.hits:
                empty.append(query)
            capped += lite.more
        assert empty == []
        assert capped > 10 if candidates < 10 else capped == 0
    finally:
        pg.dispose()


def test_cli_search_prints_json(engine: Engine, tmp_path: Path) -> None:
    load(engine, tmp_path)
    url = engine.url.render_as_string(hide_password=False)
    done = subprocess.run(
        [sys.executable, "-m", "bridge", "search", "cpuc", "proceeding", "--db", url, "--json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    output = json.loads(done.stdout)
    assert output["total_threads"] == 1
    [thread] = output["threads"]
    assert thread["subject"] == "SoCal Gas CPUC Proceeding"
    assert thread["matching_messages"] == thread["thread_messages"] == 5
    # Plain text, and where the words matched in it (`bridge search --json`).
    assert "<mark>" not in thread["snippet"]
    assert "CPUC" in [thread["snippet"][a:b] for a, b in thread["snippet_hits"]]

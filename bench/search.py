"""Search benchmark: `python bench/search.py DB [--queries N] [--seed S]`.

Builds a deterministic mix of queries from the store itself (words and
phrases taken from sampled messages' subjects and new text, some with
`from:` / `after:` operators, some filter-only, a few very common words),
runs it once to warm caches, then times each query through
`bridge.search.search` in-process and prints one JSON line of figures.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import time
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.orm import Session

from bridge.core.search_language.query import TOKEN_RE
from bridge.search import search
from bridge.store.blobs import unpack_body_with_raw
from bridge.store.db import make_engine

COMMON_WORDS = ("the", "thanks", "please", "meeting", "function", "package")
# What people do not type into a search box (the common words above aside).
STOP_WORDS = frozenset(
    """
    the and for with that this from have are was were will you your not but can
    has had its our all any one out who what when which there their they them
    would could should been also than then into just more some such only about
    """.split()  # noqa: SIM905
)


def words_of(value: str) -> list[str]:
    """Searchable words: 3+ letters, not numbers, in text order."""
    return [
        w
        for w in TOKEN_RE.findall(value)
        if len(w) >= 3 and not w.isdigit() and w.lower() not in STOP_WORDS
    ]


def build_queries(session: Session, count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    ids = list(session.execute(text("SELECT id FROM messages ORDER BY id")).scalars())
    picked = sorted(rng.sample(ids, min(count, len(ids))))
    rows = session.execute(
        text(
            "SELECT m.id, m.subject, m.body, r.data, m.sort_date, p.address FROM messages m "
            "JOIN raw_messages r ON r.sha256 = m.raw_sha256 "
            "LEFT JOIN people p ON p.id = m.sender_id WHERE m.id IN ("
            + ",".join(map(str, picked))
            + ") ORDER BY m.id"
        )
    ).all()
    conn = session.connection()
    queries: list[str] = []
    for i, (_pk, subject, blob, raw, sort_date, address) in enumerate(rows):
        body = unpack_body_with_raw(conn, blob, raw)
        new = words_of(body.new_text)
        subj = words_of(subject or "")
        pool = new or subj or ["mail"]
        year = str(sort_date)[:4]
        kind = i % 10
        if i % 25 == 24:
            queries.append(rng.choice(COMMON_WORDS))
        elif kind in (0, 1) and subj:
            queries.append(" ".join(rng.sample(subj, min(len(subj), 1 + kind))))
        elif kind in (2, 3):
            queries.append(" ".join(rng.sample(pool, min(len(pool), kind))))
        elif kind == 4 and len(new) >= 2:
            at = rng.randrange(len(new) - 1)
            queries.append(f'"{new[at]} {new[at + 1]}"')
        elif kind == 5 and address:
            queries.append(f"from:{address.split('@')[0]} {rng.choice(pool)}")
        elif kind == 6:
            queries.append(f"{rng.choice(pool)} after:{year}-01-01")
        elif kind == 7 and address:
            queries.append(f"from:{address} after:{year}")
        elif kind == 8:
            queries.append(f"{rng.choice(pool)} -{rng.choice(COMMON_WORDS)}")
        else:
            queries.append(rng.choice(pool))
    return queries


def _db_bytes(db: str) -> int:
    """Size of a SQLite database with its WAL (0 for a server database)."""
    path = (
        Path(db.split("sqlite:///", 1)[-1]) if "://" not in db or db.startswith("sqlite") else None
    )
    if path is None or not path.exists():
        return 0
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if p.is_file())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("db", help="SQLite path or database URL")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--slowest", type=int, default=0, help="also list the N slowest")
    args = parser.parse_args()
    engine = make_engine(args.db)
    timings: list[tuple[float, str, int]] = []
    with Session(engine) as session:
        messages = session.execute(text("SELECT count(*) FROM messages")).scalar_one()
        queries = build_queries(session, args.queries, args.seed)
        for query in queries:  # warm the caches
            search(session, query)
        for query in queries:
            started = time.perf_counter()
            results = search(session, query)
            timings.append(((time.perf_counter() - started) * 1000, query, results.total_threads))
    engine.dispose()
    ms = sorted(t for t, _, _ in timings)
    cuts = statistics.quantiles(ms, n=100, method="inclusive")
    for elapsed, query, total in sorted(timings, reverse=True)[: args.slowest]:
        print(f"{elapsed:8.1f} ms  {total:6d} threads  {query}")
    figures = {
        "db": args.db,
        "messages": messages,
        "queries": len(queries),
        "p50_ms": round(statistics.median(ms), 2),
        "p95_ms": round(cuts[94], 2),
        "p99_ms": round(cuts[98], 2),
        "max_ms": round(ms[-1], 2),
        "mean_results": round(statistics.fmean(t for _, _, t in timings), 1),
        "queries_per_s": round(len(ms) / (sum(ms) / 1000), 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "db_mb": round(_db_bytes(args.db) / 1e6, 1) if _db_bytes(args.db) else None,
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

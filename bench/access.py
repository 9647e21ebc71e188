"""Access benchmark: `python bench/access.py STORE_DB [--readers 5] [--repeat 5]`.

Times the access rule on a real store for its busiest readers (the people
who wrote in the most threads), set up as bench/web.py sets them up: staff,
with the R lists as spaces open to staff. For each reader, the median of
REPEAT runs of:

- `visible_thread_ids`: every thread holding a message they may see (what
  the home page, search and feeds filter with);
- `thread_views` of their 50 newest threads (the titles, counts and dates a
  listing shows, from their visible messages only);
- the same visible set without spaces (delivered and named arms alone).

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def web_bench() -> Any:
    """bench/web.py, for the same spaces and readers (bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location("bench_web", Path(__file__).with_name("web.py"))
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def median_ms(repeat: int, call: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("db", help="SQLite path or database URL")
    parser.add_argument("--readers", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    from sqlalchemy import text
    from sqlalchemy.orm import Session

    from bridge.config import parse_config
    from bridge.core.access import Viewer, viewer_for
    from bridge.store.db import make_engine
    from bridge.store.migrate import upgrade
    from bridge.store.visibility.access import thread_views, visible_thread_ids

    web = web_bench()
    url = args.db if "://" in args.db else f"sqlite:///{args.db}"
    engine = make_engine(url)
    upgrade(engine)
    with Session(engine) as session, session.begin():
        web.assign_list_spaces(session)
    results = []
    with Session(engine) as session:
        readers = list(
            session.execute(
                text(
                    "SELECT p.address FROM messages m JOIN people p ON p.id = m.sender_id "
                    "WHERE p.address LIKE '%@%' GROUP BY p.address "
                    "ORDER BY count(DISTINCT m.thread_id) DESC LIMIT :n"
                ),
                {"n": args.readers},
            ).scalars()
        )
        config = parse_config(web.bench_config(readers), "bench.toml")
        for address in readers:
            viewer = viewer_for(address, config.spaces, config.staff_domains)
            alone = Viewer(address, viewer.is_staff, frozenset())
            visible = visible_thread_ids(session, viewer)
            own = visible_thread_ids(session, alone)
            newest = sorted(visible)[-50:]
            views = thread_views(session, viewer, newest)
            results.append(
                {
                    "reader": address,
                    "visible_threads": len(visible),
                    "visible_messages_in_newest_50": sum(v.message_count for v in views.values()),
                    "visible_set_ms": median_ms(
                        args.repeat, lambda v=viewer: visible_thread_ids(session, v)
                    ),
                    "own_threads": len(own),
                    "own_set_ms": median_ms(
                        args.repeat, lambda v=alone: visible_thread_ids(session, v)
                    ),
                    "thread_views_50_ms": median_ms(
                        args.repeat, lambda v=viewer, t=newest: thread_views(session, v, t)
                    ),
                }
            )
        messages = session.execute(text("SELECT count(*) FROM messages")).scalar_one()
    engine.dispose()
    figures = {
        "messages": messages,
        "readers": results,
        "max_visible_set_ms": max(r["visible_set_ms"] for r in results),
        "max_thread_views_50_ms": max(r["thread_views_50_ms"] for r in results),
    }
    json.dump(figures, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

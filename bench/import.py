"""Import benchmark: `python bench/import.py CORPUS [CORPUS...] [--db URL] [--workers N]`.

Runs the real `bridge import` code end to end (parse, dedupe, thread, split,
store, index) into a fresh SQLite database (or the given URL) and prints one
JSON line of figures at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import text

from bridge.ingest.files import BATCH_SIZE, run_import
from bridge.store.db import make_engine
from bridge.store.migrate import upgrade


def tree_bytes(paths: list[str]) -> int:
    total = 0
    for given in paths:
        if os.path.isfile(given):
            total += os.path.getsize(given)
            continue
        for dirpath, _dirs, files in os.walk(given):
            total += sum(os.path.getsize(os.path.join(dirpath, f)) for f in files)
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("corpus", nargs="+")
    parser.add_argument("--db", help="database URL (default: a new SQLite file)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument("--keep", action="store_true", help="keep the SQLite file")
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="bridge-bench-")
    db_path = Path(workdir) / "bench.db"
    url = args.db or f"sqlite:///{db_path}"
    engine = make_engine(url)
    upgrade(engine)
    started = time.monotonic()
    result = run_import(engine, args.corpus, workers=args.workers, batch_size=args.batch_size)
    seconds = time.monotonic() - started
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT count(*) FROM messages")).scalar_one()
        threads = conn.execute(text("SELECT count(*) FROM threads")).scalar_one()
        multi = conn.execute(
            text("SELECT count(*) FROM threads WHERE message_count > 1")
        ).scalar_one()
    engine.dispose()
    raw_mb = tree_bytes(args.corpus) / 1e6
    db_mb = None
    if args.db is None:
        db_mb = (
            sum(os.path.getsize(p) for p in Path(workdir).glob("bench.db*") if p.is_file()) / 1e6
        )
    self_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    tally = result.tally
    figures = {
        "corpus": [str(p) for p in args.corpus],
        "messages_read": tally.read,
        "stored": tally.outcomes["stored"],
        "merged": tally.outcomes["merged"],
        "seen": tally.outcomes["seen"],
        "quarantined": tally.outcomes["quarantined"],
        "quarantine_reasons": dict(tally.quarantine_reasons),
        "messages_in_store": stored,
        "threads": threads,
        "threads_with_replies": multi,
        "seconds": round(seconds, 2),
        "messages_per_s": round(tally.read / seconds, 1) if seconds else None,
        "peak_rss_mb": round(max(self_rss, child_rss), 1),
        "writer_rss_mb": round(self_rss, 1),
        "raw_mb": round(raw_mb, 1),
        "db_mb": round(db_mb, 1) if db_mb is not None else None,
        "db_to_raw": round(db_mb / raw_mb, 3) if db_mb is not None and raw_mb else None,
    }
    if not args.keep and args.db is None:
        for p in Path(workdir).glob("bench.db*"):
            p.unlink()
    else:
        print(f"database: {url}", file=sys.stderr)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

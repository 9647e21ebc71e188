"""Threading benchmark: `python bench/thread_accuracy.py CORPUS... [--strip-headers] [--every N]`.

Imports the corpus with the real `bridge import` code (`run_import`) into a
fresh SQLite database and compares the stored threads with what the
original In-Reply-To / References headers say:

- by default, the share of messages whose stored parent is the message
  their headers name (In-Reply-To, else the last References id), counted
  over messages whose named parent is in the store;
- with --strip-headers, the corpus is imported from copies without those
  two headers (only their lines, continuation lines included, are cut out
  of the bytes), so only the subject + quote fallback can thread it; the
  stored threads are then scored by pairwise same-thread precision and
  recall against the header truth of the original files (connected
  components over In-Reply-To/References edges between present messages).
  A subject-only grouping of the same store is scored as a baseline. The
  originals are imported too, and the stripped threads are also scored
  against the threads Bridge itself makes with the headers
  (`precision_vs_bridge_with_headers`): that truth also links the replies
  whose mailer sent no In-Reply-To, which the header components miss.

`--every N` imports only every Nth file (e.g. every 4th month) for quick runs.
Prints one JSON line of figures at the end.
"""

# ruff: noqa: E402 (the sys.path fix below must run before the imports)
from __future__ import annotations

import os
import sys

# Scripts run with their own folder first on sys.path; keep bench/ off it so
# nothing here can shadow a stdlib or package module.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import argparse
import email.parser
import email.policy
import json
import re
import shutil
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text

from bridge.core.normalize import decode_header_value, normalize_message_id, parse_id_list
from bridge.ingest.files import run_import
from bridge.ingest.sources import Found, discover, read_items
from bridge.store.db import make_engine
from bridge.store.migrate import upgrade

_THREAD_HEADER = re.compile(rb"^(?:in-reply-to|references)[ \t]*:", re.IGNORECASE)
_HEADER_END = re.compile(rb"\r?\n\r?\n")


@dataclass(frozen=True, slots=True)
class Item:
    """One message of the original corpus, as its headers describe it."""

    key: str  # the delivery key the import records (path:offset, or path)
    message_id: str | None
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]


def _header_items(found: Found) -> list[tuple[Item, int, int]]:
    """(item, start, end) for every message of one file, from its headers only."""
    parser = email.parser.BytesHeaderParser(policy=email.policy.compat32)
    result = []
    for entry in read_items(found):
        raw = entry.raw
        if raw is None:
            continue
        head = _HEADER_END.split(raw.data, maxsplit=1)[0]
        msg = parser.parsebytes(head + b"\n\n")
        values: dict[str, list[str]] = defaultdict(list)
        for name, value in msg.raw_items():
            values[name.lower()].append(decode_header_value(value))
        ident = normalize_message_id(values["message-id"][0]) if values["message-id"] else None
        key = raw.provenance.key
        start = int(key.rsplit(":", 1)[1]) if key != str(found.path) else 0
        item = Item(
            key,
            ident,
            parse_id_list(" ".join(values["in-reply-to"])),
            parse_id_list(" ".join(values["references"])),
        )
        result.append((item, start, start + len(raw.data)))
    return result


def strip_thread_headers(message: bytes) -> bytes:
    """The message without In-Reply-To / References lines (and their continuations)."""
    end = _HEADER_END.search(message)
    head, rest = (message[: end.start()], message[end.start() :]) if end else (message, b"")
    kept: list[bytes] = []
    dropping = False
    for line in head.splitlines(keepends=True):
        if dropping and line[:1] in (b" ", b"\t"):
            continue
        dropping = bool(_THREAD_HEADER.match(line))
        if not dropping:
            kept.append(line)
    return b"".join(kept) + rest


def _stripped_copy(found: Found, spans: list[tuple[Item, int, int]], target: Path) -> Path:
    data = found.path.read_bytes()
    out: list[bytes] = []
    position = 0
    for _item, start, end in spans:
        out.append(data[position:start])
        out.append(strip_thread_headers(data[start:end]))
        position = end
    out.append(data[position:])
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(b"".join(out))
    return target


class UnionFind:
    def __init__(self) -> None:
        self.parent: dict[object, object] = {}

    def find(self, node: object) -> object:
        root = self.parent.setdefault(node, node)
        while self.parent[root] != root:
            root = self.parent[root]
        while node != root:
            self.parent[node], node = root, self.parent[node]
        return root

    def union(self, a: object, b: object) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[ra] = rb


def _pairs(n: int) -> int:
    return n * (n - 1) // 2


def pairwise_scores(truth: dict[int, object], found: dict[int, object]) -> tuple[float, float]:
    """Pairwise same-thread (precision, recall) of `found` against `truth`, over common keys."""
    keys = truth.keys() & found.keys()
    both = Counter((truth[k], found[k]) for k in keys)
    truth_sizes = Counter(truth[k] for k in keys)
    found_sizes = Counter(found[k] for k in keys)
    agree = sum(_pairs(n) for n in both.values())
    found_pairs = sum(_pairs(n) for n in found_sizes.values())
    truth_pairs = sum(_pairs(n) for n in truth_sizes.values())
    precision = agree / found_pairs if found_pairs else 1.0
    recall = agree / truth_pairs if truth_pairs else 1.0
    return precision, recall


def _named_parent(item: Item) -> str | None:
    """The parent the headers name: In-Reply-To (pipermail keeps only the first
    References id, so the last one is often the root), else the last References id."""
    own = item.message_id
    for ident in item.in_reply_to:
        if ident != own:
            return ident
    for ident in reversed(item.references):
        if ident != own:
            return ident
    return None


def _choose(found: list[Found], every: int) -> list[Found]:
    return found[::every] if every > 1 else found


def _load_store(url: str) -> tuple[dict[str, int], dict[str, int], dict[int, tuple], int]:
    """Delivery keys, every id (aliases too), and (thread, parent, subject, is_reply, date)."""
    engine = make_engine(url)
    with engine.connect() as conn:
        delivered: dict[str, int] = {
            key: pk for key, pk in conn.execute(text("SELECT key, message_pk FROM deliveries"))
        }
        all_ids = conn.execute(text("SELECT message_id, message_pk FROM message_ids"))
        ids: dict[str, int] = {mid: pk for mid, pk in all_ids}
        rows = {
            pk: (thread, parent, subject, is_reply, date)
            for pk, thread, parent, subject, is_reply, date in conn.execute(
                text(
                    "SELECT id, thread_id, parent_id, subject_norm, is_reply, sort_date"
                    " FROM messages"
                )
            )
        }
        links = conn.execute(text("SELECT count(*) FROM fallback_links")).scalar_one()
    engine.dispose()
    return delivered, ids, rows, links


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("corpus", nargs="+")
    parser.add_argument("--strip-headers", action="store_true")
    parser.add_argument("--every", type=int, default=1, help="import every Nth file only")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bridge-threading-"))
    chosen = _choose(discover(args.corpus), args.every)
    spans = {f.path: _header_items(f) for f in chosen}
    # key in the store -> the original item (the stripped copy's key when stripping)
    by_key: dict[str, Item] = {}
    import_paths: list[str] = []
    for number, found in enumerate(chosen):
        items = spans[found.path]
        if not args.strip_headers:
            by_key.update((item.key, item) for item, _s, _e in items)
            import_paths.append(str(found.path))
            continue
        copy = _stripped_copy(found, items, workdir / "corpus" / f"{number:05d}" / found.path.name)
        (copied,) = discover([str(copy)])
        copied_items = _header_items(copied)
        if len(copied_items) != len(items):
            print(f"{found.path}: stripped copy splits differently; skipped", file=sys.stderr)
            copy.unlink()
            continue
        for (item, _s, _e), (new, _s2, _e2) in zip(items, copied_items, strict=True):
            by_key[new.key] = item
        import_paths.append(str(copy))

    url = f"sqlite:///{workdir / 'bench.db'}"
    engine = make_engine(url)
    upgrade(engine)
    started = time.monotonic()
    result = run_import(engine, import_paths, workers=args.workers)
    seconds = time.monotonic() - started
    engine.dispose()
    delivered, ids, rows, links = _load_store(url)

    # each stored message, with the first original item that became it
    item_of: dict[int, Item] = {}
    for key, item in by_key.items():
        pk = delivered.get(key)
        if pk is not None:
            item_of.setdefault(pk, item)
    figures: dict[str, object] = {
        "corpus": args.corpus,
        "files": len(import_paths),
        "strip_headers": args.strip_headers,
        "messages_read": result.tally.read,
        "messages": len(rows),
        "threads": len({r[0] for r in rows.values()}),
        "fallback_links": links,
    }
    if args.strip_headers:
        figures.update(_strip_figures(item_of, ids, rows))
        figures.update(_versus_headers(workdir, chosen, item_of, rows, args.workers))
    else:
        figures.update(_parent_figures(item_of, ids, rows))
    figures["seconds"] = round(seconds, 1)
    if args.keep:
        print(f"work directory: {workdir}", file=sys.stderr)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(figures))
    return 0


def _parent_figures(
    item_of: dict[int, Item], ids: dict[str, int], rows: dict[int, tuple]
) -> dict[str, object]:
    counted = correct = 0
    wrong: list[str] = []
    for pk, item in item_of.items():
        named = _named_parent(item)
        if named is None or named not in ids or ids[named] == pk:
            continue
        counted += 1
        if rows[pk][1] == ids[named]:
            correct += 1
        elif len(wrong) < 10:
            wrong.append(item.message_id or item.key)
    for example in wrong:
        print(f"wrong parent: {example}", file=sys.stderr)
    return {
        "with_named_parent": counted,
        "parent_correct": correct,
        "parent_accuracy": round(correct / counted, 5) if counted else None,
    }


def _truth(item_of: dict[int, Item], ids: dict[str, int], ghosts: bool) -> dict[int, object]:
    """Header components over present messages (and through absent ids if `ghosts`)."""
    groups = UnionFind()
    for pk, item in item_of.items():
        groups.find(pk)
        for ident in (*item.in_reply_to, *item.references):
            if ident in ids:
                groups.union(pk, ids[ident])
            elif ghosts:
                groups.union(pk, ident)
    return {pk: groups.find(pk) for pk in item_of}


def _strip_figures(
    item_of: dict[int, Item], ids: dict[str, int], rows: dict[int, tuple]
) -> dict[str, object]:
    stored = {pk: rows[pk][0] for pk in item_of}
    subjects = {pk: (rows[pk][2] or f"#{pk}") for pk in item_of}
    truth = _truth(item_of, ids, ghosts=False)
    precision, recall = pairwise_scores(truth, stored)
    base_p, base_r = pairwise_scores(truth, subjects)
    ghost_p, ghost_r = pairwise_scores(_truth(item_of, ids, ghosts=True), stored)
    _print_worst(truth, stored, rows)
    return {
        "precision_clean_roots": round(_clean_root_precision(truth, stored, item_of, rows), 4),
        "subject_only_precision_clean_roots": round(
            _clean_root_precision(truth, subjects, item_of, rows), 4
        ),
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "subject_only_precision": round(base_p, 4),
        "subject_only_recall": round(base_r, 4),
        "precision_truth_with_ghosts": round(ghost_p, 4),
        "recall_truth_with_ghosts": round(ghost_r, 4),
        "truth_threads": len(set(truth.values())),
    }


def _versus_headers(
    workdir: Path,
    chosen: list[Found],
    item_of: dict[int, Item],
    rows: dict[int, tuple],
    workers: int,
) -> dict[str, object]:
    """Score the stripped threads against Bridge's own threads of the original files."""
    url = f"sqlite:///{workdir / 'original.db'}"
    engine = make_engine(url)
    upgrade(engine)
    run_import(engine, [str(f.path) for f in chosen], workers=workers)
    engine.dispose()
    delivered, _ids, original_rows, _links = _load_store(url)
    truth: dict[int, object] = {}
    for pk, item in item_of.items():
        original = delivered.get(item.key)
        if original is not None:
            truth[pk] = original_rows[original][0]
    stored = {pk: rows[pk][0] for pk in truth}
    precision, recall = pairwise_scores(truth, stored)
    return {
        "precision_vs_bridge_with_headers": round(precision, 4),
        "recall_vs_bridge_with_headers": round(recall, 4),
    }


def _clean_root_precision(
    truth: dict[int, object],
    stored: dict[int, object],
    item_of: dict[int, Item],
    rows: dict[int, tuple],
) -> float:
    """Precision counting as false only pairs of two header threads that both start
    with a fresh post (no In-Reply-To/References, no "Re:", nothing quoted).

    A header thread whose first message is itself a reply lost its link
    upstream (a mailer that sent no In-Reply-To, a parent missing from the
    archive): the headers cannot say that it is a separate thread.
    """
    first: dict[object, int] = {}
    for pk in item_of:
        top = first.get(truth[pk])
        if top is None or (rows[pk][4], pk) < (rows[top][4], top):
            first[truth[pk]] = pk

    def fresh(component: object) -> bool:
        pk = first[component]
        item = item_of[pk]
        return not (item.in_reply_to or item.references or rows[pk][3])

    members: dict[object, Counter[object]] = defaultdict(Counter)
    for pk, thread in stored.items():
        members[thread][truth[pk]] += 1
    agree = false = 0
    for sizes in members.values():
        agree += sum(_pairs(n) for n in sizes.values())
        counts = [(n, fresh(c)) for c, n in sizes.items()]
        fresh_sizes = [n for n, ok in counts if ok]
        total = sum(fresh_sizes)
        false += (total * total - sum(n * n for n in fresh_sizes)) // 2
    return agree / (agree + false) if agree + false else 1.0


def _print_worst(
    truth: dict[int, object],
    stored: dict[int, object],
    rows: dict[int, tuple],
    count: int = 15,
) -> None:
    """The stored threads that join most pairs the headers keep apart (to stderr)."""
    members: dict[object, list[int]] = defaultdict(list)
    for pk, thread in stored.items():
        members[thread].append(pk)
    bad: list[tuple[int, object]] = []
    for thread, pks in members.items():
        sizes = Counter(truth[pk] for pk in pks)
        wrong = _pairs(len(pks)) - sum(_pairs(n) for n in sizes.values())
        if wrong:
            bad.append((wrong, thread))
    bad.sort(key=lambda b: -b[0])
    for wrong, thread in bad[:count]:
        pks = members[thread]
        parts = len({truth[pk] for pk in pks})
        subject = rows[pks[0]][2]
        print(
            f"false pairs {wrong}: {len(pks)} msgs, {parts} true threads: {subject!r}",
            file=sys.stderr,
        )


if __name__ == "__main__":
    raise SystemExit(main())

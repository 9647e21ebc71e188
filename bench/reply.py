"""Reply benchmark: `python bench/reply.py STORE_DB [--duration 30] [--rate 200]
[--replies-per-second 5] [--keep-copy]`.

Issue 12's speed point: a reply POST is answered (stored, enqueued) in
50 ms p50 under bench/web.py's load, and a queued reply is accepted by the
relay within 2 s p50.

Replies write, so it works on a copy of STORE_DB (with its WAL files) in a
temporary folder, removed at the end unless --keep-copy. On that copy it
runs the real daemon, `python -m bridge run`, with a generated config: SMTP
and web on free loopback ports, the spaces and staff of bench/web.py (its
functions are imported, not copied: the R lists are spaces open to staff,
the most active writers are the signed-in readers), `[outbound]` pointing
at a relay this process runs (aiosmtpd, in its thread) that notes when each
reply's DATA is accepted, `tls = "none"`, an hour's `poll_interval` (so what
is measured is the web app waking the outbox job, not its poll), digests
off (a first digest run would queue mail for everyone in the store) and a
reply rate limit the run cannot reach.

The readers' sessions are rows in the copy, signed with the key the daemon
uses (`bridge.outbound.keys.signing_key`: made in the copy's database before
the daemon starts, which then reads the same key); each session's form
token is read from its /settings page. Each reader answers real messages it
may see (checked with the store's own access and reply functions); each
reply's text holds a unique marker, found again in the mail the relay gets.

1. unloaded: replies alone, open loop (sent on schedule, not after the
   previous answer) at --replies-per-second for a few seconds;
2. loaded: wrk paced at --rate over thread and search pages (--pages: one
   kind only) for --duration seconds (bench/web.py's `wrk` and web.lua, over
   every reader's session) while the replies go on as in 1.

Reported for each phase: the POST's time to its 303 (p50/p95/p99/max), the
answers that were not 303, and from the 303 to the relay accepting the
reply's DATA (p50/p95/max), with the replies never relayed within
--relay-timeout seconds, and the page rate wrk reached (each connection
waits for its answer, so an overloaded server gets fewer than --rate).
Each reply is new mail: the listing and search pages kept for readers
(keyed on the store's newest delivery) are rendered again after it. The
JSON line holds the machine's load average at the start and the end: other
work on the machine shows in every figure. Prints a short summary and one
JSON line at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email
import importlib.util
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import quote

HERE = Path(__file__).parent
DOMAIN = "bridge.bench.invalid"  # the reply's Message-ID domain; never resolves
MARKER = re.compile(r"bench-reply-[0-9a-f]{32}")
TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')
TARGETS_PER_READER = 8


def bench_web() -> ModuleType:
    """bench/web.py as a module: its store preparation, config and wrk runner."""
    spec = importlib.util.spec_from_file_location("bench_web", HERE / "web.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


web = bench_web()


# ---------------------------------------------------------------- the relay


@dataclass
class Relay:
    """The company relay: accepts everything and notes when each marker arrived."""

    arrived: dict[str, float] = field(default_factory=dict)
    messages: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        at = time.perf_counter()
        mail = email.message_from_bytes(envelope.original_content, policy=policy.default)
        body = mail.get_body(("plain",))  # type: ignore[attr-defined]
        text = str(body.get_content()) if body is not None else ""
        with self.lock:
            self.messages += 1
            for marker in MARKER.findall(text):
                self.arrived.setdefault(marker, at)
        return "250 2.0.0 queued"


# ------------------------------------------------------------- the config


def toml(table: dict[str, Any], prefix: str = "") -> str:
    """The config as TOML: scalars and lists of scalars, tables, arrays of tables."""
    lines, tables = [], []
    for key, value in table.items():
        name = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            tables.append(f"[{name}]\n" + toml(value, name))
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            tables.extend(f"[[{name}]]\n" + toml(item, name) for item in value)
        else:
            lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n" + "".join(tables)


def daemon_config(copy: Path, readers: list[str], ports: dict[str, int]) -> dict[str, Any]:
    config = web.bench_config(readers)
    domains = config["bridge"]["staff_domains"]
    config["database"] = {"url": f"sqlite:///{copy}"}
    config["smtp"] = {
        "domains": domains,
        "listeners": [{"host": "127.0.0.1", "port": ports["smtp"]}],
    }
    config["web"] |= {"host": "127.0.0.1", "port": ports["web"], "replies_per_minute": 100000}
    config["bridge"] |= {"message_id_domain": DOMAIN, "address": f"bridge@{DOMAIN}"}
    config["digest"] = {"default_frequency": "off"}
    config["outbound"] = {
        "host": "127.0.0.1",
        "port": ports["relay"],
        "tls": "none",
        "poll_interval": 3600.0,
    }
    config["log"] = {"level": "warning"}
    return config


# ------------------------------------------------------------ the store


def copy_store(db: Path, folder: Path) -> Path:
    """The store and its WAL files, copied into `folder`."""
    copy = folder / db.name
    for suffix in ("", "-wal", "-shm"):
        source = Path(f"{db}{suffix}")
        if source.exists():
            shutil.copyfile(source, f"{copy}{suffix}")
    return copy


def stored_key(copy: Path) -> bytes:
    """The daemon's signing key: made in the copy now, read by the daemon when it starts."""
    from sqlalchemy.orm import Session

    from bridge.config import parse_config
    from bridge.outbound.keys import signing_key
    from bridge.store.db import make_engine
    from bridge.store.migrate import upgrade

    engine = make_engine(str(copy))
    upgrade(engine)
    with Session(engine) as session, session.begin():
        # No [web] secret in the bench's config: the key kept in the database.
        key = signing_key(session, parse_config({}, "bench.toml"), datetime.now(UTC))
    engine.dispose()
    return key


def reply_targets(copy: Path, config: dict[str, Any], readers: list[str]) -> dict[str, list[Any]]:
    """For each reader, (thread id, message pk) pairs they may see and answer to somebody."""
    from sqlalchemy import text
    from sqlalchemy.orm import Session

    from bridge.config import parse_config
    from bridge.core.access import viewer_for
    from bridge.outbound.replies import load_parent, recipients
    from bridge.store.db import make_engine
    from bridge.store.visibility.access import visible_message_ids, visible_thread_ids

    parsed = parse_config(config, "bench.toml")
    engine = make_engine(str(copy))
    chosen: dict[str, list[Any]] = {}
    pick = random.Random(12)
    with Session(engine) as session:
        threads = list(
            session.execute(text("SELECT id FROM threads WHERE message_count >= 2")).scalars()
        )
        for reader in readers:
            viewer = viewer_for(reader, parsed.spaces, parsed.staff_domains)
            visible = sorted(visible_thread_ids(session, viewer, pick.sample(threads, 400)))
            found: list[Any] = []
            for thread_id in pick.sample(visible, min(len(visible), 4 * TARGETS_PER_READER)):
                pks = visible_message_ids(session, viewer, thread_id)
                pk = pick.choice(pks)
                parent = load_parent(session, viewer, pk)
                if parent is None or not recipients(parsed, parent, reader, "all").everyone:
                    continue
                found.append((parent.thread_id, pk))
                if len(found) == TARGETS_PER_READER:
                    break
            if found:
                chosen[reader] = found
    engine.dispose()
    return chosen


# ---------------------------------------------------------------- replying


@dataclass
class Reply:
    marker: str
    sent: float
    answered: float | None = None
    status: int | None = None


async def tokens(base: str, cookies: list[str]) -> list[str]:
    """Each session's form token, from its settings page."""
    import aiohttp

    found = []
    async with aiohttp.ClientSession(base) as client:
        for cookie in cookies:
            headers = {"Cookie": f"bridge_session={cookie}"}
            async with client.get("/settings", headers=headers) as response:
                match = TOKEN.search(await response.text())
            if match is None:
                raise SystemExit(f"/settings answered {response.status} without a form token")
            found.append(match.group(1))
    return found


async def drive(
    base: str, writers: list[dict[str, Any]], rate: float, seconds: float
) -> list[Reply]:
    """Open loop: reply n leaves at n / rate, from writer n mod W, whatever came back before."""
    import aiohttp

    replies: list[Reply] = []
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(base, connector=connector) as client:

        async def one(writer: dict[str, Any], turn: int) -> None:
            thread_id, pk = writer["targets"][turn % len(writer["targets"])]
            marker = f"bench-reply-{uuid.uuid4().hex}"
            form = aiohttp.FormData(
                {
                    "csrf_token": writer["token"],
                    "message": str(pk),
                    "mode": "all",
                    "body": f"Checked against the figures, see below.\n{marker}\n",
                },
                default_to_multipart=True,  # as the browser sends the form (it has a file field)
            )
            reply = Reply(marker, time.perf_counter())
            replies.append(reply)
            try:
                async with client.post(
                    f"/t/{thread_id}/reply",
                    data=form,
                    headers={"Cookie": f"bridge_session={writer['cookie']}"},
                    allow_redirects=False,
                ) as response:
                    await response.read()
                    reply.answered = time.perf_counter()
                    reply.status = response.status
            except (aiohttp.ClientError, TimeoutError):
                reply.status = None

        await web.open_loop(
            rate, seconds, lambda n: one(writers[n % len(writers)], n // len(writers))
        )
    return replies


async def relayed(relay: Relay, replies: list[Reply], seconds: float) -> None:
    """Until the relay has every reply answered 303, or `seconds` have passed."""
    wanted = {r.marker for r in replies if r.status == 303}
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            while True:
                with relay.lock:
                    if wanted <= relay.arrived.keys():
                        return
                await asyncio.sleep(0.1)


def ms_cuts(values: list[float], cuts: tuple[int, ...]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    quantiles = (
        statistics.quantiles(values, n=100, method="inclusive") if len(values) >= 2 else None
    )
    for q in cuts:
        out[f"p{q}_ms"] = round(quantiles[q - 1] * 1000, 1) if quantiles else None
    out["max_ms"] = round(max(values) * 1000, 1) if values else None
    return out


def figures(replies: list[Reply], relay: Relay) -> dict[str, Any]:
    ok = [r for r in replies if r.status == 303 and r.answered is not None]
    statuses: dict[str, int] = {}
    for r in replies:
        if r.status != 303:
            statuses[str(r.status)] = statuses.get(str(r.status), 0) + 1
    with relay.lock:
        arrived = dict(relay.arrived)
    posts = [r.answered - r.sent for r in ok if r.answered is not None]
    relayed = [arrived[r.marker] - r.answered for r in ok if r.answered and r.marker in arrived]
    return {
        "replies": len(replies),
        "post": {"answered_303": len(ok)} | ms_cuts(posts, (50, 95, 99)),
        "not_303": statuses,
        "to_relay": {"relayed": len(relayed)} | ms_cuts(relayed, (50, 95)),
        "never_relayed": len(ok) - len(relayed),
    }


async def measure(
    base: str,
    relay: Relay,
    writers: list[dict[str, Any]],
    args: argparse.Namespace,
    load: dict[str, Any] | None,
) -> dict[str, Any]:
    """One phase: replies alone, or (with `load`, wrk's arguments) under wrk."""
    if load is None:
        replies = await drive(base, writers, args.replies_per_second, args.unloaded_seconds)
        await relayed(relay, replies, args.relay_timeout)
        return figures(replies, relay)
    # The replies start a second into wrk's run and end a second before it.
    started = asyncio.create_task(asyncio.to_thread(web.wrk, base, **load))
    await asyncio.sleep(1)
    replies = await drive(base, writers, args.replies_per_second, max(1, args.duration - 2))
    paced = await started
    await relayed(relay, replies, args.relay_timeout)
    return figures(replies, relay) | {"wrk": paced}


# -------------------------------------------------------------------- main


def start_daemon(folder: Path, config: dict[str, Any], base: str) -> subprocess.Popen[bytes]:
    path = folder / "bench.toml"
    path.write_text(toml(config), encoding="utf-8")
    with (folder / "daemon.log").open("wb") as log:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "bridge", "run", "--config", str(path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=folder,
        )
    try:
        web.wait_up(base, daemon, seconds=120)
    except SystemExit:
        sys.stderr.write((folder / "daemon.log").read_text(errors="replace")[-4000:])
        raise
    return daemon


def summary(name: str, phase: dict[str, Any]) -> str:
    post, relayed = phase["post"], phase["to_relay"]
    return (
        f"{name:8s} {phase['replies']} replies: POST p50 {post['p50_ms']} ms  p95 "
        f"{post['p95_ms']} ms  p99 {post['p99_ms']} ms  max {post['max_ms']} ms, not 303 "
        f"{phase['not_303'] or 0}; to relay p50 {relayed['p50_ms']} ms  p95 "
        f"{relayed['p95_ms']} ms  max {relayed['max_ms']} ms, never {phase['never_relayed']}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("db")
    parser.add_argument("--duration", type=int, default=30)
    parser.add_argument("--rate", type=int, default=200)
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--readers", type=int, default=50)
    parser.add_argument("--replies-per-second", type=float, default=5.0)
    parser.add_argument("--unloaded-seconds", type=float, default=10.0)
    parser.add_argument("--relay-timeout", type=float, default=30.0)
    parser.add_argument(
        "--pages",
        choices=("both", "thread", "search"),
        default="both",
        help="the pages wrk asks for: thread and search pages as bench/web.py, or one kind",
    )
    parser.add_argument("--keep-copy", action="store_true", help="keep the copy and the log")
    args = parser.parse_args()
    db = Path(args.db)
    if not db.exists():
        parser.error("STORE_DB: an existing SQLite store")

    from aiosmtpd.controller import Controller

    load_before = round(os.getloadavg()[0], 2)
    folder = Path(tempfile.mkdtemp(prefix="bench-reply-"))
    relay = Relay()
    ports = {"smtp": web.free_port(), "web": web.free_port(), "relay": web.free_port()}
    controller = Controller(relay, hostname="127.0.0.1", port=ports["relay"])
    controller.start()
    daemon: subprocess.Popen[bytes] | None = None
    base = f"http://127.0.0.1:{ports['web']}"
    try:
        started = time.perf_counter()
        copy = copy_store(db, folder)
        key = stored_key(copy)
        chosen = web.prepare(str(copy), key, args.readers)
        config = daemon_config(copy, chosen["readers"], ports)
        targets = reply_targets(copy, config, chosen["readers"])
        print(
            f"copy and prepare: {time.perf_counter() - started:.1f} s; "
            f"{len(targets)} of {len(chosen['readers'])} readers have messages to answer"
        )
        daemon = start_daemon(folder, config, base)
        token_of = dict(
            zip(chosen["cookies"], asyncio.run(tokens(base, chosen["cookies"])), strict=True)
        )
        writers = [
            {"cookie": cookie, "token": token_of[cookie], "targets": targets[reader]}
            for reader, cookie in zip(chosen["readers"], chosen["cookies"], strict=True)
            if reader in targets
        ]
        if not writers:
            raise SystemExit("no reader has a message to answer")
        thread_paths = [f"/t/{tid}" for tid, _ in chosen["threads"]]
        search_paths = [f"/search?q={quote(q)}" for q in web.SEARCHES]
        web.warm(base, chosen["cookie"], thread_paths + search_paths)
        pages_alone = {
            "thread": web.solo(base, chosen["cookie"], thread_paths, rounds=1),
            "search": web.solo(base, chosen["cookie"], search_paths, rounds=1),
        }
        unloaded = asyncio.run(measure(base, relay, writers, args, None))
        print(summary("unloaded", unloaded))
        paced = max(1.0, args.rate - args.replies_per_second)
        mixed = zip(thread_paths, search_paths * 2, strict=False)
        pages = {
            "both": [path for pair in mixed for path in pair],
            "thread": thread_paths,
            "search": search_paths,
        }
        load = {
            "paths": pages[args.pages],
            "cookie": ",".join(chosen["cookies"]),
            "seconds": args.duration,
            "connections": args.connections,
            "delay_ms": web.paced_delay_ms(paced, args.connections, pages_alone),
        }
        loaded = asyncio.run(measure(base, relay, writers, args, load))
        print(summary("loaded", loaded))
        wrk = loaded["wrk"]
        print(
            f"wrk      {wrk['rate']} req/s of pages, p50 {wrk['p50_ms']} ms  p99 "
            f"{wrk['p99_ms']} ms, errors {wrk['errors']}"
        )
    finally:
        if daemon is not None:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(timeout=20)
            except subprocess.TimeoutExpired:
                daemon.kill()
        controller.stop()
        if args.keep_copy:
            print(f"kept {folder} (the store copy, bench.toml, daemon.log)")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    result = {
        "store_messages": chosen["messages"],
        "readers": len(writers),
        "cores": os.cpu_count(),
        # Other work on the machine skews every figure: the 1-minute load at the start and end.
        "load_average": [load_before, round(os.getloadavg()[0], 2)],
        "target_rate": args.rate,
        "pages": args.pages,
        "replies_per_second": args.replies_per_second,
        "pages_alone": pages_alone,
        "unloaded": unloaded,
        "loaded": loaded,
        "relay_messages": relay.messages,
        "goals": {
            "post_p50_ms_loaded_le_50": (loaded["post"]["p50_ms"] or 1e9) <= 50,
            "to_relay_p50_ms_le_2000": (loaded["to_relay"]["p50_ms"] or 1e9) <= 2000,
        },
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
